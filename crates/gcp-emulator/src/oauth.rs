//! The OAuth 2.0 token endpoint application-default credentials use
//! (`POST /token`, shaped like `https://oauth2.googleapis.com/token`): the
//! `refresh_token` grant for authorized-user files and the RFC 7523
//! `jwt-bearer` grant for service-account key files.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Value, json};

use crate::errors::OAuthError;
use crate::keys::{json_integer, parse_jws};
use crate::state::{AppState, now_unix};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_LIFETIME: i64 = 3599;
const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// Audiences Google's token endpoint answers to, besides the emulator's own `token_uri`.
const GOOGLE_TOKEN_URIS: [&str; 2] = [
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
];
const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
                           timeframe. Check your iat and exp values in the JWT claim.";

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/token", post(token))
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    if let Some(fault) = state.faults.enter("oauth.token").await {
        return OAuthError::from_fault(fault.status, fault.message).into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return OAuthError::invalid_request(e.body_text()).into_response(),
    };
    match grant(&state, &headers, &body) {
        Ok(v) => {
            let mut resp = axum::Json(v).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => e.into_response(),
    }
}

fn grant(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(format!(
            "Unsupported Content-Type {content_type:?}: the token endpoint takes application/x-www-form-urlencoded."
        )));
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "Parameter {k} was given more than once."
            )));
        }
    }
    match params.get("grant_type").map(String::as_str) {
        None | Some("") => Err(OAuthError::invalid_request(
            "Missing required parameter: grant_type",
        )),
        Some("refresh_token") => refresh(state, headers, &params),
        Some(JWT_BEARER) => jwt_bearer(state, &params),
        Some(other) => Err(OAuthError::new(
            400,
            "unsupported_grant_type",
            format!("Invalid grant_type: {other}"),
        )),
    }
}

/// Client credentials from the form (`client_secret_post`) or HTTP Basic.
fn client_credentials(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let Some(id) = params.get("client_id") {
        return Some((
            id.clone(),
            params.get("client_secret").cloned().unwrap_or_default(),
        ));
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn refresh(
    state: &AppState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let Some((client_id, client_secret)) = client_credentials(headers, params) else {
        return Err(OAuthError::invalid_request(
            "Could not determine client ID from request.",
        ));
    };
    let Some(client) = state.oauth_client(&client_id) else {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            "The OAuth client was not found.",
        ));
    };
    if client.client_secret != client_secret {
        return Err(OAuthError::new(401, "invalid_client", "Unauthorized"));
    }
    let Some(refresh_token) = params.get("refresh_token").filter(|t| !t.is_empty()) else {
        return Err(OAuthError::invalid_request(
            "Missing required parameter: refresh_token",
        ));
    };
    if *refresh_token != client.refresh_token {
        return Err(OAuthError::invalid_grant(
            "Token has been expired or revoked.",
        ));
    }
    let scopes: Vec<String> = match params.get("scope") {
        Some(s) if !s.trim().is_empty() => s.split_whitespace().map(str::to_owned).collect(),
        _ => crate::AUTHORIZED_USER_SCOPES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    let scope = scopes.join(" ");
    let (token, _) = state.issue_token(&client.principal, scopes, TOKEN_LIFETIME);
    Ok(json!({
        "access_token": token,
        "expires_in": TOKEN_LIFETIME,
        "scope": scope,
        "token_type": "Bearer",
    }))
}

/// Whether one of the account's keys (the one named by `kid`, if any) signed `assertion`.
fn signed_by(account: &crate::Account, header: &Value, assertion: &str) -> bool {
    let kid = header.get("kid").and_then(Value::as_str);
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_aud = false;
    account
        .keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.kid() == kid))
        .any(|k| jsonwebtoken::decode::<Value>(assertion, &k.decoding_key(), &validation).is_ok())
}

/// The assertion's `iat`/`exp`: present, ordered, at most an hour apart, and current within
/// the configured clock skew.
fn check_lifetime(state: &AppState, claims: &Value) -> Result<(), OAuthError> {
    let now = now_unix();
    let skew = state.config.clock_skew_secs;
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(json_integer),
        claims.get("exp").and_then(json_integer),
    ) else {
        return Err(OAuthError::invalid_grant(SHORT_LIVED));
    };
    if exp <= iat
        || exp.saturating_sub(iat) > MAX_ASSERTION_LIFETIME
        || exp.saturating_add(skew) < now
        || iat.saturating_sub(skew) > now
    {
        return Err(OAuthError::invalid_grant(SHORT_LIVED));
    }
    Ok(())
}

fn jwt_bearer(state: &AppState, params: &HashMap<String, String>) -> Result<Value, OAuthError> {
    let Some(assertion) = params.get("assertion").filter(|a| !a.is_empty()) else {
        return Err(OAuthError::invalid_request(
            "Missing required parameter: assertion",
        ));
    };
    let Some((header, claims)) = parse_jws(assertion) else {
        return Err(OAuthError::invalid_grant(
            "Invalid JWT: the assertion is not a compact JWS.",
        ));
    };
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(OAuthError::invalid_grant(
            "Invalid JWT: the assertion must be signed with RS256.",
        ));
    }
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let Some(account) = state
        .account(iss)
        .filter(|a| a.email.eq_ignore_ascii_case(iss))
    else {
        return Err(OAuthError::invalid_grant(
            "Invalid grant: account not found",
        ));
    };
    if !signed_by(&account, &header, assertion) {
        return Err(OAuthError::invalid_grant("Invalid JWT Signature."));
    }

    let token_uri = state.token_uri();
    let aud = claims.get("aud").and_then(Value::as_str).unwrap_or("");
    if aud != token_uri && !GOOGLE_TOKEN_URIS.contains(&aud) {
        return Err(OAuthError::invalid_grant(format!(
            "Invalid JWT: Failed audience check. The right audience is {token_uri}"
        )));
    }
    check_lifetime(state, &claims)?;
    if let Some(sub) = claims.get("sub").and_then(Value::as_str)
        && !sub.eq_ignore_ascii_case(iss)
    {
        return Err(OAuthError::new(
            401,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for \
             any of the scopes requested.",
        ));
    }
    let scope = claims.get("scope").and_then(Value::as_str).unwrap_or("");
    if claims.get("target_audience").is_some() {
        return Err(OAuthError::invalid_request(
            "ID-token requests (target_audience) are not emulated by gcp-emulator; request an access token with scope.",
        ));
    }
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return Err(OAuthError::new(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    let (token, _) = state.issue_token(&account.email, scopes, TOKEN_LIFETIME);
    Ok(json!({
        "access_token": token,
        "expires_in": TOKEN_LIFETIME,
        "token_type": "Bearer",
    }))
}
