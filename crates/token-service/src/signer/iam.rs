//! Keyless signing with the IAM Credentials `signJwt` method of the service's own service
//! account: Token Service holds no private key, and Google publishes the account's public keys
//! at `https://www.googleapis.com/service_accounts/v1/metadata/jwk/{email}`. The service account
//! needs Service Account Token Creator on itself.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Publication, Signer};
use crate::clock::Deadline;
use crate::error::Failure;
use crate::google::Upstream;
use crate::google::credentials::TokenSource;
use crate::google::iam_credentials::IamCredentialsClient;
use crate::google::metadata::MetadataClient;
use crate::readiness::{NotReady, RETRY_AFTER};
use crate::tasks::Background;

/// Where Google publishes a service account's public keys.
pub const GOOGLE_JWKS_BASE: &str = "https://www.googleapis.com/service_accounts/v1/metadata/jwk/";

/// The IAM signer.
pub struct IamSigner {
    email: OnceLock<String>,
    publication: OnceLock<Publication>,
    readiness: RwLock<Result<(), IdentityNotReady>>,
    tokens: Arc<TokenSource>,
    iam: IamCredentialsClient,
    upstream: Upstream,
}

impl IamSigner {
    /// A signer acting as `email` (when known up front: `SERVICE_ACCOUNT` or the key file).
    pub fn new(
        email: Option<String>,
        tokens: Arc<TokenSource>,
        iam: IamCredentialsClient,
        upstream: Upstream,
    ) -> Self {
        let signer = Self {
            email: OnceLock::new(),
            publication: OnceLock::new(),
            readiness: RwLock::new(Err(IdentityNotReady::NotChecked)),
            tokens,
            iam,
            upstream,
        };
        if let Some(email) = email {
            signer.set_email(email);
        }
        signer
    }

    fn set_email(&self, email: String) {
        let _ = self
            .publication
            .set(Publication::Uri(format!("{GOOGLE_JWKS_BASE}{email}")));
        let _ = self.email.set(email);
    }

    fn set_readiness(&self, value: Result<(), IdentityNotReady>) {
        *self
            .readiness
            .write()
            .unwrap_or_else(PoisonError::into_inner) = value;
    }

