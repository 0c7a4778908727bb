//! Flow `mtls-client-credentials`: TLS ends at Token Service and the client presents its
//! certificate in the handshake (which proves possession of the key). The chain is verified on
//! every request against the CA bundle and CRLs in force at that moment, by `x509`.
//! Uses `model` and `x509`; logs nothing.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Authentication, Declined, Flow};
use crate::clock::Clock;
use crate::error::Failure;
use crate::model::TokenRequest;
use crate::x509::{ClientIdAttribute, Trust, VerifiedChains};

/// Name of this flow in `AUTH_FLOWS` and `amr`.
pub const NAME: &str = "mtls-client-credentials";

/// The direct mTLS flow.
pub struct MtlsFlow {
    attribute: ClientIdAttribute,
    trust: Arc<Trust>,
    clock: Clock,
    verified: VerifiedChains,
}

impl MtlsFlow {
    /// Builds the flow over the shared trust material.
    pub fn new(attribute: ClientIdAttribute, trust: Arc<Trust>, clock: Clock) -> Self {
        Self {
            attribute,
            trust,
            clock,
            verified: VerifiedChains::default(),
        }
    }
}

#[async_trait]
impl Flow for MtlsFlow {
    async fn authenticate(&self, request: &TokenRequest) -> Result<Authentication, Failure> {
        let chain = match request.peer_certificates.as_deref() {
            Some(chain) if !chain.is_empty() => chain,
            _ => {
                return Ok(Authentication::NotMine(Declined::missing(
                    "no client certificate was presented in the TLS handshake",
                )));
            }
        };
        self.verified
            .authenticate(&self.trust, &self.clock, self.attribute, chain)
            .await
            .map(Authentication::Client)
    }
}
