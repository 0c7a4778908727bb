//! Google access tokens: the ID token is exchanged at STS for a federated access token, and,
//! when the client names a service account, that token impersonates it through
//! `generateAccessToken`. Tokens are cached per (client ID, scope, service account) and reused
//! for half their lifetime, never with less than five minutes left; concurrent identical requests share one upstream
//! exchange. Failures are the Google clients' own [`Failure`]s, passed on unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AccessTokenBackend;
use crate::clock::{Clock, Deadline, Stopwatch};
use crate::error::Failure;
use crate::google::iam_credentials::IamCredentialsClient;
use crate::google::sts::StsClient;
use crate::metrics::Metrics;
use crate::model::{AccessToken, Client};

/// Settings of the Google access-token backend.
#[derive(Debug, Clone)]
pub struct GoogleAccessSettings {
    /// STS audience: `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`.
    pub audience: String,
    /// Lifetime requested for impersonated tokens, in seconds (`ACCESS_TOKEN_LIFETIME`).
    pub lifetime_seconds: i64,
    /// Whether tokens are cached (`ACCESS_TOKEN_CACHE`).
    pub cache: bool,
}

/// Client ID, scope, service account, and the client certificate's notAfter: a token
/// fetched for one certificate is never handed to another certificate of the same client, whose
/// notAfter may come sooner.
type Key = (String, String, String, Option<i64>);

/// What a cached token must have left to be handed out: Google's client libraries treat a token
/// with less than about four minutes left as expired and would fetch it again at once.
const MIN_REMAINING: Duration = Duration::from_secs(300);

/// The result of one upstream exchange, shared by every request that waits for it.
type Pending = Shared<BoxFuture<'static, Result<AccessToken, Failure>>>;

#[derive(Default)]
struct Slot {
    /// The cached token, when to stop reusing it, and when it expires.
    token: Option<(AccessToken, Deadline, Deadline)>,
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
    metrics: Arc<Metrics>,
    /// Never held across an await: waiting happens on the shared future, outside the lock.
    slots: Mutex<HashMap<Key, Slot>>,
}

