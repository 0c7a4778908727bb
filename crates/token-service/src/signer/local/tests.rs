use std::os::unix::fs::PermissionsExt as _;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::*;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn ec_pem() -> String {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    pem("PRIVATE KEY", doc.as_ref())
}

fn rsa_pem() -> String {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    pem("PRIVATE KEY", pair.as_der().unwrap().as_ref())
}

fn keys(signer: &LocalSigner) -> Vec<Value> {
    match signer.publication().unwrap() {
        Publication::Jwks(set) => set["keys"].as_array().unwrap().clone(),
        Publication::Uri(_) => panic!("local signer publishes a JWK Set"),
    }
}

#[test]
fn thumbprint_matches_rfc7638_example() {
    // RFC 7638 §3.1: the example RSA key and its thumbprint.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let members = vec![
        ("e", "AQAB".to_owned()),
        ("kty", "RSA".to_owned()),
        ("n", n.to_owned()),
    ];
    assert_eq!(
        thumbprint_of(members),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn ec_key_signs_es256_and_publishes_p256_jwk() {
    let signer = LocalSigner::from_pem(ec_pem().as_bytes(), "test").unwrap();
    assert_eq!(signer.algorithm(), "ES256");
    let jwk = &keys(&signer)[0];
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], signer.key_id().unwrap());
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["y"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
}

#[test]
fn every_key_is_published_and_the_first_signs() {
    let file = format!("{}{}", rsa_pem(), ec_pem());
    let signer = LocalSigner::from_pem(file.as_bytes(), "test").unwrap();
    assert_eq!(signer.algorithm(), "RS256");
    let published = keys(&signer);
    assert_eq!(published.len(), 2);
    assert_eq!(published[0]["kid"], signer.key_id().unwrap());
    assert_eq!(published[0]["kty"], "RSA");
    assert_eq!(published[1]["kty"], "EC");
}

#[test]
fn the_first_private_key_decides_whether_rsa_signs() {
    let (rsa, ec) = (rsa_pem(), ec_pem());
    let certificate = pem("CERTIFICATE", b"not a key");
    assert!(first_key_is_rsa(
        format!("{certificate}{rsa}{ec}").as_bytes()
    ));
    assert!(!first_key_is_rsa(format!("{ec}{rsa}").as_bytes()));
    assert!(!first_key_is_rsa(b"no PEM here"));
}

#[tokio::test]
async fn signed_token_has_header_with_alg_kid_typ_and_the_claims() {
    let signer = LocalSigner::from_pem(ec_pem().as_bytes(), "test").unwrap();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!("x"));
    let jwt = signer.sign(&claims).await.unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"alg": "ES256", "kid": signer.key_id().unwrap(), "typ": "JWT"})
    );
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload, json!({"sub": "x"}));
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
}

#[test]
fn pkcs1_key_is_refused_with_conversion_hint() {
    let e = LocalSigner::from_pem(
        pem("RSA PRIVATE KEY", b"\x30\x00").as_bytes(),
        "SIGNING_KEY_FILE 'k.pem'",
    )
    .unwrap_err();
    assert!(e.starts_with("SIGNING_KEY_FILE 'k.pem'"), "{e}");
    assert!(e.contains("openssl pkcs8 -topk8"), "{e}");
}

#[test]
fn file_without_keys_or_with_garbage_is_refused() {
    let e = LocalSigner::from_pem(b"hello", "SIGNING_KEY_FILE 'k.pem'").unwrap_err();
    assert!(e.contains("no 'PRIVATE KEY'"), "{e}");
    let e = LocalSigner::from_pem(pem("PRIVATE KEY", b"garbage").as_bytes(), "x").unwrap_err();
    assert!(e.contains("neither an RSA"), "{e}");
}

#[test]
fn generated_key_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (first, path, generated) = LocalSigner::load_or_generate(&data).unwrap();
    assert!(generated);
    assert_eq!(first.algorithm(), "RS256");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (second, _, generated) = LocalSigner::load_or_generate(&data).unwrap();
    assert!(!generated);
    assert_eq!(first.key_id(), second.key_id());
}
