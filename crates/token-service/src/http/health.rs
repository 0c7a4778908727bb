//! Health endpoints: `/healthz` (the process answers) and `/readyz` (it can issue tokens: the
//! signer has its keys or its Google identity).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::HttpError;
use crate::error::Failure;
use crate::readiness::NotReady;

/// Shutdown has begun: load balancers should stop sending.
#[derive(Debug, thiserror::Error)]
#[error("shutting down")]
struct Draining;

/// Always 200 while the process serves.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `/metrics`: Prometheus text format. The signing key is read at each scrape: it changes on a
/// key file's reload and at a scheduled `signs-from`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let signer = state.grant.issuer().signer();
    state.metrics.signing_key(
        signer.key_id().as_deref().unwrap_or("google-managed"),
        signer.algorithm(),
    );
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// 200 when tokens can be issued, else 503 with the reason.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let ready = if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        Err(NotReady::new(Draining))
    } else {
        state
            .grant
            .issuer()
            .signer()
            .readiness()
            .and_then(|()| state.readiness_checks.iter().try_for_each(|check| check()))
    };
    match ready {
        Ok(()) => {
            let warnings: Vec<String> = state.readiness_details.iter().flat_map(|d| d()).collect();
            if warnings.is_empty() {
                Json(json!({ "status": "ready" })).into_response()
            } else {
                Json(json!({ "status": "ready", "warnings": warnings })).into_response()
            }
        }
        Err(not_ready) => HttpError::from(Failure::from(not_ready)).into_response(),
    }
}
