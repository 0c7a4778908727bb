//! Signers turn ID-token claims into a compact JWT. The trait is the extension point between
//! local keys (`signer/local.rs`) and keyless signing through Google's IAM `signJwt` (next
//! issue). Depends on nothing of ours.

pub mod iam;
pub mod local;
pub(crate) mod settings;
pub use settings::SignerConfig;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// Where verifiers find the public keys.
#[derive(Debug, Clone)]
pub enum Publication {
    /// This service serves the JWK Set itself (`{"keys": [...]}`).
    Jwks(Value),
    /// The keys are published elsewhere, at this URI.
    Uri(String),
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing backend is unavailable for now.
    #[error("{message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// Seconds the client should wait.
        retry_after: u64,
    },
    /// The backend refused to sign.
    #[error("{0}")]
    Denied(String),
    /// The backend found the request invalid.
    #[error("{0}")]
    Rejected(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// Signs ID tokens.
#[async_trait]
pub trait Signer: Send + Sync {
    /// JWS algorithm of the signing key (`RS256`, `ES256`).
    fn algorithm(&self) -> &str;
    /// Key ID of the signing key, when known up front.
    fn key_id(&self) -> Option<&str>;
    /// How verifiers find the public keys; `None` while that is not known yet (the signer is
    /// not ready, see [`Signer::readiness`]).
    fn publication(&self) -> Option<&Publication>;
    /// Whether the signer can sign now, and if not, why.
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }
    /// Signs the claims and returns the compact JWT.
    async fn sign(&self, claims: &Map<String, Value>) -> Result<String, SignError>;
}
