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
            GrantError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        let retry_after = match &e {
            GrantError::Unavailable { retry_after, .. }
            | GrantError::RateLimited { retry_after, .. } => Some((*retry_after).max(1)),
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
            crate::model::truncate(uri.path(), 128)
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
            crate::model::truncate(uri.path(), 128)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_errors_map_to_oauth_statuses_and_codes() {
        let cases = [
            (
                GrantError::InvalidRequest("a".into()),
                400,
                "invalid_request",
            ),
            (
                GrantError::UnsupportedGrantType("b".into()),
                400,
                "unsupported_grant_type",
            ),
            (
                GrantError::UnauthorizedClient("c".into()),
                403,
                "unauthorized_client",
            ),
            (GrantError::AccessDenied("d".into()), 403, "access_denied"),
            (GrantError::Server("e".into()), 500, "server_error"),
        ];
        for (error, status, code) in cases {
            let e = HttpError::from(error);
            assert_eq!(
                (e.status.as_u16(), e.code, e.retry_after),
                (status, code, None)
            );
        }
    }

    #[test]
    fn unavailable_is_503_with_retry_after_in_both_formats() {
        let error = GrantError::Unavailable {
            message: "upstream busy".into(),
            retry_after: 7,
        };
        for format in [Format::OAuth, Format::ExternalCredential] {
            let response = HttpError::from(error.clone()).into_response_as(format);
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        }
    }
}
