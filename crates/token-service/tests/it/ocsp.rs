//! OCSP for client certificates (issue 14 point 2), against Debian's real `openssl ocsp`.
//!
//! The responder is `openssl ocsp` run once per request in its non-server mode (`-index
//! index.txt -CA … -rsigner … -rkey … -reqin req.der -respout resp.der`) behind a small HTTP
//! server of this module on a port-0 listener that it keeps: so no port is bound and released,
//! each test counts the requests its responder saw, and picks per responder who signs the
//! answers (the CA, a delegated responder, another CA's responder) or whether it answers at
//! all (it accepts and reads the request, and never answers: an unreachable responder that
//! needs no port of anyone else's). The CA database is an `index.txt` with a good and a
//! revoked certificate; the certificates carry an AIA OCSP URL pointing at the responder.
//! (`openssl ocsp -port 0` does report its port, as `ACCEPT [::]:PORT`, but it binds every
//! interface rather than loopback, and a server-mode responder could neither be counted nor
//! told to stay silent.)
//! The service runs with the mtls flow over real TLS.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::support::tls::GRANT;
use crate::support::tls::{Leaf, Pki, Spec, TlsService, https_client, post_token};
use crate::support::{self, BIN};

/// A CA of client certificates, with its files for `openssl ocsp`.
struct Ca {
    pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

/// DER TLV (short or long length).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if content.len() < 0x80 {
        out.push(u8::try_from(content.len()).unwrap());
    } else {
        let len: Vec<u8> = content
            .len()
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(len.len()).unwrap());
        out.extend(len);
    }
    out.extend_from_slice(content);
    out
}

/// An Authority Information Access extension naming `url` as the OCSP responder.
fn aia(url: &str) -> CustomExtension {
    let id_ad_ocsp = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    let description = [tlv(0x06, &id_ad_ocsp), tlv(0x86, url.as_bytes())].concat();
    CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        tlv(0x30, &tlv(0x30, &description)),
    )
}

fn params(name: &str, serial: &[u8]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(1);
    params
}

/// A client certificate of `ca` whose AIA names `responder` (none: no AIA extension).
fn client(ca: &Ca, name: &str, serial: &[u8], responder: Option<&str>) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let spec = Spec::client(name, serial);
    let mut params = params(name, serial);
    params.subject_alt_names.push(SanType::URI(
        spec.spiffe.clone().unwrap().try_into().unwrap(),
    ));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.custom_extensions.extend(responder.map(aia));
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        spec,
        der: cert.der().to_vec(),
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
        chain_pem: cert.pem(),
        chain_der: vec![cert.der().to_vec()],
    }
}

