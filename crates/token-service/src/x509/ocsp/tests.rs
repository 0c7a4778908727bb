//! Parsing and verification edge cases of OCSP answers, built here with the same ASN.1 types
//! and signed with rcgen keys, and the request, cache and decision rules.

use std::time::Duration;

use der::asn1::{BitString, GeneralizedTime, Null, OctetString};
use der::{Decode as _, Encode as _};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SigningKey as _,
};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::request::{NONCE, SHA1, SHA256, Subject, digest};
use super::response::{Checked, Said, check};
use super::*;

const NOW: i64 = 1_800_000_000;
const NONCE_BYTES: &[u8] = b"0123456789abcdef";

struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    }
}

/// DER TLV with a short or long length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap());
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The content of an AIA extension with one access description.
fn aia(method: &[u8], uri: &str) -> Vec<u8> {
    let description = [tlv(0x06, method), tlv(0x86, uri.as_bytes())].concat();
    tlv(0x30, &tlv(0x30, &description))
}

const ID_AD_OCSP: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
const ID_AD_CA_ISSUERS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];

/// A certificate issued by `ca`: a client leaf with `serial` and the AIA `aia`, or a responder
/// with `eku`.
fn issue(
    ca: &Ca,
    name: &str,
    serial: &[u8],
    eku: Vec<ExtendedKeyUsagePurpose>,
    aia: Option<Vec<u8>>,
) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    params.extended_key_usages = eku;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 3600).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 86_400).unwrap();
    if let Some(aia) = aia {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                aia,
            ));
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key)
}

fn subject(ca: &Ca, leaf: &[u8]) -> Subject {
    let (_, ca_cert) = X509Certificate::from_der(&ca.der).unwrap();
    let (_, leaf) = X509Certificate::from_der(leaf).unwrap();
    Subject {
        serial: leaf.raw_serial().to_vec(),
        serial_text: String::new(),
        issuer_name: ca_cert.subject().as_raw().to_vec(),
        issuer_spki: ca_cert.public_key().raw.to_vec(),
        issuer_key: ca_cert.public_key().subject_public_key.data.to_vec(),
        aia: None,
    }
}

fn time(at: i64) -> OcspGeneralizedTime {
    OcspGeneralizedTime(
        GeneralizedTime::from_unix_duration(Duration::from_secs(u64::try_from(at).unwrap()))
            .unwrap(),
    )
}

/// The SingleResponse about `subject` (SHA-1 CertID) with this status and window.
fn single(subject: &Subject, status: CertStatus, this: i64, next: Option<i64>) -> SingleResponse {
    SingleResponse {
        cert_id: CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: SHA1,
                parameters: Some(Null.into()),
            },
            issuer_name_hash: OctetString::new(digest(SHA1, &subject.issuer_name).unwrap())
                .unwrap(),
            issuer_key_hash: OctetString::new(digest(SHA1, &subject.issuer_key).unwrap()).unwrap(),
            serial_number: SerialNumber::new(&subject.serial).unwrap(),
        },
        cert_status: status,
        this_update: time(this),
        next_update: next.map(time),
        single_extensions: None,
    }
}

fn by_name(der: &[u8]) -> ResponderId {
    ResponderId::ByName(Certificate::from_der(der).unwrap().tbs_certificate.subject)
}

/// What goes into a response.
struct Build {
    id: ResponderId,
    singles: Vec<SingleResponse>,
    certs: Option<Vec<Vec<u8>>>,
    nonce: Option<Vec<u8>>,
}

impl Build {
    fn new(id: ResponderId, singles: Vec<SingleResponse>) -> Self {
        Self {
            id,
            singles,
            certs: None,
            nonce: Some(NONCE_BYTES.to_vec()),
        }
    }