    /// Whether the identity check has succeeded, and if not, why.
    fn identity(&self) -> Result<(), IdentityNotReady> {
        self.readiness
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks once that the identity can be resolved and a token obtained, within
    /// `UPSTREAM_TIMEOUT` from the check's start (no request waits for it).
    async fn check(&self, metadata: Option<&MetadataClient>) -> Result<String, Failure> {
        let deadline = Deadline::after(self.upstream.timeout());
        if self.email.get().is_none()
            && let Some(metadata) = metadata
        {
            let email = metadata.email(deadline).await?;
            self.set_email(email);
        }
        self.tokens.token(deadline).await?;
        Ok(self.email.get().cloned().unwrap_or_default())
    }

    /// Checks the identity in the background until it succeeds, logging what it runs as; the
    /// signer is not ready (see `/readyz`) until then. The check runs under `background`, so
    /// shutdown ends it.
    pub fn start(self: &Arc<Self>, metadata: Option<MetadataClient>, background: &Background) {
        let signer = self.clone();
        background.spawn(async move {
            let mut pause = Duration::from_secs(1);
            loop {
                match signer.check(metadata.as_ref()).await {
                    Ok(email) => {
                        signer.set_readiness(Ok(()));
                        tracing::info!(event = "google_identity", service_account = %email, "signing ID tokens with signJwt as {email}");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(event = "google_identity_unavailable", reason = %e, "cannot obtain the service's Google identity: {e}; retrying in {} s", pause.as_secs());
                        signer.set_readiness(Err(IdentityNotReady::Unavailable(e)));
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}

#[async_trait]
impl Signer for IamSigner {
    fn algorithm(&self) -> &str {
        "RS256"
    }

    fn key_id(&self) -> Option<String> {
        None
    }

    fn publication(&self) -> Option<Publication> {
        self.publication.get().cloned()
    }

    fn readiness(&self) -> Result<(), NotReady> {
        Ok(self.identity()?)
    }

    async fn sign(
        &self,
        claims: &Map<String, Value>,
        deadline: Deadline,
    ) -> Result<String, Failure> {
        let Some(email) = self.email.get() else {
            return Err(self
                .identity()
                .err()
                .unwrap_or(IdentityNotReady::NoAccount)
                .into());
        };
        let payload = serde_json::to_string(claims).map_err(|e| {
            Failure::server("The token could not be signed; this is a fault of the service")
                .with_detail(format!("encoding the claims failed: {e}"))
        })?;
        let bearer = self.tokens.token(deadline).await?;
        self.iam.sign_jwt(email, &payload, &bearer, deadline).await
    }
}

/// Why the IAM signer cannot sign yet.
#[derive(Debug, Clone, thiserror::Error)]
enum IdentityNotReady {
    /// The first identity check has not finished.
    #[error("the service's Google identity has not been checked yet")]
    NotChecked,
    /// The last identity check failed; it is retried.
    #[error("cannot obtain the service's Google identity: {0}")]
    Unavailable(#[source] Failure),
    /// The check succeeded without naming the account to sign as (not expected: `app` refuses
    /// a configuration without `SERVICE_ACCOUNT` where the metadata server cannot name it).
    #[error("the service account to sign as is not known; set SERVICE_ACCOUNT")]
    NoAccount,
}

impl From<IdentityNotReady> for NotReady {
    fn from(reason: IdentityNotReady) -> Self {
        NotReady::new(reason)
    }
}

impl From<IdentityNotReady> for Failure {
    /// A token request while the identity is not known: 503, retry shortly.
    fn from(reason: IdentityNotReady) -> Self {
        Failure::unavailable(format!("The signer is not ready: {reason}"), RETRY_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::credentials::Credentials;
    use crate::metrics::Metrics;

    fn unchecked_signer() -> IamSigner {
        let base = "http://127.0.0.1:1".to_owned();
        let upstream =
            Upstream::new(Duration::from_millis(300), 2, Arc::new(Metrics::new())).unwrap();
        let metadata = MetadataClient::new(base.clone(), upstream.clone());
        let tokens = Arc::new(TokenSource::new(
            Credentials::Metadata(metadata),
            upstream.clone(),
        ));
        IamSigner::new(
            None,
            tokens,
            IamCredentialsClient::new(base, upstream.clone()),
            upstream,
        )
    }

    /// Until the identity is checked, the signer is not ready and says so: `/readyz` shows the
    /// reason, and a token request gets a 503 with it.
    #[tokio::test]
    async fn an_unchecked_identity_is_not_ready_and_refuses_to_sign_with_a_503() {
        let signer = unchecked_signer();
        let reason = signer.readiness().unwrap_err().to_string();
        assert_eq!(
            reason,
            "the service's Google identity has not been checked yet"
        );
        let refused = signer
            .sign(&Map::new(), Deadline::after(Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert_eq!(
            refused.message(),
            format!("The signer is not ready: {reason}")
        );
        assert_eq!(
            refused.kind(),
            crate::error::Kind::Unavailable { retry_after: 5 }
        );
        signer.set_readiness(Err(IdentityNotReady::Unavailable(Failure::unavailable(
            "The metadata server did not answer; retry",
            1,
        ))));
        assert_eq!(
            signer.readiness().unwrap_err().to_string(),
            "cannot obtain the service's Google identity: The metadata server did not answer; retry"
        );
    }

    /// The identity check retries until it succeeds; it runs under the app's `Background`, so
    /// shutdown ends it (before, it was a detached task that outlived the service).
    #[tokio::test]
    async fn the_identity_check_is_owned_by_the_background_and_stops_at_shutdown() {
        // A port nobody listens on: the check fails and keeps retrying.
        // Port 1 refuses connections at once; no port is reserved and released.
        let base = "http://127.0.0.1:1".to_owned();
        let upstream =
            Upstream::new(Duration::from_millis(300), 2, Arc::new(Metrics::new())).unwrap();
        let metadata = MetadataClient::new(base.clone(), upstream.clone());
        let tokens = Arc::new(TokenSource::new(
            Credentials::Metadata(metadata.clone()),
            upstream.clone(),
        ));
        let iam = IamCredentialsClient::new(base, upstream.clone());
        let signer = Arc::new(IamSigner::new(None, tokens, iam, upstream));
        let background = Background::new();
        signer.start(Some(metadata), &background);
        assert_eq!(background.started(), 1);
        tokio::time::timeout(Duration::from_secs(5), background.shutdown())
            .await
            .expect("shutdown ends the identity check");
        assert!(signer.readiness().is_err());
        // Nothing holds the signer but this test: the task let go of its clone.
        assert_eq!(Arc::strong_count(&signer), 1);
    }
}
