//! Google access tokens: the ID token is exchanged at STS for a federated access token, and,
//! when the client names a service account, that token impersonates it through
//! `generateAccessToken`. Tokens are cached per (client ID, scope, service account) and reused
//! while comfortably inside their lifetime; concurrent identical requests share one upstream
//! exchange.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AccessError, AccessTokenBackend};
use crate::clock::Clock;
use crate::google::iam_credentials::IamCredentialsClient;
use crate::google::sts::StsClient;
use crate::google::{Outcome, Upstream, UpstreamError};
use crate::model::{AccessToken, Client};

/// Settings of the Google access-token backend.
#[derive(Debug, Clone)]
pub struct GoogleAccessSettings {
    /// STS audience: `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`.
    pub audience: String,
    /// Lifetime requested for impersonated tokens, in seconds (the ID token validity).
    pub lifetime_seconds: i64,
    /// Whether tokens are cached (`ACCESS_TOKEN_CACHE`).
    pub cache: bool,
}

type Key = (String, String, String);

/// The result of one upstream exchange, shared by every request that waits for it.
type Pending = Shared<BoxFuture<'static, Result<AccessToken, AccessError>>>;

#[derive(Default)]
struct Slot {
    /// The cached token, when to stop reusing it, and when it expires.
    token: Option<(AccessToken, Instant, Instant)>,
    /// The exchange in progress, if any.
    pending: Option<Pending>,
}

/// What an exchange needs, shared with the futures that run it.
struct Exchange {
    settings: GoogleAccessSettings,
    sts: StsClient,
    iam: IamCredentialsClient,
}

/// The STS + IAM Credentials backend.
pub struct GoogleAccess {
    exchange: Arc<Exchange>,
    upstream: Upstream,
    /// Never held across an await: waiting happens on the shared future, outside the lock.
    slots: Mutex<HashMap<Key, Slot>>,
}

