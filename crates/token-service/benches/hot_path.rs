//! Per-request costs of `POST /token`, piece by piece: claims, signing (RS256, ES256, through
//! the `Signer` trait as the service calls it), the load-balancer header flow, form parsing,
//! forwarded-certificate headers, certificate facts, the per-request chain verification of the
//! direct mTLS flow, and for reference jsonwebtoken's `encode` (which re-parses the key on every
//! call) and the bare aws-lc-rs signature.
//! Run: `cargo bench -p token-service --bench hot_path`.
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: fixtures that fail to build end the run"
)]

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};
use token_service::clock::{Clock, Deadline};
use token_service::flows::Flow as _;
use token_service::flows::forwarded_cert::parse::{ForwardedFormat, parse_forwarded};
use token_service::flows::mtls::MtlsFlow;
use token_service::flows::xlb_mtls::{XlbMtlsFlow, XlbSettings, decode_san_list};
use token_service::model::{CertificateFacts, Client, TokenRequest};
use token_service::testing::http::form::parse_form;
use token_service::testing::issuer::{IdTokenIssuer, IssuerSettings};
use token_service::testing::pki::DevPki;
use token_service::testing::signer::LocalSigner;
use token_service::testing::signer::Signer;
use token_service::testing::tasks::Background;
use token_service::testing::x509::{ClientIdAttribute, Trust, TrustSettings, facts};

const ISS: &str = "https://token-service.example.com";
const SPIFFE: &str = "spiffe://token-service.local/ns/demo/sa/device-1";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// PKCS#8 PEM keys: RSA-2048 and P-256.
fn keys() -> (String, String) {
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    (rsa.serialize_pem(), ec.serialize_pem())
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (its third element, an OCTET
/// STRING).
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    use x509_parser::der_parser::parse_der;
    let (_, info) = parse_der(pkcs8).unwrap();
    info.as_sequence().unwrap()[2].as_slice().unwrap().to_vec()
}

/// What the load balancer flow and the mTLS flow produce for the demo client.
fn client() -> Client {
    Client {
        flow: "mtls-client-credentials".into(),
        client_id: SPIFFE.into(),
        facts: CertificateFacts {
            spiffe_id: Some(SPIFFE.into()),
            dns_sans: vec!["device-1.token-service.local".into()],
            sha256_fingerprint: Some("q1Ki0fHfPVfPs2QhGOqPm6qOoJx6JxGNOpr3jxNKsL4".into()),
            serial_number: Some("5a:0e:9b:1c:3d:11:72:4f:aa:10:2b:9c:e4:01:77:63".into()),
            ..CertificateFacts::default()
        },
        extra_claims: Map::new(),
        lifetime_seconds: None,
        decision: None,
        audience: None,
    }
}

fn issuer(signer: Arc<dyn Signer>) -> IdTokenIssuer {
    IdTokenIssuer::new(
        IssuerSettings {
            audience: "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/devices/providers/ts".into(),
            validity_seconds: 300,
            jwks_uri: None,
            min_lifetime_seconds: 60,
            certificate_bound: false,
        },
        signer,
        Clock::system(),
    )
}

fn bench_tokens(c: &mut Criterion) {
    let rt = runtime();
    let (rsa_pem, ec_pem) = keys();
    // The RSA signer signs on its threads, as the service's does.
    let background = Background::new();
    let mut rsa = LocalSigner::from_pem(rsa_pem.as_bytes(), "rsa").unwrap();
    rsa.start(&background);
    let rs256: Arc<dyn Signer> = Arc::new(rsa);
    let es256: Arc<dyn Signer> = Arc::new(LocalSigner::from_pem(ec_pem.as_bytes(), "ec").unwrap());
    let client = client();
    let jti = "0b6f0e0e-7c1b-4d0a-9f3e-5a4c1f2e9d01";
    let claims = issuer(es256.clone()).claims(ISS, &client, 1_800_000_000, jti);
    eprintln!(
        "claims JSON: {} bytes",
        serde_json::to_vec(&claims).unwrap().len()
    );

    let mut g = c.benchmark_group("token");
    let es_issuer = issuer(es256.clone());
    g.bench_function("claims", |b| {
        b.iter(|| es_issuer.claims(black_box(ISS), black_box(&client), 1_800_000_000, jti))
    });
    // Local keys ignore the deadline; one made up front keeps the clock out of the loop.
    let deadline = Deadline::after(std::time::Duration::from_secs(3600));
    g.bench_function("sign_es256_local_signer", |b| {
        b.iter(|| {
            rt.block_on(es256.sign(black_box(&claims), deadline))
                .unwrap()
        })
    });
    g.bench_function("sign_rs256_local_signer", |b| {
        b.iter(|| {
            rt.block_on(rs256.sign(black_box(&claims), deadline))
                .unwrap()
        })
    });
    let rs_issuer = issuer(rs256.clone());
    g.bench_function("issue_es256", |b| {
        b.iter(|| {
            rt.block_on(es_issuer.issue(black_box(ISS), &client, deadline))
                .unwrap()
        })
    });
    g.bench_function("issue_rs256", |b| {
        b.iter(|| {
            rt.block_on(rs_issuer.issue(black_box(ISS), &client, deadline))
                .unwrap()
        })
    });

    // Reference: jsonwebtoken re-parses the private key on every encode. (Without its `use_pem`
    // feature it takes DER: PKCS#1 for RSA, PKCS#8 for EC.)
    let jwt_claims = Value::Object(claims.clone());
    let rsa_der = PrivateKeyDer::from_pem_slice(rsa_pem.as_bytes()).unwrap();
    let ec_der = PrivateKeyDer::from_pem_slice(ec_pem.as_bytes()).unwrap();
    let rsa_key = jsonwebtoken::EncodingKey::from_rsa_der(&pkcs1_of(rsa_der.secret_der()));
    let ec_key = jsonwebtoken::EncodingKey::from_ec_der(ec_der.secret_der());
    let mut rs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    rs_header.kid = rs256.key_id();
    let mut es_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    es_header.kid = es256.key_id();
    g.bench_function("jsonwebtoken_encode_es256", |b| {
        b.iter(|| jsonwebtoken::encode(&es_header, black_box(&jwt_claims), &ec_key).unwrap())
    });
    g.bench_function("jsonwebtoken_encode_rs256", |b| {
        b.iter(|| jsonwebtoken::encode(&rs_header, black_box(&jwt_claims), &rsa_key).unwrap())
    });

    // Reference: the bare signature over a JWT-sized signing input with cached key pairs.
    let input = vec![b'a'; 760];
    let rng = SystemRandom::new();
    let rsa_pair = RsaKeyPair::from_pkcs8(rsa_der.secret_der()).unwrap();
    let ec_pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_der.secret_der()).unwrap();
    g.bench_function("aws_lc_raw_es256", |b| {
        b.iter(|| ec_pair.sign(&rng, black_box(&input)).unwrap())
    });
    g.bench_function("aws_lc_raw_rs256", |b| {
        let mut sig = vec![0; rsa_pair.public_modulus_len()];
        b.iter(|| {
            rsa_pair
                .sign(&RSA_PKCS1_SHA256, &rng, black_box(&input), &mut sig)
                .unwrap()
        })
    });
    g.finish();
}

