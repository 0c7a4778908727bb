//! Flow `forwarded-cert-client-credentials`: a proxy (Envoy/Istio, nginx, HAProxy, Traefik,
//! Google's load balancer) terminates TLS and forwards the whole client certificate in a
//! header; Token Service re-verifies it against its own CA bundle and CRLs instead of trusting a
//! proxy's verdict. The header is accepted only from trusted proxy addresses. Uses `model` and
//! `x509` (chain verification); logs nothing.

pub mod parse;
mod settings;

pub use settings::ForwardedSettings;
pub(crate) use settings::SETTINGS;

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderName;

use super::{Authentication, Declined, Flow};
use crate::clock::Clock;
use crate::error::{Failure, StartupError};
use crate::model::TokenRequest;
use crate::x509::{ClientIdAttribute, Trust, VerifiedChains};
use parse::parse_forwarded;

/// Name of this flow in `AUTH_FLOWS` and `amr`.
pub const NAME: &str = "forwarded-cert-client-credentials";

/// The forwarded-certificate flow.
pub struct ForwardedCertFlow {
    settings: ForwardedSettings,
    attribute: ClientIdAttribute,
    trust: Arc<Trust>,
    clock: Clock,
    verified: VerifiedChains,
}

impl ForwardedCertFlow {
    /// Builds the flow; fails without trusted proxies.
    pub fn new(
        settings: ForwardedSettings,
        attribute: ClientIdAttribute,
        trust: Arc<Trust>,
        clock: Clock,
    ) -> Result<Self, StartupError> {
        if settings.trusted_proxies.is_empty() {
            return Err(StartupError::setting(
                "TRUSTED_PROXIES",
                format!(
                    "required by the flow {NAME}; list the addresses of the proxies that forward certificates (CIDR, e.g. 10.0.0.0/8)"
                ),
            ));
        }
        Ok(Self {
            settings,
            attribute,
            trust,
            clock,
            verified: VerifiedChains::default(),
        })
    }

    fn header<'a>(
        &self,
        request: &'a TokenRequest,
        name: &HeaderName,
    ) -> Result<Option<&'a str>, Failure> {
        let mut values = request.headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Failure::invalid_request(format!(
                "Header {name} appears more than once: the proxy must overwrite it, not append to it"
            )));
        }
        value
            .to_str()
            .map(Some)
            .map_err(|_| Failure::invalid_request(format!("Header {name} is not printable ASCII")))
    }
}

#[async_trait]
impl Flow for ForwardedCertFlow {
    async fn authenticate(&self, request: &TokenRequest) -> Result<Authentication, Failure> {
        if !request.headers.contains_key(&self.settings.header) {
            return Ok(Authentication::NotMine(Declined::missing(format!(
                "no forwarded client certificate (header {} is missing)",
                self.settings.header
            ))));
        }
        // A dual-stack listener (`BIND_ADDRESS=::`) sees IPv4 peers as IPv4-mapped IPv6
        // addresses (`::ffff:10.0.0.1`), which IPv4 CIDRs do not contain: compare the IPv4 form.
        let peer = request.remote_addr.map(|a| a.ip().to_canonical());
        let trusted = peer.is_some_and(|ip| {
            self.settings
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&ip))
        });
        if !trusted {
            let from = peer
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "an unknown address".into());
            return Err(Failure::unauthorized(format!(
                "Forwarded client certificates are accepted only from trusted proxies; {from} is not one"
            ))
            .with_label("event", "forwarded_cert_untrusted_proxy")
            .with_label("peer", from));
        }
        let leaf = self.header(request, &self.settings.header)?.unwrap_or("");
        let chain = match &self.settings.chain_header {
            Some(name) => self.header(request, name)?,
            None => None,
        };
        let forwarded = parse_forwarded(self.settings.format, leaf, chain).map_err(|e| {
            // Name the header at fault under its configured name.
            let header = match &self.settings.chain_header {
                Some(chain) if e.in_chain_header() => chain,
                _ => &self.settings.header,
            };
            Failure::invalid_request(format!("Header {header}: {e}"))
        })?;
        let mut certificates = Vec::with_capacity(1 + forwarded.chain.len());
        certificates.push(forwarded.leaf);
        certificates.extend(forwarded.chain);
        self.verified
            .authenticate(&self.trust, &self.clock, self.attribute, &certificates)
            .await
            .map(Authentication::Client)
    }
}
