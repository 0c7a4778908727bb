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

/// Verifiers may cache discovery and keys for five minutes: short enough that a key added to
/// the set is seen well before it starts signing (see the rotation notes in the README).
const CACHE: HeaderValue = HeaderValue::from_static("public, max-age=300");

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
    response.headers_mut().insert(header::CACHE_CONTROL, CACHE);
    if matches!(state.issuer, IssuerSource::FromHost) {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("host"));
    }
    response
}

/// The JWK Set, when the signer's keys are local.
pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    match state.grant.issuer().jwks() {
        Some(set) => {
            // The local keys never change while the process runs: serialize them once.
            let body = state
                .jwks_body
                .get_or_init(|| bytes::Bytes::from(set.to_string()))
                .clone();
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response.headers_mut().insert(header::CACHE_CONTROL, CACHE);
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
