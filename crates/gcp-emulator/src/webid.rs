//! Web-identity token checks shared by the AWS STS and Microsoft Entra
//! emulations: the issuer URL form rules, the compact-JWS header, the
//! issuer's public key found the way the clouds find it (the discovery
//! document at `{iss}/.well-known/openid-configuration` names `jwks_uri`, whose
//! JWK Set holds the key with the token's `kid`), signature verification and
//! the `aud` claim as a list. Each cloud module words the failures its own way.

use std::collections::HashSet;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::keys::parse_jws;

/// Why an issuer URL cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerFormError {
    #[error("it must start with https://")]
    NotHttps,
    #[error("it must not name a port")]
    Port,
    #[error("it must not have a query or fragment")]
    Query,
    #[error("it has no host")]
    NoHost,
}

/// The host of a URL without scheme, userinfo or path, and whether it named a port.
fn host_and_port(rest: &str) -> (&str, bool) {
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
        return (host, after.starts_with(':'));
    }
    match authority.split_once(':') {
        Some((host, _)) => (host, true),
        None => (authority, false),
    }
}

/// Whether `url` is `http(s)://127.0.0.1[:PORT]…`, `localhost` or `[::1]`: the local-use allowance.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, _) = host_and_port(rest);
    host == "127.0.0.1" || host == "::1" || host.eq_ignore_ascii_case("localhost")
}

/// The AWS IAM rules for an OIDC provider URL (and a `jwks_uri`): `https://`, a host, a path
/// allowed, no port, no query. `allow_loopback` waives the scheme and port rules for a
/// loopback host (local use only; AWS itself never fetches from loopback).
pub(crate) fn check_issuer_form(url: &str, allow_loopback: bool) -> Result<(), IssuerFormError> {
    if url.contains('?') || url.contains('#') {
        return Err(IssuerFormError::Query);
    }
    if allow_loopback && is_loopback_url(url) {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(IssuerFormError::NotHttps);
    };
    let (host, port) = host_and_port(rest);
    if host.is_empty() {
        return Err(IssuerFormError::NoHost);
    }
    if port {
        return Err(IssuerFormError::Port);
    }
    Ok(())
}

/// A parsed (not yet verified) web-identity token.
#[derive(Debug, Clone)]
pub(crate) struct Jws {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    pub(crate) claims: Value,
}

impl Jws {
    pub(crate) fn parse(token: &str) -> Option<Jws> {
        let (header, claims) = parse_jws(token)?;
        Some(Jws {
            alg: header
                .get("alg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            kid: header
                .get("kid")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
            claims,
        })
    }

    pub(crate) fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// `aud` as a list (a string or an array of strings).
    pub(crate) fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A NumericDate claim; `Err` when present but not a whole number.
    pub(crate) fn time_claim(&self, name: &str) -> Result<Option<i64>, ()> {
        match self.claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => crate::keys::json_integer(v).map(Some).ok_or(()),
        }
    }
}

/// The JWS algorithms the emulator verifies, by name (ES512 through aws-lc-rs, as
/// jsonwebtoken has no P-521).
pub(crate) fn algorithm(name: &str) -> Option<Alg> {
    Some(match name {
        "RS256" => Alg::Jwt(Algorithm::RS256),
        "RS384" => Alg::Jwt(Algorithm::RS384),
        "RS512" => Alg::Jwt(Algorithm::RS512),
        "ES256" => Alg::Jwt(Algorithm::ES256),
        "ES384" => Alg::Jwt(Algorithm::ES384),
        "ES512" => Alg::Es512,
        _ => return None,
    })
}

/// A verifiable JWS algorithm.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Alg {
    Jwt(Algorithm),
    Es512,
}

/// An issuer's public key: a jsonwebtoken key, or a P-521 point (uncompressed).
pub(crate) enum IssuerKey {
    Jwt(DecodingKey),
    P521(Vec<u8>),
}

/// A P-521 JWK's uncompressed point `04 || x || y`.
fn p521_point(jwk: &Value) -> Option<Vec<u8>> {
    if jwk.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk.get("crv").and_then(Value::as_str) != Some("P-521")
    {
        return None;
    }
    let coordinate = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(crate::keys::b64url_decode)
            .filter(|c| c.len() == 66)
    };
    let mut point = vec![4u8];
    point.extend(coordinate("x")?);
    point.extend(coordinate("y")?);
    Some(point)
}

/// Why the issuer's key could not be found.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("the issuer {url} is not fetched: {problem}")]
    IssuerForm {
        url: String,
        problem: IssuerFormError,
    },
    #[error("the discovery document {url} could not be retrieved: {problem}")]
    Discovery { url: String, problem: String },
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    DiscoveryIssuer { expected: String, found: String },
    #[error("the discovery document {url} has no jwks_uri")]
    NoJwksUri { url: String },
    #[error("the jwks_uri {url} is not acceptable: {problem}")]
    JwksUriForm {
        url: String,
        problem: IssuerFormError,
    },
    #[error("the JWKS {url} could not be retrieved: {problem}")]
    Jwks { url: String, problem: String },
    #[error("the JWKS {url} has no key with kid {kid:?}")]
    UnknownKid { url: String, kid: String },
    #[error("the JWK with kid {kid:?} at {url} is not a usable public key")]
    Unusable { url: String, kid: String },
    #[error(
        "the JWK with kid {kid:?} at {url} has \"use\": {found:?}; a signing key must say \"sig\""
    )]
    KeyUse {
        url: String,
        kid: String,
        found: String,
    },
}

