//! Google's Security Token Service token exchange (`POST /v1/token`,
//! RFC 8693): request parsing (form or JSON, snake_case or camelCase), the
//! ordered checks Google applies to a workload identity federation request,
//! OIDC discovery and JWKS retrieval through an HTTP cache (`sts/cache.rs`),
//! subject-token signature and claim validation, and issuing the federated
//! access token.

pub(crate) mod cache;

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::config::Provider;
use crate::errors::OAuthError;
use crate::keys::{json_integer, parse_jws};
use crate::state::{AppState, now_unix};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_TOKEN_TYPES: [&str; 2] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];
const MAX_SUBJECT_TOKEN_LIFETIME: i64 = 24 * 3600;
const MAX_SUBJECT_BYTES: usize = 127;
const FEDERATED_TOKEN_LIFETIME: i64 = 3600;

/// `ExchangeTokenRequest` fields: (proto name, JSON name).
const FIELDS: [(&str, &str); 9] = [
    ("grant_type", "grantType"),
    ("audience", "audience"),
    ("scope", "scope"),
    ("requested_token_type", "requestedTokenType"),
    ("subject_token", "subjectToken"),
    ("subject_token_type", "subjectTokenType"),
    ("actor_token", "actorToken"),
    ("actor_token_type", "actorTokenType"),
    ("options", "options"),
];

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/v1/token", post(token))
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    if let Some(fault) = state.faults.enter("sts.token").await {
        return OAuthError::from_fault(fault.status, fault.message).into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return OAuthError::invalid_request(e.body_text()).into_response(),
    };
    match exchange(&state, &headers, &body).await {
        Ok(v) => {
            let mut resp = axum::Json(v).into_response();
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Canonical field name for a proto or JSON spelling.
fn canonical(name: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .find(|(proto, json)| *proto == name || *json == name)
        .map(|(proto, _)| *proto)
}

/// Read the request as form or JSON into proto-named parameters.
pub(crate) fn parse_request(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<&'static str, String>, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut pairs: Vec<(String, Value)> = Vec::new();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        pairs.extend(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))),
        );
    } else if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => pairs.extend(map),
            Ok(_) => {
                return Err(OAuthError::invalid_request(
                    "Invalid JSON payload received. Expected a JSON object.",
                ));
            }
            Err(e) => {
                return Err(OAuthError::invalid_request(format!(
                    "Invalid JSON payload received. {e}"
                )));
            }
        }
    } else {
        return Err(OAuthError::invalid_request(format!(
            "Unsupported Content-Type {content_type:?}: send application/x-www-form-urlencoded or application/json."
        )));
    }
    let mut params = HashMap::new();
    for (name, value) in pairs {
        let Some(field) = canonical(&name) else {
            return Err(OAuthError::invalid_request(format!(
                "Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."
            )));
        };
        let value = match value {
            Value::Null => continue,
            Value::String(s) => s,
            other => {
                return Err(OAuthError::invalid_request(format!(
                    "Invalid value at '{field}' (TYPE_STRING), {other}"
                )));
            }
        };
        if params.insert(field, value).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "Parameter {field} was given more than once."
            )));
        }
    }
    Ok(params)
}

/// The grant type and the token types of a token exchange request.
fn check_token_types(params: &HashMap<&str, String>) -> Result<(), OAuthError> {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let grant_type = get("grant_type");
    if grant_type != TOKEN_EXCHANGE {
        return Err(OAuthError::new(
            400,
            "unsupported_grant_type",
            format!(
                "Unsupported grant_type {grant_type:?}: the only supported value is {TOKEN_EXCHANGE}."
            ),
        ));
    }
    let requested = get("requested_token_type");
    if requested != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "Invalid requested_token_type {requested:?}: it must be {ACCESS_TOKEN_TYPE}."
        )));
    }
    let subject_token_type = get("subject_token_type");
    if !SUBJECT_TOKEN_TYPES.contains(&subject_token_type) {
        return Err(OAuthError::invalid_request(format!(
            "Invalid subject_token_type {subject_token_type:?}: for an OIDC provider it must be one of {}.",
            SUBJECT_TOKEN_TYPES.join(", ")
        )));
    }
    Ok(())
}

