//! The grant with test flows (closures), a test policy and backend, a local signer from a
//! generated key and a fixed clock: flow selection and order, the scope and service-account
//! rules, the per-client limit, which refusals count as failed authentications, and `amr`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::*;
use crate::clock::Clock;
use crate::flows::{Declined, Flow, TLS_CLIENT_AUTH};
use crate::issuer::IssuerSettings;
use crate::limits::{LimitSettings, Rate};
use crate::metrics::Metrics;
use crate::model::{AccessToken, AudienceGrant, CertificateFacts, PolicyDecision};
use crate::signer::local::LocalSigner;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://tokens.example.com";

type Answer = Result<Authentication, Failure>;

/// A flow whose answer is a closure; counts how often it was asked.
struct TestFlow {
    answer: Box<dyn Fn(&TokenRequest) -> Answer + Send + Sync>,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Flow for TestFlow {
    async fn authenticate(&self, request: &TokenRequest) -> Answer {
        self.calls.fetch_add(1, Ordering::Relaxed);
        (self.answer)(request)
    }
}

fn enabled(
    name: &str,
    answer: impl Fn(&TokenRequest) -> Answer + Send + Sync + 'static,
) -> (EnabledFlow, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let flow = TestFlow {
        answer: Box::new(answer),
        calls: calls.clone(),
    };
    let flow = EnabledFlow {
        name: Arc::from(name),
        auth_method: TLS_CLIENT_AUTH,
        flow: Arc::new(flow),
    };
    (flow, calls)
}

fn client(id: &str) -> Answer {
    // The flow's own idea of its name is overwritten by the grant.
    let mut client = AuthenticatedClient::new(id, CertificateFacts::default());
    client.flow = "what-the-flow-says".into();
    Ok(Authentication::Client(client))
}

fn not_mine(reason: &str) -> Answer {
    Ok(Authentication::NotMine(Declined::missing(reason)))
}

/// Admits every client except `denied` (unauthorized_client), refuses the scope `forbidden`
/// (access_denied) and renames `spiffe://example.org/renamed` to `device-renamed`.
struct TestPolicy;

impl ClientPolicy for TestPolicy {
    fn authorize(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Result<Client, Failure> {
        if client.client_id == "denied" {
            return Err(crate::policy::client_denied(
                "the test policy denies 'denied'",
            ));
        }
        if requested.scope == Some("forbidden") {
            return Err(Failure::access_denied(
                "The scope 'forbidden' is not allowed",
            ));
        }
        // A template may rename the client.
        let client_id = match client.client_id.as_str() {
            "spiffe://example.org/renamed" => "device-renamed".to_owned(),
            other => other.to_owned(),
        };
        Ok(Client {
            flow: client.flow.clone(),
            client_id,
            facts: client.facts.clone(),
            extra_claims: Map::new(),
            lifetime_seconds: None,
            decision: Some(allowed()),
            audience: requested.audience.map(AudienceGrant::new),
        })
    }
}

/// What [`TestPolicy`] says when it admits a client.
fn allowed() -> PolicyDecision {
    PolicyDecision {
        decision: "allow",
        rule: "test".into(),
        matched: "client_id is known".into(),
    }
}

/// An access backend that hands out a fixed token, except for the scope `down` (503).
struct TestBackend;

#[async_trait]
impl AccessTokenBackend for TestBackend {
    async fn access_token(
        &self,
        _client: &Client,
        _id_token: &str,
        scope: &str,
        _service_account: Option<&str>,
        _deadline: Deadline,
    ) -> Result<AccessToken, Failure> {
        if scope == "down" {
            return Err(Failure::unavailable(
                "Google is unavailable; retry later",
                5,
            ));
        }
        Ok(AccessToken {
            token: "ya29.test".into(),
            expires_in: 3600,
            scope: scope.into(),
        })
    }
}

fn issuer() -> IdTokenIssuer {
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let signer = LocalSigner::from_pem(pem.as_bytes(), "test").unwrap();
    IdTokenIssuer::new(
        IssuerSettings {
            audience: "https://api.example.com".into(),
            validity_seconds: 600,
            jwks_uri: None,
            min_lifetime_seconds: 60,
            certificate_bound: false,
        },
        Arc::new(signer),
        Clock::fixed(NOW),
    )
}

fn grant(flows: Vec<EnabledFlow>) -> ClientCredentials {
    ClientCredentials::new(flows, Arc::new(TestPolicy), issuer(), None)
}

fn with_backend(flows: Vec<EnabledFlow>) -> ClientCredentials {
    ClientCredentials::new(
        flows,
        Arc::new(TestPolicy),
        issuer(),
        Some(Arc::new(TestBackend)),
    )
}

fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    Some(Rate {
        per_second: NonZeroU32::new(per_second)?,
        burst: NonZeroU32::new(burst)?,
    })
}

fn limits(settings: LimitSettings) -> Arc<Limits> {
    Arc::new(Limits::new(settings, Arc::new(Metrics::new())))
}

fn request() -> TokenRequest {
    TokenRequest {
        grant_type: CLIENT_CREDENTIALS.into(),
        remote_addr: Some(SocketAddr::from(([192, 0, 2, 7], 40000))),
        ..TokenRequest::default()
    }
}

fn with_scope(scope: Option<&str>, service_account: Option<&str>) -> TokenRequest {
    TokenRequest {
        scope: scope.map(str::to_owned),
        service_account: service_account.map(str::to_owned),
        ..request()
    }
}

async fn exchange(grant: &ClientCredentials, request: &TokenRequest) -> Exchange {
    grant
        .exchange(request, ISS, Deadline::after(Duration::from_secs(5)))
        .await
}

fn failure(exchange: &Exchange) -> &Failure {
    match &exchange.result {
        Err(failure) => failure,
        Ok(_) => panic!("tokens were issued: {exchange:?}"),
    }
}

fn claims(id_token: &str) -> Value {
    let payload = id_token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn the_first_flow_that_takes_the_request_decides_and_names_amr() {
    let (first, first_calls) = enabled("first", |_| not_mine("no first credentials"));
    let (second, _) = enabled("second", |_| client("spiffe://example.org/a"));
    let (third, third_calls) = enabled("third", |_| client("spiffe://example.org/c"));
    let grant = grant(vec![first, second, third]);
    let exchange = exchange(&grant, &request()).await;
    assert_eq!(exchange.flow.as_deref(), Some("second"));
    assert_eq!(
        exchange.client_id.as_deref(),
        Some("spiffe://example.org/a")
    );
    let issued = exchange.result.unwrap();
    let claims = claims(&issued.id_token);
    assert_eq!(claims["amr"], serde_json::json!(["second"]));
    assert_eq!(claims["sub"], "spiffe://example.org/a");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["jti"], issued.jti.as_str());
    assert_eq!(first_calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        third_calls.load(Ordering::Relaxed),
        0,
        "later flows are not asked"
    );
}

#[tokio::test]
async fn a_refusal_decides_like_a_client_and_later_flows_are_not_asked() {
    let (first, _) = enabled("first", |_| {
        Err(Failure::unauthorized("The certificate expired"))
    });
    let (second, second_calls) = enabled("second", |_| client("a"));
    let grant = grant(vec![first, second]);
    let exchange = exchange(&grant, &request()).await;
    assert_eq!(exchange.flow.as_deref(), Some("first"));
    assert_eq!(exchange.client_id, None);
    assert_eq!(
        failure(&exchange),
        &Failure::unauthorized("The certificate expired")
    );
    assert_eq!(second_calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn when_no_flow_takes_the_request_the_answer_names_what_each_missed() {
    let (a, _) = enabled("a-flow", |_| not_mine("no client certificate"));
    let (b, _) = enabled("b-flow", |_| not_mine("header x-cert is missing"));
    let exchange = exchange(&grant(vec![a, b]), &request()).await;
    assert_eq!(exchange.flow, None);
    assert_eq!(
        failure(&exchange),
        &Failure::invalid_request(
            "No suitable flow found for grant type 'client_credentials': a-flow: no client certificate; b-flow: header x-cert is missing"
        )
    );
}

#[tokio::test]
async fn credentials_in_an_untrusted_form_make_the_no_flow_answer_403() {
    let (a, _) = enabled("a-flow", |_| not_mine("no client certificate"));
    let (b, _) = enabled("b-flow", |_| {
        Ok(Authentication::NotMine(Declined::untrusted(
            "headers without the secret",
        )))
    });
    let exchange = exchange(&grant(vec![a, b]), &request()).await;
    let failure = failure(&exchange);
    assert_eq!(failure.kind(), Kind::UnauthorizedClient);
    assert!(
        failure
            .message()
            .ends_with("a-flow: no client certificate; b-flow: headers without the secret"),
        "{failure:?}"
    );
}

#[tokio::test]
async fn the_grant_type_is_required_and_must_be_client_credentials() {
    let (a, calls) = enabled("a", |_| client("a"));
    let grant = grant(vec![a]);
    let missing = TokenRequest {
        grant_type: String::new(),
        ..request()
    };
    assert_eq!(
        failure(&exchange(&grant, &missing).await),
        &Failure::invalid_request("The parameter 'grant_type' is required")
    );
    let other = TokenRequest {
        grant_type: "password".into(),
        ..request()
    };
    assert_eq!(
        failure(&exchange(&grant, &other).await),
        &Failure::new(
            Kind::UnsupportedGrantType,
            "Grant type 'password' is not supported; supported: client_credentials"
        )
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0, "no flow was asked");
    assert_eq!(grant.summary().grant_types, vec!["client_credentials"]);
    assert_eq!(grant.summary().auth_methods, vec![TLS_CLIENT_AUTH]);
}

#[tokio::test]
async fn a_scope_without_an_access_backend_is_refused() {
    let (a, _) = enabled("a", |_| client("a"));
    let grant = grant(vec![a]);
    for request in [
        with_scope(Some("https://www.googleapis.com/auth/cloud-platform"), None),
        with_scope(None, Some("sa@p.iam.gserviceaccount.com")),
    ] {
        let exchange = exchange(&grant, &request).await;
        let failure = failure(&exchange);
        assert_eq!(failure.kind(), Kind::InvalidRequest);
        assert!(
            failure
                .message()
                .starts_with("Access tokens are not configured on this service"),
            "{failure:?}"
        );
    }
    // Whitespace is no scope.
    assert!(
        exchange(&grant, &with_scope(Some("  "), None))
            .await
            .result
            .is_ok()
    );
}

#[tokio::test]
async fn a_service_account_needs_a_scope() {
    let (a, _) = enabled("a", |_| client("a"));
    let grant = with_backend(vec![a]);
    let exchange_without = exchange(&grant, &with_scope(None, Some("sa@p.iam"))).await;
    assert_eq!(
        failure(&exchange_without),
        &Failure::invalid_request(
            "The parameter 'scope' is required when 'service_account' is given"
        )
    );
    let issued = exchange(&grant, &with_scope(Some("s"), Some("sa@p.iam")))
        .await
        .result
        .unwrap();
    assert_eq!(issued.access_token.unwrap().scope, "s");
}

#[tokio::test]
async fn a_request_no_flow_takes_is_told_so_before_its_scope_is_judged() {
    let (a, _) = enabled("a", |_| not_mine("no certificate"));
    let exchange = exchange(&grant(vec![a]), &with_scope(Some("s"), None)).await;
    assert!(
        failure(&exchange)
            .message()
            .starts_with("No suitable flow found"),
        "{exchange:?}"
    );
}

#[tokio::test]
async fn the_per_client_limit_refuses_with_429_after_the_burst() {
    let (a, _) = enabled("a", |_| client("busy"));
    let grant = grant(vec![a]).with_limits(limits(LimitSettings {
        per_client: rate(1, 2),
        ..LimitSettings::default()
    }));
    for _ in 0..2 {
        assert!(exchange(&grant, &request()).await.result.is_ok());
    }
    let refused = exchange(&grant, &request()).await;
    assert_eq!(refused.client_id.as_deref(), Some("busy"));
    let failure = failure(&refused);
    assert_eq!(failure.kind(), Kind::RateLimited { retry_after: 1 });
    assert_eq!(
        failure.message(),
        "Too many token requests from this client; retry in 1 s"
    );
}

/// A grant whose caller may fail once: the next request from that address is refused before
/// any flow is asked.
fn failing_once(flow: EnabledFlow) -> ClientCredentials {
    with_backend(vec![flow]).with_limits(limits(LimitSettings {
        auth_failures: rate(1, 1),
        ..LimitSettings::default()
    }))
}

async fn charged(grant: &ClientCredentials, request: &TokenRequest) -> bool {
    let _first = exchange(grant, request).await;
    let second = exchange(grant, request).await;
    matches!(&second.result, Err(f) if f.message().starts_with("Too many failed authentications from this address"))
}

#[tokio::test]
async fn flow_refusals_and_policy_denials_charge_the_caller_access_denials_do_not() {
    let (refusing, calls) = enabled("refusing", |_| Err(Failure::unauthorized("bad")));
    let grant = failing_once(refusing);
    assert!(charged(&grant, &request()).await, "a flow's refusal");
    assert_eq!(calls.load(Ordering::Relaxed), 1, "refused before the flow");

    let (nobody, _) = enabled("nobody", |_| not_mine("nothing"));
    assert!(charged(&failing_once(nobody), &request()).await, "no flow");

    let (denied, _) = enabled("denied", |_| client("denied"));
    let grant = failing_once(denied);
    let first = exchange(&grant, &request()).await;
    assert_eq!(
        failure(&first),
        &Failure::unauthorized("The client is not authorized to obtain tokens")
    );
    assert_eq!(
        failure(&first).log_detail(),
        "the test policy denies 'denied'"
    );
    assert!(charged(&grant, &request()).await, "a policy denial");

    let (allowed, _) = enabled("allowed", |_| client("allowed"));
    let forbidden = with_scope(Some("forbidden"), None);
    let grant = failing_once(allowed);
    assert_eq!(
        failure(&exchange(&grant, &forbidden).await).kind(),
        Kind::AccessDenied
    );
    assert!(!charged(&grant, &forbidden).await, "an access denial");
    assert!(exchange(&grant, &request()).await.result.is_ok());
}

#[tokio::test]
async fn the_exchange_names_the_client_the_policy_admitted() {
    let (a, _) = enabled("a", |_| client("spiffe://example.org/renamed"));
    let exchange = exchange(&grant(vec![a]), &request()).await;
    assert_eq!(exchange.client_id.as_deref(), Some("device-renamed"));
    let issued = exchange.result.unwrap();
    assert_eq!(claims(&issued.id_token)["sub"], "device-renamed");
}

/// The policy's decision reaches the request's log line: on the issued tokens, and as labels
/// of a failure that comes after the policy admitted the client; a client the policy does not
/// admit has no tokens and no decision of ours (its policy labels its refusal).
#[tokio::test]
async fn the_policy_decision_travels_with_the_tokens_and_with_a_later_failure() {
    let (a, _) = enabled("a", |_| client("spiffe://example.org/a"));
    let backed = with_backend(vec![a]);
    let issued = exchange(&backed, &request()).await.result.unwrap();
    assert_eq!(issued.decision, Some(allowed()));

    let down = exchange(&backed, &with_scope(Some("down"), None)).await;
    let unavailable = failure(&down);
    assert_eq!(unavailable.kind(), Kind::Unavailable { retry_after: 5 });
    let label = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        unavailable.labels(),
        [
            label("policy_decision", "allow"),
            label("policy_rule", "test"),
            label("policy_matched", "client_id is known"),
        ]
    );

    let (denied, _) = enabled("denied", |_| client("denied"));
    let refused = exchange(&grant(vec![denied]), &request()).await;
    assert!(failure(&refused).labels().is_empty());
}

const ENTRA: &str = "api://AzureADTokenExchange";

/// A grant whose issuer lets clients ask for `ENTRA` (TOKEN_AUDIENCES).
fn with_audiences(access: bool) -> ClientCredentials {
    let (a, _) = enabled("a", |_| client("spiffe://example.org/a"));
    let issuer = issuer().with_audiences(crate::issuer::AudienceSettings {
        allowed: vec![ENTRA.into()],
        lifetimes: Default::default(),
    });
    let backend: Option<Arc<dyn AccessTokenBackend>> = if access {
        Some(Arc::new(TestBackend))
    } else {
        None
    };
    ClientCredentials::new(vec![a], Arc::new(TestPolicy), issuer, backend)
}

fn asking(audience: &str) -> TokenRequest {
    TokenRequest {
        audience: Some(audience.into()),
        ..request()
    }
}

#[tokio::test]
async fn without_audience_the_token_is_for_the_default_audience() {
    let grant = with_audiences(false);
    for request in [request(), asking(""), asking("https://api.example.com")] {
        let exchange = exchange(&grant, &request).await;
        let issued = exchange.result.unwrap();
        assert_eq!(claims(&issued.id_token)["aud"], "https://api.example.com");
        assert_eq!(issued.audience, "https://api.example.com");
    }
}

#[tokio::test]
async fn a_listed_audience_is_the_tokens_aud() {
    let grant = with_audiences(false);
    let exchange = exchange(&grant, &asking(ENTRA)).await;
    assert_eq!(exchange.audience.as_deref(), Some(ENTRA));
    let issued = exchange.result.unwrap();
    assert_eq!(claims(&issued.id_token)["aud"], ENTRA);
    assert_eq!(claims(&issued.id_token)["sub"], "spiffe://example.org/a");
    assert_eq!(issued.audience, ENTRA);
}

#[tokio::test]
async fn an_unlisted_audience_is_refused_with_403_naming_the_parameter() {
    let grant = with_audiences(false);
    let exchange = exchange(&grant, &asking("https://evil.example")).await;
    assert_eq!(exchange.audience.as_deref(), Some("https://evil.example"));
    let failure = failure(&exchange);
    assert_eq!(failure.kind(), Kind::AccessDenied);
    assert!(
        failure.message().contains("parameter 'audience'")
            && failure.message().contains("'https://evil.example'"),
        "{failure:?}"
    );
}

#[tokio::test]
async fn audience_with_scope_is_refused_with_400() {
    let grant = with_audiences(true);
    let request = TokenRequest {
        scope: Some("https://www.googleapis.com/auth/cloud-platform".into()),
        ..asking(ENTRA)
    };
    let failure = failure(&exchange(&grant, &request).await).clone();
    assert_eq!(failure.kind(), Kind::InvalidRequest);
    assert!(
        failure.message().contains("'audience' and 'scope'"),
        "{failure:?}"
    );
    // Even the default audience, named, cannot come with a scope: the request is ambiguous.
    let named_default = TokenRequest {
        scope: Some("https://www.googleapis.com/auth/cloud-platform".into()),
        ..asking("https://api.example.com")
    };
    assert_eq!(
        failure_kind(&exchange(&grant, &named_default).await),
        Kind::InvalidRequest
    );
    // Without an audience, the scope still gets its access token.
    let plain = TokenRequest {
        scope: Some("https://www.googleapis.com/auth/cloud-platform".into()),
        ..self::request()
    };
    assert!(
        exchange(&grant, &plain)
            .await
            .result
            .unwrap()
            .access_token
            .is_some()
    );
}

fn failure_kind(exchange: &Exchange) -> Kind {
    failure(exchange).kind()
}