    /// The DER OCSP response, signed with `key` (ECDSA P-256 with SHA-256).
    fn signed(self, key: &KeyPair) -> Vec<u8> {
        let extensions = self.nonce.map(|nonce| {
            vec![Extension {
                extn_id: NONCE,
                critical: false,
                extn_value: OctetString::new(OctetString::new(nonce).unwrap().to_der().unwrap())
                    .unwrap(),
            }]
        });
        let data = ResponseData {
            version: x509_ocsp::Version::V1,
            responder_id: self.id,
            produced_at: time(NOW),
            responses: self.singles,
            response_extensions: extensions,
        };
        let signature = key.sign(&data.to_der().unwrap()).unwrap();
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
                parameters: None,
            },
            signature: BitString::from_bytes(&signature).unwrap(),
            certs: self.certs.map(|certs| {
                certs
                    .iter()
                    .map(|c| Certificate::from_der(c).unwrap())
                    .collect()
            }),
        };
        OcspResponse {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC,
                response: OctetString::new(basic.to_der().unwrap()).unwrap(),
            }),
        }
        .to_der()
        .unwrap()
    }
}

struct Fixture {
    ca: Ca,
    leaf: Vec<u8>,
    subject: Subject,
}

fn fixture() -> Fixture {
    let ca = ca("Client CA");
    let (leaf, _) = issue(&ca, "client", &[0x80, 0x01, 0x02], vec![], None);
    let subject = subject(&ca, &leaf);
    Fixture { ca, leaf, subject }
}

fn good(f: &Fixture) -> SingleResponse {
    single(&f.subject, CertStatus::good(), NOW - 60, Some(NOW + 3600))
}

fn checked(body: &[u8], f: &Fixture) -> Result<Checked, Problem> {
    check(body, &f.subject, NONCE_BYTES, NOW)
}

#[test]
fn an_answer_signed_by_the_issuing_ca_is_read() {
    let f = fixture();
    let body = Build::new(by_name(&f.ca.der), vec![good(&f)]).signed(f.ca.issuer.key());
    assert_eq!(
        checked(&body, &f),
        Ok(Checked {
            said: Said::Good,
            next_update: Some(NOW + 3600)
        })
    );
    let revoked = single(
        &f.subject,
        CertStatus::revoked(RevokedInfo {
            revocation_time: time(NOW - 600),
            revocation_reason: Some(x509_cert::ext::pkix::CrlReason::KeyCompromise),
        }),
        NOW - 60,
        Some(NOW + 3600),
    );
    let body = Build::new(by_name(&f.ca.der), vec![revoked]).signed(f.ca.issuer.key());
    assert_eq!(
        checked(&body, &f).unwrap().said,
        Said::Revoked {
            at: NOW - 600,
            reason: Some("KeyCompromise".into())
        }
    );
    let unknown = single(&f.subject, CertStatus::unknown(), NOW - 60, None);
    let body = Build::new(by_name(&f.ca.der), vec![unknown]).signed(f.ca.issuer.key());
    assert_eq!(checked(&body, &f).unwrap().said, Said::Unknown);
}

#[test]
fn a_responder_named_by_key_hash_is_the_ca_when_the_hash_is_its_key() {
    let f = fixture();
    let hash = OctetString::new(digest(SHA1, &f.subject.issuer_key).unwrap()).unwrap();
    let body = Build::new(ResponderId::ByKey(hash), vec![good(&f)]).signed(f.ca.issuer.key());
    assert_eq!(checked(&body, &f).unwrap().said, Said::Good);
}

