//! Microsoft Entra ID's v2 token endpoint for workload identity federation
//! (`POST /{tenant}/oauth2/v2.0/token`, client credentials with a
//! `jwt-bearer` client assertion), the tenant's discovery document
//! (`/{tenant}/v2.0/.well-known/openid-configuration`, which MSAL reads) and
//! its signing keys (`/{tenant}/discovery/v2.0/keys`). The assertion is
//! checked as Entra checks it against the app's federated identity
//! credentials: RS256 only, `iss` equal to a credential's issuer, the key by
//! `kid` from the issuer's discovery and JWKS, `nbf`/`exp` within five
//! minutes' skew, `sub` equal (case-sensitively) to that credential's subject
//! and `aud` equal to its audience. Errors are Entra's JSON with the AADSTS
//! code in `error_description` and `error_codes`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cloud_config::{EntraApp, FederatedCredential};
use crate::state::{AppState, now_unix};
use crate::webid::{Jws, algorithm, fetch_key, signature_valid};

const CLIENT_CREDENTIALS: &str = "client_credentials";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CLOCK_SKEW_SECS: i64 = 300;
const TOKEN_LIFETIME_SECS: i64 = 3599;
const FIC_DOC: &str = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
const CHECK_FIC: &str = "Check your federated identity credential Subject, Audience and Issuer against the presented assertion.";

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
}

/// An Entra error: `{"error", "error_description": "AADSTSnnn: …", "error_codes": [nnn], …}`.
#[derive(Debug, Clone)]
pub(crate) struct EntraError {
    status: u16,
    error: &'static str,
    code: Option<u32>,
    message: String,
}

impl EntraError {
    fn new(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        let status = if error == "invalid_client" { 401 } else { 400 };
        EntraError {
            status,
            error,
            code: Some(code),
            message: message.into(),
        }
    }

    fn from_fault(status: u16, message: String) -> Self {
        let error = match status {
            401 => "invalid_client",
            429 | 503 => "temporarily_unavailable",
            500..=599 => "server_error",
            _ => "invalid_request",
        };
        let code = message
            .strip_prefix("AADSTS")
            .and_then(|rest| rest.split_once(": "))
            .and_then(|(digits, _)| digits.parse().ok());
        let message = match (code, message.split_once(": ")) {
            (Some(_), Some((_, rest))) => rest.to_owned(),
            _ => message,
        };
        EntraError {
            status,
            error,
            code,
            message,
        }
    }

    fn invalid_jwt(detail: &str) -> Self {
        Self::new(
            "invalid_request",
            50027,
            format!("JWT token is invalid or malformed. {detail}"),
        )
    }

    fn no_match(code: u32, what: &str, value: &str) -> Self {
        Self::new(
            "invalid_client",
            code,
            format!(
                "No matching federated identity record found for presented assertion {what} '{value}'. {CHECK_FIC} {FIC_DOC}"
            ),
        )
    }
}

fn timestamp(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status, error = self.error, code = ?self.code, message = %self.message, "request refused (Entra error)");
        let now = timestamp(now_unix());
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let prefix = self
            .code
            .map(|c| format!("AADSTS{c}: "))
            .unwrap_or_default();
        let body = json!({
            "error": self.error,
            "error_description": format!("{prefix}{} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {now}", self.message),
            "error_codes": self.code.map(|c| vec![c]).unwrap_or_default(),
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code.unwrap_or(0)),
        });
        json_response(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            &body,
        )
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp
}

