//! Service-account public keys as Google publishes them at
//! `/service_accounts/v1/metadata/jwk/{EMAIL}`: a JWK Set holding the
//! Google-managed `signJwt` key and any keys created for key files.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::errors::GoogleError;
use crate::state::AppState;

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/service_accounts/v1/metadata/jwk/{email}", get(jwks))
}

async fn jwks(
    State(state): State<AppState>,
    email: Result<Path<String>, PathRejection>,
) -> Response {
    if let Some(fault) = state.faults.enter("jwks").await {
        return GoogleError::new(fault.status, fault.message).into_response();
    }
    let Path(email) = match email {
        Ok(p) => p,
        Err(e) => return GoogleError::invalid_argument(e.body_text()).into_response(),
    };
    let Some(account) = state.account(&email) else {
        return GoogleError::not_found(format!("Not found; Gaia id not found for email {email}"))
            .into_response();
    };
    let keys: Vec<Value> = account.keys.iter().map(|k| k.jwk()).collect();
    axum::Json(json!({ "keys": keys })).into_response()
}
