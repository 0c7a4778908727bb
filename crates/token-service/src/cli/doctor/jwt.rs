//! A sample token read as the clouds read it: the compact JWS split into header, claims and
//! signature, and the signature checked with the published key its `kid` names.

use aws_lc_rs::signature::{
    self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Why a token could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three dot-separated parts.
    #[error("the token is not a compact JWT (three base64url parts separated by dots)")]
    Shape,
    /// A part is not base64url JSON.
    #[error("the token's {0} is not base64url-encoded JSON")]
    Part(&'static str),
}

/// A decoded compact JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// The header.
    pub header: Value,
    /// The claims.
    pub claims: Value,
    /// `header.payload`, what the signature covers.
    pub signed: String,
    /// The signature's bytes.
    pub signature: Vec<u8>,
    /// The token's length in characters.
    pub chars: usize,
}

fn json(part: &str, name: &'static str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Part(name))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Part(name))
}

impl Jwt {
    /// Splits and decodes `token` (surrounding whitespace ignored).
    pub fn parse(token: &str) -> Result<Self, JwtError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Shape);
        };
        Ok(Self {
            header: json(h, "header")?,
            claims: json(p, "payload")?,
            signed: format!("{h}.{p}"),
            signature: URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| JwtError::Part("signature"))?,
            chars: token.chars().count(),
        })
    }

    /// A header field as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// Whether the signature verifies with the JWK `key` under the header's `alg`.
    pub fn verifies_with(&self, key: &Value) -> bool {
        let Some(alg) = self.header_str("alg") else {
            return false;
        };
        let b64 = |name: &str| {
            key.get(name)
                .and_then(Value::as_str)
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        };
        let message = self.signed.as_bytes();
        if let Some(rsa) = rsa_algorithm(alg) {
            let (Some(n), Some(e)) = (b64("n"), b64("e")) else {
                return false;
            };
            return RsaPublicKeyComponents { n: &n, e: &e }
                .verify(rsa, message, &self.signature)
                .is_ok();
        }
        let Some(ec) = ec_algorithm(alg) else {
            return false;
        };
        let (Some(x), Some(y)) = (b64("x"), b64("y")) else {
            return false;
        };
        let point: Vec<u8> = [vec![4], x, y].concat();
        UnparsedPublicKey::new(ec, point)
            .verify(message, &self.signature)
            .is_ok()
    }
}

fn rsa_algorithm(alg: &str) -> Option<&'static signature::RsaParameters> {
    match alg {
        "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        _ => None,
    }
}

fn ec_algorithm(alg: &str) -> Option<&'static dyn VerificationAlgorithm> {
    match alg {
        "ES256" => Some(&signature::ECDSA_P256_SHA256_FIXED),
        "ES384" => Some(&signature::ECDSA_P384_SHA384_FIXED),
        "ES512" => Some(&signature::ECDSA_P521_SHA512_FIXED),
        _ => None,
    }
}

/// A JWK's algorithm: its `alg`, else the one its key type implies (EC curves name theirs;
/// an RSA key without `alg` is taken as RS256, what verifiers assume).
pub fn key_algorithm(key: &Value) -> Option<String> {
    let field = |name: &str| key.get(name).and_then(Value::as_str);
    if let Some(alg) = field("alg") {
        return Some(alg.to_owned());
    }
    match (field("kty"), field("crv")) {
        (Some("RSA"), _) => Some("RS256".into()),
        (Some("EC"), Some("P-256")) => Some("ES256".into()),
        (Some("EC"), Some("P-384")) => Some("ES384".into()),
        (Some("EC"), Some("P-521")) => Some("ES512".into()),
        _ => None,
    }
}