fn tenant_not_found(error: &'static str, tenant: &str) -> EntraError {
    EntraError::new(
        error,
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. \
             Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

async fn discovery(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    if let Some(fault) = state.faults.enter("entra.discovery").await {
        return EntraError::from_fault(fault.status, fault.message).into_response();
    }
    if state.config.entra.tenant(&tenant).is_none() {
        return tenant_not_found("invalid_tenant", &tenant).into_response();
    }
    let base = format!("{}/{tenant}", state.base_url);
    let body = json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    json_response(StatusCode::OK, &body)
}

async fn keys(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    if let Some(fault) = state.faults.enter("entra.keys").await {
        return EntraError::from_fault(fault.status, fault.message).into_response();
    }
    if state.config.entra.tenant(&tenant).is_none() {
        return tenant_not_found("invalid_tenant", &tenant).into_response();
    }
    json_response(StatusCode::OK, &json!({"keys": [state.entra_key.jwk()]}))
}

async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(fault) = state.faults.enter("entra.token").await {
        return EntraError::from_fault(fault.status, fault.message).into_response();
    }
    match grant(&state, &tenant, &headers, &body).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

fn missing(name: &str) -> EntraError {
    EntraError::new(
        "invalid_request",
        900_144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// The form's parameters and the app they name, in the order Entra checks them.
fn parse_request<'s>(
    state: &'s AppState,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(HashMap<String, String>, &'s EntraApp), EntraError> {
    let Some(directory) = state.config.entra.tenant(tenant) else {
        return Err(tenant_not_found("invalid_request", tenant));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(missing("grant_type"));
    }
    let params: HashMap<String, String> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let grant_type = get("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant_type != CLIENT_CREDENTIALS {
        return Err(EntraError::new(
            "unsupported_grant_type",
            70003,
            format!(
                "The app requested an unsupported grant type '{grant_type}': the emulator serves client_credentials with a federated client assertion."
            ),
        ));
    }
    let client_id = get("client_id").ok_or_else(|| missing("client_id"))?;
    let scope = get("scope").ok_or_else(|| missing("scope"))?;
    if scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
        return Err(EntraError::new(
            "invalid_scope",
            1_002_012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    let Some(app) = directory.apps.iter().find(|a| a.client_id == client_id) else {
        return Err(EntraError::new(
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        ));
    };
    if get("client_secret").is_some() {
        return Err(EntraError::new(
            "invalid_client",
            7_000_215,
            "Invalid client secret provided. The emulated app has only federated identity credentials: send client_assertion instead.",
        ));
    }
    if get("client_assertion_type") != Some(JWT_BEARER) || get("client_assertion").is_none() {
        return Err(EntraError::new(
            "invalid_client",
            7_000_216,
            format!(
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type (client_assertion_type must be {JWT_BEARER})."
            ),
        ));
    }
    Ok((params, app))
}

async fn grant(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, EntraError> {
    let (params, app) = parse_request(state, tenant, headers, body)?;
    let assertion = params
        .get("client_assertion")
        .map(String::as_str)
        .unwrap_or("");
    let scope = params.get("scope").map(String::as_str).unwrap_or("");
    let jws = verify_assertion(state, app, assertion).await?;
    let credential = match_credential(app, &jws)?;
    tracing::debug!(credential = %credential.name, "federated identity credential matched");
    let now = now_unix();
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    let claims = json!({
        "aud": resource,
        "iss": format!("{}/{tenant}/v2.0", state.base_url),
        "iat": now,
        "nbf": now,
        "exp": now + TOKEN_LIFETIME_SECS,
        "appid": app.client_id,
        "azp": app.client_id,
        "idtyp": "app",
        "oid": format!("sp-{}", app.client_id),
        "sub": format!("sp-{}", app.client_id),
        "tid": tenant,
        "ver": "2.0",
    });
    let access_token = state.entra_key.sign_jwt(&claims).map_err(|e| {
        EntraError::new(
            "server_error",
            50000,
            format!("There was an error issuing a token: {e:#}"),
        )
    })?;
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
        "ext_expires_in": TOKEN_LIFETIME_SECS,
        "access_token": access_token,
    }))
}

/// Format, algorithm, issuer, key and signature, then the time window.
async fn verify_assertion(
    state: &AppState,
    app: &EntraApp,
    assertion: &str,
) -> Result<Jws, EntraError> {
    let jws = Jws::parse(assertion)
        .ok_or_else(|| EntraError::invalid_jwt("The client assertion is not a compact JWS."))?;
    if jws.alg != "RS256" {
        return Err(EntraError::invalid_jwt(&format!(
            "The client assertion is signed with {:?}; federated assertions must be signed with RS256.",
            jws.alg
        )));
    }
    let iss = jws.str_claim("iss").unwrap_or("").to_owned();
    if iss.contains("login.microsoftonline.com") || iss.contains("sts.windows.net") {
        return Err(EntraError::new(
            "invalid_request",
            700_222,
            "AAD-issued tokens may not be used for federated identity flows.",
        ));
    }
    if app.federated_credentials.is_empty() {
        return Err(EntraError::new(
            "invalid_request",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{}'. Assertion Audience: '{}'. {FIC_DOC}",
                jws.str_claim("sub").unwrap_or(""),
                jws.audiences().join(",")
            ),
        ));
    }
    if !app.federated_credentials.iter().any(|c| c.issuer == iss) {
        return Err(EntraError::no_match(700_211, "issuer", &iss));
    }
    let Some(kid) = jws.kid.clone() else {
        return Err(EntraError::invalid_jwt(
            "The client assertion header has no kid.",
        ));
    };
    let key = fetch_key(
        (&state.http, &state.entra_oidc_cache),
        &iss,
        &kid,
        state.config.allow_loopback_issuers,
        true,
    )
    .await
    .map_err(|e| {
        if e.is_communication() {
            EntraError::new(
                "invalid_client",
                50166,
                format!("Request to External OIDC endpoint failed: {e}."),
            )
        } else {
            EntraError::invalid_jwt(&format!("The signing key could not be found: {e}."))
        }
    })?;
    let alg = algorithm("RS256").ok_or_else(|| EntraError::invalid_jwt("RS256 is unavailable"))?;
    if !signature_valid(assertion, &key, alg) {
        return Err(EntraError::invalid_jwt(
            "The client assertion signature is invalid.",
        ));
    }
    check_time(&jws)?;
    Ok(jws)
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// `nbf` (or `iat`) to `exp`, five minutes' skew either way.
fn check_time(jws: &Jws) -> Result<(), EntraError> {
    let bad =
        |name: &str| EntraError::invalid_jwt(&format!("The {name} claim is not a NumericDate."));
    let exp = jws.time_claim("exp").map_err(|()| bad("exp"))?;
    let nbf = jws.time_claim("nbf").map_err(|()| bad("nbf"))?;
    let iat = jws.time_claim("iat").map_err(|()| bad("iat"))?;
    let Some(exp) = exp else {
        return Err(EntraError::invalid_jwt(
            "The client assertion has no exp claim.",
        ));
    };
    let from = nbf.or(iat);
    let now = now_unix();
    let too_early = from.is_some_and(|f| f.saturating_sub(CLOCK_SKEW_SECS) > now)
        || iat.is_some_and(|i| i.saturating_sub(CLOCK_SKEW_SECS) > now);
    if too_early || exp.saturating_add(CLOCK_SKEW_SECS) < now {
        return Err(EntraError::new(
            "invalid_client",
            700_024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                rfc3339(now),
                from.map_or_else(|| "(not set)".to_owned(), rfc3339),
                rfc3339(exp)
            ),
        ));
    }
    Ok(())
}

/// The credential with the assertion's issuer and exact subject whose audience the
/// assertion carries.
fn match_credential<'a>(
    app: &'a EntraApp,
    jws: &Jws,
) -> Result<&'a FederatedCredential, EntraError> {
    let iss = jws.str_claim("iss").unwrap_or("");
    let sub = jws.str_claim("sub").unwrap_or("");
    let same_issuer: Vec<&FederatedCredential> = app
        .federated_credentials
        .iter()
        .filter(|c| c.issuer == iss)
        .collect();
    let by_subject: Vec<&FederatedCredential> = same_issuer
        .iter()
        .copied()
        .filter(|c| c.subject == sub)
        .collect();
    if by_subject.is_empty() {
        if same_issuer
            .iter()
            .any(|c| c.subject.eq_ignore_ascii_case(sub))
        {
            return Err(EntraError::new(
                "invalid_client",
                7_002_138,
                format!(
                    "No matching federated identity record found for presented assertion subject '{sub}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. {CHECK_FIC} {FIC_DOC}"
                ),
            ));
        }
        return Err(EntraError::no_match(700_213, "subject", sub));
    }
    let auds = jws.audiences();
    by_subject
        .into_iter()
        .find(|c| c.audiences.iter().any(|a| auds.contains(a)))
        .ok_or_else(|| EntraError::no_match(700_212, "audience", &auds.join(",")))
}
