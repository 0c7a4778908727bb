//! The HTTP edge with `tower::ServiceExt::oneshot` on the real router (no process, no port):
//! error bodies, the token endpoint's input checks, the redirect and discovery, the guard's
//! limits, and the external-credential error format.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use super::*;
use crate::clock::Clock;
use crate::flows::{Authentication, Declined, EnabledFlow, Flow, TLS_CLIENT_AUTH};
use crate::issuer::{IdTokenIssuer, IssuerSettings};
use crate::limits::{LimitSettings, Rate};
use crate::model::TokenRequest;
use crate::policy::CertificateFactsPolicy;
use crate::signer::local::LocalSigner;

/// A flow that takes no request.
struct Nobody;

#[async_trait]
impl Flow for Nobody {
    async fn authenticate(&self, _request: &TokenRequest) -> Result<Authentication, Failure> {
        Ok(Authentication::NotMine(Declined::missing("no credentials")))
    }
}

fn state(limits: LimitSettings, issuer: IssuerSource) -> Arc<AppState> {
    state_with_checks(limits, issuer, Vec::new())
}

fn state_with_checks(
    limits: LimitSettings,
    issuer: IssuerSource,
    readiness_checks: Vec<ReadinessCheck>,
) -> Arc<AppState> {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let signer = LocalSigner::from_pem(pem.as_bytes(), "test").unwrap();
    let issuer_of_tokens = IdTokenIssuer::new(
        IssuerSettings {
            audience: "https://api.example.com".into(),
            validity_seconds: 600,
            jwks_uri: None,
            min_lifetime_seconds: 60,
            certificate_bound: false,
        },
        Arc::new(signer),
        Clock::fixed(1_800_000_000),
    );
    let flows = vec![EnabledFlow {
        name: Arc::from("nobody"),
        auth_method: TLS_CLIENT_AUTH,
        flow: Arc::new(Nobody),
    }];
    let metrics = Arc::new(Metrics::new());
    let limits = Arc::new(Limits::new(limits, metrics.clone()));
    let grant = ClientCredentials::new(
        flows,
        Arc::new(CertificateFactsPolicy),
        issuer_of_tokens,
        None,
    )
    .with_limits(limits.clone());
    Arc::new(AppState::new(StateParts {
        grant,
        issuer,
        trace_project: Arc::new(OnceLock::new()),
        limits,
        metrics,
        upstream_timeout: Duration::from_secs(5),
        metrics_here: true,
        readiness_checks,
        readiness_details: Vec::new(),
    }))
}

fn app() -> Router {
    router(state(
        LimitSettings::default(),
        IssuerSource::Fixed("https://tokens.example.com".into()),
    ))
}

