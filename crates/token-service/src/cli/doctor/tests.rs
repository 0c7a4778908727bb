//! Unit tests of the doctor's rules: a well-configured issuer passes every rule, and each
//! rule that can fail has a case that fails it (fixed time, no network).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::fetch::{discovery_url, parse_date};
use super::issuer::host_and_port;
use super::rules::{Cloud, Finding, Observed, Status, TokenOrigin, evaluate};
use super::{select, table};

const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://tokens.example.com";

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    /// RS256: what every cloud accepts.
    fn new() -> Self {
        Self::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }

    fn ec() -> Self {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        Self::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "RS256",
            Self::Ec(_) => "ES256",
        }
    }

    fn jwk(&self) -> Value {
        match self {
            Self::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
                    "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Self::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
        }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match self {
            Self::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            Self::Ec(pair) => pair
                .sign(&rng, signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn header(&self) -> Value {
        json!({"alg": self.alg(), "kid": "k1", "typ": "JWT"})
    }
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "spiffe://example.org/device", "aud": "a", "iat": NOW, "exp": NOW + 3600})
}

/// A well-configured issuer, its keys and a fresh token, as the doctor would observe them.
fn observed(signer: &Signer) -> Observed {
    Observed {
        issuer: ISSUER.into(),
        discovery: Ok(json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/.well-known/jwks.json"),
            "response_types_supported": ["id_token"],
        })),
        server_date: Some(NOW),
        jwks: Some(Ok(json!({"keys": [signer.jwk()]}))),
        jwks_cache_control: Some("public, max-age=300".into()),
        token: Some((
            TokenOrigin::Requested,
            Ok(signer.sign(&signer.header(), &claims())),
        )),
    }
}

fn find<'a>(findings: &'a [Finding], rule: &str, cloud: Cloud) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.rule == rule && f.cloud == cloud)
        .unwrap_or_else(|| panic!("no {rule} for {cloud:?} in {findings:#?}"))
}

fn status(o: &Observed, rule: &str, cloud: Cloud) -> Status {
    find(&evaluate(o, NOW), rule, cloud).status
}

fn with_token(signer: &Signer, header: &Value, claims: &Value) -> Observed {
    let mut o = observed(signer);
    o.token = Some((TokenOrigin::Requested, Ok(signer.sign(header, claims))));
    o
}

#[test]
fn a_well_configured_issuer_passes_every_rule() {
    let findings = evaluate(&observed(&Signer::new()), NOW);
    let not_passed: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.status != Status::Pass)
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
    assert!(findings.iter().all(|f| f.fix.is_empty()));
    assert!(findings.len() > 30, "{}", findings.len());
}

#[test]
fn the_issuer_must_be_https_without_port_or_query_and_public() {
    let s = Signer::new();
    let mut o = observed(&s);
    o.issuer = "http://127.0.0.1:8080/?x=1".into();
    let findings = evaluate(&o, NOW);
    assert_eq!(
        find(&findings, "issuer-https", Cloud::All).status,
        Status::Fail
    );
    let port = find(&findings, "issuer-no-port", Cloud::Aws);
    assert_eq!(port.status, Status::Fail);
    assert!(
        port.detail.contains("8080") && port.fix.contains("443"),
        "{port:?}"
    );
    assert_eq!(
        find(&findings, "issuer-no-query", Cloud::Aws).status,
        Status::Fail
    );
    assert_eq!(
        find(&findings, "issuer-public-host", Cloud::Aws).status,
        Status::Fail
    );
    assert_eq!(
        find(&findings, "issuer-public-host", Cloud::Entra).status,
        Status::Fail
    );
    assert_eq!(
        find(&findings, "issuer-public-host", Cloud::Google).status,
        Status::Warn
    );
    // The port is text: :443 is still a port to AWS.
    o.issuer = "https://tokens.example.com:443".into();
    assert_eq!(status(&o, "issuer-no-port", Cloud::Aws), Status::Fail);
    for private in [
        "https://localhost",
        "https://10.1.2.3",
        "https://[::1]:8443",
        "https://a.local",
    ] {
        o.issuer = private.into();
        assert_eq!(
            status(&o, "issuer-public-host", Cloud::Aws),
            Status::Fail,
            "{private}"
        );
    }
    o.issuer = format!("{ISSUER}/{}", "p".repeat(600));
    assert_eq!(status(&o, "issuer-length", Cloud::Entra), Status::Fail);
}

