//! RSA-2048 signing keys of emulated service accounts: generation, RS256 JWT
//! signing, their public JWK form, PKCS#8 PEM export for key files, and the
//! small encoding and randomness helpers (base64url, hex ids, opaque tokens)
//! the rest of the crate shares.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use serde_json::{Value, json};

/// One RSA key of a service account.
pub(crate) struct SigningKey {
    pair: RsaKeyPair,
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// A fresh RSA-2048 key with a random 40-hex-character key id.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA-2048 key generation failed"))?;
        let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        Ok(SigningKey {
            pair,
            kid: random_hex(20),
            n: components.n,
            e: components.e,
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// Sign `claims` as a compact JWS with header `{"alg":"RS256","kid",…,"typ":"JWT"}`.
    pub(crate) fn sign_jwt(&self, claims: &Value) -> anyhow::Result<String> {
        let header = json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64url(serde_json::to_vec(&header)?),
            b64url(serde_json::to_vec(claims)?)
        );
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| anyhow::anyhow!("RS256 signing failed"))?;
        Ok(format!("{input}.{}", b64url(sig)))
    }

    /// The public key as a JWK, the shape Google's
    /// `service_accounts/v1/metadata/jwk/` endpoint lists.
    pub(crate) fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": b64url(&self.n),
            "e": b64url(&self.e),
        })
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_rsa_raw_components(&self.n, &self.e)
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as in a
    /// Google service-account key file.
    pub(crate) fn pkcs8_pem(&self) -> anyhow::Result<String> {
        let der = self
            .pair
            .as_der()
            .map_err(|_| anyhow::anyhow!("PKCS#8 export failed"))?;
        let b64 = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }
}

pub(crate) fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode one base64url segment of a JWS; tolerates trailing `=` padding.
pub(crate) fn b64url_decode(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()
}

/// Random bytes from UUIDv4s, rendered as lowercase hex (`bytes` ≤ 32).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut raw = Vec::with_capacity(32);
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    raw.truncate(bytes.min(32));
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// An opaque random string of URL-safe characters.
pub(crate) fn random_token() -> String {
    let mut raw = Vec::with_capacity(32);
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    b64url(raw)
}

/// A random decimal number of `digits` digits with a non-zero first digit.
pub(crate) fn random_digits(digits: usize) -> String {
    let mut out = String::with_capacity(digits);
    let mut pool = Vec::new();
    while out.len() < digits {
        if pool.is_empty() {
            pool.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        let Some(b) = pool.pop() else { break };
        if b >= 250 {
            continue; // keep the digits uniform
        }
        let d = b % 10;
        if out.is_empty() && d == 0 {
            continue;
        }
        out.push(char::from(b'0' + d));
    }
    out
}

/// A JSON number that is a whole number (NumericDate claims such as `exp`).
pub(crate) fn json_integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// Split a compact JWS and decode its header and claims as JSON objects.
pub(crate) fn parse_jws(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if s.is_empty() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
    let claims: Value = serde_json::from_slice(&b64url_decode(c)?).ok()?;
    (header.is_object() && claims.is_object()).then_some((header, claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shapes() {
        let kid = random_hex(20);
        assert_eq!(kid.len(), 40);
        assert!(
            kid.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let d = random_digits(21);
        assert_eq!(d.len(), 21);
        assert!(!d.starts_with('0'));
    }

    #[test]
    fn parse_jws_rejects_garbage() {
        assert!(parse_jws("a.b").is_none());
        assert!(parse_jws("a.b.c.d").is_none());
        assert!(parse_jws("!!.!!.x").is_none());
    }
}