impl KeyError {
    /// Whether the issuer could not be reached (rather than answering something wrong).
    pub(crate) fn is_communication(&self) -> bool {
        matches!(self, KeyError::Discovery { .. } | KeyError::Jwks { .. })
    }
}

/// The public key `kid` of issuer `iss`, via discovery and `jwks_uri`, each through the
/// cloud's HTTP cache (`sts/cache.rs`: kept for the responses' `max-age`; AWS is reported to
/// honour the JWK Set's caching headers, Entra documents nothing). With `require_sig_use`
/// (Entra) a key whose `use` is present and not `"sig"` is refused.
pub(crate) async fn fetch_key(
    (http, cache): (&reqwest::Client, &crate::sts::cache::OidcCache),
    iss: &str,
    kid: &str,
    allow_loopback: bool,
    require_sig_use: bool,
) -> Result<IssuerKey, KeyError> {
    if let Err(problem) = check_jwks_uri(iss, allow_loopback) {
        return Err(KeyError::IssuerForm {
            url: iss.to_owned(),
            problem,
        });
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        iss.trim_end_matches('/')
    );
    let discovery = cache
        .get(http, &url)
        .await
        .map_err(|problem| KeyError::Discovery {
            url: url.clone(),
            problem,
        })?;
    let found = discovery
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or("");
    if found != iss {
        return Err(KeyError::DiscoveryIssuer {
            expected: iss.to_owned(),
            found: found.to_owned(),
        });
    }
    let Some(jwks_uri) = discovery.get("jwks_uri").and_then(Value::as_str) else {
        return Err(KeyError::NoJwksUri { url });
    };
    let url = jwks_uri.to_owned();
    if let Err(problem) = check_jwks_uri(&url, allow_loopback) {
        return Err(KeyError::JwksUriForm { url, problem });
    }
    let jwks = cache
        .get(http, &url)
        .await
        .map_err(|problem| KeyError::Jwks {
            url: url.clone(),
            problem,
        })?;
    let Some(jwk) = jwks.get("keys").and_then(Value::as_array).and_then(|keys| {
        keys.iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
    }) else {
        return Err(KeyError::UnknownKid {
            url,
            kid: kid.to_owned(),
        });
    };
    if let Some(found) = jwk.get("use").and_then(Value::as_str)
        && require_sig_use
        && found != "sig"
    {
        return Err(KeyError::KeyUse {
            url,
            kid: kid.to_owned(),
            found: found.to_owned(),
        });
    }
    if let Some(point) = p521_point(jwk) {
        return Ok(IssuerKey::P521(point));
    }
    serde_json::from_value::<Jwk>(jwk.clone())
        .ok()
        .and_then(|jwk| DecodingKey::from_jwk(&jwk).ok())
        .map(IssuerKey::Jwt)
        .ok_or(KeyError::Unusable {
            url,
            kid: kid.to_owned(),
        })
}

/// An issuer to fetch from and a `jwks_uri` must be https (a port is fine there), unless
/// local and allowed.
fn check_jwks_uri(url: &str, allow_loopback: bool) -> Result<(), IssuerFormError> {
    if allow_loopback && is_loopback_url(url) {
        return Ok(());
    }
    match url.strip_prefix("https://") {
        Some(rest) if !host_and_port(rest).0.is_empty() => Ok(()),
        Some(_) => Err(IssuerFormError::NoHost),
        None => Err(IssuerFormError::NotHttps),
    }
}

/// Whether `key` verifies the signature of `token` under `alg` (claims are checked elsewhere).
pub(crate) fn signature_valid(token: &str, key: &IssuerKey, alg: Alg) -> bool {
    match (alg, key) {
        (Alg::Jwt(alg), IssuerKey::Jwt(key)) => {
            let mut validation = Validation::new(alg);
            validation.required_spec_claims = HashSet::new();
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            jsonwebtoken::decode::<Value>(token, key, &validation).is_ok()
        }
        (Alg::Es512, IssuerKey::P521(point)) => {
            let Some((input, signature)) = token.rsplit_once('.') else {
                return false;
            };
            let Some(signature) = crate::keys::b64url_decode(signature) else {
                return false;
            };
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED,
                point,
            )
            .verify(input.as_bytes(), &signature)
            .is_ok()
        }
        _ => false,
    }
}

/// Glob match with `*` (any run) and `?` (one character), as IAM's `StringLike`.
pub(crate) fn glob_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == v[vi] => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_form_rules() {
        assert_eq!(
            check_issuer_form("https://issuer.example/path", false),
            Ok(())
        );
        assert_eq!(
            check_issuer_form("http://issuer.example", false),
            Err(IssuerFormError::NotHttps)
        );
        assert_eq!(
            check_issuer_form("https://issuer.example:8443", false),
            Err(IssuerFormError::Port)
        );
        assert_eq!(
            check_issuer_form("https://issuer.example/?a=b", false),
            Err(IssuerFormError::Query)
        );
        assert_eq!(
            check_issuer_form("http://127.0.0.1:9000", false),
            Err(IssuerFormError::NotHttps)
        );
        assert_eq!(check_issuer_form("http://127.0.0.1:9000", true), Ok(()));
        assert_eq!(
            check_issuer_form("http://issuer.example:9000", true),
            Err(IssuerFormError::NotHttps)
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("repo:acme/*", "repo:acme/app"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("device/*/x", "device/a/y"));
        assert!(glob_match("device/*/x", "device/a/b/x"));
    }
}
