//! The client of Token Service's `POST /token`.
//!
//! ```no_run
//! # async fn demo(settings: token_client::settings::BrokerSettings) -> Result<(), token_client::broker::BrokerError> {
//! use token_client::broker::{Broker, Query};
//! let broker = Broker::new(settings);
//! let tokens = broker.fetch(&Query::id_token()).await?;
//! println!("expires at {}", tokens.id_token_expires_at);
//! # Ok(()) }
//! ```
//!
//! - One [`Broker`] per process; share it (`Arc<Broker>`): [`Broker::fetch`] takes `&self`
//!   and may run concurrently. It does not cache tokens and does not retry: callers decide
//!   (the executable source caches in its output file; `serve` refreshes ahead of expiry).
//! - **Certificate rotation:** before every request the certificate, key and CA files are
//!   read again; when their contents changed (a renewed certificate, a Kubernetes secret's
//!   symlink swap) a new TLS client is built with them, so rotation needs no restart and a
//!   new connection is made with the new certificate. Unchanged files reuse the client and
//!   its kept-alive connections.
//! - Every failure is a [`BrokerError`]: [`BrokerError::Refused`] carries the broker's OAuth
//!   error (`status`, `code`, `message`) to show as it is; the other variants say the broker
//!   could not be asked (unreachable, timeout, unusable files) or answered something that is
//!   not Token Service's JSON. [`BrokerError::code`] gives a stable string code for each.
//! - [`Tokens`] never prints its tokens (`Debug` redacts them); expiries are unix seconds.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;

use crate::settings::BrokerSettings;

/// What to ask the broker for, besides the ID token it always returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Query {
    /// Space-separated OAuth scopes: the broker exchanges the ID token at Google STS and
    /// returns an access token.
    pub scope: Option<String>,
    /// With `scope`: the broker impersonates this service account and returns its token.
    pub service_account: Option<String>,
    /// The ID token's audience (`aud`), sent as the form parameter `audience`; unset: the
    /// broker's default audience. The broker must allow it (`TOKEN_AUDIENCES` and the
    /// policy), else it refuses with 403 `access_denied`. Never sent with a `scope`: the
    /// access token comes from Google's STS, which accepts only the default audience (the
    /// broker answers the pair with 400), so a query with both asks for the scope alone.
    pub audience: Option<String>,
    /// An AWS role: the broker exchanges an ID token for its credentials
    /// (`aws_role_arn` and the optional session name and duration); sent alone, without a
    /// scope or an audience (the broker refuses those pairs).
    pub aws: Option<crate::aws::AwsRole>,
}

impl Query {
    /// The ID token only.
    pub fn id_token() -> Self {
        Self::default()
    }

    /// The ID token only, for `audience`.
    pub fn id_token_for(audience: &str) -> Self {
        Self {
            audience: Some(audience.to_owned()),
            ..Self::default()
        }
    }

    /// The form parameters of this query.
    fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if let Some(aws) = &self.aws {
            form.push(("aws_role_arn", aws.role_arn.clone()));
            if let Some(name) = &aws.session_name {
                form.push(("aws_role_session_name", name.clone()));
            }
            if let Some(seconds) = aws.duration_seconds {
                form.push(("aws_duration_seconds", seconds.to_string()));
            }
            return form;
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.clone()));
        }
        if let Some(account) = &self.service_account {
            form.push(("service_account", account.clone()));
        }
        if let (Some(audience), None) = (&self.audience, &self.scope) {
            form.push(("audience", audience.clone()));
        }
        form
    }
}

/// The broker's answer. `Debug` does not show the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    pub id_token: String,
    /// The ID token's `exp` (unix seconds).
    pub id_token_expires_at: u64,
    /// Present when the query had a scope.
    pub access_token: Option<AccessToken>,
    /// Present when the query had an AWS role.
    pub aws_credentials: Option<crate::aws::AwsCredentials>,
}

/// A Google access token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    /// Unix seconds: the time of the answer plus the broker's `expires_in`.
    pub expires_at: u64,
    /// The scopes the broker reports, space-separated.
    pub scope: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("id_token", &"<redacted>")
            .field("id_token_expires_at", &self.id_token_expires_at)
            .field("access_token", &self.access_token)
            .field("aws_credentials", &self.aws_credentials)
            .finish()
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Why [`Broker::fetch`] returned no tokens. Messages are sentences that say what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker answered with its OAuth error (`{"error", "error_description"}`).
    #[error("The broker refused the request ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: DNS, connection, TLS handshake (e.g. the server certificate is not trusted).
    #[error(
        "The broker at {url} could not be reached: {detail}. Check TOKEN_CLIENT_BROKER, TOKEN_CLIENT_CA and the network"
    )]
    Unreachable { url: String, detail: String },
    /// No answer within the timeout.
    #[error(
        "The broker at {url} did not answer within {seconds} s; it may be overloaded or unreachable (TOKEN_CLIENT_TIMEOUT sets the limit)"
    )]
    Timeout { url: String, seconds: u64 },
    /// An answer that is not Token Service's.
    #[error(
        "The broker at {url} gave an invalid answer (HTTP {status}): {detail}; check that TOKEN_CLIENT_BROKER is Token Service"
    )]
    InvalidResponse {
        url: String,
        status: u16,
        detail: String,
    },
    /// The certificate, key or CA file cannot be used.
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
}

