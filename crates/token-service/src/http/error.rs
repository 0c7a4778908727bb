//! The single mapping from errors to HTTP responses: OAuth JSON (`{"error",
//! "error_description"}`, RFC 6749 §5.2) or the executable-sourced credential format of Google's
//! client libraries (AIP-4117: `{"success": false, "version": 1, "code", "message"}`).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::grant::GrantError;

/// How `/token` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// OAuth 2.0 JSON.
    #[default]
    OAuth,
    /// `format=external_credential`: executable-sourced credential JSON.
    ExternalCredential,
}

/// An error response: status, OAuth error code and a description that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status.
    pub status: StatusCode,
    /// OAuth error code (or `not_found` / `method_not_allowed` outside the OAuth endpoints).
    pub code: &'static str,
    /// Human-readable description.
    pub description: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl HttpError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// The response in the given format.
    pub fn into_response_as(self, format: Format) -> Response {
        let body = match format {
            Format::OAuth => json!({ "error": self.code, "error_description": self.description }),
            Format::ExternalCredential => json!({
                "success": false,
                "version": 1,
                "code": self.code,
                "message": self.description,
            }),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        self.into_response_as(Format::OAuth)
    }
}

impl From<GrantError> for HttpError {
    fn from(e: GrantError) -> Self {
        let status = match &e {
            GrantError::InvalidRequest(_) | GrantError::UnsupportedGrantType(_) => {
                StatusCode::BAD_REQUEST
            }
            GrantError::UnauthorizedClient(_) | GrantError::AccessDenied(_) => {
                StatusCode::FORBIDDEN
            }
            GrantError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GrantError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let retry_after = match &e {
            GrantError::Unavailable { retry_after, .. } => Some((*retry_after).max(1)),
            _ => None,
        };
        Self {
            status,
            code: e.code(),
            description: e.to_string(),
            retry_after,
        }
    }
}

/// 404 for unknown paths.
pub async fn not_found(uri: http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "No endpoint at '{}'; see /.well-known/openid-configuration",
            crate::flows::xlb_mtls::truncate(uri.path(), 128)
        ),
    )
}

/// 405 for known paths used with the wrong method.
pub async fn method_not_allowed(method: http::Method, uri: http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on '{}'; use GET",
            crate::flows::xlb_mtls::truncate(uri.path(), 128)
        ),
    )
}
