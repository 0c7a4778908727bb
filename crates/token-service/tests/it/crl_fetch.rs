//! CRLs fetched over HTTP (`TLS_CLIENT_CRL_URLS`, `TLS_CLIENT_CRL_FOLLOW_CDP`): a CRL server on
//! 127.0.0.1 (axum, port 0, on a thread of its own so it answers while a test blocks) that
//! serves what the test sets per path and records every request; CAs, leaves with CRL
//! distribution points and CRLs made here with rcgen; the service in-process with TLS and the
//! `mtls-client-credentials` flow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::support::tls::{
    Leaf, Pki, REVOKED, Spec, TlsService, assert_refused, https_client, id_token, post_token,
};

// ---------------------------------------------------------------------------------------------
// The CRL server
// ---------------------------------------------------------------------------------------------

/// What the server answers on one path.
#[derive(Clone)]
enum Reply {
    Body(Vec<u8>),
    Slow(Duration, Vec<u8>),
    Redirect(String),
    /// In chunks of 1 KiB without Content-Length.
    Chunked(Vec<u8>),
}

#[derive(Default)]
struct Served {
    replies: Mutex<HashMap<String, Reply>>,
    seen: Mutex<Vec<String>>,
}

/// A CRL server on 127.0.0.1; dropping it stops it (its port then refuses connections).
struct CrlServer {
    base: String,
    served: Arc<Served>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn answer(State(served): State<Arc<Served>>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    served.seen.lock().unwrap().push(path.clone());
    let reply = served.replies.lock().unwrap().get(&path).cloned();
    match reply {
        Some(Reply::Body(body)) => {
            ([(header::CONTENT_TYPE, "application/pkix-crl")], body).into_response()
        }
        Some(Reply::Slow(pause, body)) => {
            tokio::time::sleep(pause).await;
            body.into_response()
        }
        Some(Reply::Redirect(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Some(Reply::Chunked(body)) => {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                body.chunks(1024).map(|c| Ok(c.to_vec())).collect();
            axum::body::Body::from_stream(futures_util::stream::iter(chunks)).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl CrlServer {
    fn start() -> CrlServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let served = Arc::new(Served::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = served.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(answer).with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        CrlServer {
            base: format!("http://127.0.0.1:{port}"),
            served,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn set(&self, path: &str, reply: Reply) {
        self.served
            .replies
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    fn serve(&self, path: &str, crl: Vec<u8>) {
        self.set(path, Reply::Body(crl));
    }

    /// How many requests asked for `path`.
    fn hits(&self, path: &str) -> usize {
        self.served
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    fn total_hits(&self) -> usize {
        self.served.seen.lock().unwrap().len()
    }

    /// Waits (at most 30 s) until `path` was asked for at least `n` times.
    async fn wait_for_hits(&self, path: &str, n: usize) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.hits(path) < n {
            assert!(
                Instant::now() < until,
                "{path} was asked for {} times, not {n}",
                self.hits(path)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PKI with distribution points
// ---------------------------------------------------------------------------------------------

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn dn(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Token Service CRL fetch tests");
    dn.push(DnType::CommonName, name);
    dn
}

fn next_serial() -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(0x3000_0000);
    NEXT.fetch_add(1, Ordering::SeqCst).to_be_bytes().to_vec()
}

/// A client CA, root or intermediate.
struct TestCa {
    pem: String,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn params(name: &str, cdp: Option<&str>) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.serial_number = Some(SerialNumber::from_slice(&next_serial()));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now() - time::Duration::hours(1);
        params.not_after = now() + time::Duration::days(30);
        if let Some(url) = cdp {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
        }
        params
    }

    fn root(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = Self::params(name, None);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate whose own distribution point (naming this CA's CRL) is `cdp`.
    fn intermediate(&self, name: &str, cdp: Option<&str>) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let params = Self::params(name, cdp);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCa {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate whose distribution point is `cdp`; `chain` are the CA certificates
    /// the client sends after it.
    fn leaf(&self, name: &str, cdp: Option<&str>, chain: &[&TestCa]) -> Leaf {
        let spec = Spec::client(name, &next_serial());
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.serial_number = Some(SerialNumber::from_slice(&spec.serial));
        params.subject_alt_names = vec![SanType::URI(
            spec.spiffe.clone().unwrap().try_into().unwrap(),
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        if let Some(url) = cdp {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain_pem = cert.pem();
        let mut chain_der = vec![cert.der().to_vec()];
        for ca in chain {
            chain_pem.push_str(&ca.pem);
            chain_der.push(ca.der.clone());
        }
        Leaf {
            spec: Spec {
                uri: None,
                dns: None,
                ..spec
            },
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            chain_pem,
            chain_der,
        }
    }

    /// A DER CRL revoking `revoked` with CRL number `number`, thisUpdate `age` ago, nextUpdate
    /// `valid` from now.
    fn crl(
        &self,
        revoked: &[&Leaf],
        number: u64,
        age: time::Duration,
        valid: time::Duration,
    ) -> Vec<u8> {
        let serials: Vec<Vec<u8>> = revoked.iter().map(|l| l.spec.serial.clone()).collect();
        self.crl_of(&serials, number, age, valid)
    }

    fn crl_of(
        &self,
        serials: &[Vec<u8>],
        number: u64,
        age: time::Duration,
        valid: time::Duration,
    ) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: now() - age,
            next_update: now() + valid,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now() - time::Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    /// A day-long CRL revoking `revoked`.
    fn day_crl(&self, revoked: &[&Leaf], number: u64) -> Vec<u8> {
        self.crl(
            revoked,
            number,
            time::Duration::minutes(1),
            time::Duration::days(1),
        )
    }
}

fn pem_crl(der: &[u8]) -> String {
    crate::support::pem("X509 CRL", der)
}

const UNKNOWN_STATUS: &str = "The client certificate has an unknown revocation status: no CRL of a CA of its chain is in force (from TLS_CLIENT_CRL_FILE, TLS_CLIENT_CRL_URLS or a distribution point), which TLS_CLIENT_CRL_REQUIRED=true requires";

/// The status and body of a token request with `leaf`.
async fn token_with(pki: &Pki, service: &TlsService, leaf: &Leaf) -> (u16, serde_json::Value) {
    post_token(&https_client(&pki.root.pem, Some(leaf)), service).await
}

/// Asks with `leaf` until the answer is `status` (at most 30 s).
async fn until_status(
    pki: &Pki,
    service: &TlsService,
    leaf: &Leaf,
    status: u16,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (got, body) = token_with(pki, service, leaf).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < until, "still {got}, not {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn start(pki: &Pki, ca: &TestCa, crl_file: Option<&str>, extra: &[(&str, &str)]) -> TlsService {
    TlsService::start(pki, &ca.pem, crl_file, extra)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_crl_from_a_configured_url_revokes_what_it_lists() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("URL CA"), CrlServer::start());
    let (revoked, good) = (ca.leaf("revoked", None, &[]), ca.leaf("good", None, &[]));
    server.serve("/ca.crl", ca.day_crl(&[&revoked], 1));
    let url = server.url("/ca.crl");
    let service = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_URLS", &url)]);
    let body = until_status(&pki, &service, &revoked, 403).await;
    assert_refused(403, &body, REVOKED);
    let (status, body) = token_with(&pki, &service, &good).await;
    id_token(status, &body);
}

#[tokio::test]
async fn a_configured_url_whose_crl_no_bundle_ca_signed_is_refused() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Signed CA"), CrlServer::start());
    // Same name, another key: a forgery of the CA's CRL.
    let forger = TestCa::root("Signed CA");
    let revoked = ca.leaf("revoked", None, &[]);
    server.serve("/ca.crl", forger.day_crl(&[&revoked], 1));
    let url = server.url("/ca.crl");
    let service = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_URLS", &url)]);
    server.wait_for_hits("/ca.crl", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = token_with(&pki, &service, &revoked).await;
    id_token(status, &body);
}

#[tokio::test]
async fn a_distribution_point_is_followed_only_when_asked_to() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("CDP CA"), CrlServer::start());
    let url = server.url("/cdp.crl");
    let revoked = ca.leaf("revoked", Some(&url), &[]);
    server.serve("/cdp.crl", ca.day_crl(&[&revoked], 1));

    let off = start(&pki, &ca, None, &[]);
    let (status, body) = token_with(&pki, &off, &revoked).await;
    id_token(status, &body);
    assert_eq!(
        server.total_hits(),
        0,
        "nothing is fetched with TLS_CLIENT_CRL_FOLLOW_CDP off"
    );

    let on = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_FOLLOW_CDP", "true")]);
    // The first request waits for the one fetch of the point: no polling needed.
    let (status, body) = token_with(&pki, &on, &revoked).await;
    assert_refused(status, &body, REVOKED);
    let (status, body) = token_with(&pki, &on, &revoked).await;
    assert_refused(status, &body, REVOKED);
    assert_eq!(server.hits("/cdp.crl"), 1, "one fetch, not one per request");
}

#[tokio::test]
async fn an_intermediates_distribution_point_names_its_parents_crl() {
    let (pki, root, server) = (Pki::new(), TestCa::root("CDP Root"), CrlServer::start());
    let root_url = server.url("/root.crl");
    let intermediate = root.intermediate("CDP Intermediate", Some(&root_url));
    let leaf = intermediate.leaf("via-intermediate", None, &[&intermediate]);
    let service = start(&pki, &root, None, &[("TLS_CLIENT_CRL_FOLLOW_CDP", "true")]);
    // The root's CRL lists the intermediate: every leaf under it is refused.
    let serial = x509_parser::parse_x509_certificate(&intermediate.der)
        .unwrap()
        .1
        .raw_serial()
        .to_vec();
    server.serve(
        "/root.crl",
        root.crl_of(
            &[serial],
            1,
            time::Duration::minutes(1),
            time::Duration::days(1),
        ),
    );
    let (status, body) = token_with(&pki, &service, &leaf).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("has been revoked"),
        "{body}"
    );
}

#[tokio::test]
async fn the_distribution_point_of_an_untrusted_certificate_is_never_fetched() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Trusted CA"), CrlServer::start());
    let stranger = TestCa::root("Stranger CA");
    let url = server.url("/stranger.crl");
    server.serve("/stranger.crl", stranger.day_crl(&[], 1));
    let foreign = stranger.leaf("foreign", Some(&url), &[]);
    // A chain that sends the stranger along as intermediate, and one whose leaf copies the
    // trusted CA's name as issuer but is signed by the stranger.
    let padded = stranger.leaf("padded", Some(&url), &[&stranger]);
    let mut lookalike_ca = TestCa::root("Trusted CA");
    lookalike_ca.pem.clear();
    let lookalike = lookalike_ca.leaf("lookalike", Some(&url), &[]);
    let service = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_FOLLOW_CDP", "true")]);
    for leaf in [&foreign, &padded, &lookalike] {
        let (status, body) = token_with(&pki, &service, leaf).await;
        assert_eq!(status, 403, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.total_hits(),
        0,
        "an untrusted certificate made the service fetch"
    );
}

/// A refusal no CRL can change (here: the trusted CA's certificate lacks the DNS SAN the client
/// ID needs) fetches nothing, though its point is trusted; an accepted chain's point is fetched.
#[tokio::test]
async fn only_a_chain_a_crl_could_change_makes_the_service_fetch_its_point() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Points CA"), CrlServer::start());
    let url = server.url("/points.crl");
    server.serve("/points.crl", ca.day_crl(&[], 1));
    let leaf = ca.leaf("no-dns", Some(&url), &[]);
    let service = start(
        &pki,
        &ca,
        None,
        &[
            ("TLS_CLIENT_CRL_FOLLOW_CDP", "true"),
            ("MTLS_CLIENT_ID_ATTRIBUTE", "dns_san"),
        ],
    );
    let (status, body) = token_with(&pki, &service, &leaf).await;
    assert_eq!(status, 403, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.total_hits(), 0, "a refusal no CRL changes fetched");

    let service = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_FOLLOW_CDP", "true")]);
    let (status, body) = token_with(&pki, &service, &leaf).await;
    id_token(status, &body);
    assert_eq!(server.total_hits(), 1);
}

#[tokio::test]
async fn the_refresher_replaces_a_crl_before_its_next_update() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Refresh CA"), CrlServer::start());
    let leaf = ca.leaf("leaf", None, &[]);
    let first_next_update = now() + time::Duration::seconds(20);
    server.serve(
        "/ca.crl",
        ca.crl(
            &[],
            1,
            time::Duration::seconds(1),
            time::Duration::seconds(20),
        ),
    );
    let url = server.url("/ca.crl");
    let service = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_URLS", &url)]);
    server.wait_for_hits("/ca.crl", 1).await;
    let (status, body) = token_with(&pki, &service, &leaf).await;
    id_token(status, &body);
    server.serve("/ca.crl", ca.day_crl(&[&leaf], 2));
    let body = until_status(&pki, &service, &leaf, 403).await;
    assert_refused(403, &body, REVOKED);
    assert!(
        now() < first_next_update,
        "the new CRL came in only after the old one's nextUpdate"
    );
}

#[tokio::test]
async fn a_download_with_a_bad_signature_never_replaces_the_crl_in_force() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Forged CA"), CrlServer::start());
    let leaf = ca.leaf("leaf", None, &[]);
    // Refreshed within seconds (nextUpdate soon), so the forgery is downloaded.
    server.serve(
        "/ca.crl",
        ca.crl(
            &[&leaf],
            1,
            time::Duration::seconds(1),
            time::Duration::seconds(9),
        ),
    );
    let url = server.url("/ca.crl");
    let service = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_URLS", &url)]);
    let body = until_status(&pki, &service, &leaf, 403).await;
    assert_refused(403, &body, REVOKED);
    let forger = TestCa::root("Forged CA");
    server.serve("/ca.crl", forger.day_crl(&[], 50));
    server.wait_for_hits("/ca.crl", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = token_with(&pki, &service, &leaf).await;
    assert_refused(status, &body, REVOKED);
}

#[tokio::test]
async fn a_restart_while_the_crl_server_is_down_uses_the_disk_cache() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Cache CA"), CrlServer::start());
    let leaf = ca.leaf("leaf", None, &[]);
    server.serve("/ca.crl", ca.day_crl(&[&leaf], 1));
    let url = server.url("/ca.crl");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("crls").display().to_string();
    let settings = [
        ("TLS_CLIENT_CRL_URLS", url.as_str()),
        ("TLS_CLIENT_CRL_CACHE_DIR", cache_dir.as_str()),
        ("TLS_CLIENT_CRL_REQUIRED", "true"),
    ];
    let first = start(&pki, &ca, None, &settings);
    until_status(&pki, &first, &leaf, 403).await;
    drop(first);
    drop(server);
    let files: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one cached CRL");
    let good = ca.leaf("good", None, &[]);
    let second = start(&pki, &ca, None, &settings);
    // At once, without the server: the cached CRL is in force from startup.
    let (status, body) = token_with(&pki, &second, &leaf).await;
    assert_refused(status, &body, REVOKED);
    let (status, body) = token_with(&pki, &second, &good).await;
    id_token(status, &body);
}

#[tokio::test]
async fn a_slow_distribution_point_costs_a_request_at_most_the_fetch_timeout() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Slow CA"), CrlServer::start());
    let url = server.url("/slow.crl");
    let leaf = ca.leaf("leaf", Some(&url), &[]);
    server.set(
        "/slow.crl",
        Reply::Slow(Duration::from_secs(60), ca.day_crl(&[&leaf], 1)),
    );
    let service = start(
        &pki,
        &ca,
        None,
        &[
            ("TLS_CLIENT_CRL_FOLLOW_CDP", "true"),
            ("TLS_CLIENT_CRL_FETCH_TIMEOUT", "1"),
            ("TLS_CLIENT_CRL_REQUIRED", "true"),
        ],
    );
    // Bounded well below the server's pause: the fetch gives up, the CRL is missing.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_certs_only([reqwest::Certificate::from_pem(pki.root.pem.as_bytes()).unwrap()])
        .identity(
            reqwest::Identity::from_pem(format!("{}{}", leaf.chain_pem, leaf.key_pem).as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();
    let (status, body) = post_token(&client, &service).await;
    assert_refused(status, &body, UNKNOWN_STATUS);
    // A second request does not wait for the point again: the refresher retries it.
    let (status, body) = post_token(&client, &service).await;
    assert_refused(status, &body, UNKNOWN_STATUS);
    assert_eq!(server.hits("/slow.crl"), 1);
}

#[tokio::test]
async fn a_crl_larger_than_the_cap_is_refused() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Big CA"), CrlServer::start());
    let url = server.url("/big.crl");
    let leaf = ca.leaf("leaf", Some(&url), &[]);
    let mut serials: Vec<Vec<u8>> = (0..200u32)
        .map(|n| (0x7000_0000 + n).to_be_bytes().to_vec())
        .collect();
    serials.push(leaf.spec.serial.clone());
    let big = ca.crl_of(
        &serials,
        1,
        time::Duration::minutes(1),
        time::Duration::days(1),
    );
    assert!(big.len() > 4096, "{}", big.len());
    server.serve("/big.crl", big);
    let follow = ("TLS_CLIENT_CRL_FOLLOW_CDP", "true");
    let capped = start(
        &pki,
        &ca,
        None,
        &[follow, ("TLS_CLIENT_CRL_MAX_BYTES", "4096")],
    );
    let (status, body) = token_with(&pki, &capped, &leaf).await;
    id_token(status, &body);
    assert_eq!(server.hits("/big.crl"), 1);
    let uncapped = start(&pki, &ca, None, &[follow]);
    let (status, body) = token_with(&pki, &uncapped, &leaf).await;
    assert_refused(status, &body, REVOKED);
    // The same without Content-Length: the body is dropped once over the cap.
    let url = server.url("/chunked.crl");
    let leaf = ca.leaf("chunked", Some(&url), &[]);
    let mut serials: Vec<Vec<u8>> = (0..200u32)
        .map(|n| (0x7100_0000 + n).to_be_bytes().to_vec())
        .collect();
    serials.push(leaf.spec.serial.clone());
    let big = ca.crl_of(
        &serials,
        2, // newer than the CRL of /big.crl, which the uncapped service holds
        time::Duration::minutes(1),
        time::Duration::days(1),
    );
    server.set("/chunked.crl", Reply::Chunked(big));
    let (status, body) = token_with(&pki, &capped, &leaf).await;
    id_token(status, &body);
    assert_eq!(server.hits("/chunked.crl"), 1);
    let (status, body) = token_with(&pki, &uncapped, &leaf).await;
    assert_refused(status, &body, REVOKED);
}

#[tokio::test]
async fn a_redirect_is_followed_only_on_the_same_host() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Redirect CA"), CrlServer::start());
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let elsewhere = server.url("/elsewhere");
    let same = server.url("/same");
    let away = ca.leaf("away", Some(&elsewhere), &[]);
    let near = ca.leaf("near", Some(&same), &[]);
    server.serve("/ca.crl", ca.day_crl(&[&away, &near], 1));
    // Another host name for the same server: not followed.
    server.set(
        "/elsewhere",
        Reply::Redirect(format!("http://localhost:{port}/ca.crl")),
    );
    server.set("/same", Reply::Redirect("/ca.crl".to_owned()));
    let service = start(&pki, &ca, None, &[("TLS_CLIENT_CRL_FOLLOW_CDP", "true")]);
    let (status, body) = token_with(&pki, &service, &away).await;
    id_token(status, &body);
    assert_eq!(server.hits("/elsewhere"), 1);
    assert_eq!(
        server.hits("/ca.crl"),
        0,
        "the redirect to another host was followed"
    );
    let (status, body) = token_with(&pki, &service, &near).await;
    assert_refused(status, &body, REVOKED);
    assert_eq!(server.hits("/ca.crl"), 1);
}

#[tokio::test]
async fn no_more_distinct_urls_than_the_limit_are_fetched() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Limit CA"), CrlServer::start());
    let (a, b) = (server.url("/a.crl"), server.url("/b.crl"));
    let first = ca.leaf("first", Some(&a), &[]);
    let second = ca.leaf("second", Some(&b), &[]);
    server.serve("/a.crl", ca.day_crl(&[&first, &second], 1));
    server.serve("/b.crl", ca.day_crl(&[&first, &second], 1));
    let service = start(
        &pki,
        &ca,
        None,
        &[
            ("TLS_CLIENT_CRL_FOLLOW_CDP", "true"),
            ("TLS_CLIENT_CRL_MAX_URLS", "1"),
        ],
    );
    let (status, body) = token_with(&pki, &service, &first).await;
    assert_refused(status, &body, REVOKED);
    // The limit is reached: the second point is not fetched. Its leaf is still refused, by the
    // first CRL, which is the same CA's (one CRL per CA counts, wherever it came from).
    let (status, _) = token_with(&pki, &service, &second).await;
    assert_eq!(status, 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.hits("/b.crl"),
        0,
        "a URL beyond TLS_CLIENT_CRL_MAX_URLS was fetched"
    );
}

#[tokio::test]
async fn of_a_file_crl_and_a_fetched_one_of_one_ca_the_newer_wins_both_ways() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Newer CA"), CrlServer::start());
    let follow = [("TLS_CLIENT_CRL_FOLLOW_CDP", "true")];
    // The fetched CRL is newer (number 9) and no longer lists the leaf: the leaf passes.
    let url = server.url("/newer.crl");
    let unrevoked = ca.leaf("unrevoked", Some(&url), &[]);
    server.serve("/newer.crl", ca.day_crl(&[], 9));
    let file = pem_crl(&ca.day_crl(&[&unrevoked], 5));
    let service = start(&pki, &ca, Some(&file), &follow);
    let (status, body) = token_with(&pki, &service, &unrevoked).await;
    id_token(status, &body);
    assert_eq!(server.hits("/newer.crl"), 1);
    // The file's CRL is newer (number 9) and lists the leaf; the fetched one (5) does not.
    let url = server.url("/older.crl");
    let revoked = ca.leaf("revoked", Some(&url), &[]);
    server.serve("/older.crl", ca.day_crl(&[], 5));
    let file = pem_crl(&ca.day_crl(&[&revoked], 9));
    let service = start(&pki, &ca, Some(&file), &follow);
    let (status, body) = token_with(&pki, &service, &revoked).await;
    assert_refused(status, &body, REVOKED);
    assert_eq!(server.hits("/older.crl"), 1);
}

#[tokio::test]
async fn of_two_crls_of_one_ca_in_the_file_the_newer_wins_wherever_it_stands() {
    let (pki, ca) = (Pki::new(), TestCa::root("File CA"));
    let leaf = ca.leaf("leaf", None, &[]);
    let older = pem_crl(&ca.day_crl(&[], 3));
    let newer = pem_crl(&ca.day_crl(&[&leaf], 4));
    for file in [format!("{older}{newer}"), format!("{newer}{older}")] {
        let service = start(&pki, &ca, Some(&file), &[]);
        let (status, body) = token_with(&pki, &service, &leaf).await;
        assert_refused(status, &body, REVOKED);
    }
    // The same number: the later thisUpdate wins.
    let earlier = pem_crl(&ca.crl(&[], 7, time::Duration::hours(3), time::Duration::days(1)));
    let later = pem_crl(&ca.crl(
        &[&leaf],
        7,
        time::Duration::hours(1),
        time::Duration::days(1),
    ));
    let service = start(&pki, &ca, Some(&format!("{earlier}{later}")), &[]);
    let (status, body) = token_with(&pki, &service, &leaf).await;
    assert_refused(status, &body, REVOKED);
}

/// `check-config` (the binary: its output is the subject) shows the settings with their
/// defaults, the sources and each cached CRL, and fetches nothing.
#[tokio::test]
async fn check_config_reports_the_revocation_sources_and_fetches_nothing() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Report CA"), CrlServer::start());
    let leaf = ca.leaf("leaf", None, &[]);
    server.serve("/ca.crl", ca.day_crl(&[&leaf], 7));
    let url = server.url("/ca.crl");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("crls").display().to_string();
    let service = start(
        &pki,
        &ca,
        None,
        &[
            ("TLS_CLIENT_CRL_URLS", &url),
            ("TLS_CLIENT_CRL_CACHE_DIR", &cache_dir),
        ],
    );
    until_status(&pki, &service, &leaf, 403).await;
    let hits = server.total_hits();
    let path = |name: &str| service.files.path().join(name).display().to_string();
    let output = std::process::Command::new(crate::support::BIN)
        .arg("check-config")
        .env_clear()
        .env("TOKEN_ISSUER", "https://token-service.test")
        .env("TOKEN_AUDIENCE", crate::support::AUDIENCE)
        .env("DATA_DIR", cache.path().join("data"))
        .env("AUTH_FLOWS", "mtls-client-credentials")
        .env("TLS_CERT_FILE", path("server.pem"))
        .env("TLS_KEY_FILE", path("server.key"))
        .env("TLS_CLIENT_CA_FILE", path("client-ca.pem"))
        .env("TLS_CLIENT_CRL_URLS", &url)
        .env("TLS_CLIENT_CRL_FOLLOW_CDP", "true")
        .env("TLS_CLIENT_CRL_CACHE_DIR", &cache_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (name, value) in [
        ("TLS_CLIENT_CRL_URLS", url.as_str()),
        ("TLS_CLIENT_CRL_FOLLOW_CDP", "true"),
        ("TLS_CLIENT_CRL_CACHE_DIR", cache_dir.as_str()),
        ("TLS_CLIENT_CRL_MAX_BYTES", "8388608"),
        ("TLS_CLIENT_CRL_MAX_URLS", "16"),
        ("TLS_CLIENT_CRL_FETCH_TIMEOUT", "5"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains(value)),
            "no {name} {value}:\n{stdout}"
        );
    }
    for expected in [
        "revocation: CRL file: none".to_owned(),
        format!("revocation: CRL URLs: {url}"),
        "revocation: follow CRL distribution points: on".to_owned(),
        format!(
            "revocation: CRL cache folder: '{cache_dir}'; limits: 16 URLs, 8388608 bytes per CRL, 5 s per fetch"
        ),
        format!("revocation: URL {url} (TLS_CLIENT_CRL_URLS): in force"),
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "no line {expected:?}:\n{stdout}"
        );
    }
    let crl_line = stdout
        .lines()
        .find(|l| l.starts_with("revocation: CRL of '") && l.contains(&format!("from {url}:")))
        .unwrap_or_else(|| panic!("no line of the cached CRL:\n{stdout}"));
    assert!(crl_line.contains("Report CA"), "{crl_line}");
    assert!(
        crl_line.contains("thisUpdate 20") && crl_line.contains("nextUpdate 20"),
        "{crl_line}"
    );
    assert!(crl_line.ends_with("CRL number 7"), "{crl_line}");
    assert_eq!(server.total_hits(), hits, "check-config fetched a CRL");
}

/// A leaf's point names its CA's CRL, here an intermediate outside the bundle that the client
/// sends: the CRL must carry that intermediate's signature, and a restart with the CRL server
/// down has it from the cache (its issuer path checked again against the bundle).
#[tokio::test]
async fn a_leafs_point_names_the_crl_of_the_intermediate_that_issued_it() {
    let (pki, root, server) = (
        Pki::new(),
        TestCa::root("Leaf CDP Root"),
        CrlServer::start(),
    );
    let intermediate = root.intermediate("Leaf CDP Intermediate", None);
    let url = server.url("/intermediate.crl");
    let revoked = intermediate.leaf("revoked", Some(&url), &[&intermediate]);
    let good = intermediate.leaf("good", Some(&url), &[&intermediate]);
    // Signed by the root, not by the intermediate: refused, so the leaf passes.
    let wrong_signer = TestCa::root("Leaf CDP Intermediate");
    server.serve("/intermediate.crl", wrong_signer.day_crl(&[&revoked], 1));
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("crls").display().to_string();
    let settings = [
        ("TLS_CLIENT_CRL_FOLLOW_CDP", "true"),
        ("TLS_CLIENT_CRL_CACHE_DIR", cache_dir.as_str()),
    ];
    let service = start(&pki, &root, None, &settings);
    let (status, body) = token_with(&pki, &service, &revoked).await;
    id_token(status, &body);
    drop(service);
    server.serve("/intermediate.crl", intermediate.day_crl(&[&revoked], 2));
    let service = start(&pki, &root, None, &settings);
    let (status, body) = token_with(&pki, &service, &revoked).await;
    assert_refused(status, &body, REVOKED);
    let (status, body) = token_with(&pki, &service, &good).await;
    id_token(status, &body);
    drop(service);
    drop(server);
    let service = start(&pki, &root, None, &settings);
    let (status, body) = token_with(&pki, &service, &revoked).await;
    assert_refused(status, &body, REVOKED);
}

/// The binary's log (the process is the subject): one line per fetch and per failure, with
/// the URL and the reason, and the failures counted in /metrics.
#[tokio::test]
async fn fetches_and_failures_are_logged_and_counted() {
    let (pki, ca, server) = (Pki::new(), TestCa::root("Log CA"), CrlServer::start());
    let leaf = ca.leaf("leaf", None, &[]);
    server.serve("/ca.crl", ca.day_crl(&[&leaf], 1));
    let (good, missing) = (server.url("/ca.crl"), server.url("/missing.crl"));
    let urls = format!("{good},{missing}");
    let service = TlsService::start_process(
        &pki,
        &ca.pem,
        None,
        &[
            ("TLS_CLIENT_CRL_URLS", &urls),
            ("TLS_CLIENT_CRL_CACHE_DIR", "crls"),
        ],
    );
    let fetched = service.wait_for_event("client_crl_fetched", 0).await;
    assert_eq!(fetched["url"], good.as_str(), "{fetched}");
    assert_eq!(fetched["crl_number"], "1", "{fetched}");
    let failed = service.wait_for_event("client_crl_fetch_failed", 0).await;
    assert_eq!(failed["url"], missing.as_str(), "{failed}");
    assert_eq!(failed["reason"], "answered HTTP 404", "{failed}");
    until_status(&pki, &service, &leaf, 403).await;
    let metrics = https_client(&pki.root.pem, None)
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for result in ["ok", "error"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("token_service_reloads_total")
                    && l.contains("material=\"client_crl_url\"")
                    && l.contains(&format!("result=\"{result}\""))),
            "{metrics}"
        );
    }
    // No line per request.
    let lines = service.server.logs();
    let fetch_lines = lines
        .lines()
        .filter(|l| l.contains("client_crl_fetched"))
        .count();
    assert_eq!(fetch_lines, 1, "{lines}");
}

/// Startup refuses URLs it would never fetch, naming the setting.
#[test]
fn urls_other_than_http_and_more_urls_than_the_limit_stop_startup() {
    let (pki, ca) = (Pki::new(), TestCa::root("Startup CA"));
    let (status, printed) = TlsService::start_expecting_failure(
        &pki,
        &ca.pem,
        None,
        &[(
            "TLS_CLIENT_CRL_URLS",
            "ldap://ldap.example.com/cn=CA?certificateRevocationList",
        )],
    );
    assert_eq!(status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("TLS_CLIENT_CRL_URLS: 'ldap://ldap.example.com/cn=CA?certificateRevocationList' is not valid: only http and https are fetched"),
        "{printed}"
    );
    let (status, printed) = TlsService::start_expecting_failure(
        &pki,
        &ca.pem,
        None,
        &[
            (
                "TLS_CLIENT_CRL_URLS",
                "http://a.example/1.crl,http://a.example/2.crl",
            ),
            ("TLS_CLIENT_CRL_MAX_URLS", "1"),
        ],
    );
    assert_eq!(status.code(), Some(2), "{printed}");
    assert!(
        printed
            .contains("TLS_CLIENT_CRL_MAX_URLS: 1 is fewer than the 2 URLs of TLS_CLIENT_CRL_URLS"),
        "{printed}"
    );
}

/// The README's `check-config` command for fetched CRLs runs as written (the binary on PATH,
/// in an empty folder).
#[test]
fn the_readmes_revocation_command_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("### CRLs").unwrap()..];
    let block = section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.trim_start_matches("sh").trim().to_owned())
        .find(|b| b.contains("TLS_CLIENT_CRL_URLS="))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(crate::support::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new("sh")
        .args(["-e", "-c", &block])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "revocation: CRL URLs: http://crl.example.com/root.crl, http://crl.example.com/issuing.crl",
        "revocation: follow CRL distribution points: on",
        "configuration is valid",
    ] {
        assert!(stdout.lines().any(|l| l == line), "no {line:?}:\n{stdout}");
    }
}
