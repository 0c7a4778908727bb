//! The HTTP edge: routes, request parsing, issuer derivation and the one mapping of errors to
//! OAuth JSON. Uses `model`, `grant`, `issuer`; never `config` or concrete flows and signers.

mod connection;
mod discovery;
pub mod error;
pub mod form;
mod health;
mod token;

pub use connection::{Connection, Working};
pub use token::PeerCertificates;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use http::HeaderMap;
use tracing::Instrument as _;

use crate::clock::Deadline;
use crate::error::{Failure, Kind};
use crate::grant::ClientCredentials;
use crate::issuer::{FlowSummary, JWKS_PATH, TOKEN_PATH};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::readiness::NotReady;

/// Largest accepted `/token` body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A readiness condition for `/readyz`: `Err` with the reason while it is not met.
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), NotReady> + Send + Sync>;

/// Warnings `/readyz` reports without turning 503 (an expired CRL under
/// `TLS_CLIENT_CRL_EXPIRED=warn`...), one sentence each.
pub type ReadinessDetail = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// Where the issuer URL comes from.
#[derive(Debug, Clone)]
pub enum IssuerSource {
    /// `TOKEN_ISSUER`, already without a trailing slash.
    Fixed(String),
    /// `https://` + the request's Host header, as behind a TLS-terminating load balancer.
    FromHost,
}

/// Everything a handler needs. Built once by [`AppState::new`]; nothing changes it afterwards
/// except the draining flag, which shutdown sets.
pub struct AppState {
    grant: ClientCredentials,
    issuer: IssuerSource,
    trace_project: Arc<OnceLock<String>>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    upstream_timeout: Duration,
    draining: Arc<AtomicBool>,
    metrics_here: bool,
    readiness_checks: Vec<ReadinessCheck>,
    readiness_details: Vec<ReadinessDetail>,
    summary: FlowSummary,
}

/// What [`AppState::new`] needs: the parts the composition root built.
pub struct StateParts {
    /// The client-credentials grant.
    pub grant: ClientCredentials,
    /// Where the issuer comes from.
    pub issuer: IssuerSource,
    /// Google Cloud project for trace IDs in logs, once known.
    pub trace_project: Arc<OnceLock<String>>,
    /// Rate, concurrency and time limits (the grant's per-client limits are the same value).
    pub limits: Arc<Limits>,
    /// Where the request metrics go; `/metrics` renders it.
    pub metrics: Arc<Metrics>,
    /// `UPSTREAM_TIMEOUT`: each token request's deadline for the upstream calls it makes.
    pub upstream_timeout: Duration,
    /// Whether `/metrics` is served on this router (off when an admin port serves it).
    pub metrics_here: bool,
    /// Further readiness conditions (TLS material valid...), each `Err` when not met.
    pub readiness_checks: Vec<ReadinessCheck>,
    /// Warnings shown by `/readyz` (field `warnings`) that leave it ready.
    pub readiness_details: Vec<ReadinessDetail>,
}

impl AppState {
    /// Bundles the state; the discovery summary of the flows is computed once here.
    pub fn new(parts: StateParts) -> Self {
        let summary = parts.grant.summary();
        Self {
            grant: parts.grant,
            issuer: parts.issuer,
            trace_project: parts.trace_project,
            limits: parts.limits,
            metrics: parts.metrics,
            upstream_timeout: parts.upstream_timeout,
            draining: Arc::new(AtomicBool::new(false)),
            metrics_here: parts.metrics_here,
            readiness_checks: parts.readiness_checks,
            readiness_details: parts.readiness_details,
            summary,
        }
    }

    /// The flag shutdown sets so that `/readyz` answers 503 and load balancers stop sending.
    pub fn draining(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }
}

/// The service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route(
            TOKEN_PATH,
            post(token::token)
                .fallback(token::method_not_allowed)
                .layer(middleware::map_response(token::no_store)),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery::discovery),
        )
        .route("/.well-known/openid-metadata", get(discovery::discovery))
        .route(JWKS_PATH, get(discovery::jwks))
        .route("/", get(discovery::root))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    let router = if state.metrics_here {
        router.route(METRICS_PATH, get(health::metrics))
    } else {
        router
    };
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), request_span))
        .with_state(state)
}