#[test]
fn a_delegated_responder_needs_the_ocsp_signing_eku_and_the_issuing_ca() {
    let f = fixture();
    let ocsp_signing = vec![ExtendedKeyUsagePurpose::OcspSigning];
    let (responder, key) = issue(&f.ca, "Responder", &[9], ocsp_signing.clone(), None);
    let mut build = Build::new(by_name(&responder), vec![good(&f)]);
    build.certs = Some(vec![responder.clone()]);
    assert_eq!(checked(&build.signed(&key), &f).unwrap().said, Said::Good);

    // Without the EKU.
    let (plain, key) = issue(&f.ca, "Plain", &[10], vec![], None);
    let mut build = Build::new(by_name(&plain), vec![good(&f)]);
    build.certs = Some(vec![plain]);
    let Err(Problem::BadSignature(why)) = checked(&build.signed(&key), &f) else {
        panic!("a responder without id-kp-OCSPSigning was accepted");
    };
    assert!(why.contains("id-kp-OCSPSigning"), "{why}");

    // With the EKU, from another CA (the wrong key).
    let other = ca("Client CA");
    let (foreign, key) = issue(&other, "Responder", &[9], ocsp_signing, None);
    let mut build = Build::new(by_name(&foreign), vec![good(&f)]);
    build.certs = Some(vec![foreign]);
    let Err(Problem::BadSignature(why)) = checked(&build.signed(&key), &f) else {
        panic!("another CA's responder was accepted");
    };
    assert!(why.contains("did not issue"), "{why}");

    // Named but not included.
    let body = Build::new(by_name(&responder), vec![good(&f)]).signed(f.ca.issuer.key());
    assert!(matches!(checked(&body, &f), Err(Problem::BadSignature(_))));
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let f = fixture();
    let other = KeyPair::generate().unwrap();
    let body = Build::new(by_name(&f.ca.der), vec![good(&f)]).signed(&other);
    let Err(Problem::BadSignature(why)) = checked(&body, &f) else {
        panic!("a forged signature was accepted");
    };
    assert!(why.contains("does not verify"), "{why}");
    // One flipped bit of the signed data.
    let mut body = Build::new(by_name(&f.ca.der), vec![good(&f)]).signed(f.ca.issuer.key());
    let at = body
        .windows(4)
        .position(|w| w == [0x18, 0x0f, b'2', b'0'])
        .unwrap();
    body[at + 5] ^= 1;
    assert!(checked(&body, &f).is_err());
}

#[test]
fn the_cert_id_must_be_the_certificates() {
    let f = fixture();
    let (other_leaf, _) = issue(&f.ca, "other", &[0x80, 0x01, 0x03], vec![], None);
    let other = single(
        &subject(&f.ca, &other_leaf),
        CertStatus::good(),
        NOW - 60,
        Some(NOW + 3600),
    );
    let body = Build::new(by_name(&f.ca.der), vec![other.clone()]).signed(f.ca.issuer.key());
    let Err(Problem::Malformed(why)) = checked(&body, &f) else {
        panic!("an answer about another certificate was accepted");
    };
    assert!(why.contains("another certificate"), "{why}");
    // Among several, the matching one counts.
    let body = Build::new(by_name(&f.ca.der), vec![other, good(&f)]).signed(f.ca.issuer.key());
    assert_eq!(checked(&body, &f).unwrap().said, Said::Good);
    // Same serial, another issuer key.
    let mut wrong_key = good(&f);
    wrong_key.cert_id.issuer_key_hash = OctetString::new(vec![0; 20]).unwrap();
    let body = Build::new(by_name(&f.ca.der), vec![wrong_key]).signed(f.ca.issuer.key());
    assert!(matches!(checked(&body, &f), Err(Problem::Malformed(_))));
    // A SHA-256 CertID is understood.
    let mut sha256 = good(&f);
    sha256.cert_id.hash_algorithm.oid = SHA256;
    sha256.cert_id.issuer_name_hash =
        OctetString::new(digest(SHA256, &f.subject.issuer_name).unwrap()).unwrap();
    sha256.cert_id.issuer_key_hash =
        OctetString::new(digest(SHA256, &f.subject.issuer_key).unwrap()).unwrap();
    let body = Build::new(by_name(&f.ca.der), vec![sha256]).signed(f.ca.issuer.key());
    assert_eq!(checked(&body, &f).unwrap().said, Said::Good);
}

