//! The GCE / Cloud Run metadata server under `/computeMetadata/v1/`: the
//! `Metadata-Flavor: Google` request check, the default service account's
//! email and access token, and the project id and number.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::errors::MetadataError;
use crate::state::AppState;

/// Add the `Metadata-Flavor: Google` and `Server` headers every metadata response carries.
pub(crate) fn with_flavor(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("metadata-flavor", HeaderValue::from_static("Google"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Metadata Server for VM"),
    );
    resp
}

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/computeMetadata/", get(root))
        .route("/computeMetadata/v1", get(v1_root))
        .route("/computeMetadata/v1/", get(v1_root))
        .route("/computeMetadata/v1/{*path}", get(serve))
}

fn text(body: impl Into<String>) -> Response {
    with_flavor(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body.into(),
        )
            .into_response(),
    )
}

/// Client libraries probe `GET /` (with the flavor header) to detect GCE (routed by
/// `aws_sts`, which serves `GET /?Action=…`).
pub(crate) async fn root(headers: HeaderMap) -> Response {
    match check_request(&headers) {
        Ok(()) => text("computeMetadata/\n"),
        Err(e) => e.into_response(),
    }
}

async fn v1_root(headers: HeaderMap) -> Response {
    match check_request(&headers) {
        Ok(()) => text("instance/\nproject/\n"),
        Err(e) => e.into_response(),
    }
}

/// Requests must say `Metadata-Flavor: Google` and must not have been proxied.
fn check_request(headers: &HeaderMap) -> Result<(), MetadataError> {
    if headers.contains_key("x-forwarded-for") {
        return Err(MetadataError::new(
            403,
            "Your client does not have permission to get this URL from this server. \
             Requests with an X-Forwarded-For header are not allowed.",
        ));
    }
    let flavor = headers.get("metadata-flavor").map(HeaderValue::as_bytes);
    if flavor != Some(b"Google".as_slice()) {
        return Err(MetadataError::new(
            403,
            "Your client does not have permission to get this URL from this server. \
             Missing Metadata-Flavor:Google header.",
        ));
    }
    Ok(())
}

enum Item {
    Email,
    Token,
    ProjectId,
    NumericProjectId,
}

impl Item {
    fn endpoint(&self) -> &'static str {
        match self {
            Item::Email => "metadata.email",
            Item::Token => "metadata.token",
            Item::ProjectId | Item::NumericProjectId => "metadata.project",
        }
    }
}

fn classify(path: &str, default_sa: &str) -> Option<Item> {
    match path {
        "project/project-id" => return Some(Item::ProjectId),
        "project/numeric-project-id" => return Some(Item::NumericProjectId),
        _ => {}
    }
    let rest = path.strip_prefix("instance/service-accounts/")?;
    let (account, item) = rest.split_once('/')?;
    if account != "default" && !account.eq_ignore_ascii_case(default_sa) {
        return None;
    }
    match item {
        "email" => Some(Item::Email),
        "token" => Some(Item::Token),
        _ => None,
    }
}

async fn serve(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Path(path) = match path {
        Ok(p) => p,
        Err(e) => return MetadataError::new(400, e.body_text()).into_response(),
    };
    let config = &state.config;
    let Some(item) = classify(&path, &config.service_account) else {
        return match check_request(&headers) {
            Err(e) => e.into_response(),
            Ok(()) => MetadataError::new(
                404,
                format!(
                    "The requested URL /computeMetadata/v1/{path} was not found on this server."
                ),
            )
            .into_response(),
        };
    };
    if let Some(fault) = state.faults.enter(item.endpoint()).await {
        return MetadataError::new(fault.status, fault.message).into_response();
    }
    if let Err(e) = check_request(&headers) {
        return e.into_response();
    }
    match item {
        Item::Email => text(config.service_account.clone()),
        Item::ProjectId => text(config.project_id.clone()),
        Item::NumericProjectId => text(config.project_number.clone()),
        Item::Token => {
            let scopes = requested_scopes(query.as_deref());
            let lifetime = i64::try_from(config.metadata_token_lifetime_secs).unwrap_or(i64::MAX);
            let (token, _) = state.issue_token(&config.service_account, scopes, lifetime);
            with_flavor(
                axum::Json(json!({
                    "access_token": token,
                    "expires_in": config.metadata_token_lifetime_secs,
                    "token_type": "Bearer",
                }))
                .into_response(),
            )
        }
    }
}

/// `?scopes=a,b` (comma-separated); the VM's default is `cloud-platform`.
fn requested_scopes(query: Option<&str>) -> Vec<String> {
    let requested: Vec<String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "scopes")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    if requested.is_empty() {
        vec![crate::CLOUD_PLATFORM_SCOPE.to_owned()]
    } else {
        requested
    }
}
