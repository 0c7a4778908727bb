//! Per-endpoint call counting and fault injection (extra latency and/or a
//! forced error status for the next N calls), plus the `/emulator/*` admin
//! HTTP API that exposes both to a standalone emulator process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::errors::GoogleError;
use crate::state::AppState;

/// Names accepted by `calls`, `inject` and the admin API.
pub const ENDPOINTS: [&str; 12] = [
    "metadata.email",
    "metadata.token",
    "metadata.project",
    "iam.signJwt",
    "iam.generateAccessToken",
    "jwks",
    "sts.token",
    "oauth.token",
    "aws.sts",
    "entra.token",
    "entra.discovery",
    "entra.keys",
];

/// A fault to apply to the next `times` calls of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Answer with this HTTP status (in the API's own error format).
    /// `None` = serve normally after the latency.
    #[serde(default)]
    pub status: Option<u16>,
    /// Sleep this long before answering.
    #[serde(default)]
    pub latency_ms: u64,
    /// How many calls the fault applies to; `None` = every call.
    #[serde(default)]
    pub times: Option<u32>,
    /// Error message to put in the body; a default names the injected fault.
    #[serde(default)]
    pub message: Option<String>,
}

impl Fault {
    /// Fail every call with `status`.
    pub fn status(status: u16) -> Self {
        Fault {
            status: Some(status),
            ..Fault::default()
        }
    }

    /// Delay every call by `latency_ms`, then serve normally.
    pub fn latency(latency_ms: u64) -> Self {
        Fault {
            latency_ms,
            ..Fault::default()
        }
    }

    /// Limit the fault to the next `times` calls.
    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    /// Set the error message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// What a handler must do after [`FaultBook::enter`] (latency already slept).
#[derive(Debug)]
pub(crate) struct Triggered {
    pub(crate) status: u16,
    pub(crate) message: String,
}

#[derive(Debug, Default)]
struct Book {
    calls: HashMap<String, u64>,
    faults: HashMap<String, Fault>,
    /// Calls of an endpoint inside their injected latency right now, and the most ever.
    waiting: HashMap<String, (u64, u64)>,
}

/// Leaves the injected latency (also when the caller hung up and the handler was dropped).
struct Waiting<'a> {
    book: &'a FaultBook,
    endpoint: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some((now, _)) = self.book.lock().waiting.get_mut(self.endpoint) {
            *now = now.saturating_sub(1);
        }
    }
}

/// Call counters and active faults, shared by all handlers.
#[derive(Debug, Default, Clone)]
pub(crate) struct FaultBook {
    inner: Arc<Mutex<Book>>,
}

impl FaultBook {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn calls(&self, endpoint: &str) -> u64 {
        self.lock().calls.get(endpoint).copied().unwrap_or(0)
    }

    /// The most calls of `endpoint` that were inside an injected latency at the same time.
    pub(crate) fn peak_waiting(&self, endpoint: &str) -> u64 {
        self.lock()
            .waiting
            .get(endpoint)
            .map_or(0, |(_, peak)| *peak)
    }

    pub(crate) fn all_calls(&self) -> BTreeMap<String, u64> {
        let book = self.lock();
        let mut out: BTreeMap<String, u64> =
            ENDPOINTS.iter().map(|e| ((*e).to_owned(), 0)).collect();
        for (k, v) in &book.calls {
            out.insert(k.clone(), *v);
        }
        out
    }

    pub(crate) fn inject(&self, endpoint: &str, fault: Fault) {
        if !ENDPOINTS.contains(&endpoint) {
            tracing::warn!(
                endpoint,
                "fault injected for an unknown endpoint name; it will never fire"
            );
        }
        let mut book = self.lock();
        if fault.times == Some(0) {
            book.faults.remove(endpoint);
        } else {
            book.faults.insert(endpoint.to_owned(), fault);
        }
    }

