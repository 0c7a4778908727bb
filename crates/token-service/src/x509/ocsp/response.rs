//! An OCSP response checked against the certificate it is about (RFC 6960 sections 3.2 and
//! 4.2): a successful basic response, signed by the issuing CA itself or by a responder
//! certificate that CA issued with the id-kp-OCSPSigning extended key usage, with a SingleResponse
//! whose CertID is the certificate's (issuer name hash, issuer key hash, serial), fresh at
//! `now` (thisUpdate not in the future, nextUpdate not past, both within [`SKEW`]), and
//! echoing our nonce if it echoes one. A predicate of its inputs: no network, no clock.

use der::asn1::ObjectIdentifier;
use der::{Decode as _, Encode as _, Header, Reader as _, SliceReader};
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus, ResponderId};
use x509_ocsp::{OcspGeneralizedTime, SingleResponse};
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate};

use super::Problem;
use super::request::{SHA1, Subject, digest};

/// Clock difference tolerated between us and the responder.
pub const SKEW: i64 = 120;
/// How old a response without nextUpdate may be (its thisUpdate).
pub const MAX_AGE_WITHOUT_NEXT_UPDATE: i64 = 24 * 3600;
/// Certificates of a response that the responder ID names, tried as its signer at most (each
/// costs a signature check).
const MAX_CANDIDATES: usize = 4;

/// What a verified response says about the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// Not revoked.
    Good,
    /// Revoked, since (seconds since the epoch), with the reason code's name when given.
    Revoked { at: i64, reason: Option<String> },
    /// The responder does not know the certificate.
    Unknown,
}

/// A verified answer and its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The status.
    pub said: Said,
    /// nextUpdate, seconds since the epoch, when given.
    pub next_update: Option<i64>,
}

/// Signature algorithms accepted on responses (SHA-1 ones are not).
const SIGNATURES: [ObjectIdentifier; 7] = [
    const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
    const_oid::db::rfc5912::SHA_384_WITH_RSA_ENCRYPTION,
    const_oid::db::rfc5912::SHA_512_WITH_RSA_ENCRYPTION,
    const_oid::db::rfc5912::ID_RSASSA_PSS,
    const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
    const_oid::db::rfc5912::ECDSA_WITH_SHA_384,
    const_oid::db::rfc8410::ID_ED_25519,
];

/// Checks `body`, the responder's answer to a request about `subject` carrying `nonce`, at
/// `now` (seconds since the epoch).
pub fn check(body: &[u8], subject: &Subject, nonce: &[u8], now: i64) -> Result<Checked, Problem> {
    let malformed = |what: &str| Problem::Malformed(what.to_owned());
    let response = OcspResponse::from_der(body)
        .map_err(|_| malformed("the body is not a DER OCSP response"))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(Problem::Status(response.response_status));
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| malformed("a successful response without responseBytes"))?;
    if bytes.response_type != const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC {
        return Err(malformed("the response is not a basic OCSP response"));
    }
    let der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(der)
        .map_err(|_| malformed("the basic OCSP response cannot be parsed"))?;
    let signed =
        tbs_bytes(der).map_err(|_| malformed("the basic OCSP response cannot be parsed"))?;
    let signer = signer(&basic, subject, now)?;
    verify_signature(&basic, &signer, signed)?;
    let data = &basic.tbs_response_data;
    if let Some(echoed) = data.nonce()
        && echoed.0.as_bytes() != nonce
    {
        return Err(Problem::BadSignature(
            "the response carries another request's nonce (a replayed answer)".into(),
        ));
    }
    let single = data
        .responses
        .iter()
        .find(|r| about(r, subject))
        .ok_or_else(|| {
            malformed("the response is about another certificate (no matching CertID)")
        })?;
    let next_update = fresh(single, now)?;
    let said = match &single.cert_status {
        CertStatus::Good(_) => Said::Good,
        CertStatus::Unknown(_) => Said::Unknown,
        CertStatus::Revoked(info) => Said::Revoked {
            at: seconds(&info.revocation_time),
            reason: info.revocation_reason.map(|r| format!("{r:?}")),
        },
    };
    Ok(Checked { said, next_update })
}

/// The exact bytes of tbsResponseData, the first element of the BasicOCSPResponse SEQUENCE:
/// what the signature covers, as the responder encoded it.
fn tbs_bytes(basic: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(basic)?;
    Header::decode(&mut reader)?;
    reader.tlv_bytes()
}