#[test]
fn the_window_must_hold_now_within_the_skew() {
    let f = fixture();
    let answer = |this: i64, next: Option<i64>| {
        let s = single(&f.subject, CertStatus::good(), this, next);
        checked(
            &Build::new(by_name(&f.ca.der), vec![s]).signed(f.ca.issuer.key()),
            &f,
        )
    };
    assert!(answer(NOW + response::SKEW - 1, Some(NOW + 3600)).is_ok());
    assert!(matches!(
        answer(NOW + response::SKEW + 60, Some(NOW + 3600)),
        Err(Problem::Stale(_))
    ));
    assert!(answer(NOW - 7200, Some(NOW - response::SKEW + 1)).is_ok());
    assert!(matches!(
        answer(NOW - 7200, Some(NOW - response::SKEW - 1)),
        Err(Problem::Stale(_))
    ));
    assert!(matches!(
        answer(NOW - 60, Some(NOW - 120)),
        Err(Problem::Malformed(_))
    ));
    assert_eq!(answer(NOW - 3600, None).unwrap().next_update, None);
    assert!(matches!(
        answer(NOW - 2 * 86_400, None),
        Err(Problem::Stale(_))
    ));
}

#[test]
fn a_nonce_if_echoed_must_be_ours() {
    let f = fixture();
    let mut build = Build::new(by_name(&f.ca.der), vec![good(&f)]);
    build.nonce = None;
    assert!(checked(&build.signed(f.ca.issuer.key()), &f).is_ok());
    let mut build = Build::new(by_name(&f.ca.der), vec![good(&f)]);
    build.nonce = Some(b"another request!".to_vec());
    assert!(matches!(
        checked(&build.signed(f.ca.issuer.key()), &f),
        Err(Problem::BadSignature(_))
    ));
}

#[test]
fn unsuccessful_or_unreadable_answers_are_problems() {
    let f = fixture();
    for (status, transient) in [
        (OcspResponseStatus::TryLater, true),
        (OcspResponseStatus::InternalError, true),
        (OcspResponseStatus::Unauthorized, false),
        (OcspResponseStatus::MalformedRequest, false),
        (OcspResponseStatus::SigRequired, false),
    ] {
        let body = OcspResponse {
            response_status: status,
            response_bytes: None,
        }
        .to_der()
        .unwrap();
        let problem = checked(&body, &f).unwrap_err();
        assert_eq!(problem, Problem::Status(status));
        assert_eq!(problem.transient(), transient, "{status:?}");
    }
    for garbage in [
        &b""[..],
        b"<html>not OCSP</html>",
        &[0x30, 0x03, 0x0a, 0x01, 0x00],
    ] {
        assert!(
            matches!(checked(garbage, &f), Err(Problem::Malformed(_))),
            "{garbage:?}"
        );
    }
    // A truncated good answer.
    let body = Build::new(by_name(&f.ca.der), vec![good(&f)]).signed(f.ca.issuer.key());
    assert!(matches!(
        checked(&body[..body.len() - 10], &f),
        Err(Problem::Malformed(_))
    ));
    assert!(!Problem::Malformed(String::new()).transient());
    assert!(!Problem::BadSignature(String::new()).transient());
    assert!(!Problem::Unknown.transient() && !Problem::NoResponder.transient());
    assert!(Problem::Unreachable(String::new()).transient() && Problem::Http(500).transient());
}

#[test]
fn the_request_names_the_certificate_with_sha1_and_carries_the_nonce() {
    let f = fixture();
    let der = request::encode(&f.subject, NONCE_BYTES).unwrap();
    let request = OcspRequest::from_der(&der).unwrap();
    let [one] = request.tbs_request.request_list.as_slice() else {
        panic!("one certificate per request");
    };
    let id = &one.req_cert;
    assert_eq!(id.hash_algorithm.oid, SHA1);
    assert_eq!(
        id.issuer_name_hash.as_bytes(),
        digest(SHA1, &f.subject.issuer_name).unwrap()
    );
    assert_eq!(
        id.issuer_key_hash.as_bytes(),
        digest(SHA1, &f.subject.issuer_key).unwrap()
    );
    // The serial has its high bit set: the certificate's DER carries a leading zero.
    assert_eq!(f.subject.serial, [0, 0x80, 0x01, 0x02]);
    assert_eq!(id.serial_number.as_bytes(), [0, 0x80, 0x01, 0x02]);
    assert_eq!(request.nonce().unwrap().0.as_bytes(), NONCE_BYTES);
    assert!(request.optional_signature.is_none());
    // The leaf parses as the subject of a chain would.
    assert!(X509Certificate::from_der(&f.leaf).is_ok());
}

