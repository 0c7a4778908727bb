//! The single mapping from errors to HTTP responses: OAuth JSON (`{"error",
//! "error_description"}`, RFC 6749 §5.2) or the executable-sourced credential format of Google's
//! client libraries (AIP-4117: `{"success": false, "version": 1, "code", "message"}`).
//! [`HttpError::status_and_code`] is the only table from a failure's kind to status and code;
//! the few answers it has no row for (413, 415, the OAuth endpoint's 405) are built here too.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::error::{Failure, Kind};

/// How `/token` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// OAuth 2.0 JSON.
    #[default]
    OAuth,
    /// `format=external_credential`: executable-sourced credential JSON.
    ExternalCredential,
    /// `format=aws_credential_process`: the JSON an AWS `credential_process` prints; its
    /// errors are OAuth JSON (the helper printing it exits non-zero on them).
    AwsCredentialProcess,
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
            Format::OAuth | Format::AwsCredentialProcess => {
                json!({ "error": self.code, "error_description": self.description })
            }
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

impl HttpError {
    /// The one table from failure kind to HTTP status and OAuth error code.
    pub fn status_and_code(kind: Kind) -> (StatusCode, &'static str, Option<u64>) {
        match kind {
            Kind::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request", None),
            Kind::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type", None),
            Kind::UnauthorizedClient => (StatusCode::FORBIDDEN, "unauthorized_client", None),
            Kind::AccessDenied => (StatusCode::FORBIDDEN, "access_denied", None),
            Kind::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                Some(retry_after.max(1)),
            ),
            Kind::Unavailable { retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                Some(retry_after.max(1)),
            ),
            Kind::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request", None),
            Kind::NotFound => (StatusCode::NOT_FOUND, "not_found", None),
            Kind::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Kind::Server => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }

    /// The OAuth error code of a failure kind (also the `outcome` of the request's log line).
    pub fn code_of(kind: Kind) -> &'static str {
        Self::status_and_code(kind).1
    }
}

impl From<&Failure> for HttpError {
    fn from(failure: &Failure) -> Self {
        let (status, code, retry_after) = Self::status_and_code(failure.kind());
        Self {
            status,
            code,
            description: failure.message().to_owned(),
            retry_after,
        }
    }
}

impl From<Failure> for HttpError {
    fn from(failure: Failure) -> Self {
        Self::from(&failure)
    }
}

/// 404 for unknown paths.
pub async fn not_found(uri: http::Uri) -> HttpError {
    HttpError::from(Failure::new(
        Kind::NotFound,
        format!(
            "No endpoint at '{}'; see /.well-known/openid-configuration",
            crate::model::truncate(uri.path(), 128)
        ),
    ))
}

/// 405 for known paths used with the wrong method.
pub async fn method_not_allowed(method: http::Method, uri: http::Uri) -> HttpError {
    HttpError::from(Failure::new(
        Kind::MethodNotAllowed,
        format!(
            "{method} is not allowed on '{}'; use GET",
            crate::model::truncate(uri.path(), 128)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_map_to_statuses_codes_and_retry_after() {
        let cases = [
            (Kind::InvalidRequest, 400, "invalid_request", None),
            (
                Kind::UnsupportedGrantType,
                400,
                "unsupported_grant_type",
                None,
            ),
            (Kind::UnauthorizedClient, 403, "unauthorized_client", None),
            (Kind::AccessDenied, 403, "access_denied", None),
            (
                Kind::RateLimited { retry_after: 0 },
                429,
                "temporarily_unavailable",
                Some(1),
            ),
            (
                Kind::Unavailable { retry_after: 7 },
                503,
                "temporarily_unavailable",
                Some(7),
            ),
            (Kind::RequestTimeout, 408, "invalid_request", None),
            (Kind::NotFound, 404, "not_found", None),
            (Kind::MethodNotAllowed, 405, "method_not_allowed", None),
            (Kind::Server, 500, "server_error", None),
        ];
        for (kind, status, code, retry_after) in cases {
            let e = HttpError::from(Failure::new(kind, "what to fix"));
            assert_eq!(
                (
                    e.status.as_u16(),
                    e.code,
                    e.retry_after,
                    e.description.as_str()
                ),
                (status, code, retry_after, "what to fix"),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn unavailable_is_503_with_retry_after_in_both_formats() {
        let failure = Failure::unavailable("upstream busy", 7);
        for format in [Format::OAuth, Format::ExternalCredential] {
            let response = HttpError::from(&failure).into_response_as(format);
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        }
    }
}