    pub(crate) fn faults(&self) -> BTreeMap<String, Fault> {
        self.lock()
            .faults
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub(crate) fn reset(&self) {
        let mut book = self.lock();
        book.faults.clear();
        book.calls.clear();
        book.waiting.clear();
    }

    /// Count a call to `endpoint`, consume one use of its fault (if any),
    /// sleep the fault's latency, and report a forced error status.
    pub(crate) async fn enter(&self, endpoint: &str) -> Option<Triggered> {
        tracing::debug!(endpoint, "call");
        let fault = {
            let mut book = self.lock();
            *book.calls.entry(endpoint.to_owned()).or_insert(0) += 1;
            let fault = book.faults.get(endpoint).cloned();
            if let Some(f) = book.faults.get_mut(endpoint)
                && let Some(times) = f.times.as_mut()
            {
                *times = times.saturating_sub(1);
                if *times == 0 {
                    book.faults.remove(endpoint);
                }
            }
            fault
        }?;
        if fault.latency_ms > 0 {
            {
                let mut book = self.lock();
                let (now, peak) = book.waiting.entry(endpoint.to_owned()).or_insert((0, 0));
                *now += 1;
                *peak = (*peak).max(*now);
            }
            let _waiting = Waiting {
                book: self,
                endpoint,
            };
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        let status = fault.status?;
        tracing::info!(endpoint, status, "answering with an injected fault");
        let message = fault.message.unwrap_or_else(|| {
            format!("Fault injected by gcp-emulator: {endpoint} answers HTTP {status}.")
        });
        Some(Triggered { status, message })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    endpoint: String,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    latency_ms: u64,
    #[serde(default)]
    times: Option<u32>,
    #[serde(default)]
    message: Option<String>,
}

/// `/emulator/*`: faults, call counts, reset.
pub(crate) fn admin_router() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/emulator/faults",
            post(add_fault).delete(clear_faults).get(list_faults),
        )
        .route("/emulator/calls", get(list_calls))
        .route("/emulator/reset", post(reset))
}

async fn add_fault(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return GoogleError::invalid_argument(format!("invalid fault JSON: {e}"))
                .into_response();
        }
    };
    if !ENDPOINTS.contains(&req.endpoint.as_str()) {
        return GoogleError::invalid_argument(format!(
            "unknown endpoint {:?}; expected one of {}",
            req.endpoint,
            ENDPOINTS.join(", ")
        ))
        .into_response();
    }
    if let Some(s) = req.status
        && !(400..=599).contains(&s)
    {
        return GoogleError::invalid_argument(format!(
            "status {s} is not an HTTP error status (400-599)"
        ))
        .into_response();
    }
    let fault = Fault {
        status: req.status,
        latency_ms: req.latency_ms,
        times: req.times,
        message: req.message,
    };
    state.faults.inject(&req.endpoint, fault.clone());
    (
        StatusCode::OK,
        Json(json!({"endpoint": req.endpoint, "fault": fault})),
    )
        .into_response()
}

async fn clear_faults(State(state): State<AppState>) -> StatusCode {
    state.faults.clear_faults();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(state): State<AppState>) -> Json<BTreeMap<String, Fault>> {
    Json(state.faults.faults())
}

async fn list_calls(State(state): State<AppState>) -> Json<BTreeMap<String, u64>> {
    Json(state.faults.all_calls())
}

async fn reset(State(state): State<AppState>) -> StatusCode {
    state.faults.reset();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_counted_fault_expires() {
        let book = FaultBook::default();
        book.inject("jwks", Fault::status(503).times(2));
        assert_eq!(book.enter("jwks").await.map(|t| t.status), Some(503));
        assert_eq!(book.enter("jwks").await.map(|t| t.status), Some(503));
        assert!(book.enter("jwks").await.is_none());
        assert_eq!(book.calls("jwks"), 3);
        book.reset();
        assert_eq!(book.calls("jwks"), 0);
    }

    #[tokio::test]
    async fn calls_inside_an_injected_latency_at_once_are_counted() {
        let book = FaultBook::default();
        book.inject(
            "jwks",
            Fault {
                status: None,
                latency_ms: 100,
                times: None,
                message: None,
            },
        );
        tokio::join!(book.enter("jwks"), book.enter("jwks"), book.enter("jwks"));
        book.enter("jwks").await;
        assert_eq!(book.peak_waiting("jwks"), 3);
        // A caller that gives up mid-latency leaves the count too.
        let dropped = tokio::time::timeout(Duration::from_millis(10), book.enter("jwks")).await;
        assert!(dropped.is_err());
        let (now, _) = book.lock().waiting.get("jwks").copied().unwrap_or_default();
        assert_eq!(now, 0);
    }
}
