//! The one error model. A request that cannot be answered with tokens ends as a [`Failure`]:
//! what kind of failure it is (which decides the status and OAuth code, in `http/error.rs` and
//! nowhere else), the sentence the client reads, the detail the log keeps (which may say more
//! than the client is told), and the underlying error when there is one. Startup and
//! configuration problems are [`StartupError`]s: the setting at fault, where its value came
//! from, and the problem, printed as one line each.
//!
//! Uses nothing of ours: upstream clients, signers, access backends, flows and policy all
//! produce failures of this type, so no layer maps another layer's errors by hand.

use std::fmt;
use std::sync::Arc;

/// What went wrong, in the terms the HTTP edge maps to a status and an OAuth error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request is malformed or misses a parameter (400 `invalid_request`).
    InvalidRequest,
    /// The grant type is not served here (400 `unsupported_grant_type`).
    UnsupportedGrantType,
    /// The client could not be authenticated, or the policy does not know it (403
    /// `unauthorized_client`).
    UnauthorizedClient,
    /// The client is known but may not have what it asked for (403 `access_denied`).
    AccessDenied,
    /// A rate limit; the client may retry after that many seconds (429
    /// `temporarily_unavailable`).
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after: u64,
    },
    /// A dependency is down or slow; retry after that many seconds (503
    /// `temporarily_unavailable`).
    Unavailable {
        /// Seconds the client should wait.
        retry_after: u64,
    },
    /// The request did not arrive in time (408 `invalid_request`).
    RequestTimeout,
    /// No endpoint at that path (404 `not_found`).
    NotFound,
    /// A known path used with the wrong method (405 `method_not_allowed`).
    MethodNotAllowed,
    /// A fault of this service or of a dependency that retrying will not fix (500
    /// `server_error`). Never caused by what a client sends.
    Server,
}

/// A failed request: its kind, the sentence the client reads, the detail for the log and the
/// underlying error, if any.
#[derive(Clone)]
pub struct Failure {
    kind: Kind,
    message: String,
    detail: Option<String>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    labels: Vec<(String, String)>,
}

impl Failure {
    /// A failure of `kind` whose client message is `message` (a sentence that says what to
    /// fix). The log shows the same sentence unless [`Failure::with_detail`] adds more.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            detail: None,
            source: None,
            labels: Vec::new(),
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidRequest, message)
    }

    /// 403 `unauthorized_client`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Kind::UnauthorizedClient, message)
    }

    /// 403 `access_denied`.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(Kind::AccessDenied, message)
    }

    /// 503 with `Retry-After: retry_after`.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self::new(Kind::Unavailable { retry_after }, message)
    }

    /// 429 with `Retry-After: retry_after`.
    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> Self {
        Self::new(Kind::RateLimited { retry_after }, message)
    }

    /// 500 `server_error`: a fault no client input causes.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(Kind::Server, message)
    }

    /// Adds what the log should say beyond the client message (for example which deny list
    /// matched, which the client is not told).
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Keeps the underlying error for the log.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Adds a label to the request's log line (for example the facts of a refused certificate,
    /// `cert/serial`), so the one line says what was refused without a second line.
    #[must_use]
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// The labels for the log line, in the order they were added.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    /// Replaces the kind, keeping message, detail and source.
    #[must_use]
    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The sentence the client reads.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the log says: the detail when there is one, else the client message, followed by
    /// the underlying error's chain.
    pub fn log_detail(&self) -> String {
        let mut text = self.detail.clone().unwrap_or_else(|| self.message.clone());
        let mut next: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = next {
            text.push_str(": ");
            text.push_str(&e.to_string());
            next = e.source();
        }
        text
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("detail", &self.detail)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .field("labels", &self.labels)
            .finish()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Failure {
    /// Kind and client message: what a client can observe.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

/// A problem found at startup or while checking the configuration: the setting at fault (when
/// one is), where its value came from, and what is wrong and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupError {
    /// The setting's environment name, e.g. `TOKEN_VALIDITY`, or a command-line option such as
    /// `--config`.
    pub setting: Option<String>,
    /// Where the value came from (`environment`, `--config 'file'`, `demo`), when known.
    pub origin: Option<String>,
    /// What is wrong, as a sentence that says what would be valid.
    pub problem: String,
}

impl StartupError {
    /// A problem with `setting`.
    pub fn setting(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: Some(setting.into()),
            origin: None,
            problem: problem.into(),
        }
    }

    /// A problem that no single setting owns (a port already in use, a file that vanished).
    pub fn other(problem: impl Into<String>) -> Self {
        Self {
            setting: None,
            origin: None,
            problem: problem.into(),
        }
    }

    /// Records where the setting's value came from.
    #[must_use]
    pub fn from_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
}

impl fmt::Display for StartupError {
    /// `SETTING: problem`, one line, as configuration errors have always been printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.setting {
            Some(setting) => write!(f, "{setting}: {}", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for StartupError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_detail_adds_the_source_chain_and_the_client_message_does_not() {
        let io = std::io::Error::other("connection reset");
        let failure = Failure::unavailable("The IAM Credentials API is unavailable; retry", 2)
            .with_detail("signJwt: 503 from iamcredentials")
            .with_source(io);
        assert_eq!(
            failure.message(),
            "The IAM Credentials API is unavailable; retry"
        );
        assert_eq!(
            failure.log_detail(),
            "signJwt: 503 from iamcredentials: connection reset"
        );
        assert_eq!(failure.kind(), Kind::Unavailable { retry_after: 2 });
    }

    #[test]
    fn startup_errors_print_as_one_line_naming_the_setting() {
        let e = StartupError::setting(
            "TOKEN_VALIDITY",
            "'0' is not valid; expected whole minutes from 1 to 60",
        );
        assert_eq!(
            e.to_string(),
            "TOKEN_VALIDITY: '0' is not valid; expected whole minutes from 1 to 60"
        );
        assert_eq!(
            StartupError::other("cannot listen on 127.0.0.1:80").to_string(),
            "cannot listen on 127.0.0.1:80"
        );
    }
}