async fn exchange(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(OAuthError::invalid_request(
            "The Security Token Service does not accept an Authorization header on token exchange: \
             the subject token in the request body is the only credential. Remove the Authorization header.",
        ));
    }
    let params = parse_request(headers, body)?;
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");

    check_token_types(&params)?;
    let scope = get("scope");
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return Err(OAuthError::invalid_request(
            "Missing required parameter: scope.",
        ));
    }
    if let Some(options) = params.get("options")
        && !options.is_empty()
        && serde_json::from_str::<serde_json::Map<String, Value>>(options).is_err()
    {
        return Err(OAuthError::invalid_request(
            "The options parameter must be a JSON object serialized as a string.",
        ));
    }
    let audience = get("audience");
    let Some(provider) = state
        .config
        .providers
        .iter()
        .find(|p| p.sts_audience() == audience)
    else {
        return Err(OAuthError::new(
            400,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might either be \
             because the pool or provider is disabled or deleted or because it doesn't exist.",
        ));
    };
    let subject_token = get("subject_token");
    if subject_token.is_empty() {
        return Err(OAuthError::invalid_request(
            "Missing required parameter: subject_token.",
        ));
    }

    let claims = verify_subject_token(state, provider, subject_token).await?;
    let subject = check_claims(state, provider, &claims)?;

    let remaining = claims
        .get("exp")
        .and_then(json_integer)
        .unwrap_or(0)
        .saturating_sub(now_unix());
    let lifetime = remaining.clamp(1, FEDERATED_TOKEN_LIFETIME);
    let principal = provider.principal_for(&subject);
    let (token, _) = state.issue_token(&principal, scopes, lifetime);
    Ok(json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": lifetime,
    }))
}

async fn fetch_json(state: &AppState, url: &str) -> Result<Value, String> {
    state.oidc_cache.get(&state.http, url).await
}

/// Header and issuer checks, discovery, JWKS lookup and signature verification.
/// The public key `kid` of the issuer `iss`, found the way Google's STS finds it: the issuer's
/// discovery document names its `jwks_uri`, whose JWK Set holds the key.
async fn fetch_key(state: &AppState, iss: &str, kid: &str) -> Result<DecodingKey, OAuthError> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        iss.trim_end_matches('/')
    );
    let discovery = fetch_json(state, &discovery_url).await.map_err(|e| {
        OAuthError::invalid_grant(format!(
            "The OIDC discovery document could not be retrieved from {discovery_url}: {e}."
        ))
    })?;
    if discovery.get("issuer").and_then(Value::as_str) != Some(iss) {
        return Err(OAuthError::invalid_grant(
            "`issuer` claim in OIDC discovery document does not match the issuer specified in the request",
        ));
    }
    let Some(jwks_uri) = discovery.get("jwks_uri").and_then(Value::as_str) else {
        return Err(OAuthError::invalid_grant(format!(
            "The OIDC discovery document at {discovery_url} has no jwks_uri."
        )));
    };
    let jwks = fetch_json(state, jwks_uri).await.map_err(|e| {
        OAuthError::invalid_grant(format!(
            "The JWKS could not be retrieved from {jwks_uri}: {e}."
        ))
    })?;
    let jwk_value = jwks
        .get("keys")
        .and_then(Value::as_array)
        .and_then(|keys| keys.iter().find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)))
        .cloned()
        .ok_or_else(|| {
            OAuthError::invalid_grant(format!(
                "The key ID (kid) {kid} of the subject token was not found in the JWKS at {jwks_uri}."
            ))
        })?;
    let key = serde_json::from_value::<Jwk>(jwk_value)
        .ok()
        .and_then(|jwk| DecodingKey::from_jwk(&jwk).ok())
        .ok_or_else(|| {
            OAuthError::invalid_grant(format!(
                "The JWK with kid {kid} at {jwks_uri} is not a usable public key."
            ))
        })?;
    Ok(key)
}

