//! Google access tokens: the ID token is exchanged at STS for a federated access token, and,
//! when the client names a service account, that token impersonates it through
//! `generateAccessToken`. Tokens are cached per (client ID, scope, service account) and reused
//! while comfortably inside their lifetime; concurrent identical requests share one upstream
//! exchange.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
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

#[derive(Default)]
struct Slot {
    token: Option<(AccessToken, Instant, Instant)>,
    error: Option<(Instant, AccessError)>,
}

/// The STS + IAM Credentials backend.
pub struct GoogleAccess {
    settings: GoogleAccessSettings,
    sts: StsClient,
    iam: IamCredentialsClient,
    upstream: Upstream,
    slots: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Slot>>>>,
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
            settings,
            sts,
            iam,
            upstream,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: Key) -> Arc<tokio::sync::Mutex<Slot>> {
        let Ok(mut slots) = self.slots.lock() else {
            return Arc::new(tokio::sync::Mutex::new(Slot::default()));
        };
        if slots.len() >= 10_000 && !slots.contains_key(&key) {
            let now = Instant::now();
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot
                        .try_lock()
                        .map(|s| s.token.as_ref().is_some_and(|(_, _, exp)| *exp > now))
                        .unwrap_or(true)
            });
        }
        slots.entry(key).or_default().clone()
    }

    async fn fetch(
        &self,
        client: &Client,
        id_token: &str,
        scope: &str,
        service_account: Option<&str>,
    ) -> Result<AccessToken, AccessError> {
        let deadline = self.upstream.deadline();
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
        if !self.settings.cache {
            return self.fetch(client, id_token, &scope, service_account).await;
        }
        let key = (
            client.client_id.clone(),
            scope.clone(),
            service_account.unwrap_or("").to_owned(),
        );
        let slot = self.slot(key);
        let waited_from = Instant::now();
        let mut slot = slot.lock().await;
        let now = Instant::now();
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
        // A failure that happened while this request waited is shared, not retried again.
        if let Some((at, error)) = &slot.error
            && *at >= waited_from
        {
            return Err(error.clone());
        }
        crate::metrics::metrics().cache(false);
        match self.fetch(client, id_token, &scope, service_account).await {
            Ok(token) => {
                let lifetime = Duration::from_secs(u64::try_from(token.expires_in).unwrap_or(0));
                // Reuse for half the lifetime, and never in the last minute.
                let refresh_at =
                    now + (lifetime / 2).min(lifetime.saturating_sub(Duration::from_secs(60)));
                slot.token = Some((token.clone(), refresh_at, now + lifetime));
                slot.error = None;
                Ok(token)
            }
            Err(error) => {
                slot.error = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
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