#[test]
fn the_responder_url_comes_from_the_aia_ocsp_entry() {
    let ca = ca("CA");
    let subject_with = |extension: Option<Vec<u8>>| {
        let (leaf, _) = issue(&ca, "leaf", &[1], vec![], extension);
        let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
        super::request::responder_of(&cert)
    };
    assert_eq!(
        subject_with(Some(aia(ID_AD_OCSP, "http://ocsp.example.test/x"))),
        Some("http://ocsp.example.test/x".into())
    );
    assert_eq!(
        subject_with(Some(aia(ID_AD_CA_ISSUERS, "http://ca.example.test/ca.der"))),
        None
    );
    assert_eq!(
        subject_with(Some(aia(ID_AD_OCSP, "ldap://ocsp.example.test/"))),
        None
    );
    assert_eq!(subject_with(None), None);
}

fn answer(status: Status, until: i64) -> Answer {
    Answer {
        status,
        responder: Some("http://ocsp.test".into()),
        until,
    }
}

#[test]
fn answers_hold_until_next_update_or_max_age_and_no_answer_briefly() {
    let good = |next_update| {
        Ok((
            Checked {
                said: Said::Good,
                next_update,
            },
            None,
        ))
    };
    let url = || "http://ocsp.test".to_owned();
    assert_eq!(
        Answer::of(good(Some(NOW + 900)), url(), NOW).until,
        NOW + 900
    );
    assert_eq!(Answer::of(good(None), url(), NOW).until, NOW + DEFAULT_TTL);
    let with_max_age = |next_update, max_age| {
        let checked = Checked {
            said: Said::Good,
            next_update,
        };
        Answer::of(Ok((checked, Some(max_age))), url(), NOW).until
    };
    assert_eq!(with_max_age(Some(NOW + 900), 60), NOW + 60);
    assert_eq!(with_max_age(Some(NOW + 900), 3600), NOW + 900);
    assert_eq!(with_max_age(None, 0), NOW);
    // Past nextUpdate within the skew: used now, not kept.
    assert_eq!(Answer::of(good(Some(NOW - 10)), url(), NOW).until, NOW);
    let unknown = Ok((
        Checked {
            said: Said::Unknown,
            next_update: Some(NOW + 900),
        },
        None,
    ));
    let unknown = Answer::of(unknown, url(), NOW);
    assert_eq!(unknown.status, Status::Unavailable(Problem::Unknown));
    assert_eq!(unknown.until, NOW + UNAVAILABLE_TTL);
    let failed = Answer::of(Err(Problem::Http(502)), url(), NOW);
    assert_eq!(failed.until, NOW + UNAVAILABLE_TTL);
}

#[test]
fn the_cache_forgets_expired_and_oldest_answers() {
    let mut cache = cache::Cache::new(2);
    cache.insert([1; 32], answer(Status::Good, NOW + 10));
    cache.insert([2; 32], answer(Status::Good, NOW + 10));
    assert!(cache.get(&[1; 32], NOW + 10).is_some());
    assert!(cache.get(&[1; 32], NOW + 11).is_none());
    assert_eq!(cache.len(), 1);
    cache.insert([3; 32], answer(Status::Good, NOW + 10));
    cache.insert([4; 32], answer(Status::Good, NOW + 10));
    assert_eq!(cache.len(), 2);
    assert!(cache.get(&[2; 32], NOW).is_none());
    assert!(cache.get(&[4; 32], NOW).is_some());
}

fn ocsp(mode: Mode) -> Arc<Ocsp> {
    let settings = OcspSettings {
        mode,
        ..OcspSettings::default()
    };
    Ocsp::new(&settings, Arc::new(Metrics::new()))
        .unwrap()
        .unwrap()
}