impl GoogleAccess {
    /// Wires the backend; cache hits and misses are counted into `metrics`.
    pub fn new(
        settings: GoogleAccessSettings,
        sts: StsClient,
        iam: IamCredentialsClient,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            exchange: Arc::new(Exchange { settings, sts, iam }),
            metrics,
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl Exchange {
    async fn fetch(
        &self,
        id_token: &str,
        scope: &str,
        service_account: Option<&str>,
        lifetime: i64,
        deadline: Deadline,
    ) -> Result<AccessToken, Failure> {
        let federated = self
            .sts
            .exchange(&self.settings.audience, scope, id_token, deadline)
            .await?;
        let Some(account) = service_account else {
            return Ok(AccessToken {
                token: federated.access_token,
                expires_in: federated.expires_in,
                scope: federated.scope.unwrap_or_else(|| scope.to_owned()),
            });
        };
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        let (token, expiry) = self
            .iam
            .generate_access_token(
                account,
                &scopes,
                lifetime,
                &federated.access_token,
                deadline,
            )
            .await?;
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

impl GoogleAccess {
    /// The impersonated token's lifetime: `ACCESS_TOKEN_LIFETIME` (not the policy's ID-token
    /// lifetime: Google's libraries refresh a token with less than about four minutes left, so
    /// short impersonated tokens would be fetched again on almost every call), capped by the
    /// client certificate's notAfter where the flow knows it, so the token does not outlive the
    /// certificate. The federated token of a request without a service account lives as long
    /// as Google's STS decides (one hour).
    fn lifetime_for(&self, client: &Client) -> i64 {
        let lifetime = self.exchange.settings.lifetime_seconds;
        match client.facts.not_after {
            Some(not_after) => lifetime.min(not_after.saturating_sub(Clock::system().now()).max(1)),
            None => lifetime,
        }
    }
}

/// What the cache has for a key: a token to reuse, or the exchange to wait for.
enum Lookup {
    Hit(AccessToken),
    Wait(Pending),
}

impl GoogleAccess {
    /// The cached token for `key` while it is fresh, else the exchange under way for it (one
    /// is started when none is).
    fn lookup(&self, key: &Key, request: Request<'_>) -> Result<Lookup, Failure> {
        let Ok(mut slots) = self.slots.lock() else {
            return Err(Failure::server(
                "The access-token cache is unusable; this is a fault of the service",
            ));
        };
        if slots.len() >= 10_000 && !slots.contains_key(key) {
            slots.retain(|_, slot| {
                slot.pending.is_some()
                    || slot
                        .token
                        .as_ref()
                        .is_some_and(|(_, _, exp)| !exp.is_past())
            });
        }
        let slot = slots.entry(key.clone()).or_default();
        if let Some((token, refresh_at, expires_at)) = &slot.token
            && !refresh_at.is_past()
        {
            self.metrics.cache(true);
            let remaining = expires_at.remaining().as_secs();
            return Ok(Lookup::Hit(AccessToken {
                expires_in: i64::try_from(remaining).unwrap_or(0),
                ..token.clone()
            }));
        }
        // An identical exchange is under way: wait for its result, success or failure.
        if let Some(pending) = &slot.pending {
            return Ok(Lookup::Wait(pending.clone()));
        }
        self.metrics.cache(false);
        let pending = request.start(self.exchange.clone());
        slot.pending = Some(pending.clone());
        Ok(Lookup::Wait(pending))
    }

    /// Records the result of the exchange `pending` for `key`, if it is still the one of the
    /// slot (the first waiter back does it): the token is reused for half its lifetime, and
    /// never in its last [`MIN_REMAINING`].
    fn record(
        &self,
        key: &Key,
        pending: &Pending,
        started: Stopwatch,
        result: &Result<AccessToken, Failure>,
    ) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(key)
            && slot.pending.as_ref().is_some_and(|p| p.ptr_eq(pending))
        {
            slot.pending = None;
            if let Ok(token) = result {
                let lifetime = Duration::from_secs(u64::try_from(token.expires_in).unwrap_or(0));
                let reuse = (lifetime / 2).min(lifetime.saturating_sub(MIN_REMAINING));
                // Both count from the request's start: the exchange took part of the lifetime.
                let elapsed = started.elapsed();
                slot.token = Some((
                    token.clone(),
                    Deadline::after(reuse.saturating_sub(elapsed)),
                    Deadline::after(lifetime.saturating_sub(elapsed)),
                ));
            }
        }
    }
}

/// One request's part of an exchange: what [`Exchange::fetch`] needs.
#[derive(Clone, Copy)]
struct Request<'a> {
    id_token: &'a str,
    scope: &'a str,
    service_account: Option<&'a str>,
    lifetime: i64,
    deadline: Deadline,
}

impl Request<'_> {
    /// Starts the exchange as a future that every identical request can wait on.
    fn start(self, exchange: Arc<Exchange>) -> Pending {
        let (id_token, scope) = (self.id_token.to_owned(), self.scope.to_owned());
        let (account, deadline) = (self.service_account.map(str::to_owned), self.deadline);
        let lifetime = self.lifetime;
        async move {
            exchange
                .fetch(&id_token, &scope, account.as_deref(), lifetime, deadline)
                .await
        }
        .boxed()
        .shared()
    }
}

#[async_trait]
impl AccessTokenBackend for GoogleAccess {
    async fn access_token(
        &self,
        client: &Client,
        id_token: &str,
        scope: &str,
        service_account: Option<&str>,
        deadline: Deadline,
    ) -> Result<AccessToken, Failure> {
        if let Some(account) = service_account
            && !is_email(account)
        {
            return Err(Failure::invalid_request(format!(
                "service_account '{}' is not a service account email; name one such as NAME@PROJECT.iam.gserviceaccount.com",
                crate::model::truncate(account, 64)
            )));
        }
        let mut scopes: Vec<&str> = scope.split_whitespace().collect();
        scopes.sort_unstable();
        scopes.dedup();
        let scope = scopes.join(" ");
        let lifetime = self.lifetime_for(client);
        if !self.exchange.settings.cache {
            return self
                .exchange
                .fetch(id_token, &scope, service_account, lifetime, deadline)
                .await;
        }
        let key = (
            client.client_id.clone(),
            scope.clone(),
            service_account.unwrap_or("").to_owned(),
            client.facts.not_after,
        );
        let request = Request {
            id_token,
            scope: &scope,
            service_account,
            lifetime,
            deadline,
        };
        let started = Stopwatch::start();
        let pending = match self.lookup(&key, request)? {
            Lookup::Hit(token) => return Ok(token),
            Lookup::Wait(pending) => pending,
        };
        let result = pending.clone().await;
        self.record(&key, &pending, started, &result);
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
