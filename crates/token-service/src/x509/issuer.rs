//! Which CA certificate issued a verified leaf: the one whose name, key identifier and key fit
//! (for `issuer_ca_sha256` and deny lists on it). Uses only certificate parsing.

use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate};

use super::{fingerprint, twin_fingerprint};

/// What identifies a CA certificate as the issuer of a leaf.
pub(super) struct CaCert {
    subject: Vec<u8>,
    key_id: Option<Vec<u8>>,
    /// Its SubjectPublicKeyInfo (DER): a candidate issuer counts only if this key verifies the
    /// leaf's signature.
    spki: Vec<u8>,
    sha256: String,
    /// The fingerprint of its re-signed twin, if its signature is ECDSA.
    twin: Option<String>,
}

impl CaCert {
    pub(super) fn of(cert: &X509Certificate<'_>, der: &[u8]) -> Self {
        Self {
            subject: cert.subject().as_raw().to_vec(),
            key_id: subject_key_id(cert).map(<[u8]>::to_vec),
            spki: cert.public_key().raw.to_vec(),
            sha256: fingerprint(der),
            twin: twin_fingerprint(der),
        }
    }

    /// Its subject name (DER): what OCSP's issuerNameHash hashes.
    pub(super) fn subject(&self) -> &[u8] {
        &self.subject
    }

    /// Its SubjectPublicKeyInfo (DER): the key of OCSP's issuerKeyHash and of the responses it
    /// signs (or of the responder certificates it issues).
    pub(super) fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// Whether `other` is this certificate, in either signature encoding.
    fn same_certificate(&self, other: &CaCert) -> bool {
        other.sha256 == self.sha256 || self.twin.as_ref() == Some(&other.sha256)
    }

    /// Whether this CA issued `leaf`: its name and key identifier fit, and its key verifies the
    /// leaf's signature. Names and key identifiers alone are the client's to choose (a
    /// self-made certificate may copy both), so without the signature check a padded chain
    /// could make the issuer ambiguous and a condition on it unknown.
    pub(super) fn issued(&self, leaf: &X509Certificate<'_>) -> bool {
        self.subject == leaf.issuer().as_raw()
            && match (authority_key_id(leaf), &self.key_id) {
                (Some(a), Some(s)) => a == s.as_slice(),
                _ => true,
            }
            && SubjectPublicKeyInfo::from_der(&self.spki)
                .is_ok_and(|(_, key)| leaf.verify_signature(Some(&key)).is_ok())
    }
}

fn subject_key_id<'a>(cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
}

fn authority_key_id<'a>(cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
}

/// The fingerprints (as presented, of the twin) of the single distinct CA certificate among
/// `candidates`, a certificate and its re-signed twin counting as one; `(None, None)` unless
/// there is exactly one.
pub(super) fn unique<'a>(
    mut candidates: impl Iterator<Item = &'a CaCert>,
) -> (Option<String>, Option<String>) {
    let Some(first) = candidates.next() else {
        return (None, None);
    };
    if candidates.all(|c| first.same_certificate(c)) {
        (Some(first.sha256.clone()), first.twin.clone())
    } else {
        (None, None)
    }
}