#[test]
fn decisions_follow_the_mode() {
    assert!(
        Ocsp::new(&OcspSettings::default(), Arc::new(Metrics::new()))
            .unwrap()
            .is_none(),
        "off makes no check"
    );
    let (lenient, strict) = (ocsp(Mode::WhenAvailable), ocsp(Mode::Required));
    let good = answer(Status::Good, NOW + 60);
    assert_eq!(lenient.decide(&good, "01", NOW).unwrap(), "good");
    assert_eq!(strict.decide(&good, "01", NOW).unwrap(), "good");
    let revoked = answer(
        Status::Revoked {
            at: NOW,
            reason: None,
        },
        NOW + 60,
    );
    for ocsp in [&lenient, &strict] {
        let refused = ocsp.decide(&revoked, "0a:0b", NOW).unwrap_err();
        assert_eq!(refused.kind(), crate::error::Kind::AccessDenied);
        assert!(
            refused
                .message()
                .contains("(serial 0a:0b) is revoked (OCSP)"),
            "{}",
            refused.message()
        );
    }
    let unreachable = answer(
        Status::Unavailable(Problem::Unreachable("timed out".into())),
        NOW + 20,
    );
    let label = lenient.decide(&unreachable, "01", NOW).unwrap();
    assert!(label.starts_with("unavailable: "), "{label}");
    let refused = strict.decide(&unreachable, "01", NOW).unwrap_err();
    assert_eq!(
        refused.kind(),
        crate::error::Kind::Unavailable { retry_after: 20 }
    );
    for problem in [
        Problem::NoResponder,
        Problem::Unknown,
        Problem::BadSignature("x".into()),
        Problem::Malformed("x".into()),
    ] {
        let answer = answer(Status::Unavailable(problem.clone()), NOW + 20);
        assert!(lenient.decide(&answer, "01", NOW).is_ok());
        let refused = strict.decide(&answer, "01", NOW).unwrap_err();
        assert_eq!(
            refused.kind(),
            crate::error::Kind::AccessDenied,
            "{problem:?}"
        );
        assert!(
            refused.message().contains("TLS_CLIENT_OCSP=required"),
            "{}",
            refused.message()
        );
    }
}

/// Serves each of `answers` (raw HTTP) to one connection in turn, on a port-0 listener it
/// keeps; returns the URL and how many requests arrived.
async fn http_server(answers: Vec<Vec<u8>>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ocsp", listener.local_addr().unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        for answer in answers {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
        }
    });
    (url, count)
}

#[tokio::test]
async fn the_exchange_refuses_redirects_and_large_answers_and_reads_max_age() {
    let big = vec![0x30u8; fetch::MAX_RESPONSE + 1];
    let chunked = {
        let mut body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..17 {
            body.extend_from_slice(b"1000\r\n");
            body.extend_from_slice(&[0x30; 0x1000]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        body
    };
    let (elsewhere, elsewhere_count) = http_server(vec![]).await;
    let answers = vec![
        format!("HTTP/1.1 302 Found\r\nLocation: {elsewhere}\r\nContent-Length: 0\r\n\r\n")
            .into_bytes(),
        [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes(),
            big,
        ]
        .concat(),
        chunked,
        b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=120\r\nContent-Length: 2\r\n\r\n\x30\x00"
            .to_vec(),
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ];
    let (url, count) = http_server(answers).await;
    let http = fetch::client(Duration::from_secs(5)).unwrap();
    let post = || fetch::post(&http, &url, vec![0x30, 0x00], Duration::from_secs(5));
    assert_eq!(post().await.unwrap_err(), Problem::Http(302));
    let Err(Problem::Malformed(why)) = post().await else {
        panic!("a declared large answer was read");
    };
    assert!(why.contains("exceeds 65536 bytes"), "{why}");
    let Err(Problem::Malformed(why)) = post().await else {
        panic!("a chunked large answer was read");
    };
    assert!(why.contains("exceeds"), "{why}");
    let fetched = post().await.unwrap();
    assert_eq!(
        (fetched.body, fetched.max_age),
        (vec![0x30, 0x00], Some(120))
    );
    assert_eq!(post().await.unwrap_err(), Problem::Http(503));
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 5);
    assert_eq!(elsewhere_count.load(std::sync::atomic::Ordering::SeqCst), 0);
}