fn header_map(pairs: &[(&str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// The development PKI (in a folder that lives as long as it) and its client certificate.
struct ClientPki {
    _dir: tempfile::TempDir,
    pki: DevPki,
    leaf_pem: Vec<u8>,
    leaf: Vec<u8>,
}

fn client_pki() -> ClientPki {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::new(dir.path());
    let (_server, client_files) = pki.ensure().unwrap();
    let leaf_pem = std::fs::read(&client_files.cert).unwrap();
    let leaf = CertificateDer::from_pem_slice(&leaf_pem).unwrap().to_vec();
    ClientPki {
        _dir: dir,
        pki,
        leaf_pem,
        leaf,
    }
}

fn bench_requests(c: &mut Criterion) {
    let client = client_pki();
    let mut g = c.benchmark_group("request");
    let body = b"grant_type=client_credentials&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform&service_account=storage-reader%40demo-project.iam.gserviceaccount.com";
    g.bench_function("parse_form_grant_only", |b| {
        b.iter(|| parse_form(black_box(b"grant_type=client_credentials")).unwrap())
    });
    g.bench_function("parse_form_scope_sa", |b| {
        b.iter(|| parse_form(black_box(body)).unwrap())
    });
    bench_xlb(&mut g);
    bench_forwarded(&mut g, &client);
    bench_mtls(&mut g, &client);
    g.finish();
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn bench_xlb(g: &mut Group<'_>) {
    let rt = runtime();
    // Load-balancer header flow, with every header Google's load balancer sends.
    let dns = STANDARD.encode("device-1.token-service.local,device-1.alt.example.org");
    let uri = STANDARD.encode("https://devices.example.org/1");
    let headers = header_map(&[
        ("x-client-cert-present", "true".into()),
        ("x-client-cert-chain-verified", "true".into()),
        ("x-client-cert-error", String::new()),
        (
            "x-client-cert-hash",
            "q1Ki0fHfPVfPs2QhGOqPm6qOoJx6JxGNOpr3jxNKsL4".into(),
        ),
        ("x-client-cert-spiffe", SPIFFE.into()),
        ("x-client-cert-uri-sans", uri),
        ("x-client-cert-dnsname-sans", dns.clone()),
        (
            "x-client-cert-serial-number",
            "5a:0e:9b:1c:3d:11:72:4f:aa:10:2b:9c:e4:01:77:63".into(),
        ),
        (
            "x-client-cert-valid-not-before",
            "2026-01-01T00:00:00Z".into(),
        ),
        (
            "x-client-cert-valid-not-after",
            "2036-01-01T00:00:00Z".into(),
        ),
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("host", "token-service.example.com".into()),
    ]);
    let xlb = XlbMtlsFlow::new(XlbSettings::default()).unwrap();
    let request = TokenRequest {
        grant_type: "client_credentials".into(),
        headers,
        ..TokenRequest::default()
    };
    // The name is kept for A/B comparisons: claiming and authenticating are one call now.
    g.bench_function("xlb_can_handle_and_authenticate", |b| {
        b.iter(|| rt.block_on(xlb.authenticate(black_box(&request))).unwrap())
    });
    g.bench_function("decode_san_list_2_entries", |b| {
        b.iter(|| decode_san_list(black_box(&dns)).unwrap())
    });
}

fn bench_forwarded(g: &mut Group<'_>, client: &ClientPki) {
    let (leaf, leaf_pem) = (&client.leaf, &client.leaf_pem);
    // Forwarded-certificate headers (the leaf only).
    let b64 = STANDARD.encode(leaf);
    let rfc9440 = format!(":{b64}:");
    let nginx: String = percent_encoding::utf8_percent_encode(
        std::str::from_utf8(leaf_pem).unwrap(),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let xfcc = format!(
        "By=spiffe://token-service.local/ns/ingress/sa/envoy;Hash={hash};Cert=\"{nginx}\";Subject=\"CN=device-1,O=Token Service development\";URI={SPIFFE};DNS=device-1.token-service.local"
    );
    for (name, format, value) in [
        ("forwarded_rfc9440", ForwardedFormat::Rfc9440, &rfc9440),
        ("forwarded_nginx", ForwardedFormat::Nginx, &nginx),
        ("forwarded_xfcc", ForwardedFormat::Xfcc, &xfcc),
    ] {
        parse_forwarded(format, value, None).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| parse_forwarded(format, black_box(value), None).unwrap())
        });
    }
}

fn bench_mtls(g: &mut Group<'_>, client: &ClientPki) {
    let rt = runtime();
    let (leaf, pki) = (&client.leaf, &client.pki);
    g.bench_function("x509_facts", |b| b.iter(|| facts(black_box(leaf)).unwrap()));

    // The direct mTLS flow: facts, chain verification against the CA bundle (per request, so
    // that a CRL update bites at once), issuer fingerprint.
    let trust = Arc::new(
        Trust::load(
            TrustSettings {
                ca_file: pki.ca_cert(),
                crl_file: None,
                reload_interval: std::time::Duration::from_secs(5),
                revocation: Default::default(),
                fetch: Default::default(),
            },
            std::sync::Arc::new(token_service::testing::metrics::Metrics::new()),
        )
        .unwrap(),
    );
    let mtls = MtlsFlow::new(ClientIdAttribute::Spiffe, trust, Clock::system());
    let request = TokenRequest {
        grant_type: "client_credentials".into(),
        peer_certificates: Some(Arc::new(vec![leaf.clone()])),
        ..TokenRequest::default()
    };
    g.bench_function("mtls_authenticate", |b| {
        b.iter(|| rt.block_on(mtls.authenticate(black_box(&request))).unwrap())
    });
}

criterion_group!(benches, bench_tokens, bench_requests);
criterion_main!(benches);
