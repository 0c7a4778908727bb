//! Signers turn ID-token claims into a compact JWT. The trait is the extension point between
//! local keys (`signer/local.rs`) and keyless signing through Google's IAM `signJwt`
//! (`signer/iam.rs`). Failures are the service's [`Failure`]; a signer that calls upstream finishes by
//! the caller's [`Deadline`]. Uses `clock`, `error`, `readiness` and the Google clients (IAM), nothing of the
//! HTTP edge or the grant.

pub mod iam;
pub mod local;
pub(crate) mod settings;
pub use settings::SignerConfig;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::clock::Deadline;
use crate::error::Failure;
use crate::readiness::NotReady;

/// Where verifiers find the public keys.
#[derive(Debug, Clone)]
pub enum Publication {
    /// This service serves the JWK Set itself (`{"keys": [...]}`); shared, as the key file's
    /// version in force holds it.
    Jwks(std::sync::Arc<Value>),
    /// The keys are published elsewhere, at this URI.
    Uri(String),
}

/// Signs ID tokens.
#[async_trait]
pub trait Signer: Send + Sync {
    /// JWS algorithm of the signing key (`RS256`, `ES256`).
    fn algorithm(&self) -> &str;
    /// Every algorithm a published key uses, the signing key's first: what discovery lists, so
    /// a verifier that holds to that list accepts the tokens of a key rotated in or out.
    fn algorithms(&self) -> Vec<&str> {
        vec![self.algorithm()]
    }
    /// Key ID of the key that signs now, when known up front.
    fn key_id(&self) -> Option<String>;
    /// How verifiers find the public keys; `None` while that is not known yet (the signer is
    /// not ready, see [`Signer::readiness`]).
    fn publication(&self) -> Option<Publication>;
    /// Whether the signer can sign now, and if not, why (`/readyz` and discovery show the
    /// reason).
    fn readiness(&self) -> Result<(), NotReady> {
        Ok(())
    }
    /// Signs the claims and returns the compact JWT; a signer that calls upstream gives up at
    /// `deadline`.
    async fn sign(
        &self,
        claims: &Map<String, Value>,
        deadline: Deadline,
    ) -> Result<String, Failure>;
}