impl BrokerError {
    /// A stable code: the broker's own for a refusal, else `broker_unreachable`,
    /// `broker_timeout`, `invalid_broker_response` or `client_credentials_unusable`.
    pub fn code(&self) -> &str {
        match self {
            Self::Refused { code, .. } => code,
            Self::Unreachable { .. } => "broker_unreachable",
            Self::Timeout { .. } => "broker_timeout",
            Self::InvalidResponse { .. } => "invalid_broker_response",
            Self::Credentials(_) => "client_credentials_unusable",
        }
    }
}

/// A certificate, key or CA file that cannot be read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("The {what} file {path} could not be read ({detail}); check {setting}")]
    Unreadable {
        what: &'static str,
        path: String,
        setting: &'static str,
        detail: String,
    },
    #[error(
        "The client certificate {cert} and key {key} are not a usable PEM certificate and private key ({detail}); check TOKEN_CLIENT_CERT and TOKEN_CLIENT_KEY"
    )]
    Identity {
        cert: String,
        key: String,
        detail: String,
    },
    #[error("The CA file {path} holds no usable PEM certificate ({detail}); check TOKEN_CLIENT_CA")]
    Ca { path: String, detail: String },
}

/// The files a client was built from, and that client.
struct Loaded {
    files: Files,
    client: reqwest::Client,
}

#[derive(PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

/// Client of one broker with the device's certificate. See the module documentation.
pub struct Broker {
    settings: BrokerSettings,
    loaded: Mutex<Option<Loaded>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("token_url", &self.settings.token_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A client of the broker in `settings`; files are read at the first [`Broker::fetch`].
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            loaded: Mutex::new(None),
        }
    }

    /// The settings this client was made with.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// One `POST /token`: the ID token and, when `query` has a scope, the access token.
    /// Reloads the certificate and key first when their files changed.
    pub async fn fetch(&self, query: &Query) -> Result<Tokens, BrokerError> {
        let client = self.client().await?;
        let url = self.settings.token_url.clone();
        let sent = client.post(url).form(&query.form()).send().await;
        let response = sent.map_err(|e| self.send_error(&e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| self.send_error(&e))?;
        let now = unix_now();
        if status == 200 {
            self.success(&body, query, now)
        } else {
            Err(self.refusal(status, &body))
        }
    }

    /// The client for the current files: the previous one when they did not change.
    async fn client(&self) -> Result<reqwest::Client, BrokerError> {
        let files = self.read_files().await?;
        if let Ok(loaded) = self.loaded.lock()
            && let Some(current) = loaded.as_ref()
            && current.files == files
        {
            return Ok(current.client.clone());
        }
        let client = self.build(&files)?;
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = Some(Loaded {
                files,
                client: client.clone(),
            });
        }
        Ok(client)
    }

    async fn read_files(&self) -> Result<Files, CredentialsError> {
        let s = &self.settings;
        let cert = read(&s.cert, "client certificate", "TOKEN_CLIENT_CERT").await?;
        let key = read(&s.key, "private key", "TOKEN_CLIENT_KEY").await?;
        let ca = match &s.ca {
            Some(path) => Some(read(path, "CA", "TOKEN_CLIENT_CA").await?),
            None => None,
        };
        Ok(Files { cert, key, ca })
    }

    fn build(&self, files: &Files) -> Result<reqwest::Client, CredentialsError> {
        let s = &self.settings;
        let mut pem = files.cert.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&files.key);
        let identity_error = |detail: String| CredentialsError::Identity {
            cert: s.cert.display().to_string(),
            key: s.key.display().to_string(),
            detail,
        };
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| identity_error(chain(&e)))?;
        let mut builder = reqwest::Client::builder()
            .identity(identity)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("token-client/", env!("CARGO_PKG_VERSION")));
        if let (Some(path), Some(ca)) = (&s.ca, &files.ca) {
            let ca_error = |detail: String| CredentialsError::Ca {
                path: path.display().to_string(),
                detail,
            };
            let roots =
                reqwest::Certificate::from_pem_bundle(ca).map_err(|e| ca_error(chain(&e)))?;
            if roots.is_empty() {
                return Err(ca_error("no CERTIFICATE block".into()));
            }
            builder = builder.tls_certs_only(roots);
        }
        builder.build().map_err(|e| identity_error(chain(&e)))
    }

    fn send_error(&self, e: &reqwest::Error) -> BrokerError {
        let url = self.settings.broker.clone();
        if e.is_timeout() {
            BrokerError::Timeout {
                url,
                seconds: self.settings.timeout.as_secs(),
            }
        } else {
            BrokerError::Unreachable {
                url,
                detail: chain(e),
            }
        }
    }

    fn invalid(&self, status: u16, detail: impl Into<String>) -> BrokerError {
        BrokerError::InvalidResponse {
            url: self.settings.broker.clone(),
            status,
            detail: detail.into(),
        }
    }

    fn success(&self, body: &[u8], query: &Query, now: u64) -> Result<Tokens, BrokerError> {
        let answer: Answer = serde_json::from_slice(body)
            .map_err(|e| self.invalid(200, format!("not the token JSON ({e})")))?;
        let id_token_expires_at = jwt_exp(&answer.id_token)
            .ok_or_else(|| self.invalid(200, "the id_token is not a JWT with an exp claim"))?;
        let access_token = match (answer.access_token, query.scope.is_some()) {
            (Some(token), _) => Some(AccessToken {
                token,
                expires_at: now.saturating_add(answer.expires_in.unwrap_or(0)),
                scope: answer.scope.unwrap_or_default(),
            }),
            (None, true) => {
                return Err(self.invalid(200, "a scope was asked for but no access_token came"));
            }
            (None, false) => None,
        };
        let aws_credentials = match (answer.aws_credentials, query.aws.is_some()) {
            (Some(c), _) if c.expires_at().is_none() => {
                return Err(self.invalid(
                    200,
                    "the aws_credentials expiration is not an RFC 3339 UTC time",
                ));
            }
            (None, true) => {
                return Err(
                    self.invalid(200, "an AWS role was asked for but no aws_credentials came")
                );
            }
            (credentials, _) => credentials,
        };
        Ok(Tokens {
            id_token: answer.id_token,
            id_token_expires_at,
            access_token,
            aws_credentials,
        })
    }

    fn refusal(&self, status: u16, body: &[u8]) -> BrokerError {
        match serde_json::from_slice::<OAuthError>(body) {
            Ok(e) => BrokerError::Refused {
                status,
                code: e.error,
                message: e.error_description.unwrap_or_default(),
            },
            Err(_) => self.invalid(status, "the body is not an OAuth error JSON"),
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    id_token: String,
    access_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
    aws_credentials: Option<crate::aws::AwsCredentials>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

async fn read(
    path: &std::path::Path,
    what: &'static str,
    setting: &'static str,
) -> Result<Vec<u8>, CredentialsError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| CredentialsError::Unreadable {
            what,
            path: path.display().to_string(),
            setting,
            detail: e.to_string(),
        })
}

