//! Flow `mtls-client-credentials`: TLS ends at Token Service and the client presents its
//! certificate in the handshake (which proves possession of the key). The chain is verified on
//! every request against the CA bundle and CRLs in force at that moment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustls_pki_types::UnixTime;
use serde_json::json;

use super::{Flow, FlowError, TLS_CLIENT_AUTH};
use crate::clock::Clock;
use crate::model::{AuthenticatedClient, CLIENT_CREDENTIALS, TokenRequest};
use crate::x509::{ClientIdAttribute, Trust, TrustMaterial, facts};

/// Name of this flow in `AUTH_FLOWS` and `amr`.
pub const NAME: &str = "mtls-client-credentials";

/// Verifies a chain (DER, leaf first) and derives the client: shared by every flow that sees
/// the whole certificate. Rejections are logged with the certificate's facts.
pub(crate) fn authenticate_chain(
    flow: &str,
    trust: &Trust,
    clock: &Clock,
    attribute: ClientIdAttribute,
    chain: &[Vec<u8>],
) -> Result<AuthenticatedClient, FlowError> {
    let leaf = chain
        .first()
        .ok_or_else(|| FlowError::Unauthorized("No client certificate was presented".into()))?;
    let mut facts = facts(leaf).map_err(FlowError::Unauthorized)?;
    let now =
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(clock.now()).unwrap_or(0)));
    let labels = || {
        json!({
            "cert/subject": facts.subject_dn.clone().unwrap_or_default(),
            "cert/issuer": facts.issuer_dn.clone().unwrap_or_default(),
            "cert/serial": facts.serial_number.clone().unwrap_or_default(),
            "cert/sha256": facts.sha256_fingerprint.clone().unwrap_or_default(),
            "cert/spiffe": facts.spiffe_id.clone().unwrap_or_default(),
            "cert/not_after": facts.not_after.unwrap_or_default().to_string(),
        })
    };
    if let Err(reason) = trust.verify(chain, now) {
        tracing::warn!(event = "client_certificate_rejected", flow, labels = %labels(), reason = %reason, "{reason}");
        return Err(FlowError::Unauthorized(reason));
    }
    (facts.issuer_ca_sha256, facts.issuer_ca_sha256_twin) = trust.issuer_fingerprint(chain);
    let Some(client_id) = attribute.client_id(&facts) else {
        let what = match attribute {
            ClientIdAttribute::Spiffe => "no SPIFFE ID (URI SAN with scheme spiffe)",
            ClientIdAttribute::DnsSan => "no DNS SAN",
            ClientIdAttribute::UriSan => "no URI SAN",
            ClientIdAttribute::Sha256 => "no fingerprint",
        };
        let reason = format!(
            "The client certificate has {what}, which MTLS_CLIENT_ID_ATTRIBUTE={} requires",
            attribute.name()
        );
        tracing::warn!(event = "client_certificate_rejected", flow, labels = %labels(), reason = %reason, "{reason}");
        return Err(FlowError::Unauthorized(reason));
    };
    Ok(AuthenticatedClient {
        flow: flow.to_owned(),
        client_id,
        facts,
    })
}

/// Chains already verified against a given version of the trust material, so a client on a
/// keep-alive connection (or a proxy forwarding the same certificate) is not re-verified on
/// every request. An entry only counts for the exact trust material it was verified against
/// (a reloaded CA bundle or CRL is a new version, so revocation still bites at once) and within
/// the certificate's validity period. Bounded; emptied when full.
#[derive(Default)]
pub(crate) struct VerifiedChains {
    entries: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
}

/// A chain's client, and the trust material it was verified against.
type Verified = (Arc<TrustMaterial>, AuthenticatedClient);

const VERIFIED_CHAINS_MAX: usize = 4096;

impl VerifiedChains {
    /// [`authenticate_chain`], answered from the cache when this exact chain was verified
    /// against the trust material in force.
    pub(crate) fn authenticate(
        &self,
        flow: &str,
        trust: &Trust,
        clock: &Clock,
        attribute: ClientIdAttribute,
        chain: &[Vec<u8>],
    ) -> Result<AuthenticatedClient, FlowError> {
        let material = trust.current();
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for der in chain {
            digest.update(&(der.len() as u64).to_be_bytes());
            digest.update(der);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.finish().as_ref());
        let now = clock.now();
        if let Ok(entries) = self.entries.lock()
            && let Some((verified_with, client)) = entries.get(&key)
            && Arc::ptr_eq(verified_with, &material)
            && client.facts.not_before.is_some_and(|t| t <= now)
            && client.facts.not_after.is_some_and(|t| now <= t)
        {
            return Ok(client.clone());
        }
        let client = authenticate_chain(flow, trust, clock, attribute, chain)?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= VERIFIED_CHAINS_MAX {
                entries.clear();
            }
            entries.insert(key, (material, client.clone()));
        }
        Ok(client)
    }
}

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
    fn name(&self) -> &str {
        NAME
    }

    fn grant_type(&self) -> &str {
        CLIENT_CREDENTIALS
    }

    fn auth_method(&self) -> &str {
        TLS_CLIENT_AUTH
    }

    fn can_handle(&self, request: &TokenRequest) -> bool {
        request
            .peer_certificates
            .as_ref()
            .is_some_and(|c| !c.is_empty())
    }

    fn declined(&self, _request: &TokenRequest) -> FlowError {
        FlowError::InvalidRequest("no client certificate was presented in the TLS handshake".into())
    }

    async fn authenticate(&self, request: &TokenRequest) -> Result<AuthenticatedClient, FlowError> {
        let chain = request
            .peer_certificates
            .as_deref()
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.verified
            .authenticate(NAME, &self.trust, &self.clock, self.attribute, chain)
    }
}
