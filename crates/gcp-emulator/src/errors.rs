//! The three error wire formats the emulated APIs speak: Google's JSON error
//! (`{"error":{"code","message","status"}}`, IAM and JWKS), OAuth 2.0 JSON
//! (`{"error","error_description"}`, STS and the OAuth token endpoint) and
//! the metadata server's plain text. Each is an axum response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Google's canonical status name for an HTTP status code.
pub(crate) fn google_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A Google API JSON error.
#[derive(Debug, Clone)]
pub(crate) struct GoogleError {
    pub(crate) code: u16,
    pub(crate) message: String,
}

impl GoogleError {
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Self {
        GoogleError {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }
    pub(crate) fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
}

impl From<anyhow::Error> for GoogleError {
    fn from(err: anyhow::Error) -> Self {
        GoogleError::internal(format!("Internal error encountered: {err:#}"))
    }
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        tracing::info!(code = self.code, message = %self.message, "request refused (Google error)");
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "status": google_status(self.code),
            }
        });
        let mut resp = (status_code(self.code), axum::Json(body)).into_response();
        if self.code == 401 {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
                ),
            );
        }
        resp
    }
}

/// An OAuth 2.0 error response (RFC 6749 §5.2 / RFC 8693 §2.2.2).
#[derive(Debug, Clone)]
pub(crate) struct OAuthError {
    pub(crate) status: u16,
    pub(crate) error: String,
    pub(crate) description: String,
}

impl OAuthError {
    pub(crate) fn new(status: u16, error: &str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error: error.to_owned(),
            description: description.into(),
        }
    }
    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }
    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    /// An injected fault rendered the way an OAuth server would.
    pub(crate) fn from_fault(status: u16, description: String) -> Self {
        let error = match status {
            401 => "invalid_client",
            403 => "access_denied",
            429 | 503 => "temporarily_unavailable",
            500..=599 => "server_error",
            _ => "invalid_request",
        };
        Self::new(status, error, description)
    }
}

impl From<anyhow::Error> for OAuthError {
    fn from(err: anyhow::Error) -> Self {
        OAuthError::new(500, "server_error", format!("{err:#}"))
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status, error = %self.error, description = %self.description, "request refused (OAuth error)");
        let body = json!({"error": self.error, "error_description": self.description});
        let mut resp = (status_code(self.status), axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// A metadata-server error: plain text, with `Metadata-Flavor: Google`.
#[derive(Debug, Clone)]
pub(crate) struct MetadataError {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl MetadataError {
    pub(crate) fn new(status: u16, body: impl Into<String>) -> Self {
        MetadataError {
            status,
            body: body.into(),
        }
    }
}

impl IntoResponse for MetadataError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status, body = %self.body, "request refused (metadata)");
        let mut body = self.body;
        if !body.ends_with('\n') {
            body.push('\n');
        }
        crate::metadata::with_flavor(
            (
                status_code(self.status),
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body,
            )
                .into_response(),
        )
    }
}
