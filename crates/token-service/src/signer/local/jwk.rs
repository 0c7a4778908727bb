//! One PKCS#8 key as a signing key (RSA ≥ 2048 bits → RS256, EC P-256 → ES256), its public
//! JWK and RFC 7638 thumbprint (the `kid`), and new keys.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::{KeyPair, SigningKey};

/// What is wrong with a PEM key document, as a phrase; the caller names the setting, file and
/// block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct BadKey(pub(super) String);

/// The signing key of one PKCS#8 block, or what is wrong with it (a plain message: the caller
/// names the setting, file and block).
pub(super) fn parse_pkcs8(der: &[u8]) -> Result<SigningKey, BadKey> {
    let pair = match RsaKeyPair::from_pkcs8(der) {
        Ok(rsa) if rsa.public_modulus_len() * 8 >= 2048 => KeyPair::Rsa(Arc::new(rsa)),
        Ok(rsa) => {
            return Err(BadKey(format!(
                "RSA key of {} bits is too short; at least 2048 bits are required",
                rsa.public_modulus_len() * 8
            )));
        }
        Err(_) => match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            Ok(ec) => KeyPair::Ec(ec),
            Err(_) => {
                return Err(BadKey(
                    "neither an RSA (≥ 2048 bits) nor an EC P-256 private key".into(),
                ));
            }
        },
    };
    let alg = match pair {
        KeyPair::Rsa(_) => "RS256",
        KeyPair::Ec(_) => "ES256",
    };
    let kid = thumbprint(&pair);
    let header = json!({ "alg": alg, "kid": kid, "typ": "JWT" }).to_string();
    Ok(SigningKey {
        pair,
        alg,
        kid,
        header_b64: URL_SAFE_NO_PAD.encode(header),
        meta: None,
    })
}

/// The public members of a key, in the lexical order RFC 7638 needs for thumbprints.
pub(super) fn members(pair: &KeyPair) -> Vec<(&'static str, String)> {
    match pair {
        KeyPair::Rsa(rsa) => {
            let c = PublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
            vec![
                ("e", URL_SAFE_NO_PAD.encode(strip_zeros(&c.e))),
                ("kty", "RSA".into()),
                ("n", URL_SAFE_NO_PAD.encode(strip_zeros(&c.n))),
            ]
        }
        KeyPair::Ec(ec) => {
            // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = ec.public_key().as_ref();
            let (x, y) = point
                .get(1..)
                .unwrap_or_default()
                .split_at(point.len().saturating_sub(1) / 2);
            vec![
                ("crv", "P-256".into()),
                ("kty", "EC".into()),
                ("x", URL_SAFE_NO_PAD.encode(x)),
                ("y", URL_SAFE_NO_PAD.encode(y)),
            ]
        }
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url), used as `kid`.
pub(super) fn thumbprint(pair: &KeyPair) -> String {
    thumbprint_of(members(pair))
}

pub(super) fn thumbprint_of(members: Vec<(&'static str, String)>) -> String {
    let mut canonical = Map::new();
    for (k, v) in members {
        canonical.insert(k.to_owned(), Value::String(v));
    }
    // serde_json's Map is ordered by key, which is exactly the canonical order.
    let text = Value::Object(canonical).to_string();
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

pub(super) fn public_jwk(key: &SigningKey) -> Value {
    let mut jwk = Map::new();
    for (k, v) in members(&key.pair) {
        jwk.insert(k.to_owned(), Value::String(v));
    }
    jwk.insert("kid".into(), Value::String(key.kid.clone()));
    jwk.insert("alg".into(), Value::String(key.alg.into()));
    jwk.insert("use".into(), Value::String("sig".into()));
    Value::Object(jwk)
}

pub(super) fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

/// A new key as PKCS#8 PEM: RSA-2048, or EC P-256 when `ec`; on failure, what failed.
pub(crate) fn generate_pem(ec: bool) -> Result<String, &'static str> {
    if ec {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| "EC key generation failed")?;
        return Ok(super::keyfile::pem_block(doc.as_ref()));
    }
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed")?;
    let der = pair
        .as_der()
        .map_err(|_| "encoding the generated key failed")?;
    Ok(super::keyfile::pem_block(der.as_ref()))
}