#[test]
fn host_and_port_read_the_authority_as_written() {
    assert_eq!(
        host_and_port("https://a.example/x"),
        ("a.example".into(), None)
    );
    assert_eq!(
        host_and_port("https://u@a.example:8443?q"),
        ("a.example".into(), Some("8443".into()))
    );
    assert_eq!(
        host_and_port("https://[::1]:1/"),
        ("::1".into(), Some("1".into()))
    );
    assert_eq!(
        discovery_url("https://a.example/tenant/?q=1"),
        "https://a.example/tenant/.well-known/openid-configuration"
    );
}

#[test]
fn discovery_must_be_reachable_name_the_issuer_and_response_types() {
    let s = Signer::new();
    let mut o = observed(&s);
    o.discovery = Err("GET …: invalid peer certificate: UnknownIssuer".into());
    let findings = evaluate(&o, NOW);
    let reach = find(&findings, "discovery-reachable", Cloud::All);
    assert_eq!(reach.status, Status::Fail);
    assert!(reach.detail.contains("UnknownIssuer"), "{reach:?}");
    assert_eq!(
        find(&findings, "discovery-issuer-matches", Cloud::All).status,
        Status::Skip
    );
    assert_eq!(
        find(&findings, "jwks-uri-https", Cloud::All).status,
        Status::Skip
    );
    let mut o = observed(&s);
    o.discovery = Ok(json!({"issuer": format!("{ISSUER}/"), "jwks_uri": format!("{ISSUER}/k")}));
    let findings = evaluate(&o, NOW);
    assert_eq!(
        find(&findings, "discovery-issuer-matches", Cloud::All).status,
        Status::Fail
    );
    assert_eq!(
        find(&findings, "discovery-response-types", Cloud::Aws).status,
        Status::Fail
    );
}

#[test]
fn the_server_clock_must_be_within_a_minute() {
    let s = Signer::new();
    let mut o = observed(&s);
    o.server_date = Some(NOW - 120);
    assert_eq!(status(&o, "clock-skew-server", Cloud::All), Status::Fail);
    o.server_date = Some(NOW + 60);
    assert_eq!(status(&o, "clock-skew-server", Cloud::All), Status::Pass);
    assert_eq!(
        parse_date("Thu, 03 Dec 2026 17:58:27 GMT"),
        Some(1_796_320_707)
    );
}

#[test]
fn the_jwks_must_be_https_reachable_and_a_set() {
    let s = Signer::new();
    let mut o = observed(&s);
    o.discovery = Ok(json!({"issuer": ISSUER, "jwks_uri": "http://tokens.example.com/k"}));
    assert_eq!(status(&o, "jwks-uri-https", Cloud::All), Status::Fail);
    o.discovery = Ok(json!({"issuer": ISSUER}));
    assert_eq!(status(&o, "jwks-uri-https", Cloud::All), Status::Fail);
    let mut o = observed(&s);
    o.jwks = Some(Err("GET …: connection refused".into()));
    let findings = evaluate(&o, NOW);
    assert_eq!(
        find(&findings, "jwks-reachable", Cloud::All).status,
        Status::Fail
    );
    assert_eq!(
        find(&findings, "jwks-keys-kid", Cloud::All).status,
        Status::Skip
    );
    assert_eq!(
        find(&findings, "token-signature", Cloud::All).status,
        Status::Skip
    );
    o.jwks = Some(Ok(json!({"not": "keys"})));
    assert_eq!(status(&o, "jwks-reachable", Cloud::All), Status::Fail);
}

