//! What an OCSP request about a verified leaf needs ([`Subject`]: its serial, its issuer's
//! name and key, the responder its Authority Information Access extension names) and the
//! request itself (RFC 6960 section 4.1, one certificate, SHA-1 CertID as RFC 5019 asks, and
//! a nonce).

use der::Encode as _;
use der::asn1::{Null, ObjectIdentifier, OctetString};
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{CertId, OcspRequest, Request, TbsRequest};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate};

use super::Problem;
use crate::x509::TrustMaterial;
use crate::x509::issuer::CaCert;

/// `id-sha1`: the CertID hash RFC 5019 asks clients to use (responders index by it).
pub(super) const SHA1: ObjectIdentifier = const_oid::db::rfc5912::ID_SHA_1;
/// `id-sha256`, which a responder may answer with.
pub(super) const SHA256: ObjectIdentifier = const_oid::db::rfc5912::ID_SHA_256;
/// `id-pkix-ocsp-nonce`.
pub(super) const NONCE: ObjectIdentifier = const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE;
/// The longest responder URL taken from a certificate.
const MAX_URL: usize = 2048;

/// A verified leaf as OCSP names it, with the issuer that verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The serial number's content octets, as in the certificate.
    pub(super) serial: Vec<u8>,
    /// The same as colon-separated hex, as the certificate facts write it.
    pub(super) serial_text: String,
    /// The issuer's subject name (DER).
    pub(super) issuer_name: Vec<u8>,
    /// The issuer's SubjectPublicKeyInfo (DER).
    pub(super) issuer_spki: Vec<u8>,
    /// The issuer's public key (the subjectPublicKey BIT STRING's contents).
    pub(super) issuer_key: Vec<u8>,
    /// The first http(s) OCSP URL of the leaf's Authority Information Access extension.
    pub(super) aia: Option<String>,
}

impl Subject {
    /// The subject of an already verified chain (leaf first): the issuer is the CA whose
    /// name, key identifier and key fit the leaf, from the bundle, else from the certificates
    /// the client sent (as for `issuer_ca_sha256`).
    pub fn of(material: &TrustMaterial, chain: &[Vec<u8>]) -> Result<Self, Problem> {
        let no_issuer =
            || Problem::Malformed("the issuing CA of the certificate is not known".into());
        let (_, leaf) = chain
            .first()
            .and_then(|der| X509Certificate::from_der(der).ok())
            .ok_or_else(no_issuer)?;
        let from_bundle = material.cas.iter().find(|c| c.issued(&leaf));
        let from_chain = || {
            chain.iter().skip(1).find_map(|der| {
                let (_, cert) = X509Certificate::from_der(der).ok()?;
                let ca = CaCert::of(&cert, der);
                ca.issued(&leaf).then_some(ca)
            })
        };
        let (issuer_name, issuer_spki) = match from_bundle {
            Some(ca) => (ca.subject().to_vec(), ca.spki().to_vec()),
            None => {
                let ca = from_chain().ok_or_else(no_issuer)?;
                (ca.subject().to_vec(), ca.spki().to_vec())
            }
        };
        let (_, key) = SubjectPublicKeyInfo::from_der(&issuer_spki).map_err(|_| no_issuer())?;
        let serial = leaf.raw_serial().to_vec();
        Ok(Self {
            serial_text: colon_hex(&serial),
            serial,
            issuer_name,
            issuer_key: key.subject_public_key.data.to_vec(),
            issuer_spki,
            aia: responder_of(&leaf),
        })
    }

    /// The cache key: the issuer's key and the serial (a certificate is named by both).
    pub fn key(&self) -> [u8; 32] {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        context.update(&digest(SHA1, &self.issuer_key).unwrap_or_default());
        context.update(&self.serial);
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        key
    }
}

/// The colon-separated lowercase hex of `bytes` (how the facts write a serial).
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `data` hashed with the CertID algorithm `algorithm` (SHA-1 or SHA-256); `None` for others.
pub(super) fn digest(algorithm: ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    let algorithm = if algorithm == SHA1 {
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY
    } else if algorithm == SHA256 {
        &aws_lc_rs::digest::SHA256
    } else {
        return None;
    };
    Some(aws_lc_rs::digest::digest(algorithm, data).as_ref().to_vec())
}

/// The first OCSP responder URL (http or https) of the certificate's AIA extension.
pub(super) fn responder_of(cert: &X509Certificate<'_>) -> Option<String> {
    cert.extensions().iter().find_map(|e| {
        let ParsedExtension::AuthorityInfoAccess(aia) = e.parsed_extension() else {
            return None;
        };
        aia.accessdescs
            .iter()
            .find_map(|d| match &d.access_location {
                GeneralName::URI(uri)
                    if d.access_method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                        && uri.len() <= MAX_URL
                        && (uri.starts_with("http://") || uri.starts_with("https://")) =>
                {
                    Some((*uri).to_owned())
                }
                _ => None,
            })
    })
}

/// The DER OCSP request for `subject` with `nonce`, unsigned.
pub(super) fn encode(subject: &Subject, nonce: &[u8]) -> Result<Vec<u8>, der::Error> {
    let hash = |data: &[u8]| OctetString::new(digest(SHA1, data).unwrap_or_default());
    let cert_id = CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: hash(&subject.issuer_name)?,
        issuer_key_hash: hash(&subject.issuer_key)?,
        serial_number: SerialNumber::new(&subject.serial)?,
    };
    // The nonce extension's value is itself an OCTET STRING (RFC 8954).
    let nonce = Extension {
        extn_id: NONCE,
        critical: false,
        extn_value: OctetString::new(OctetString::new(nonce)?.to_der()?)?,
    };
    OcspRequest {
        tbs_request: TbsRequest {
            request_list: vec![Request {
                req_cert: cert_id,
                single_request_extensions: None,
            }],
            request_extensions: Some(vec![nonce]),
            ..TbsRequest::default()
        },
        optional_signature: None,
    }
    .to_der()
}