/// A responder certificate of `ca` with id-kp-OCSPSigning: (certificate PEM, key PEM).
fn responder_cert(ca: &Ca, name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = params(name, &[0x0c, 0x01]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Who answers at the responder.
#[derive(Clone)]
enum Answers {
    /// `openssl ocsp` signs with this certificate and key (PEM files), after a pause, and
    /// the HTTP answer says `Cache-Control: max-age` if given.
    Signed {
        cert: PathBuf,
        key: PathBuf,
        pause: Duration,
        max_age: Option<u32>,
    },
    /// The request is read, and never answered.
    Never,
}

/// The test's OCSP responder: an HTTP server on a listener bound to port 0 and kept, running
/// `openssl ocsp` per request against `index.txt`.
struct Responder {
    url: String,
    requests: Arc<AtomicUsize>,
    /// Keeps the CA database and the requests and answers.
    dir: Arc<tempfile::TempDir>,
}

/// The CA database: the serials `good` valid, `revoked` revoked (keyCompromise).
fn index(good: &[&[u8]], revoked: &[&[u8]]) -> String {
    let hex = |serial: &[u8]| {
        serial
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    };
    let mut index = String::new();
    for serial in good {
        let serial = hex(serial);
        index.push_str(&format!(
            "V\t301231235959Z\t\t{serial}\tunknown\t/CN={serial}\n"
        ));
    }
    for serial in revoked {
        let serial = hex(serial);
        index.push_str(&format!(
            "R\t301231235959Z\t260101000000Z,keyCompromise\t{serial}\tunknown\t/CN={serial}\n"
        ));
    }
    index
}

impl Responder {
    /// Starts a responder for `ca`'s certificates listed in `index`; `answers` says who signs.
    fn start(ca: &Ca, index: &str, answers: impl FnOnce(&Path) -> Answers) -> Responder {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        std::fs::write(dir.path().join("index.txt"), index).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("ca.key"), &ca.key_pem).unwrap();
        let answers = answers(dir.path());
        let listener = support::listener();
        let url = format!("http://127.0.0.1:{}/ocsp", support::port_of(&listener));
        let requests = Arc::new(AtomicUsize::new(0));
        let (count, files) = (requests.clone(), dir.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (count, files, answers) = (count.clone(), files.clone(), answers.clone());
                std::thread::spawn(move || serve(stream, &count, files.path(), &answers));
            }
        });
        Responder { url, requests, dir }
    }

    /// A responder whose answers `openssl ocsp` signs with the CA's own key.
    fn signed_by_ca(ca: &Ca, index: &str) -> Responder {
        Responder::start(ca, index, |dir| Answers::Signed {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
            pause: Duration::ZERO,
            max_age: None,
        })
    }

    /// A responder whose answers this certificate and key sign.
    fn signed_with(ca: &Ca, index: &str, (cert, key): (String, String)) -> Responder {
        Responder::start(ca, index, |dir| {
            std::fs::write(dir.join("signer.pem"), cert).unwrap();
            std::fs::write(dir.join("signer.key"), key).unwrap();
            Answers::Signed {
                cert: dir.join("signer.pem"),
                key: dir.join("signer.key"),
                pause: Duration::ZERO,
                max_age: None,
            }
        })
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Answers one HTTP/1.1 POST of a DER OCSP request.
fn serve(mut stream: std::net::TcpStream, count: &AtomicUsize, dir: &Path, answers: &Answers) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body_start) = loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&request[..end]).to_string(),
                end + 4,
            );
        }
    };
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while request.len() < body_start + length {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let n = count.fetch_add(1, Ordering::SeqCst);
    assert!(head.starts_with("POST "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/ocsp-request"),
        "{head}"
    );
    let (cert, key, pause, max_age) = match answers {
        Answers::Never => {
            // Holds the connection open, unanswered, longer than any timeout of the tests.
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        Answers::Signed {
            cert,
            key,
            pause,
            max_age,
        } => (cert, key, *pause, max_age),
    };
    std::thread::sleep(pause);
    let (req, resp) = (
        dir.join(format!("req-{n}.der")),
        dir.join(format!("resp-{n}.der")),
    );
    std::fs::write(&req, &request[body_start..body_start + length]).unwrap();
    let out = std::process::Command::new("openssl")
        .arg("ocsp")
        .arg("-index")
        .arg(dir.join("index.txt"))
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-rsigner")
        .arg(cert)
        .arg("-rkey")
        .arg(key)
        .arg("-reqin")
        .arg(&req)
        .arg("-respout")
        .arg(&resp)
        .args(["-nmin", "60"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl ocsp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = std::fs::read(&resp).unwrap();
    let cache_control = max_age
        .map(|s| format!("Cache-Control: max-age={s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\n{cache_control}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// The PKI of a test: the support PKI's server certificate, and the client CA.
struct Setup {
    pki: Pki,
    ca: Ca,
}

fn setup() -> Setup {
    Setup {
        pki: Pki::new(),
        ca: ca("OCSP Test Client CA"),
    }
}

impl Setup {
    fn service(&self, settings: &[(&str, &str)]) -> TlsService {
        TlsService::start(&self.pki, &self.ca.pem, None, settings)
    }

    async fn token(&self, service: &TlsService, leaf: &Leaf) -> (u16, Value) {
        post_token(&https_client(&self.pki.root.pem, Some(leaf)), service).await
    }

    /// The token request's status, `Retry-After` and body.
    async fn token_answer(
        &self,
        service: &TlsService,
        leaf: &Leaf,
    ) -> (u16, Option<String>, Value) {
        let response = https_client(&self.pki.root.pem, Some(leaf))
            .post(service.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(GRANT)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, response.json().await.unwrap())
    }
}

const GOOD: &[u8] = &[0x10, 0x01];
const REVOKED: &[u8] = &[0x10, 0x02];

fn assert_issued(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    assert!(body["id_token"].is_string(), "{body}");
}

fn assert_denied(status: u16, body: &Value, parts: &[&str]) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied", "{body}");
    let description = body["error_description"].as_str().unwrap();
    for part in parts {
        assert!(description.contains(part), "{part:?} not in {description}");
    }
}

/// A good certificate is accepted and its answer kept: the second request makes no second
/// call; a revoked one is refused naming its serial, in both modes.
#[tokio::test]
async fn good_is_accepted_once_asked_and_revoked_is_refused_in_both_modes() {
    let s = setup();
    for mode in ["when-available", "required"] {
        let responder = Responder::signed_by_ca(&s.ca, &index(&[GOOD], &[REVOKED]));
        let good = client(&s.ca, "good", GOOD, Some(&responder.url));
        let revoked = client(&s.ca, "revoked", REVOKED, Some(&responder.url));
        let service = s.service(&[("TLS_CLIENT_OCSP", mode)]);
        let (status, body) = s.token(&service, &good).await;
        assert_issued(status, &body);
        assert_eq!(responder.requests(), 1, "{mode}");
        let (status, body) = s.token(&service, &good).await;
        assert_issued(status, &body);
        assert_eq!(responder.requests(), 1, "{mode}: the answer is kept");
        let (status, body) = s.token(&service, &revoked).await;
        assert_denied(status, &body, &["(serial 10:02)", "revoked (OCSP)"]);
        assert_eq!(responder.requests(), 2, "{mode}");
        let (status, body) = s.token(&service, &revoked).await;
        assert_denied(status, &body, &["revoked (OCSP)"]);
        assert_eq!(responder.requests(), 2, "{mode}: the revocation is kept");
    }
}

/// A responder that accepts the request and never answers: `when-available` accepts (and
/// keeps that briefly: the next request does not wait again), `required` answers 503 with
/// `Retry-After`, since the client can do nothing about it (so it is no failed
/// authentication of the client either: no 429 from `RATE_LIMIT_AUTH_FAILURES`).
#[tokio::test]
async fn an_unreachable_responder_is_accepted_when_available_and_503_when_required() {
    let s = setup();
    for mode in ["when-available", "required"] {
        let responder = Responder::start(&s.ca, &index(&[GOOD], &[]), |_| Answers::Never);
        let good = client(&s.ca, "good", GOOD, Some(&responder.url));
        let service = s.service(&[
            ("TLS_CLIENT_OCSP", mode),
            ("TLS_CLIENT_OCSP_TIMEOUT", "1"),
            ("RATE_LIMIT_AUTH_FAILURES", "1"),
            ("RATE_LIMIT_AUTH_FAILURES_BURST", "1"),
        ]);
        for _ in 0..3 {
            let (status, retry_after, body) = s.token_answer(&service, &good).await;
            if mode == "when-available" {
                assert_issued(status, &body);
            } else {
                assert_eq!(status, 503, "{body}");
                assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                let description = body["error_description"].as_str().unwrap();
                assert!(description.contains("(serial 10:01)"), "{description}");
                assert!(
                    description.contains("could not be reached"),
                    "{description}"
                );
                let retry_after: u64 = retry_after.unwrap().parse().unwrap();
                assert!((1..=30).contains(&retry_after), "{retry_after}");
            }
        }
        assert_eq!(responder.requests(), 1, "{mode}: no answer is kept briefly");
    }
}

/// Answers signed by another CA's responder certificate (with id-kp-OCSPSigning, the wrong
/// key) are no answer: accepted with `when-available`, refused with `required`; a responder
/// certificate the client CA issued with id-kp-OCSPSigning is trusted.
#[tokio::test]
async fn only_the_ca_or_its_delegated_responder_may_sign_answers() {
    let s = setup();
    let other = ca("Another CA");
    for (mode, status) in [("when-available", 200), ("required", 403)] {
        let responder = Responder::signed_with(
            &s.ca,
            &index(&[GOOD], &[]),
            responder_cert(&other, "Another CA's responder"),
        );
        let good = client(&s.ca, "good", GOOD, Some(&responder.url));
        let service = s.service(&[("TLS_CLIENT_OCSP", mode)]);
        let (got, body) = s.token(&service, &good).await;
        if status == 200 {
            assert_issued(got, &body);
        } else {
            assert_denied(
                got,
                &body,
                &["(serial 10:01)", "is not trusted", "did not issue"],
            );
        }
        assert_eq!(responder.requests(), 1);
    }
    let responder = Responder::signed_with(
        &s.ca,
        &index(&[GOOD], &[REVOKED]),
        responder_cert(&s.ca, "Delegated responder"),
    );
    let service = s.service(&[("TLS_CLIENT_OCSP", "required")]);
    let good = client(&s.ca, "good", GOOD, Some(&responder.url));
    let (status, body) = s.token(&service, &good).await;
    assert_issued(status, &body);
    let revoked = client(&s.ca, "revoked", REVOKED, Some(&responder.url));
    let (status, body) = s.token(&service, &revoked).await;
    assert_denied(status, &body, &["revoked (OCSP)"]);
    assert_eq!(responder.requests(), 2);
}

/// `TLS_CLIENT_OCSP_RESPONDER` is asked instead of the certificate's AIA URL; without either,
/// `required` refuses (403: nothing to retry) and `when-available` accepts.
#[tokio::test]
async fn the_responder_setting_overrides_the_aia_and_no_responder_is_no_answer() {
    let s = setup();
    let listed = Responder::start(&s.ca, &index(&[GOOD], &[]), |_| Answers::Never);
    let configured = Responder::signed_by_ca(&s.ca, &index(&[GOOD], &[]));
    let good = client(&s.ca, "good", GOOD, Some(&listed.url));
    let service = s.service(&[
        ("TLS_CLIENT_OCSP", "required"),
        ("TLS_CLIENT_OCSP_RESPONDER", &configured.url),
    ]);
    let (status, body) = s.token(&service, &good).await;
    assert_issued(status, &body);
    assert_eq!((configured.requests(), listed.requests()), (1, 0));

    let without_aia = client(&s.ca, "no-aia", &[0x10, 0x03], None);
    let service = s.service(&[("TLS_CLIENT_OCSP", "required")]);
    let (status, body) = s.token(&service, &without_aia).await;
    assert_denied(
        status,
        &body,
        &["names no OCSP responder", "TLS_CLIENT_OCSP=required"],
    );
    let service = s.service(&[("TLS_CLIENT_OCSP", "when-available")]);
    let (status, body) = s.token(&service, &without_aia).await;
    assert_issued(status, &body);
}

/// An accepted certificate is not trusted longer than its OCSP answer: once the answer's HTTP
/// `max-age` (shorter than its nextUpdate) has passed, the next request asks again, and a
/// revocation published meanwhile refuses it.
#[tokio::test]
async fn a_kept_acceptance_ends_with_its_ocsp_answer() {
    let s = setup();
    let responder = Responder::start(&s.ca, &index(&[GOOD], &[]), |dir| Answers::Signed {
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
        pause: Duration::ZERO,
        max_age: Some(1),
    });
    let good = client(&s.ca, "good", GOOD, Some(&responder.url));
    let service = s.service(&[("TLS_CLIENT_OCSP", "required")]);
    let (status, body) = s.token(&service, &good).await;
    assert_issued(status, &body);
    assert_eq!(responder.requests(), 1);
    // The CA revokes the certificate; the kept answer and acceptance expire.
    std::fs::write(responder.dir.path().join("index.txt"), index(&[], &[GOOD])).unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = s.token(&service, &good).await;
    assert_denied(status, &body, &["(serial 10:01)", "revoked (OCSP)"]);
    assert_eq!(responder.requests(), 2);
}

/// `off` (the default) asks no responder: even a revoked certificate's token is issued.
#[tokio::test]
async fn off_makes_no_call() {
    let s = setup();
    let responder = Responder::signed_by_ca(&s.ca, &index(&[], &[REVOKED]));
    let revoked = client(&s.ca, "revoked", REVOKED, Some(&responder.url));
    for settings in [&[][..], &[("TLS_CLIENT_OCSP", "off")][..]] {
        let service = s.service(settings);
        let (status, body) = s.token(&service, &revoked).await;
        assert_issued(status, &body);
    }
    assert_eq!(responder.requests(), 0);
}

/// Requests that arrive while a certificate's answer is on its way wait for that one
/// exchange instead of starting their own.
#[tokio::test]
async fn one_exchange_per_certificate_is_in_flight() {
    let s = setup();
    let responder = Responder::start(&s.ca, &index(&[GOOD], &[]), |dir| Answers::Signed {
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
        pause: Duration::from_millis(500),
        max_age: None,
    });
    let good = client(&s.ca, "good", GOOD, Some(&responder.url));
    let service = s.service(&[("TLS_CLIENT_OCSP", "required")]);
    let requests = (0..4).map(|_| s.token(&service, &good));
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_issued(status, &body);
    }
    assert_eq!(responder.requests(), 1);
}

/// The request's one log line says what OCSP found (`ocsp`), and `/metrics` counts the
/// decisions.
#[tokio::test]
async fn the_log_line_and_metrics_show_the_ocsp_outcome() {
    let s = setup();
    let responder = Responder::signed_by_ca(&s.ca, &index(&[GOOD], &[REVOKED]));
    let silent = Responder::start(&s.ca, &index(&[], &[]), |_| Answers::Never);
    let good = client(&s.ca, "good", GOOD, Some(&responder.url));
    let revoked = client(&s.ca, "revoked", REVOKED, Some(&responder.url));
    let unanswered = client(&s.ca, "unanswered", &[0x10, 0x04], Some(&silent.url));
    let service = TlsService::start_process(
        &s.pki,
        &s.ca.pem,
        None,
        &[
            ("TLS_CLIENT_OCSP", "when-available"),
            ("TLS_CLIENT_OCSP_TIMEOUT", "1"),
        ],
    );
    assert_issued_pair(s.token(&service, &good).await);
    assert_issued_pair(s.token(&service, &unanswered).await);
    let (status, body) = s.token(&service, &revoked).await;
    assert_denied(status, &body, &["revoked (OCSP)"]);
    let issued = service.events("token_issued");
    let outcomes: Vec<&str> = issued.iter().map(|l| l["ocsp"].as_str().unwrap()).collect();
    assert_eq!(outcomes[0], "good", "{issued:?}");
    assert!(
        outcomes[1].starts_with("unavailable: the OCSP responder http://127.0.0.1:")
            && outcomes[1].contains("could not be reached (timed out)"),
        "{issued:?}"
    );
    let rejected = service.events("client_certificate_rejected");
    assert_eq!(rejected[0]["ocsp"], "revoked", "{rejected:?}");
    assert_eq!(rejected[0]["cert/serial"], "10:02", "{rejected:?}");
    let metrics = https_client(&s.pki.root.pem, Some(&good))
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for result in ["good", "unavailable_accepted", "revoked"] {
        let line = format!("token_service_client_ocsp_checks_total{{result=\"{result}\"}} 1");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

fn assert_issued_pair((status, body): (u16, Value)) {
    assert_issued(status, &body);
}

/// `check-config` shows the mode and responder the service will use, and warns when nothing
/// would be checked; `--help` lists the three settings.
#[test]
fn check_config_and_help_show_the_ocsp_settings() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new("timeout")
            .arg("20")
            .arg(BIN)
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "https://aud"),
            ("SIGNER", "local"),
            ("TLS_CLIENT_OCSP", "required"),
            ("TLS_CLIENT_OCSP_RESPONDER", "http://ocsp.example.test/"),
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let value = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_owned()
    };
    assert_eq!(value("TLS_CLIENT_OCSP"), "required");
    assert_eq!(
        value("TLS_CLIENT_OCSP_RESPONDER"),
        "http://ocsp.example.test"
    );
    assert_eq!(value("TLS_CLIENT_OCSP_TIMEOUT"), "5");
    assert!(
        stderr.contains("TLS_CLIENT_OCSP=required has no effect without TLS_CLIENT_CA_FILE"),
        "{stderr}"
    );
    let bad = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "https://aud"),
            ("TLS_CLIENT_OCSP", "maybe"),
        ],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("TLS_CLIENT_OCSP: 'maybe' is not valid"),
        "{stderr}"
    );
    let help = run(&["--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    for name in [
        "TLS_CLIENT_OCSP ",
        "TLS_CLIENT_OCSP_RESPONDER",
        "TLS_CLIENT_OCSP_TIMEOUT",
    ] {
        assert!(help.contains(name), "{name} not in --help");
    }
}

/// The forwarded-cert flow verifies the certificate a proxy forwards, so OCSP applies there
/// too: a revoked certificate is refused, a good one gets its token.
#[tokio::test]
async fn the_forwarded_cert_flow_checks_ocsp_too() {
    use base64::Engine as _;
    let s = setup();
    let responder = Responder::signed_by_ca(&s.ca, &index(&[GOOD], &[REVOKED]));
    let good = client(&s.ca, "good", GOOD, Some(&responder.url));
    let revoked = client(&s.ca, "revoked", REVOKED, Some(&responder.url));
    let files = tempfile::tempdir().unwrap();
    let ca_file = support::temp_file(&files, "client-ca.pem", &s.ca.pem);
    let server = support::Server::start(&[
        ("AUTH_FLOWS", "forwarded-cert-client-credentials"),
        ("TLS_CLIENT_CA_FILE", ca_file.to_str().unwrap()),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TLS_CLIENT_OCSP", "required"),
    ]);
    let post = |leaf: &Leaf| {
        let header = format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(&leaf.der)
        );
        support::client()
            .post(server.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("Client-Cert", header)
            .body(GRANT)
            .send()
    };
    let answer = post(&good).await.unwrap();
    let status = answer.status().as_u16();
    assert_issued(status, &answer.json().await.unwrap());
    let answer = post(&revoked).await.unwrap();
    let status = answer.status().as_u16();
    assert_denied(
        status,
        &answer.json().await.unwrap(),
        &["(serial 10:02)", "revoked (OCSP)"],
    );
    assert_eq!(responder.requests(), 2);
}

/// A certificate the responder does not know (not in its `index.txt`: status unknown) is no
/// answer: accepted with `when-available`, refused with `required`.
#[tokio::test]
async fn status_unknown_is_no_answer() {
    let s = setup();
    let responder = Responder::signed_by_ca(&s.ca, &index(&[GOOD], &[]));
    let stranger = client(&s.ca, "stranger", &[0x10, 0x05], Some(&responder.url));
    let service = s.service(&[("TLS_CLIENT_OCSP", "when-available")]);
    let (status, body) = s.token(&service, &stranger).await;
    assert_issued(status, &body);
    let service = s.service(&[("TLS_CLIENT_OCSP", "required")]);
    let (status, body) = s.token(&service, &stranger).await;
    assert_denied(
        status,
        &body,
        &[
            "(serial 10:05)",
            "does not know the certificate (status unknown)",
        ],
    );
    assert_eq!(responder.requests(), 2);
}