#[test]
fn every_key_needs_kid_use_sig_and_an_accepted_algorithm() {
    let s = Signer::ec();
    let mut o = observed(&s);
    let mut key = s.jwk();
    key.as_object_mut().unwrap().remove("kid");
    key["use"] = json!("enc");
    o.jwks = Some(Ok(json!({"keys": [s.jwk(), key]})));
    let findings = evaluate(&o, NOW);
    assert_eq!(
        find(&findings, "jwks-keys-kid", Cloud::All).status,
        Status::Fail
    );
    let uses = find(&findings, "jwks-keys-use-sig", Cloud::All);
    assert_eq!(uses.status, Status::Fail);
    assert!(uses.detail.contains("\"enc\""), "{uses:?}");
    // ES256: Entra tests only RS256.
    assert_eq!(
        find(&findings, "jwks-algorithms", Cloud::Entra).status,
        Status::Fail
    );
    assert_eq!(
        find(&findings, "jwks-algorithms", Cloud::Google).status,
        Status::Pass
    );
    let mut key = s.jwk();
    key["alg"] = json!("ES384");
    o.jwks = Some(Ok(json!({"keys": [s.jwk(), key]})));
    assert_eq!(status(&o, "jwks-algorithms", Cloud::Google), Status::Fail);
    assert_eq!(status(&o, "jwks-algorithms", Cloud::Aws), Status::Pass);
    o.jwks = Some(Ok(
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "e", "use": "sig"}]}),
    ));
    assert_eq!(status(&o, "jwks-algorithms", Cloud::Aws), Status::Fail);
}

#[test]
fn key_counts_are_within_each_clouds_limit() {
    let s = Signer::new();
    let mut o = observed(&s);
    o.jwks = Some(Ok(json!({"keys": vec![s.jwk(); 101]})));
    assert_eq!(status(&o, "jwks-key-count", Cloud::Aws), Status::Fail);
    o.jwks = Some(Ok(json!({"keys": vec![s.jwk(); 100]})));
    assert_eq!(status(&o, "jwks-key-count", Cloud::Aws), Status::Pass);
    assert_eq!(status(&o, "jwks-key-count", Cloud::Google), Status::Warn);
    o.jwks = Some(Ok(json!({"keys": vec![s.jwk(); 8]})));
    assert_eq!(status(&o, "jwks-key-count", Cloud::Google), Status::Pass);
    o.jwks = Some(Ok(json!({"keys": []})));
    assert_eq!(status(&o, "jwks-key-count", Cloud::Aws), Status::Fail);
    assert_eq!(status(&o, "jwks-key-count", Cloud::Google), Status::Fail);
}

#[test]
fn a_token_that_cannot_be_had_fails_and_skips_its_rules() {
    let s = Signer::new();
    let mut o = observed(&s);
    o.token = Some((TokenOrigin::Requested, Err("POST …: 403".into())));
    let findings = evaluate(&o, NOW);
    assert_eq!(
        find(&findings, "token-obtained", Cloud::All).status,
        Status::Fail
    );
    assert_eq!(
        find(&findings, "token-sub", Cloud::All).status,
        Status::Skip
    );
    o.token = Some((TokenOrigin::File, Ok("not.a-jwt".into())));
    assert_eq!(status(&o, "token-obtained", Cloud::All), Status::Fail);
    o.token = None;
    let findings = evaluate(&o, NOW);
    assert_eq!(
        find(&findings, "token-obtained", Cloud::All).status,
        Status::Skip
    );
    assert!(
        findings.iter().all(|f| f.status != Status::Fail),
        "{findings:#?}"
    );
}

#[test]
fn the_token_needs_a_published_kid_a_good_signature_and_an_accepted_alg() {
    let s = Signer::new();
    let o = with_token(&s, &json!({"alg": "RS256"}), &claims());
    assert_eq!(status(&o, "token-kid", Cloud::All), Status::Fail);
    let o = with_token(&s, &json!({"alg": "RS256", "kid": "other"}), &claims());
    assert_eq!(status(&o, "token-kid", Cloud::All), Status::Fail);
    let mut o = observed(&s);
    let other = Signer::new().sign(&s.header(), &claims());
    o.token = Some((TokenOrigin::Requested, Ok(other)));
    assert_eq!(status(&o, "token-signature", Cloud::All), Status::Fail);
    let ec = Signer::ec();
    let o = observed(&ec);
    assert_eq!(status(&o, "token-algorithm", Cloud::Entra), Status::Fail);
    assert_eq!(status(&o, "token-algorithm", Cloud::Aws), Status::Pass);
    let o = with_token(&s, &json!({"alg": "HS256", "kid": "k1"}), &claims());
    assert_eq!(status(&o, "token-algorithm", Cloud::Google), Status::Fail);
}