fn seconds(time: &OcspGeneralizedTime) -> i64 {
    i64::try_from(time.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// Whether `single` is about `subject`: same hash algorithm (SHA-1 or SHA-256) applied to the
/// same issuer name and key, same serial.
fn about(single: &SingleResponse, subject: &Subject) -> bool {
    let id = &single.cert_id;
    let algorithm = id.hash_algorithm.oid;
    let (Some(name), Some(key)) = (
        digest(algorithm, &subject.issuer_name),
        digest(algorithm, &subject.issuer_key),
    ) else {
        return false;
    };
    id.issuer_name_hash.as_bytes() == name.as_slice()
        && id.issuer_key_hash.as_bytes() == key.as_slice()
        && strip_zeros(id.serial_number.as_bytes()) == strip_zeros(&subject.serial)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// The response's window at `now`: thisUpdate not after `now` (with [`SKEW`]), nextUpdate
/// (returned) not before it; without nextUpdate, thisUpdate within
/// [`MAX_AGE_WITHOUT_NEXT_UPDATE`].
fn fresh(single: &SingleResponse, now: i64) -> Result<Option<i64>, Problem> {
    let this_update = seconds(&single.this_update);
    if this_update > now.saturating_add(SKEW) {
        return Err(Problem::Stale(format!(
            "its thisUpdate is {} s in the future",
            this_update - now
        )));
    }
    let Some(next_update) = single.next_update.as_ref().map(seconds) else {
        if now.saturating_sub(this_update) > MAX_AGE_WITHOUT_NEXT_UPDATE {
            return Err(Problem::Stale(
                "it has no nextUpdate and its thisUpdate is more than a day old".into(),
            ));
        }
        return Ok(None);
    };
    if next_update < this_update {
        return Err(Problem::Malformed(
            "its nextUpdate is before its thisUpdate".into(),
        ));
    }
    if next_update < now.saturating_sub(SKEW) {
        return Err(Problem::Stale(format!(
            "its nextUpdate passed {} s ago",
            now - next_update
        )));
    }
    Ok(Some(next_update))
}

/// The key (SubjectPublicKeyInfo, DER) that must have signed the response: the issuing CA's
/// when the responder ID names it, else that of the response's certificate that the
/// responder ID names, if the issuing CA issued it for OCSP signing and it is valid at `now`.
fn signer(basic: &BasicOcspResponse, subject: &Subject, now: i64) -> Result<Vec<u8>, Problem> {
    let id = &basic.tbs_response_data.responder_id;
    if names(id, &subject.issuer_name, &subject.issuer_key) {
        return Ok(subject.issuer_spki.clone());
    }
    let issuer_spki = SubjectPublicKeyInfo::from_der(&subject.issuer_spki)
        .map(|(_, k)| k)
        .map_err(|_| Problem::Malformed("the issuing CA's key cannot be read".into()))?;
    let mut refused = None;
    let named = basic.certs.iter().flatten().filter_map(|cert| {
        let der = cert.to_der().ok()?;
        let (_, parsed) = X509Certificate::from_der(&der).ok()?;
        let key = &parsed.public_key().subject_public_key.data;
        names(id, parsed.subject().as_raw(), key).then_some(der)
    });
    for der in named.take(MAX_CANDIDATES) {
        let Ok((_, cert)) = X509Certificate::from_der(&der) else {
            continue;
        };
        match delegated(&cert, subject, &issuer_spki, now) {
            Ok(()) => return Ok(cert.public_key().raw.to_vec()),
            Err(why) => refused = Some(why),
        }
    }
    Err(Problem::BadSignature(refused.unwrap_or_else(|| {
        "it is signed neither by the certificate's CA nor by a responder certificate included in it".into()
    })))
}

/// Whether the responder ID names the certificate with this subject (DER) and key.
fn names(id: &ResponderId, subject: &[u8], key: &[u8]) -> bool {
    match id {
        ResponderId::ByName(name) => name.to_der().is_ok_and(|der| der == subject),
        ResponderId::ByKey(hash) => digest(SHA1, key).is_some_and(|h| h == hash.as_bytes()),
    }
}

/// Why `cert` may not sign responses for `subject`'s issuer, if it may not.
fn delegated(
    cert: &X509Certificate<'_>,
    subject: &Subject,
    issuer_key: &SubjectPublicKeyInfo<'_>,
    now: i64,
) -> Result<(), String> {
    let name = cert.subject().to_string();
    if cert.issuer().as_raw() != subject.issuer_name.as_slice()
        || cert.verify_signature(Some(issuer_key)).is_err()
    {
        return Err(format!(
            "it is signed by the responder certificate '{name}', which the certificate's CA did not issue"
        ));
    }
    let ocsp_signing = matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.ocsp_signing);
    if !ocsp_signing {
        return Err(format!(
            "it is signed by the responder certificate '{name}', which lacks the id-kp-OCSPSigning extended key usage"
        ));
    }
    let validity = cert.validity();
    if validity.not_before.timestamp() > now.saturating_add(SKEW)
        || validity.not_after.timestamp() < now.saturating_sub(SKEW)
    {
        return Err(format!(
            "it is signed by the responder certificate '{name}', which is not valid now"
        ));
    }
    Ok(())
}

/// Verifies the signature over `signed` with `spki` (DER) and the response's algorithm.
fn verify_signature(basic: &BasicOcspResponse, spki: &[u8], signed: &[u8]) -> Result<(), Problem> {
    let bad = |what: &str| Problem::BadSignature(what.to_owned());
    let algorithm = &basic.signature_algorithm;
    if !SIGNATURES.contains(&algorithm.oid) {
        return Err(bad(&format!(
            "its signature algorithm {} is not accepted (SHA-256 or stronger RSA, ECDSA or Ed25519)",
            algorithm.oid
        )));
    }
    let algorithm = algorithm
        .to_der()
        .map_err(|_| bad("its signature algorithm cannot be read"))?;
    let (_, algorithm) = x509_parser::x509::AlgorithmIdentifier::from_der(&algorithm)
        .map_err(|_| bad("its signature algorithm cannot be read"))?;
    let (_, key) =
        SubjectPublicKeyInfo::from_der(spki).map_err(|_| bad("the signer's key cannot be read"))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| bad("its signature is not a whole number of bytes"))?;
    let signature = x509_parser::asn1_rs::BitString::new(0, signature);
    x509_parser::verify::verify_signature(&key, &algorithm, &signature, signed)
        .map_err(|_| bad("its signature does not verify with the signer's key"))
}