async fn verify_subject_token(
    state: &AppState,
    provider: &Provider,
    token: &str,
) -> Result<Value, OAuthError> {
    let Some((header, claims)) = parse_jws(token) else {
        return Err(OAuthError::invalid_grant(
            "Unable to parse the subject token: it must be a JWT in JWS compact serialization (header.payload.signature).",
        ));
    };
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        other => {
            return Err(OAuthError::invalid_grant(format!(
                "The subject token is signed with an unsupported algorithm {}: only RS256 and ES256 are supported.",
                other.unwrap_or("(none)")
            )));
        }
    };
    let Some(kid) = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
    else {
        return Err(OAuthError::invalid_grant(
            "The subject token header has no kid (key ID).",
        ));
    };
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if iss != provider.issuer_uri {
        return Err(OAuthError::invalid_grant(format!(
            "The issuer in ID Token {iss} does not match the expected ISSUER {}.",
            provider.issuer_uri
        )));
    }

    let key = fetch_key(state, iss, kid).await?;

    let mut validation = Validation::new(alg);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => match e.kind() {
            ErrorKind::InvalidSignature => Err(OAuthError::invalid_grant("Invalid JWT signature.")),
            _ => Err(OAuthError::invalid_grant(format!(
                "Invalid JWT signature: {e}."
            ))),
        },
    }
}

/// Audience, time and subject checks; returns `google.subject`.
fn check_claims(
    state: &AppState,
    provider: &Provider,
    claims: &Value,
) -> Result<String, OAuthError> {
    let token_auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let accepted = provider.accepted_audiences();
    if !token_auds.iter().any(|a| accepted.iter().any(|x| x == a)) {
        return Err(OAuthError::invalid_grant(format!(
            "The audience in ID Token [{}] does not match the expected audience.",
            token_auds.join(", ")
        )));
    }

    let now = now_unix();
    let skew = state.config.clock_skew_secs;
    let exp = claims.get("exp").and_then(json_integer).ok_or_else(|| {
        OAuthError::invalid_grant("The ID Token has no valid exp (expiration time) claim.")
    })?;
    let iat = claims.get("iat").and_then(json_integer).ok_or_else(|| {
        OAuthError::invalid_grant("The ID Token has no valid iat (issued at) claim.")
    })?;
    if exp.saturating_add(skew) < now {
        return Err(OAuthError::invalid_grant(format!(
            "The ID Token has expired: exp {exp} is before the current time {now}."
        )));
    }
    if iat.saturating_sub(skew) > now {
        return Err(OAuthError::invalid_grant(format!(
            "The ID Token was issued in the future: iat {iat} is after the current time {now}."
        )));
    }
    if exp.saturating_sub(iat) > MAX_SUBJECT_TOKEN_LIFETIME {
        return Err(OAuthError::invalid_grant(format!(
            "The lifetime of the ID Token (exp - iat = {}s) exceeds the maximum of 24 hours.",
            exp.saturating_sub(iat)
        )));
    }

    let subject = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    if subject.is_empty() {
        return Err(OAuthError::invalid_grant(
            "The ID Token has no sub claim, so the mapped attribute google.subject (assertion.sub) is empty.",
        ));
    }
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(OAuthError::invalid_grant(format!(
            "The size of mapped attribute google.subject exceeds the {MAX_SUBJECT_BYTES} bytes limit. Either modify \
             your attribute mapping or the incoming assertion to produce a mapped attribute that is less than \
             {MAX_SUBJECT_BYTES} bytes."
        )));
    }
    Ok(subject.to_owned())
}
