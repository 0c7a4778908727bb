//! The facts of a client certificate (fingerprints, serial, validity, names, SANs, SPIFFE ID),
//! encoded as Google's load balancer reports them, so claims do not depend on where TLS ended.
//! Uses `model`; refuses with a sentence saying what is wrong.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

use super::{spiffe, twin};
use crate::model::CertificateFacts;

/// Base64 (standard alphabet, no padding) SHA-256 of DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    STANDARD_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// The [`fingerprint`] of a certificate's re-signed twin ([`twin::twin`]), if it has one.
pub fn twin_fingerprint(der: &[u8]) -> Option<String> {
    twin::twin(der).map(|t| fingerprint(&t))
}

/// Why a certificate's facts cannot be taken: a client-facing sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// Not a certificate.
    #[error("The client certificate cannot be parsed")]
    Unparseable,
    /// A broken or repeated subjectAltName extension.
    #[error(
        "The client certificate's subjectAltName extension cannot be parsed (or appears twice)"
    )]
    SubjectAltName,
    /// A malformed SPIFFE ID (printable, truncated) and what is wrong with it.
    #[error("The client certificate's SPIFFE ID '{id}' is not valid: {why}")]
    InvalidSpiffeId {
        /// The URI SAN, escaped and truncated ([`spiffe::printable`]).
        id: String,
        /// What is wrong.
        why: spiffe::SpiffeError,
    },
    /// More than one SPIFFE ID.
    #[error(
        "The client certificate has more than one SPIFFE ID (URI SAN with scheme spiffe); a SPIFFE certificate carries exactly one"
    )]
    TwoSpiffeIds,
}

impl From<FactsError> for crate::error::Failure {
    /// 403 `unauthorized_client` with the sentence.
    fn from(e: FactsError) -> Self {
        Self::unauthorized(e.to_string())
    }
}

/// Extracts the facts of a DER certificate, encoded as Google's load balancer does: SHA-256
/// fingerprint in base64 (standard alphabet, no padding), serial as colon-separated lowercase
/// hex of the DER serial bytes, the SPIFFE ID apart from the other URI SANs; plus the
/// fingerprint of the re-signed twin, for deny lists. Refuses, with a sentence saying what is
/// wrong, a certificate whose SAN extension cannot be read, with more than one SPIFFE ID (URI
/// SAN whose scheme is `spiffe` in any letter case) or with a malformed one ([`spiffe::parse`]).
pub fn facts(der: &[u8]) -> Result<CertificateFacts, FactsError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| FactsError::Unparseable)?;
    let mut facts = CertificateFacts {
        sha256_fingerprint: Some(fingerprint(der)),
        sha256_fingerprint_twin: twin_fingerprint(der),
        serial_number: Some(
            cert.raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        not_before: Some(cert.validity().not_before.timestamp()),
        not_after: Some(cert.validity().not_after.timestamp()),
        subject_dn: Some(cert.subject().to_string()),
        issuer_dn: Some(cert.issuer().to_string()),
        subject: attributes(cert.subject()),
        issuer: attributes(cert.issuer()),
        ..CertificateFacts::default()
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|_| FactsError::SubjectAltName)?;
    for name in san.iter().flat_map(|san| &san.value.general_names) {
        match name {
            GeneralName::DNSName(dns) => facts.dns_sans.push((*dns).to_owned()),
            GeneralName::URI(uri) if spiffe::is_spiffe(uri) => {
                let id = spiffe::parse(uri).map_err(|why| FactsError::InvalidSpiffeId {
                    id: spiffe::printable(uri, 256),
                    why,
                })?;
                if facts.spiffe_id.is_some() {
                    return Err(FactsError::TwoSpiffeIds);
                }
                facts.spiffe_id = Some(id.as_str().to_owned());
            }
            GeneralName::URI(uri) => facts.uri_sans.push((*uri).to_owned()),
            _ => {}
        }
    }
    Ok(facts)
}

/// The attributes of a distinguished name as (short name, value) pairs, in certificate order;
/// attributes without a well-known short name keep their dotted OID.
fn attributes(name: &X509Name<'_>) -> Vec<(String, String)> {
    name.iter_attributes()
        .filter_map(|a| {
            let value = a.as_str().ok()?.to_owned();
            let key = oid2abbrev(a.attr_type(), oid_registry())
                .map(str::to_owned)
                .unwrap_or_else(|_| a.attr_type().to_id_string());
            Some((key, value))
        })
        .collect()
}
