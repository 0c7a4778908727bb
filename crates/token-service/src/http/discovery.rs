//! OIDC discovery, the JWK Set and the root redirect. Uses the issuer (not the grant) and
//! the flows' summary computed once in `AppState`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, Uri, header};

use super::error::HttpError;
use super::{AppState, IssuerSource, request_issuer};
use crate::error::{Failure, Kind};
use crate::issuer::discovery_document;

/// How long verifiers may cache discovery and keys: `JWKS_MAX_AGE`, which a key's rotation
/// waits out between publishing a key and signing with it (README "Rotating a local signing
/// key").
fn cache_control(state: &AppState) -> HeaderValue {
    let max_age = state.grant.issuer().jwks_max_age();
    HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or(HeaderValue::from_static("no-cache"))
}

/// `GET /.well-known/openid-configuration` (and the alias `openid-metadata`).
pub async fn discovery(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let iss = match request_issuer(&state.issuer, &headers, &uri) {
        Ok(iss) => iss,
        Err(e) => return HttpError::from(e).into_response(),
    };
    let doc = match discovery_document(&iss, state.grant.issuer(), &state.summary) {
        Ok(doc) => doc,
        Err(keys_not_known) => {
            return HttpError::from(Failure::from(keys_not_known)).into_response();
        }
    };
    let mut response = Json(doc).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, cache_control(&state));
    if matches!(state.issuer, IssuerSource::FromHost) {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("host"));
    }
    response
}

/// The JWK Set, when the signer's keys are local: the version of the key file in force.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    match state.grant.issuer().jwks() {
        Some(set) => {
            // A few keys: serializing them costs microseconds, and the set changes on reload.
            let mut response = set.to_string().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, cache_control(&state));
            response
        }
        None => HttpError::from(Failure::new(
            Kind::NotFound,
            "The signing keys are not published here; see jwks_uri in /.well-known/openid-configuration",
        ))
        .into_response(),
    }
}

/// `GET /`: 307 to the discovery document, as an absolute URL under the issuer.
pub async fn root(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    match request_issuer(&state.issuer, &headers, &uri) {
        Ok(iss) => {
            Redirect::temporary(&format!("{iss}/.well-known/openid-configuration")).into_response()
        }
        Err(e) => HttpError::from(e).into_response(),
    }
}
