//! One kind of token kept fresh: the last good token, the state of its refreshes, and the
//! single-flight refresh that makes many concurrent callers cause one broker request.
//!
//! - A token is **usable** while more than its floor is left (10 s for ID tokens, 300 s for
//!   access tokens: Google's libraries refresh a token with less than about 4 minutes left).
//! - It is **due** for a refresh at half its life, and at the latest one minute before it
//!   stops being usable.
//! - A failed refresh keeps the last good token; the keeper retries with jittered
//!   exponential backoff (1 s doubling to 60 s) and wakes when the token stops being usable,
//!   so that callers then get a clear error instead of an expired token.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::broker::{Broker, BrokerError, Query, Tokens, unix_now};

/// Seconds an ID token must still have to be handed out.
pub const ID_TOKEN_FLOOR: u64 = 10;
/// Seconds an access token must still have to be handed out (`expires_in` ≥ 300).
pub const ACCESS_TOKEN_FLOOR: u64 = 300;
/// Longest pause between two failed refreshes.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Seconds AWS credentials must still have to be handed out (botocore refreshes
/// credentials with less than 15 minutes left, and must with less than 10).
pub const AWS_CREDENTIALS_FLOOR: u64 = 300;

/// What a slot holds: the ID token alone, an access token for a scope, or an AWS role's
/// credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    IdToken,
    AccessToken,
    AwsCredentials,
}

/// A token that can be handed out now, with its expiry (unix seconds).
#[derive(Clone)]
pub struct Current {
    pub token: String,
    pub expires_at: u64,
    /// The ID token's claims (for its `aud`); `Null` for access tokens.
    pub claims: serde_json::Value,
    /// The credentials, for [`Kind::AwsCredentials`] (`token` is then their key ID).
    pub aws: Option<crate::aws::AwsCredentials>,
}

/// Why a slot has no usable token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("token-client serve has no valid {what}: {reason}. It keeps retrying; see GET /status")]
    NoToken { what: &'static str, reason: String },
    /// The broker refused (e.g. a scope or service account outside the client's policy).
    #[error("The broker refused the {what} ({code}): {message}")]
    Refused {
        what: &'static str,
        code: String,
        message: String,
    },
}

#[derive(Default)]
struct State {
    token: Option<Current>,
    obtained_at: u64,
    generation: u64,
    refreshes: u64,
    failures: u32,
    last_attempt: Option<u64>,
    last_success: Option<u64>,
    last_error: Option<BrokerFailure>,
}

#[derive(Clone)]
struct BrokerFailure {
    message: String,
    refused: Option<(String, String)>,
}

/// One kind of token for one query; share it (`Arc<Slot>`).
pub struct Slot {
    pub kind: Kind,
    pub query: Query,
    broker: Arc<Broker>,
    state: Mutex<State>,
    refreshing: tokio::sync::Mutex<()>,
    /// Woken after each successful refresh (the keeper then writes the token files).
    refreshed: tokio::sync::Notify,
}

