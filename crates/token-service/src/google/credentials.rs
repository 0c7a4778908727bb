//! The service's own Google credentials: the metadata server on Google Cloud, or
//! application-default credentials from `GOOGLE_APPLICATION_CREDENTIALS` in development
//! (`service_account` key files and `authorized_user` files as `gcloud auth
//! application-default login` writes them). Access tokens are cached and refreshed ahead of
//! expiry, with one refresh in flight however many requests wait for it.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use rustls_pki_types::pem::SectionKind;
use serde_json::{Value, json};

use super::metadata::{MetadataClient, token_fields};
use super::{Upstream, UpstreamError};
use crate::clock::{Clock, Deadline};
use crate::error::{Failure, StartupError};

const OAUTH_API: &str = "OAuth token endpoint";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where the service's own access tokens come from.
pub enum Credentials {
    /// The metadata server.
    Metadata(MetadataClient),
    /// A service-account key file.
    ServiceAccountKey {
        /// `client_email`.
        email: String,
        /// `private_key_id`.
        key_id: String,
        /// The private key. Never logged.
        key: RsaKeyPair,
        /// `token_uri`.
        token_uri: String,
    },
    /// A user's refresh token.
    AuthorizedUser {
        /// OAuth client ID.
        client_id: String,
        /// OAuth client secret. Never logged.
        client_secret: String,
        /// Refresh token. Never logged.
        refresh_token: String,
        /// Token endpoint.
        token_uri: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Metadata(_) => write!(f, "Credentials::Metadata"),
            Self::ServiceAccountKey { email, .. } => {
                write!(f, "Credentials::ServiceAccountKey({email})")
            }
            Self::AuthorizedUser { client_id, .. } => {
                write!(f, "Credentials::AuthorizedUser({client_id})")
            }
        }
    }
}

impl Credentials {
    /// Reads an application-default credentials file; a problem names
    /// `GOOGLE_APPLICATION_CREDENTIALS` and the file.
    pub fn from_adc_file(path: &std::path::Path) -> Result<Self, StartupError> {
        let problem = |text: String| StartupError::setting("GOOGLE_APPLICATION_CREDENTIALS", text);
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| problem(format!("cannot read '{shown}': {e}")))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|_| problem(format!("'{shown}' is not JSON")))?;
        let field = |name: &str| -> Result<String, StartupError> {
            v[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| problem(format!("'{shown}' has no \"{name}\"")))
        };
        let token_uri = v["token_uri"]
            .as_str()
            .unwrap_or(DEFAULT_TOKEN_URI)
            .to_owned();
        match v["type"].as_str() {
            Some("service_account") => Ok(Self::ServiceAccountKey {
                key: rsa_key(&field("private_key")?).map_err(|what| {
                    problem(format!("the private_key of '{shown}' is not {what}"))
                })?,
                email: field("client_email")?,
                key_id: field("private_key_id")?,
                token_uri,
            }),
            Some("authorized_user") => Ok(Self::AuthorizedUser {
                client_id: field("client_id")?,
                client_secret: field("client_secret")?,
                refresh_token: field("refresh_token")?,
                token_uri,
            }),
            other => Err(problem(format!(
                "credential type {:?} of '{shown}' is not supported; supported: service_account, authorized_user",
                other.unwrap_or("(none)"),
            ))),
        }
    }

    /// The service-account email these credentials stand for, when the file says.
    pub fn email(&self) -> Option<&str> {
        match self {
            Self::ServiceAccountKey { email, .. } => Some(email),
            _ => None,
        }
    }

    async fn fetch(
        &self,
        upstream: &Upstream,
        deadline: Deadline,
    ) -> Result<(String, u64), UpstreamError> {
        match self {
            Self::Metadata(client) => client.token(deadline).await,
            Self::ServiceAccountKey {
                email,
                key_id,
                key,
                token_uri,
            } => {
                let assertion = self.assertion(email, key_id, key, token_uri)?;
                let form = [
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", assertion.as_str()),
                ];
                oauth_token(upstream, token_uri, &form, deadline).await
            }
            Self::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.as_str()),
                    ("refresh_token", refresh_token.as_str()),
                ];
                oauth_token(upstream, token_uri, &form, deadline).await
            }
        }
    }

    /// A JWT-bearer assertion (RFC 7523) signed with the service-account key.
    fn assertion(
        &self,
        email: &str,
        key_id: &str,
        key: &RsaKeyPair,
        token_uri: &str,
    ) -> Result<String, UpstreamError> {
        let now = Clock::system().now();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": key_id});
        let claims = json!({"iss": email, "scope": CLOUD_PLATFORM, "aud": token_uri, "iat": now, "exp": now + 3600});
        let mut jwt = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; key.public_modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            jwt.as_bytes(),
            &mut signature,
        )
        .map_err(|_| UpstreamError::Malformed {
            api: OAUTH_API,
            message: "signing the assertion failed".into(),
        })?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }
}