#[test]
fn the_token_needs_iss_sub_iat_and_exp() {
    let s = Signer::new();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        with_token(&s, &s.header(), &c)
    };
    let o = edit(&|c| c["iss"] = json!(format!("{ISSUER}/")));
    assert_eq!(status(&o, "token-iss-matches", Cloud::All), Status::Fail);
    let o = edit(&|c| c["sub"] = json!(""));
    assert_eq!(status(&o, "token-sub", Cloud::All), Status::Fail);
    let o = edit(&|c| {
        c.as_object_mut().unwrap().remove("iat");
    });
    assert_eq!(status(&o, "token-iat", Cloud::All), Status::Fail);
    let o = edit(&|c| c["iat"] = json!(1.8e9));
    assert_eq!(status(&o, "token-iat", Cloud::All), Status::Fail);
    let o = edit(&|c| c["exp"] = json!(NOW));
    assert_eq!(status(&o, "token-exp", Cloud::All), Status::Fail);
    assert_eq!(status(&o, "token-not-expired", Cloud::All), Status::Fail);
    let o = edit(&|c| c["big"] = json!("x".repeat(20_000)));
    assert_eq!(status(&o, "token-size", Cloud::Aws), Status::Fail);
}

#[test]
fn lifetimes_are_within_each_clouds_limit() {
    let s = Signer::new();
    let mut c = claims();
    c["exp"] = json!(NOW + 24 * 3600 + 1);
    let findings = evaluate(&with_token(&s, &s.header(), &c), NOW);
    for cloud in [Cloud::Google, Cloud::Aws, Cloud::Entra] {
        let f = find(&findings, "token-lifetime", cloud);
        assert_eq!(f.status, Status::Fail, "{f:?}");
    }
    c["exp"] = json!(NOW + 24 * 3600);
    assert_eq!(
        status(
            &with_token(&s, &s.header(), &c),
            "token-lifetime",
            Cloud::Aws
        ),
        Status::Pass
    );
    c["exp"] = json!(NOW + 600);
    let o = with_token(&s, &s.header(), &c);
    assert_eq!(status(&o, "token-lifetime", Cloud::Entra), Status::Warn);
    assert_eq!(status(&o, "token-lifetime", Cloud::Google), Status::Pass);
}

#[test]
fn the_tokens_iat_is_within_a_minute_of_this_clock() {
    let s = Signer::new();
    let mut c = claims();
    c["iat"] = json!(NOW - 120);
    let mut o = with_token(&s, &s.header(), &c);
    assert_eq!(status(&o, "clock-skew-token", Cloud::All), Status::Fail);
    // A token from a file may be old, not from the future.
    let token = o.token.take().unwrap().1;
    o.token = Some((TokenOrigin::File, token));
    assert_eq!(status(&o, "clock-skew-token", Cloud::All), Status::Pass);
    c["iat"] = json!(NOW + 120);
    c["exp"] = json!(NOW + 3600);
    let token = s.sign(&s.header(), &c);
    o.token = Some((TokenOrigin::File, Ok(token)));
    assert_eq!(status(&o, "clock-skew-token", Cloud::All), Status::Fail);
}

#[test]
fn the_table_shows_status_and_fix_and_the_selection_keeps_common_rules() {
    let s = Signer::new();
    let mut o = observed(&s);
    o.issuer = "https://tokens.example.com:8443".into();
    let findings = evaluate(&o, NOW);
    let text = table(&findings);
    assert!(text.starts_with("RULE "), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("issuer-no-port"))
        .unwrap();
    assert!(
        line.contains(" aws ") && line.contains("FAIL") && line.contains("fix: "),
        "{line}"
    );
    let google = select(findings, &[Cloud::Google]);
    assert!(
        google
            .iter()
            .all(|f| matches!(f.cloud, Cloud::Google | Cloud::All))
    );
    assert!(google.iter().any(|f| f.cloud == Cloud::All));
    assert!(!google.iter().any(|f| f.rule == "issuer-no-port"));
}

