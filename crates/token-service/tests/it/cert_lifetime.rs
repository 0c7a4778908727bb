//! Tokens that respect the client certificate (issue 14 points 3 and 4), over real sockets:
//! the ID token's `exp` is capped by the certificate's notAfter (from the certificate itself in
//! the mtls flow, from the load balancer's optional not-after header in the xlb flow); a
//! certificate that expires within `TOKEN_MIN_LIFETIME` is refused; with
//! `TOKEN_CERTIFICATE_BOUND` the token carries RFC 8705's `cnf.x5t#S256` and discovery says so.
//! The impersonated access token and the AWS session are capped in `google.rs` and `aws.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

use crate::support::tls::{Leaf, Pki, Spec, TlsService, https_client, id_token, post_token};
use crate::support::{self as common, AUDIENCE, LB_HASH, Server};

const GRANT: &str = "grant_type=client_credentials";
const NOT_AFTER: &str = "X-Client-Cert-Valid-Not-After";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// An xlb-flow token request whose load balancer reports notAfter `not_after`.
async fn xlb_token(server: &Server, not_after: i64) -> (u16, Value) {
    let at = rfc3339(not_after);
    let response = common::token(server, GRANT, &[(NOT_AFTER, &at)]).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_id_token_expires_with_the_certificate_the_load_balancer_reports() {
    let server = Server::start(&[("TOKEN_VALIDITY", "60")]);
    let not_after = now() + 300;
    let (status, body) = xlb_token(&server, not_after).await;
    assert_eq!(status, 200, "{body}");
    let claims = common::verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    assert_eq!(claims["exp"], not_after, "{claims}");
    // The executable-sourced credential's expiration says the same.
    let at = rfc3339(not_after);
    let response = common::token(
        &server,
        &format!("{GRANT}&format=external_credential"),
        &[(NOT_AFTER, &at)],
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expiration_time"], not_after, "{body}");

    // A certificate that outlives TOKEN_VALIDITY leaves the lifetime alone.
    let (status, body) = xlb_token(&server, now() + 86_400).await;
    assert_eq!(status, 200, "{body}");
    let claims = common::verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 3600);
}

#[tokio::test]
async fn a_certificate_expiring_within_the_minimum_lifetime_is_refused_with_when_and_what_to_do() {
    let server = Server::start(&[("TOKEN_MIN_LIFETIME", "120")]);
    let not_after = now() + 90;
    let (status, body) = xlb_token(&server, not_after).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    let description = body["error_description"].as_str().unwrap();
    for part in [
        format!("expires at {}", rfc3339(not_after)),
        "TOKEN_MIN_LIFETIME (120 s)".to_owned(),
        "renew it".to_owned(),
    ] {
        assert!(description.contains(&part), "{description}");
    }
    // Just above the minimum: a token that ends with the certificate.
    let (status, body) = xlb_token(&server, now() + 150).await;
    assert_eq!(status, 200, "{body}");
}

/// A client certificate of the test PKI that expires `seconds` from now.
fn expiring_leaf(pki: &Pki, seconds: i64) -> Leaf {
    let mut spec = Spec::client("short-lived", &[0x30, 0x01]);
    spec.not_after = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    pki.root.issue(spec)
}

#[tokio::test]
async fn over_mtls_the_token_ends_at_the_certificates_own_not_after() {
    let pki = Pki::new();
    let leaf = expiring_leaf(&pki, 240);
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let client = https_client(&pki.root.pem, Some(&leaf));
    let (status, body) = post_token(&client, &service).await;
    let token = id_token(status, &body);
    let verifier = https_client(&pki.root.pem, None);
    let claims = common::verify_with(&verifier, &token, &service.base, AUDIENCE).await;
    let not_after = x509_not_after(&leaf.der);
    assert_eq!(claims["exp"], not_after, "{claims}");
    assert!(claims.get("cnf").is_none(), "{claims}");
}

fn x509_not_after(der: &[u8]) -> i64 {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    cert.validity().not_after.timestamp()
}

#[tokio::test]
async fn certificate_bound_tokens_carry_the_sha256_thumbprint_of_the_der_certificate() {
    let pki = Pki::new();
    let service = TlsService::start(
        &pki,
        &pki.root.pem,
        None,
        &[("TOKEN_CERTIFICATE_BOUND", "true")],
    );
    let client = https_client(&pki.root.pem, Some(&pki.valid));
    let (status, body) = post_token(&client, &service).await;
    let token = id_token(status, &body);
    let verifier = https_client(&pki.root.pem, None);
    let claims = common::verify_with(&verifier, &token, &service.base, AUDIENCE).await;
    let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &pki.valid.der,
    ));
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint, "{claims}");

    let discovery: Value = verifier
        .get(service.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["tls_client_certificate_bound_access_tokens"],
        true
    );
    assert!(
        discovery["claims_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from("cnf")),
        "{discovery}"
    );
}

#[tokio::test]
async fn through_the_load_balancer_the_binding_is_its_fingerprint_and_a_bad_one_is_refused() {
    let server = Server::start(&[("TOKEN_CERTIFICATE_BOUND", "on")]);
    let response = common::token(&server, GRANT, &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let claims = common::verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    let digest = STANDARD.decode(format!("{LB_HASH}=")).unwrap();
    assert_eq!(claims["cnf"]["x5t#S256"], URL_SAFE_NO_PAD.encode(digest));

    // A hash that is no SHA-256 digest: no token rather than an unbound one.
    let response = common::token(&server, GRANT, &[("X-Client-Cert-Hash", "c2hvcnQ")]).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains("cannot be bound to the certificate (TOKEN_CERTIFICATE_BOUND=true)"),
        "{description}"
    );
}

#[tokio::test]
async fn without_the_setting_tokens_are_unbound_and_discovery_says_so() {
    let server = Server::start(&[]);
    let response = common::token(&server, GRANT, &[]).await;
    let body: Value = response.json().await.unwrap();
    let claims = common::verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    assert!(claims.get("cnf").is_none(), "{claims}");
    let discovery: Value = common::client()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["tls_client_certificate_bound_access_tokens"],
        false
    );
}
