//! `POST /token`: the OAuth token endpoint for the client-credentials grant.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use super::error::{Format, HttpError};
use super::{AppState, MAX_BODY_BYTES, form, request_issuer};
use crate::clock::Deadline;
use crate::model::{IssuedTokens, TokenRequest};

/// TLS peer certificates (DER, leaf first) that a TLS listener puts into request extensions.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<Vec<u8>>>);

/// Handles a token request.
pub async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match handle(&state, request).await {
        Ok(response) => response,
        Err((format, e)) => {
            if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN {
                tracing::warn!(event = "bad_request", status = e.status.as_u16(), reason = %e.description, "refused a token request: {}", e.description);
            }
            e.into_response_as(format)
        }
    }
}

async fn handle(state: &AppState, request: Request) -> Result<Response, (Format, HttpError)> {
    let oauth = |e: HttpError| (Format::OAuth, e);
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers).map_err(oauth)?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(oauth(too_large()));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            oauth(if too_big {
                too_large()
            } else {
                HttpError::bad_request("The request body could not be read")
            })
        })?;
    let mut params = form::parse_form(&bytes).map_err(|m| oauth(HttpError::bad_request(m)))?;
    let format = match params.remove("format").as_deref() {
        None | Some("") => Format::OAuth,
        Some("external_credential") => Format::ExternalCredential,
        Some(other) => {
            return Err(oauth(HttpError::bad_request(format!(
                "Unknown format '{}'; the only format is 'external_credential'",
                crate::model::truncate(other, 64)
            ))));
        }
    };
    let iss = request_issuer(&state.issuer, &parts.headers, &parts.uri).map_err(|e| (format, e))?;
    let token_request = TokenRequest {
        grant_type: params.remove("grant_type").unwrap_or_default(),
        scope: params.remove("scope"),
        service_account: params.remove("service_account"),
        params,
        remote_addr: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        peer_certificates: parts
            .extensions
            .get::<PeerCertificates>()
            .map(|p| p.0.clone()),
        headers: parts.headers,
    };
    let issued = state
        .grant
        .exchange(
            &token_request,
            &iss,
            Deadline::after(state.upstream_timeout),
        )
        .await
        .map_err(|e| (format, HttpError::from(e)))?;
    Ok(success(format, issued))
}

fn check_content_type(headers: &http::HeaderMap) -> Result<(), HttpError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    match media {
        Some(m) if m.eq_ignore_ascii_case("application/x-www-form-urlencoded") => Ok(()),
        _ => Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "The request body must be application/x-www-form-urlencoded",
        )),
    }
}

pub(super) fn too_large() -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        format!("The request body exceeds {} KiB", MAX_BODY_BYTES / 1024),
    )
}

fn success(format: Format, issued: IssuedTokens) -> Response {
    let body = match format {
        Format::ExternalCredential => json!({
            "success": true,
            "version": 1,
            "id_token": issued.id_token,
            "token_type": "urn:ietf:params:oauth:token-type:id_token",
            "expiration_time": issued.id_token_expires_at,
        }),
        Format::OAuth => {
            let mut body = Map::new();
            body.insert("id_token".into(), Value::String(issued.id_token));
            if let Some(access) = issued.access_token {
                body.insert("access_token".into(), Value::String(access.token));
                body.insert("token_type".into(), Value::String("Bearer".into()));
                body.insert("expires_in".into(), Value::from(access.expires_in));
                body.insert("scope".into(), Value::String(access.scope));
            }
            Value::Object(body)
        }
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// `/token` with any method but POST.
pub async fn method_not_allowed(method: http::Method) -> Response {
    let mut response = HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        format!("{method} is not allowed on /token; use POST with an application/x-www-form-urlencoded body"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Token responses must not be cached (RFC 6749 §5.1).
pub async fn no_store(mut response: Response) -> Response {
    set_no_store(&mut response);
    response
}

/// Marks a response as not cacheable (also the guard's refusals of `/token` requests).
pub(super) fn set_no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