/// The JWK Set's cache lifetime bounds every rotation: absent, zero or huge warns.
#[test]
fn the_jwks_cache_max_age_is_what_a_rotation_waits_for() {
    let signer = Signer::new();
    let mut o = observed(&signer);
    assert_eq!(status(&o, "jwks-cache-max-age", Cloud::All), Status::Pass);
    for (header, expected) in [
        (None, Status::Warn),
        (Some("no-store"), Status::Warn),
        (Some("public, max-age=0"), Status::Warn),
        (Some("max-age=604800"), Status::Warn),
        (Some("public, max-age=2"), Status::Pass),
    ] {
        o.jwks_cache_control = header.map(str::to_owned);
        assert_eq!(
            status(&o, "jwks-cache-max-age", Cloud::All),
            expected,
            "{header:?}"
        );
    }
    o.jwks = None;
    assert_eq!(status(&o, "jwks-cache-max-age", Cloud::All), Status::Skip);
}

/// The findings of [`super::local::check`] for these settings, at the real time.
fn local_findings(settings: &[(&str, &str)]) -> Vec<Finding> {
    use crate::config::source::{Origin, Values};
    let values: Values = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ((*v).to_owned(), Origin::Env)))
        .collect();
    let mut report = super::rules::Report::default();
    super::local::check(&mut report, &values, crate::clock::Clock::system().now());
    report.0
}

fn finding<'f>(findings: &'f [Finding], rule: &str) -> &'f Finding {
    findings.iter().find(|f| f.rule == rule).unwrap()
}

#[test]
fn client_revocation_names_its_sources_and_warns_without_any() {
    let none = local_findings(&[("TLS_CLIENT_CA_FILE", "/etc/ca.pem")]);
    let row = finding(&none, "client-revocation");
    assert_eq!(row.status, Status::Warn, "{row:?}");
    assert!(row.detail.contains("no revocation source"), "{row:?}");
    assert!(row.fix.contains("TLS_CLIENT_CRL_URLS"), "{row:?}");

    let some = local_findings(&[
        ("TLS_CLIENT_CA_FILE", "/etc/ca.pem"),
        (
            "TLS_CLIENT_CRL_URLS",
            "http://crl.example/a.crl,http://crl.example/b.crl",
        ),
        ("TLS_CLIENT_CRL_FOLLOW_CDP", "true"),
        ("TLS_CLIENT_OCSP", "required"),
        ("TLS_CLIENT_CRL_REQUIRED", "true"),
    ]);
    let row = finding(&some, "client-revocation");
    assert_eq!(row.status, Status::Pass, "{row:?}");
    for part in [
        "2 CRL URL(s)",
        "CRL distribution points",
        "OCSP (required)",
        "TLS_CLIENT_CRL_REQUIRED=true",
    ] {
        assert!(row.detail.contains(part), "{row:?} lacks {part}");
    }

    let behind_lb = local_findings(&[]);
    assert_eq!(
        finding(&behind_lb, "client-revocation").status,
        Status::Skip
    );
}

#[test]
fn signing_keys_pass_when_the_file_keeps_the_rules_and_fail_naming_what_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let block = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(doc.as_ref())
    );
    let plain = dir.path().join("plain.pem");
    std::fs::write(&plain, &block).unwrap();
    let path = plain.display().to_string();
    let found = local_findings(&[("SIGNING_KEY_FILE", &path)]);
    assert_eq!(finding(&found, "signing-keys").status, Status::Pass);

    // Two keys that both claim to sign break the rule of one active key.
    let twice = dir.path().join("twice.pem");
    let line = "# token-service: state=active\n";
    std::fs::write(&twice, format!("{line}{block}{line}{block}")).unwrap();
    let path = twice.display().to_string();
    let found = local_findings(&[("SIGNING_KEY_FILE", &path)]);
    let row = finding(&found, "signing-keys");
    assert_eq!(row.status, Status::Fail, "{row:?}");
    assert!(row.fix.contains("token-service keys check"), "{row:?}");
    // The commands the fix names run as written.
    for command in row.fix.split('`').skip(1).step_by(2) {
        let words = command.split_whitespace();
        let words: Vec<&str> = if command.starts_with("token-service") {
            words.collect()
        } else {
            std::iter::once("token-service").chain(words).collect()
        };
        <crate::cli::Cli as clap::Parser>::try_parse_from(&words)
            .unwrap_or_else(|e| panic!("`{command}` of {row:?}: {e}"));
    }

    let none = local_findings(&[]);
    assert_eq!(finding(&none, "signing-keys").status, Status::Skip);
}
