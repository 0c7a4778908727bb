//! The client ID of certificate-verifying flows (`MTLS_CLIENT_ID_ATTRIBUTE`): which attribute of
//! the verified certificate's facts names the client.

use crate::model::CertificateFacts;

/// Client ID attribute of certificate-verifying flows (`MTLS_CLIENT_ID_ATTRIBUTE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIdAttribute {
    /// The SPIFFE ID.
    #[default]
    Spiffe,
    /// The first DNS SAN.
    DnsSan,
    /// The first URI SAN (other than the SPIFFE ID).
    UriSan,
    /// The SHA-256 fingerprint.
    Sha256,
}

impl ClientIdAttribute {
    /// Parses the setting's value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "spiffe" => Some(Self::Spiffe),
            "dns_san" => Some(Self::DnsSan),
            "uri_san" => Some(Self::UriSan),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// The setting's value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spiffe => "spiffe",
            Self::DnsSan => "dns_san",
            Self::UriSan => "uri_san",
            Self::Sha256 => "sha256",
        }
    }

    /// The client ID from the facts, if the certificate has the attribute.
    pub fn client_id(self, facts: &CertificateFacts) -> Option<String> {
        match self {
            Self::Spiffe => facts.spiffe_id.clone(),
            Self::DnsSan => facts.dns_sans.first().cloned(),
            Self::UriSan => facts.uri_sans.first().cloned(),
            Self::Sha256 => facts.sha256_fingerprint.clone(),
        }
    }
}
