//! Keyless signing with the IAM Credentials `signJwt` method of the service's own service
//! account: Token Service holds no private key, and Google publishes the account's public keys
//! at `https://www.googleapis.com/service_accounts/v1/metadata/jwk/{email}`. The service account
//! needs Service Account Token Creator on itself.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Publication, SignError, Signer};
use crate::google::credentials::TokenSource;
use crate::google::iam_credentials::IamCredentialsClient;
use crate::google::metadata::MetadataClient;
use crate::google::{Outcome, Upstream, UpstreamError};

/// Where Google publishes a service account's public keys.
pub const GOOGLE_JWKS_BASE: &str = "https://www.googleapis.com/service_accounts/v1/metadata/jwk/";

/// The IAM signer.
pub struct IamSigner {
    email: OnceLock<String>,
    publication: OnceLock<Publication>,
    readiness: RwLock<Result<(), String>>,
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
            readiness: RwLock::new(Err(
                "the service's Google identity has not been checked yet".into(),
            )),
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

    fn set_readiness(&self, value: Result<(), String>) {
        if let Ok(mut r) = self.readiness.write() {
            *r = value;
        }
    }

    /// Checks once that the identity can be resolved and a token obtained.
    async fn check(&self, metadata: Option<&MetadataClient>) -> Result<String, UpstreamError> {
        let deadline = self.upstream.deadline();
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
    /// signer is not ready (see `/readyz`) until then.
    pub fn start(
        self: &Arc<Self>,
        metadata: Option<MetadataClient>,
        background: &crate::tasks::Background,
    ) {
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
                        let reason = format!("cannot obtain the service's Google identity: {e}");
                        tracing::error!(event = "google_identity_unavailable", reason = %e, "{reason}; retrying in {} s", pause.as_secs());
                        signer.set_readiness(Err(reason));
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}

/// Maps an upstream failure to a signing error.
fn sign_error(e: UpstreamError) -> SignError {
    let message = e.to_string();
    match e.outcome() {
        Outcome::Invalid => SignError::Rejected(message),
        Outcome::Denied => SignError::Denied(message),
        Outcome::Unavailable(retry_after) => SignError::Unavailable {
            message,
            retry_after,
        },
        Outcome::Server => SignError::Failed(message),
    }
}

#[async_trait]
impl Signer for IamSigner {
    fn algorithm(&self) -> &str {
        "RS256"
    }

    fn key_id(&self) -> Option<&str> {
        None
    }

    fn publication(&self) -> Option<&Publication> {
        self.publication.get()
    }

    fn readiness(&self) -> Result<(), String> {
        self.readiness
            .read()
            .map_err(|_| "readiness unknown".to_owned())?
            .clone()
    }

    async fn sign(&self, claims: &Map<String, Value>) -> Result<String, SignError> {
        let Some(email) = self.email.get() else {
            let reason = self.readiness().err().unwrap_or_default();
            return Err(SignError::Unavailable {
                message: format!("The signer is not ready: {reason}"),
                retry_after: 5,
            });
        };
        let deadline = self.upstream.deadline();
        let payload =
            serde_json::to_string(claims).map_err(|e| SignError::Failed(e.to_string()))?;
        let bearer = self.tokens.token(deadline).await.map_err(sign_error)?;
        self.iam
            .sign_jwt(email, &payload, &bearer, deadline)
            .await
            .map_err(sign_error)
    }
}