impl GoogleAccess {
    /// Wires the backend.
    pub fn new(
        settings: GoogleAccessSettings,
        sts: StsClient,
        iam: IamCredentialsClient,
        upstream: Upstream,
    ) -> Self {
        Self {
            exchange: Arc::new(Exchange { settings, sts, iam }),
            upstream,
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl Exchange {
    async fn fetch(
        &self,
        client: &Client,
        id_token: &str,
        scope: &str,
        service_account: Option<&str>,
        deadline: Instant,
    ) -> Result<AccessToken, AccessError> {
        let federated = self
            .sts
            .exchange(&self.settings.audience, scope, id_token, deadline)
            .await
            .map_err(|e| access_error(e, "STS refused the token exchange"))?;
        let Some(account) = service_account else {
            return Ok(AccessToken {
                token: federated.access_token,
                expires_in: federated.expires_in,
                scope: federated.scope.unwrap_or_else(|| scope.to_owned()),
            });
        };
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let lifetime = client
            .lifetime_seconds
            .unwrap_or(self.settings.lifetime_seconds);
        let (token, expiry) = self
            .iam
            .generate_access_token(
                account,
                &scopes,
                lifetime,
                &federated.access_token,
                deadline,
            )
            .await
            .map_err(|e| match e.status() {
                Some(401 | 403 | 404) => AccessError::AccessDenied(format!(
                    "Access to service account '{account}' was denied: {}",
                    e.message()
                )),
                _ => access_error(e, "Impersonating the service account failed"),
            })?;
        let expires_in = OffsetDateTime::parse(&expiry, &Rfc3339)
            .map(|t| t.unix_timestamp() - Clock::system().now())
            .unwrap_or(lifetime)
            .max(0);
        Ok(AccessToken {
            token,
            expires_in,
            scope: scopes.join(" "),
        })
    }
}

fn access_error(e: UpstreamError, context: &str) -> AccessError {
    let message = format!("{context}: {e}");
    match e.outcome() {
        Outcome::Invalid => AccessError::InvalidRequest(message),
        Outcome::Denied => AccessError::AccessDenied(message),
        Outcome::Unavailable(retry_after) => AccessError::Unavailable {
            message,
            retry_after,
        },
        Outcome::Server => AccessError::Server(message),
    }
}

/// Whether `value` looks like a service-account email (it becomes part of a URL path).
fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
    };
    value.len() <= 254 && ok(local) && ok(domain) && domain.contains('.')
}

#[async_trait]
impl AccessTokenBackend for GoogleAccess {
    async fn access_token(
        &self,
        client: &Client,
        id_token: &str,
        scope: &str,
        service_account: Option<&str>,
    ) -> Result<AccessToken, AccessError> {
        if let Some(account) = service_account
            && !is_email(account)
        {
            return Err(AccessError::InvalidRequest(format!(
                "service_account '{}' is not a service account email",
                crate::model::truncate(account, 64)
            )));
        }
        let mut scopes: Vec<&str> = scope.split_whitespace().collect();
        scopes.sort_unstable();
        scopes.dedup();
        let scope = scopes.join(" ");
        let deadline = self.upstream.deadline();
        if !self.exchange.settings.cache {
            return self
                .exchange
                .fetch(client, id_token, &scope, service_account, deadline)
                .await;
        }
        let key = (
            client.client_id.clone(),
            scope.clone(),
            service_account.unwrap_or("").to_owned(),
        );
        let started = Instant::now();
        let pending = {
            let Ok(mut slots) = self.slots.lock() else {
                return Err(AccessError::Server(
                    "the access-token cache is unusable".into(),
                ));
            };
            let now = started;
            if slots.len() >= 10_000 && !slots.contains_key(&key) {
                slots.retain(|_, slot| {
                    slot.pending.is_some()
                        || slot.token.as_ref().is_some_and(|(_, _, exp)| *exp > now)
                });
            }
            let slot = slots.entry(key.clone()).or_default();
            if let Some((token, refresh_at, expires_at)) = &slot.token
                && now < *refresh_at
            {
                tracing::debug!(event = "access_token_cache_hit", client_id = %client.client_id, "reusing a cached access token");
                crate::metrics::metrics().cache(true);
                let remaining = expires_at.saturating_duration_since(now).as_secs();
                return Ok(AccessToken {
                    expires_in: i64::try_from(remaining).unwrap_or(0),
                    ..token.clone()
                });
            }
            match &slot.pending {
                // An identical exchange is under way: wait for its result, success or failure.
                Some(pending) => pending.clone(),
                None => {
                    crate::metrics::metrics().cache(false);
                    let (exchange, client, id_token, scope) = (
                        self.exchange.clone(),
                        client.clone(),
                        id_token.to_owned(),
                        scope.clone(),
                    );
                    let account = service_account.map(str::to_owned);
                    let pending = async move {
                        exchange
                            .fetch(&client, &id_token, &scope, account.as_deref(), deadline)
                            .await
                    }
                    .boxed()
                    .shared();
                    slot.pending = Some(pending.clone());
                    pending
                }
            }
        };
        let result = pending.clone().await;
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(&key)
            && slot.pending.as_ref().is_some_and(|p| p.ptr_eq(&pending))
        {
            slot.pending = None;
            if let Ok(token) = &result {
                let lifetime = Duration::from_secs(u64::try_from(token.expires_in).unwrap_or(0));
                // Reuse for half the lifetime, and never in the last minute.
                let refresh_at =
                    started + (lifetime / 2).min(lifetime.saturating_sub(Duration::from_secs(60)));
                slot.token = Some((token.clone(), refresh_at, started + lifetime));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::is_email;

    #[test]
    fn service_account_must_look_like_an_email() {
        assert!(is_email("sa@my-project.iam.gserviceaccount.com"));
        for bad in [
            "",
            "sa",
            "@x.com",
            "sa@",
            "sa@x",
            "a/b@x.com",
            "sa@x.com/../y",
            "sa@x.com:signJwt",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