/// The admin port's routes: health, readiness and metrics only.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(METRICS_PATH, get(health::metrics))
        .fallback(error::not_found)
        .with_state(state)
}

/// Where metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// Applies the request limits: probes and metrics pass; a `/token` request's body must be
/// complete within `HEADER_READ_TIMEOUT` (408) before the request takes anything; then every
/// request but the probes needs one of `MAX_CONCURRENT_REQUESTS` permits (503 otherwise),
/// `/token` a token of the global rate limit (429), and all must be answered within
/// `REQUEST_TIMEOUT` of their head (408).
///
/// Reading the body first means a client that sends headers and never its body holds no permit
/// and no rate-limit token: stalled requests cannot starve discovery, JWKS or other clients.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let is_token = request.uri().path() == TOKEN_PATH;
    let mut response = limited(&state, request, next).await;
    if is_token {
        token::set_no_store(&mut response);
    }
    response
}

async fn limited(state: &AppState, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/readyz" | METRICS_PATH) {
        return next.run(request).await;
    }
    let is_token = path == TOKEN_PATH;
    let timeout = state.limits.settings().request_timeout;
    let deadline = Deadline::after(timeout);
    let (request, _working) = if is_token {
        match complete_body(state, request, deadline, timeout).await {
            Ok(complete) => complete,
            Err(response) => return response,
        }
    } else {
        (request, None)
    };
    let Some(_permit) = state.limits.admit() else {
        state.metrics.request_rejected("concurrency");
        return refused(
            is_token,
            Failure::unavailable(
                "The service is answering as many requests as it may (MAX_CONCURRENT_REQUESTS); retry shortly",
                1,
            ),
        );
    };
    if is_token && let Err(limited) = state.limits.check_global() {
        return refused(
            true,
            Failure::rate_limited(
                format!(
                    "Too many token requests (RATE_LIMIT_GLOBAL); retry in {} s",
                    limited.retry_after
                ),
                limited.retry_after,
            ),
        );
    }
    let in_flight = state.metrics.requests_in_flight();
    in_flight.inc();
    let result = tokio::time::timeout_at(deadline.instant().into(), next.run(request)).await;
    in_flight.dec();
    match result {
        Ok(response) => response,
        Err(_) => request_timeout(state, is_token, timeout),
    }
}

/// A request the guard refuses: the failure as a response, and for `/token` the request's one
/// log line (the handler never sees it).
fn refused(is_token: bool, failure: Failure) -> Response {
    if is_token {
        token::log_refusal(&failure);
    }
    error::HttpError::from(failure).into_response()
}

fn request_timeout(state: &AppState, is_token: bool, timeout: Duration) -> Response {
    state.metrics.request_rejected("timeout");
    let failure = Failure::new(
        Kind::RequestTimeout,
        format!(
            "The request was not completed within {} s (REQUEST_TIMEOUT); send the whole request promptly",
            timeout.as_secs()
        ),
    );
    if !is_token {
        tracing::warn!(
            event = "request_timeout",
            "a request was not answered within REQUEST_TIMEOUT ({} s)",
            timeout.as_secs()
        );
    }
    refused(is_token, failure)
}