/// An error and its sources, `: `-separated (reqwest's own message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The `exp` claim of a JWT (its signature is the relying party's business).
pub fn jwt_exp(jwt: &str) -> Option<u64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1700}"#);
        assert_eq!(jwt_exp(&format!("e30.{payload}.sig")), Some(1700));
        assert_eq!(jwt_exp("not-a-jwt"), None);
    }

    fn strs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        form.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn an_aws_role_is_sent_alone() {
        let query = Query {
            aws: Some(crate::aws::AwsRole {
                role_arn: "arn:aws:iam::123456789012:role/r".into(),
                session_name: Some("s1".into()),
                duration_seconds: Some(900),
            }),
            audience: Some("ignored".into()),
            ..Query::default()
        };
        assert_eq!(
            strs(&query.form()),
            [
                ("grant_type", "client_credentials"),
                ("aws_role_arn", "arn:aws:iam::123456789012:role/r"),
                ("aws_role_session_name", "s1"),
                ("aws_duration_seconds", "900"),
            ]
        );
    }

    #[test]
    fn the_audience_is_a_form_parameter_but_never_with_a_scope() {
        let audience = Query::id_token_for("sts.amazonaws.com");
        assert_eq!(
            strs(&audience.form()),
            [
                ("grant_type", "client_credentials"),
                ("audience", "sts.amazonaws.com")
            ]
        );
        assert_eq!(
            strs(&Query::id_token().form()),
            [("grant_type", "client_credentials")]
        );
        let both = Query {
            scope: Some("s".into()),
            ..audience
        };
        assert_eq!(
            strs(&both.form()),
            [("grant_type", "client_credentials"), ("scope", "s")]
        );
    }

    #[test]
    fn a_broker_is_shared_across_tasks() {
        fn shareable<T: Send + Sync>() {}
        fn spawnable<T: Send>(_: &T) {}
        shareable::<Broker>();
        shareable::<BrokerError>();
        let broker = Broker::new(BrokerSettings {
            token_url: "https://broker.test/token".parse().unwrap(),
            broker: "https://broker.test".into(),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: None,
            timeout: Duration::from_secs(1),
        });
        let query = Query::id_token();
        spawnable(&broker.fetch(&query));
    }

    #[test]
    fn debug_redacts_tokens() {
        let tokens = Tokens {
            id_token: "secret-id".into(),
            id_token_expires_at: 1,
            access_token: Some(AccessToken {
                token: "secret-access".into(),
                expires_at: 2,
                scope: "s".into(),
            }),
            aws_credentials: None,
        };
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