/// The RSA key of a PKCS#8 PEM block; on failure, what the text is not (the caller names the
/// file).
fn rsa_key(pem: &str) -> Result<RsaKeyPair, &'static str> {
    let mut reader = pem.as_bytes();
    let der = match rustls_pki_types::pem::from_buf(&mut reader) {
        Ok(Some((SectionKind::PrivateKey, der))) => der,
        _ => return Err("a PKCS#8 PEM key"),
    };
    RsaKeyPair::from_pkcs8(&der).map_err(|_| "an RSA key")
}

async fn oauth_token(
    upstream: &Upstream,
    uri: &str,
    form: &[(&str, &str)],
    deadline: Deadline,
) -> Result<(String, u64), UpstreamError> {
    let body = upstream
        .retry(OAUTH_API, deadline, |timeout| {
            upstream.send_json(OAUTH_API, upstream.http().post(uri).form(form), timeout)
        })
        .await?;
    token_fields(OAUTH_API, &body, "access_token", "expires_in")
}

struct Cached {
    token: String,
    refresh_at: Deadline,
    expires_at: Deadline,
}

/// One refresh of the service's own token, shared by every caller that waits for it.
type Refresh = Shared<BoxFuture<'static, Result<(String, u64), UpstreamError>>>;

/// Cached access tokens of the service itself.
pub struct TokenSource {
    source: Arc<(Credentials, Upstream)>,
    cache: RwLock<Option<Cached>>,
    /// The refresh under way. Never held across an await: callers wait on the shared future.
    refresh: Mutex<Option<Refresh>>,
}

impl TokenSource {
    /// A token source over `credentials`.
    pub fn new(credentials: Credentials, upstream: Upstream) -> Self {
        Self {
            source: Arc::new((credentials, upstream)),
            cache: RwLock::new(None),
            refresh: Mutex::new(None),
        }
    }

    fn cached(&self, usable: impl Fn(&Cached) -> bool) -> Option<String> {
        let cache = self.cache.read().ok()?;
        cache
            .as_ref()
            .filter(|c| usable(c))
            .map(|c| c.token.clone())
    }

    fn store(&self, token: &str, lifetime: u64) {
        let lifetime = Duration::from_secs(lifetime);
        // Refresh five minutes before expiry, or halfway through a short lifetime.
        let refresh_in = lifetime
            .saturating_sub(Duration::from_secs(300))
            .max(lifetime / 2);
        if let Ok(mut cache) = self.cache.write() {
            *cache = Some(Cached {
                token: token.to_owned(),
                refresh_at: Deadline::after(refresh_in),
                expires_at: Deadline::after(lifetime),
            });
        }
    }

    /// A valid access token: the cached one until it is due for refresh, else a fresh one.
    /// Concurrent callers share one refresh. If a refresh fails while the old token is still
    /// valid, the old token is used.
    pub async fn token(&self, deadline: Deadline) -> Result<String, Failure> {
        self.refreshed(deadline).await.map_err(Failure::from)
    }

    async fn refreshed(&self, deadline: Deadline) -> Result<String, UpstreamError> {
        let fresh = |c: &Cached| !c.refresh_at.is_past();
        if let Some(token) = self.cached(fresh) {
            return Ok(token);
        }
        let pending = {
            let Ok(mut refresh) = self.refresh.lock() else {
                return Err(UpstreamError::Unreachable {
                    api: OAUTH_API,
                    message: "the token cache is unusable".into(),
                });
            };
            match refresh.as_ref() {
                Some(pending) => pending.clone(),
                None => {
                    let source = self.source.clone();
                    let pending = async move { source.0.fetch(&source.1, deadline).await }
                        .boxed()
                        .shared();
                    *refresh = Some(pending.clone());
                    pending
                }
            }
        };
        let result = pending.clone().await;
        // The first caller back from the refresh records it (cache first, then the refresh is
        // cleared, so nobody sees neither); the others only read the result.
        let first = self.refresh.lock().is_ok_and(|mut refresh| {
            let mine = refresh.as_ref().is_some_and(|p| p.ptr_eq(&pending));
            if mine {
                if let Ok((token, lifetime)) = &result {
                    self.store(token, *lifetime);
                }
                *refresh = None;
            }
            mine
        });
        match result {
            Ok((token, lifetime)) => {
                if first {
                    tracing::info!(
                        event = "credentials_refreshed",
                        lifetime_s = lifetime,
                        "refreshed the service's own access token"
                    );
                }
                Ok(token)
            }
            Err(error) => {
                let still_valid = |c: &Cached| c.expires_at.remaining() > Duration::from_secs(10);
                match self.cached(still_valid) {
                    Some(token) => {
                        tracing::warn!(event = "credentials_refresh_failed", reason = %error, "refreshing the service's own access token failed; using the current one: {error}");
                        Ok(token)
                    }
                    None => Err(error),
                }
            }
        }
    }
}