/// Reads the whole body of a `/token` request (at most [`MAX_BODY_BYTES`]) before it may take
/// a permit: by the connection's body deadline (`HEADER_READ_TIMEOUT`) or `request_deadline`,
/// whichever comes first. Returns the request with its body in memory and, when the body was
/// still to come, the mark that the connection now has a complete request being answered.
async fn complete_body(
    state: &AppState,
    request: Request,
    request_deadline: Deadline,
    request_timeout_setting: Duration,
) -> Result<(Request, Option<Working>), Response> {
    use axum::body::HttpBody as _;
    if request.body().is_end_stream() {
        // Complete already; the server counted it.
        return Ok((request, None));
    }
    let connection = request.extensions().get::<Arc<Connection>>().cloned();
    let (parts, body) = request.into_parts();
    // An oversized body is read up to the limit and then refused (413 from the limit below),
    // not refused unread: closing on a client that is still sending resets the connection,
    // and it sees a broken request instead of the 413.
    let (body_deadline, header_read_timeout) = match &connection {
        Some(c) => (c.body_deadline(), c.header_read_timeout()),
        None => (request_deadline.instant(), Duration::ZERO),
    };
    let deadline = body_deadline.min(request_deadline.instant());
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(token::refused_input(token::unreadable(&e))),
        Err(_) if deadline < request_deadline.instant() => {
            state.metrics.request_rejected("body_timeout");
            return Err(refused(
                true,
                Failure::new(
                    Kind::RequestTimeout,
                    format!(
                        "The request body did not arrive within {} s (HEADER_READ_TIMEOUT); send the whole request promptly",
                        header_read_timeout.as_secs()
                    ),
                ),
            ));
        }
        Err(_) => return Err(request_timeout(state, true, request_timeout_setting)),
    };
    let working = connection.map(|c| c.admit());
    Ok((
        Request::from_parts(parts, axum::body::Body::from(bytes)),
        working,
    ))
}

/// Runs each request inside a span that carries its trace, so every log line of the request is
/// correlated in Cloud Logging.
async fn request_span(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let trace = trace_id(request.headers()).map(|id| match state.trace_project.get() {
        Some(project) => format!("projects/{project}/traces/{id}"),
        None => id,
    });
    let span = tracing::info_span!(
        "request",
        trace = trace.as_deref().unwrap_or(""),
        method = %request.method(),
        path = %request.uri().path(),
    );
    next.run(request).instrument(span).await
}

/// The trace ID of `X-Cloud-Trace-Context` (`TRACE_ID/SPAN_ID;o=1`) or of W3C `traceparent`
/// (`00-TRACE_ID-SPAN_ID-FLAGS`). Only hex IDs are accepted, so nothing odd reaches the logs.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let is_hex_id =
        |s: &str| (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(v) = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
    {
        let id = v.split(['/', ';']).next().unwrap_or("").trim();
        if is_hex_id(id) {
            return Some(id.to_ascii_lowercase());
        }
    }
    let v = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = v.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && is_hex_id(id) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// The issuer for a request: the configured one, or `https://` + the request's authority:
/// HTTP/2's `:authority` (or an absolute request target), else the one `Host` header. A host
/// that is empty or not a DNS name or IP address, a port that is empty, zero or above 65535,
/// userinfo, or a `Host` that differs from `:authority` gets 400.
pub fn request_issuer(
    source: &IssuerSource,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Result<String, Failure> {
    match source {
        IssuerSource::Fixed(iss) => Ok(iss.clone()),
        IssuerSource::FromHost => {
            let mut hosts = headers.get_all(http::header::HOST).iter();
            let host = match (hosts.next(), hosts.next()) {
                (Some(h), None) => Some(h.to_str().ok()),
                (None, _) => None,
                _ => Some(None),
            };
            let authority = match (uri.authority().map(http::uri::Authority::as_str), host) {
                (Some(a), Some(Some(h))) if !a.eq_ignore_ascii_case(h) => None,
                (Some(a), _) => Some(a),
                (None, Some(h)) => h,
                (None, None) => None,
            };
            match authority.filter(|a| valid_authority(a)) {
                Some(h) => Ok(format!("https://{}", h.to_ascii_lowercase())),
                None => Err(Failure::invalid_request(
                    "The Host header (or :authority) is missing or invalid, so the issuer cannot be derived; send host[:port] with a DNS name or IP address and a port from 1 to 65535 (or configure TOKEN_ISSUER)",
                )),
            }
        }
    }
}

/// `host[:port]`: a DNS name (letters, digits, `-`, `_`, non-empty labels), an IPv4 address or
/// a bracketed IPv6 address; the port, when a colon is present, 1 to 65535.
fn valid_authority(authority: &str) -> bool {
    if authority.is_empty() || authority.len() > 255 {
        return false;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    host_ok && port_ok
}

#[cfg(test)]
mod tests;