impl Slot {
    pub fn new(kind: Kind, query: Query, broker: Arc<Broker>) -> Arc<Self> {
        Arc::new(Self {
            kind,
            query,
            broker,
            state: Mutex::new(State::default()),
            refreshing: tokio::sync::Mutex::new(()),
            refreshed: tokio::sync::Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn floor(&self) -> u64 {
        match self.kind {
            Kind::IdToken => ID_TOKEN_FLOOR,
            Kind::AccessToken => ACCESS_TOKEN_FLOOR,
            Kind::AwsCredentials => AWS_CREDENTIALS_FLOOR,
        }
    }

    /// Words for messages: "ID token", "ID token for audience …" or "access token (scope …)".
    pub fn what(&self) -> String {
        match self.kind {
            Kind::IdToken => match &self.query.audience {
                Some(audience) => format!("ID token for audience {audience}"),
                None => "ID token".into(),
            },
            Kind::AccessToken => format!(
                "access token (scope {})",
                self.query.scope.as_deref().unwrap_or("")
            ),
            Kind::AwsCredentials => format!(
                "AWS credentials of role {}",
                self.query.aws.as_ref().map_or("", |a| a.role_arn.as_str())
            ),
        }
    }

    fn short_what_expires(&self) -> &'static str {
        match self.kind {
            Kind::IdToken => "ID token expires in",
            Kind::AccessToken => "access token expires in",
            Kind::AwsCredentials => "AWS credentials expire in",
        }
    }

    fn short_what(&self) -> &'static str {
        match self.kind {
            Kind::IdToken => "ID token",
            Kind::AccessToken => "access token",
            Kind::AwsCredentials => "AWS credentials",
        }
    }

    /// The token if it is usable now.
    pub fn usable(&self) -> Option<Current> {
        let now = unix_now();
        let floor = self.floor();
        self.state()
            .token
            .clone()
            .filter(|t| t.expires_at > now.saturating_add(floor))
    }

    /// The `aud` of the last token (usable or not; none before the first refresh).
    pub fn known_audiences(&self) -> Vec<String> {
        let state = self.state();
        let Some(token) = &state.token else {
            return Vec::new();
        };
        match &token.claims["aud"] {
            serde_json::Value::String(aud) => vec![aud.clone()],
            serde_json::Value::Array(auds) => auds
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A usable token: the current one, or else one refresh (shared with every concurrent
    /// caller) and its result.
    pub async fn get(&self) -> Result<Current, Unavailable> {
        if let Some(token) = self.usable() {
            return Ok(token);
        }
        let (seen, just_failed) = {
            let state = self.state();
            let just_failed = state.failures > 0
                && state
                    .last_attempt
                    .is_some_and(|t| unix_now().saturating_sub(t) < 1);
            (state.generation, just_failed)
        };
        // A failure in this second stands (a crowd of callers during an outage does not
        // become a crowd of broker requests).
        if !just_failed {
            self.refresh(seen).await;
        }
        self.usable().ok_or_else(|| self.unavailable())
    }

    fn unavailable(&self) -> Unavailable {
        let what = self.short_what();
        let state = self.state();
        match &state.last_error {
            Some(BrokerFailure {
                refused: Some((code, message)),
                ..
            }) => Unavailable::Refused {
                what,
                code: code.clone(),
                message: message.clone(),
            },
            Some(failure) => Unavailable::NoToken {
                what,
                reason: match &state.token {
                    Some(t) => format!(
                        "the last one expired at {} (unix time) and the refresh failed: {}",
                        t.expires_at, failure.message
                    ),
                    None => failure.message.clone(),
                },
            },
            None => Unavailable::NoToken {
                what,
                reason: "the last one expired and no refresh has completed yet".into(),
            },
        }
    }

    /// One broker request unless another caller's refresh finished since `seen` (then its
    /// result stands for this one too). Returns whether this call asked the broker.
    pub async fn refresh(&self, seen: u64) -> bool {
        let _flight = self.refreshing.lock().await;
        if self.state().generation != seen {
            return false;
        }
        let started = unix_now();
        let result = self.broker.fetch(&self.query).await;
        let result = result
            .map_err(|e| failure(&e))
            .and_then(|tokens| self.current(&tokens));
        let mut state = self.state();
        state.generation += 1;
        state.last_attempt = Some(started);
        match result {
            Ok(current) => {
                eprintln!(
                    "token-client serve: {} refreshed; it expires in {} s",
                    self.what(),
                    current.expires_at.saturating_sub(unix_now())
                );
                state.token = Some(current);
                state.obtained_at = started;
                state.refreshes += 1;
                state.failures = 0;
                state.last_success = Some(started);
                state.last_error = None;
                self.refreshed.notify_one();
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                state.last_error = Some(e);
            }
        }
        true
    }

    /// The token of this slot's kind in the broker's answer, checked for its lifetime.
    fn current(&self, tokens: &Tokens) -> Result<Current, BrokerFailure> {
        let now = unix_now();
        let (token, expires_at, claims) = match self.kind {
            Kind::IdToken => (
                tokens.id_token.clone(),
                tokens.id_token_expires_at,
                claims(&tokens.id_token),
            ),
            Kind::AccessToken => match &tokens.access_token {
                Some(a) => (a.token.clone(), a.expires_at, serde_json::Value::Null),
                None => return Err(plain("the broker's answer holds no access token".into())),
            },
            Kind::AwsCredentials => match &tokens.aws_credentials {
                Some(c) => (
                    c.access_key_id.clone(),
                    c.expires_at().unwrap_or(0),
                    serde_json::Value::Null,
                ),
                None => return Err(plain("the broker's answer holds no AWS credentials".into())),
            },
        };
        let left = expires_at.saturating_sub(now);
        let floor = self.floor();
        if left <= floor.saturating_add(30) {
            return Err(plain(format!(
                "the broker's {} {left} s, but token-client serve hands out only {} with more than {floor} s left ({} refresh earlier); raise the broker's {}",
                self.short_what_expires(),
                match self.kind {
                    Kind::AwsCredentials => "AWS credentials",
                    Kind::IdToken => "ID tokens",
                    Kind::AccessToken => "access tokens",
                },
                match self.kind {
                    Kind::AwsCredentials => "AWS's SDKs",
                    _ => "Google's libraries",
                },
                match (self.kind, &self.query.audience) {
                    (Kind::IdToken, Some(_)) =>
                        "ID-token lifetime for this audience (TOKEN_AUDIENCE_VALIDITY, in minutes, or the policy's token_lifetime for it)",
                    (Kind::IdToken, None) =>
                        "ID-token lifetime (TOKEN_VALIDITY, in minutes, or the policy's token_lifetime)",
                    (Kind::AccessToken, _) =>
                        "impersonated-token lifetime (ACCESS_TOKEN_LIFETIME, in seconds; an hour by default)",
                    (Kind::AwsCredentials, _) =>
                        "credentials' duration (--aws-duration-seconds, within the role's maximum session duration)",
                },
            )));
        }
        Ok(Current {
            token,
            expires_at,
            claims,
            aws: tokens
                .aws_credentials
                .clone()
                .filter(|_| self.kind == Kind::AwsCredentials),
        })
    }

    /// Whether the keeper should refresh now: no token yet, the last attempt failed (the
    /// keeper has already waited its backoff), or the token is due.
    pub fn due(&self) -> bool {
        let state = self.state();
        state.failures > 0 || self.due_at(&state).is_none_or(|due| unix_now() >= due)
    }

    /// Half the token's life, and at the latest one minute before it stops being usable;
    /// for a short-lived token no earlier than half its usable time (no refresh loop).
    fn due_at(&self, state: &State) -> Option<u64> {
        let token = state.token.as_ref()?;
        let life = token.expires_at.saturating_sub(state.obtained_at);
        let half = state.obtained_at.saturating_add(life / 2);
        let usable_until = token.expires_at.saturating_sub(self.floor());
        let latest = usable_until.saturating_sub(60);
        let earliest = state.obtained_at + usable_until.saturating_sub(state.obtained_at) / 2;
        Some(half.min(latest).max(earliest))
    }

    /// How long the keeper sleeps: until the token is due; after a failure the jittered
    /// backoff, but no later than the moment the token stops being usable.
    pub fn next_wake(&self) -> Duration {
        let now = unix_now();
        let state = self.state();
        let unusable_in = state.token.as_ref().map(|t| {
            t.expires_at
                .saturating_sub(self.floor())
                .saturating_sub(now)
        });
        if state.failures > 0 || state.token.is_none() {
            let pause = jitter(backoff(state.failures));
            return match unusable_in {
                Some(left) if left > 0 => pause.min(Duration::from_secs(left)),
                _ => pause,
            };
        }
        let due = self.due_at(&state).unwrap_or(now);
        Duration::from_secs(due.saturating_sub(now).max(1))
    }

    /// Resolves after the next successful refresh (or at once if one happened since the
    /// last call).
    pub async fn refreshed(&self) {
        self.refreshed.notified().await;
    }

    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// The last refresh error, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.state().last_error.as_ref().map(|e| e.message.clone())
    }

    /// Consecutive failed refreshes.
    pub fn failures(&self) -> u32 {
        self.state().failures
    }

    /// The slot's state for `GET /status` (no token).
    pub fn status(&self) -> serde_json::Value {
        let now = unix_now();
        let state = self.state();
        let expires_at = state.token.as_ref().map(|t| t.expires_at);
        serde_json::json!({
            "kind": match self.kind { Kind::IdToken => "id_token", Kind::AccessToken => "access_token", Kind::AwsCredentials => "aws_credentials" },
            "scope": self.query.scope,
            "service_account": self.query.service_account,
            "audience": self.query.audience,
            "serving": expires_at.is_some_and(|e| e > now.saturating_add(self.floor())),
            "expires_at": expires_at,
            "expires_in": expires_at.map(|e| e.saturating_sub(now)),
            "last_refresh": state.last_success,
            "last_attempt": state.last_attempt,
            "last_error": state.last_error.as_ref().map(|e| e.message.clone()),
            "consecutive_failures": state.failures,
            "refreshes": state.refreshes,
        })
    }
}

fn plain(message: String) -> BrokerFailure {
    BrokerFailure {
        message,
        refused: None,
    }
}

fn failure(e: &BrokerError) -> BrokerFailure {
    BrokerFailure {
        message: e.to_string(),
        refused: match e {
            BrokerError::Refused { code, message, .. } => Some((code.clone(), message.clone())),
            _ => None,
        },
    }
}

/// The claims of a JWT's payload (`Null` when it is not one).
pub fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    jwt.split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// 1 s after the first failure, doubling, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// "Full jitter": a random pause between half and all of `max`.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(unix_now());
    let fraction = u32::try_from(hasher.finish() % 1000).unwrap_or(0);
    max / 2 + max / 2 * fraction / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws_tokens(expires_in: u64) -> Tokens {
        let at = unix_now() + expires_in;
        let days = at / 86_400;
        // Civil date of `days` (Howard Hinnant's algorithm), for an RFC 3339 expiration.
        let z = i64::try_from(days).unwrap() + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let secs = at % 86_400;
        let expiration = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        Tokens {
            id_token: String::new(),
            id_token_expires_at: 0,
            access_token: None,
            aws_credentials: Some(crate::aws::AwsCredentials {
                access_key_id: "ASIAX".into(),
                secret_access_key: "s".into(),
                session_token: "t".into(),
                expiration,
            }),
        }
    }

    #[test]
    fn aws_credentials_are_kept_only_with_more_than_their_floor_left() {
        let broker = Arc::new(Broker::new(crate::settings::BrokerSettings {
            token_url: "https://broker.test/token".parse().unwrap(),
            broker: "https://broker.test".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: None,
            timeout: Duration::from_secs(1),
        }));
        let slot = Slot::new(Kind::AwsCredentials, Query::default(), broker);
        let current = slot
            .current(&aws_tokens(3600))
            .map_err(|e| e.message)
            .unwrap();
        assert_eq!(current.token, "ASIAX");
        assert!(current.expires_at.abs_diff(unix_now() + 3600) <= 1);
        assert_eq!(current.aws.unwrap().session_token, "t");
        let short = slot.current(&aws_tokens(AWS_CREDENTIALS_FLOOR + 20));
        let message = short.err().map(|e| e.message).unwrap_or_default();
        assert!(
            message.contains("AWS credentials expire in") && message.contains("AWS's SDKs"),
            "{message}"
        );
        assert!(slot.usable().is_none());
    }

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), MAX_BACKOFF);
        for _ in 0..20 {
            let pause = jitter(Duration::from_secs(8));
            assert!(pause >= Duration::from_secs(4) && pause <= Duration::from_secs(8));
        }
    }
}