async fn send(router: Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post_form(body: &str) -> Request<Body> {
    Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    Some(Rate {
        per_second: NonZeroU32::new(per_second)?,
        burst: NonZeroU32::new(burst)?,
    })
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_json_errors() {
    let (status, _, body) = send(app(), get("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("No endpoint at '/nope'"),
        "{body}"
    );
    let request = Request::post("/.well-known/openid-configuration")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(app(), request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "method_not_allowed");
    let (status, headers, body) = send(app(), get("/token")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(headers[header::ALLOW], "POST");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn the_token_endpoint_wants_a_form_with_a_grant_type() {
    let request = Request::post("/token")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("grant_type=client_credentials"))
        .unwrap();
    let (status, headers, body) = send(app(), request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let (status, _, body) = send(app(), post_form("scope=x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "The parameter 'grant_type' is required"
    );
    let (status, _, body) = send(app(), post_form("grant_type=password")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");
    let (status, _, body) = send(app(), post_form("grant_type=client_credentials")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error_description"],
        "No suitable flow found for grant type 'client_credentials': nobody: no credentials"
    );
}

#[tokio::test]
async fn errors_in_the_external_credential_format() {
    let (status, _, body) = send(app(), post_form("format=external_credential")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        serde_json::json!({
            "success": false,
            "version": 1,
            "code": "invalid_request",
            "message": "The parameter 'grant_type' is required",
        })
    );
}

#[tokio::test]
async fn the_root_redirects_to_discovery_under_the_issuer() {
    let (status, headers, _) = send(app(), get("/")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        headers[header::LOCATION],
        "https://tokens.example.com/.well-known/openid-configuration"
    );
}

#[tokio::test]
async fn discovery_derives_the_issuer_from_the_host_and_refuses_a_bad_one() {
    let router = router(state(LimitSettings::default(), IssuerSource::FromHost));
    let request = Request::get("/.well-known/openid-configuration")
        .header(header::HOST, "Tokens.Example.com:8443")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(router.clone(), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["issuer"], "https://tokens.example.com:8443");
    assert_eq!(
        body["token_endpoint"],
        "https://tokens.example.com:8443/token"
    );
    assert_eq!(
        body["grant_types_supported"],
        serde_json::json!(["client_credentials"])
    );
    assert_eq!(headers[header::VARY], "host");
    let request = Request::get("/.well-known/openid-configuration")
        .header(header::HOST, "evil.example:0")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(router, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn the_guard_answers_503_when_no_permit_is_free() {
    let router = router(state(
        LimitSettings {
            max_concurrent_requests: 0,
            ..LimitSettings::default()
        },
        IssuerSource::Fixed("https://tokens.example.com".into()),
    ));
    let (status, headers, body) = send(router.clone(), get("/.well-known/jwks.json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (status, _, _) = send(router, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK, "probes pass the guard");
}

#[tokio::test]
async fn the_global_rate_limit_answers_429_with_retry_after() {
    let router = router(state(
        LimitSettings {
            global: rate(1, 1),
            ..LimitSettings::default()
        },
        IssuerSource::Fixed("https://tokens.example.com".into()),
    ));
    let (first, _, _) = send(router.clone(), post_form("grant_type=client_credentials")).await;
    assert_eq!(first, StatusCode::BAD_REQUEST, "admitted, then no flow");
    let (status, headers, body) =
        send(router.clone(), post_form("grant_type=client_credentials")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Too many token requests (RATE_LIMIT_GLOBAL)"),
        "{body}"
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let (status, _, _) = send(router, get("/.well-known/openid-configuration")).await;
    assert_eq!(status, StatusCode::OK, "only /token counts against it");
}

#[test]
fn authorities_need_a_host_and_a_valid_port() {
    for good in [
        "example.org",
        "Example.ORG:8443",
        "127.0.0.1:8080",
        "[::1]",
        "[2001:db8::1]:443",
        "my_host-1.internal:1",
        "a.b:65535",
    ] {
        assert!(valid_authority(good), "{good}");
    }
    for bad in [
        "",
        ":80",
        "evil.example:",
        "evil.example:99999",
        "evil.example:0",
        "evil.example:+80",
        "user@evil.example",
        "a..b",
        "a b",
        "[::1",
        "[nope]:80",
        "[::1]x",
        "a:b:c",
        "evil.example:80/x",
    ] {
        assert!(!valid_authority(bad), "{bad}");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the widget file expired; replace it")]
struct Expired;

/// `/readyz` is 200 while every condition holds; a condition that fails, or shutdown, turns it
/// 503 "Not ready: REASON" with `Retry-After`, through the one failure table.
#[tokio::test]
async fn readyz_names_the_condition_that_is_not_met() {
    let fixed = || IssuerSource::Fixed("https://tokens.example.com".into());
    let (status, _, body) = send(app(), get("/readyz")).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &Value::from("ready"))
    );
    let failing: ReadinessCheck = Box::new(|| Err(NotReady::new(Expired)));
    let unready = state_with_checks(LimitSettings::default(), fixed(), vec![failing]);
    let (status, headers, body) = send(router(unready), get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "5");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(
        body["error_description"],
        "Not ready: the widget file expired; replace it"
    );
    let draining = state(LimitSettings::default(), fixed());
    draining
        .draining()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (status, _, body) = send(router(draining), get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error_description"], "Not ready: shutting down");
}
