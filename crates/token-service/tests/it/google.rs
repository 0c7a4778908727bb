//! Token Service against the Google API emulator over real sockets: keyless signing with
//! signJwt, STS exchange, impersonation, error mapping, retries, deadline, caches and the
//! refresh of the service's own credentials.

use crate::support as common;

use std::time::{Duration, Instant};

use common::google::*;
use common::*;
use gcp_emulator::{Config as EmulatorConfig, Emulator, Fault};
use serde_json::Value;

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const GRANT: &str = "grant_type=client_credentials";

fn pool_audience() -> String {
    format!(
        "https://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/providers/{PROVIDER}"
    )
}

struct Setup {
    emulator: Emulator,
    server: Server,
}

async fn emulator_for(port: u16, tweak: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let mut config = emulator_config(port);
    tweak(&mut config);
    start_emulator(config).await
}

/// [`setup`] with the real binary, for tests that read its log.
async fn setup_process(extra: &[(&str, &str)], tweak: impl FnOnce(&mut EmulatorConfig)) -> Setup {
    let front = listener();
    let emulator = emulator_for(port_of(&front), tweak).await;
    let server = start_service_process(front, &emulator, extra).await;
    Setup { emulator, server }
}

/// Starts the emulator and Token Service (SIGNER=iam, pool configured) and waits until ready.
async fn setup(extra: &[(&str, &str)], tweak: impl FnOnce(&mut EmulatorConfig)) -> Setup {
    let listener = listener();
    let emulator = emulator_for(port_of(&listener), tweak).await;
    let server = start_service(listener, &emulator, extra).await;
    Setup { emulator, server }
}

async fn body(response: reqwest::Response) -> (u16, Value, Option<String>) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), retry_after)
}

fn form(scope: Option<&str>, sa: Option<&str>) -> String {
    let mut f = GRANT.to_owned();
    if let Some(s) = scope {
        f.push_str(&format!(
            "&scope={}",
            s.replace(':', "%3A").replace('/', "%2F")
        ));
    }
    if let Some(sa) = sa {
        f.push_str(&format!("&service_account={sa}"));
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_signer_tokens_verify_through_the_published_service_account_keys() {
    let s = setup_process(&[], |_| {}).await;
    let (status, json, _) = body(token(&s.server, GRANT, &[]).await).await;
    assert_eq!(status, 200, "{json}");
    let claims = verify(
        json["id_token"].as_str().unwrap(),
        &s.server.base,
        &pool_audience(),
    )
    .await;
    assert_eq!(claims["sub"], SPIFFE);
    assert_eq!(s.emulator.calls("iam.signJwt"), 1);
    let doc: Value = client()
        .get(s.server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert!(
        s.server.logs().contains(SELF_SA),
        "logs the identity it runs as"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jwks_uri_discovery_points_at_googles_service_account_keys() {
    let s = setup(&[("JWKS_URI", "")], |_| {}).await;
    let doc: Value = client()
        .get(s.server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["jwks_uri"],
        format!("https://www.googleapis.com/service_accounts/v1/metadata/jwk/{SELF_SA}")
    );
    let local = client()
        .get(s.server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_yields_an_sts_token_and_service_account_an_impersonated_one() {
    let s = setup_process(&[], |_| {}).await;
    let (status, json, _) = body(token(&s.server, &form(Some(SCOPE), None), &[]).await).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["scope"], SCOPE);
    assert!(json["expires_in"].as_i64().unwrap() > 0);
    let principal = s
        .emulator
        .token_principal(json["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        principal,
        format!(
            "principal://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/subject/{SPIFFE}"
        )
    );
    assert!(json["id_token"].is_string());

    let (status, json, _) =
        body(token(&s.server, &form(Some(SCOPE), Some(TARGET_SA)), &[]).await).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        s.emulator
            .token_principal(json["access_token"].as_str().unwrap())
            .unwrap(),
        TARGET_SA
    );
    // ACCESS_TOKEN_LIFETIME's default (an hour, as Google's), not the ID token's 5 minutes.
    let expires_in = json["expires_in"].as_i64().unwrap();
    assert!(expires_in > 3500 && expires_in <= 3600, "{json}");
    assert_eq!(s.emulator.calls("iam.generateAccessToken"), 1);

    let logs = s.server.logs();
    for t in [
        json["access_token"].as_str().unwrap(),
        json["id_token"].as_str().unwrap(),
    ] {
        assert!(!logs.contains(t), "a token reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_without_scope_is_an_invalid_request() {
    let s = setup(&[], |_| {}).await;
    let (status, json, _) = body(token(&s.server, &form(None, Some(TARGET_SA)), &[]).await).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "invalid_request");
    assert!(
        json["error_description"]
            .as_str()
            .unwrap()
            .contains("'scope' is required")
    );
    let (status, json, _) =
        body(token(&s.server, &form(Some(SCOPE), Some("../../x")), &[]).await).await;
    assert_eq!(status, 400, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_map_to_oauth_errors_with_the_upstreams_message() {
    let s = setup(
        &[("UPSTREAM_TIMEOUT", "2"), ("ACCESS_TOKEN_CACHE", "off")],
        |_| {},
    )
    .await;
    // Not granted: 403 from generateAccessToken.
    let (status, json, _) =
        body(token(&s.server, &form(Some(SCOPE), Some(OTHER_SA)), &[]).await).await;
    assert_eq!(
        (status, json["error"].as_str().unwrap()),
        (403, "access_denied"),
        "{json}"
    );
    let description = json["error_description"].as_str().unwrap();
    assert!(
        description.contains(&format!(
            "Access to service account '{OTHER_SA}' was denied"
        )),
        "{description}"
    );
    assert!(
        description.contains("iam.serviceAccounts.getAccessToken"),
        "upstream message kept: {description}"
    );

    let cases: &[(&str, u16, u16, &str)] = &[
        ("sts.token", 400, 400, "invalid_request"),
        ("sts.token", 403, 403, "access_denied"),
        ("sts.token", 429, 503, "temporarily_unavailable"),
        ("sts.token", 503, 503, "temporarily_unavailable"),
        ("sts.token", 502, 500, "server_error"),
        ("iam.signJwt", 401, 403, "access_denied"),
        ("iam.signJwt", 500, 500, "server_error"),
        (
            "iam.generateAccessToken",
            503,
            503,
            "temporarily_unavailable",
        ),
    ];
    for (endpoint, upstream, status, error) in cases {
        s.emulator.clear_faults();
        s.emulator.inject(
            endpoint,
            Fault {
                status: Some(*upstream),
                latency_ms: 0,
                times: None,
                message: Some(format!("injected {upstream}")),
            },
        );
        let (got, json, retry_after) =
            body(token(&s.server, &form(Some(SCOPE), Some(TARGET_SA)), &[]).await).await;
        assert_eq!(
            (got, json["error"].as_str().unwrap()),
            (*status, *error),
            "{endpoint} {upstream}: {json}"
        );
        assert!(
            json["error_description"]
                .as_str()
                .unwrap()
                .contains(&format!("injected {upstream}")),
            "{json}"
        );
        assert_eq!(
            retry_after.is_some(),
            *status == 503,
            "{endpoint} {upstream}"
        );
    }
    s.emulator.clear_faults();
    let ok = token(&s.server, &form(Some(SCOPE), Some(TARGET_SA)), &[]).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_success() {
    let s = setup(&[], |_| {}).await;
    s.emulator.reset();
    s.emulator.inject(
        "iam.signJwt",
        Fault {
            status: Some(503),
            latency_ms: 0,
            times: Some(2),
            message: None,
        },
    );
    s.emulator.inject(
        "sts.token",
        Fault {
            status: Some(429),
            latency_ms: 0,
            times: Some(1),
            message: None,
        },
    );
    let (status, json, _) = body(token(&s.server, &form(Some(SCOPE), None), &[]).await).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(s.emulator.calls("iam.signJwt"), 3);
    assert_eq!(s.emulator.calls("sts.token"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_deadline_bounds_the_wait() {
    let s = setup(&[("UPSTREAM_TIMEOUT", "1")], |_| {}).await;
    s.emulator.inject(
        "sts.token",
        Fault {
            status: None,
            latency_ms: 5_000,
            times: None,
            message: None,
        },
    );
    let started = Instant::now();
    let (status, json, retry_after) =
        body(token(&s.server, &form(Some(SCOPE), None), &[]).await).await;
    let waited = started.elapsed();
    assert_eq!(
        (status, json["error"].as_str().unwrap()),
        (503, "temporarily_unavailable"),
        "{json}"
    );
    assert!(retry_after.is_some());
    // The injected latency is 5 s; the answer must come from the 1 s deadline, not from it.
    assert!(waited < Duration::from_millis(4_000), "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deadline_covers_every_upstream_call_of_a_request() {
    let s = setup(
        &[("UPSTREAM_TIMEOUT", "1"), ("ACCESS_TOKEN_CACHE", "off")],
        |_| {},
    )
    .await;
    // Each call alone fits in the 1 s budget; together they do not.
    s.emulator.inject(
        "iam.signJwt",
        Fault {
            status: None,
            latency_ms: 600,
            times: None,
            message: None,
        },
    );
    s.emulator.inject(
        "sts.token",
        Fault {
            status: None,
            latency_ms: 600,
            times: None,
            message: None,
        },
    );
    let started = Instant::now();
    let (status, json, _) = body(token(&s.server, &form(Some(SCOPE), None), &[]).await).await;
    assert_eq!(
        (status, json["error"].as_str().unwrap()),
        (503, "temporarily_unavailable"),
        "{json}"
    );
    // Without one shared deadline both calls would fit their own budgets and this would be 200.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    s.emulator.clear_faults();
    assert_eq!(
        token(&s.server, &form(Some(SCOPE), None), &[])
            .await
            .status(),
        200
    );
}

/// UPSTREAM_MAX_CONNECTIONS bounds the Google API calls in flight: eight clients at once, at most
/// two calls at the emulator at once, every client served. The default lets more through.
/// (A call that finds no free connection before its deadline: unit test in `src/google.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_max_connections_bounds_calls_in_flight_and_queues_the_rest() {
    let slow_sign = Fault {
        status: None,
        latency_ms: 500,
        times: None,
        message: None,
    };
    for limit in [Some("2"), None] {
        let extra: Vec<(&str, &str)> = limit
            .map(|l| vec![("UPSTREAM_MAX_CONNECTIONS", l)])
            .unwrap_or_default();
        let s = setup(&extra, |_| {}).await;
        s.emulator.inject("iam.signJwt", slow_sign.clone());
        let requests = (0..8).map(|_| token_request(&s.server, GRANT, &[]).send());
        for r in futures_join(requests).await {
            let (status, json, _) = body(r.unwrap()).await;
            assert_eq!(status, 200, "{limit:?}: {json}");
        }
        assert_eq!(s.emulator.calls("iam.signJwt"), 8);
        let peak = s.emulator.peak_concurrency("iam.signJwt");
        match limit {
            Some(_) => assert!((1..=2).contains(&peak), "peak {peak}"),
            None => assert!(peak > 2, "peak {peak} without a limit"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_cached_per_client_scope_and_service_account() {
    let s = setup(&[], |_| {}).await;
    let a = body(token(&s.server, &form(Some(SCOPE), Some(TARGET_SA)), &[]).await)
        .await
        .1;
    let b = body(token(&s.server, &form(Some(SCOPE), Some(TARGET_SA)), &[]).await)
        .await
        .1;
    assert_eq!(a["access_token"], b["access_token"]);
    assert_ne!(
        a["id_token"], b["id_token"],
        "ID tokens are fresh per request"
    );
    assert_eq!(s.emulator.calls("sts.token"), 1);
    assert_eq!(s.emulator.calls("iam.generateAccessToken"), 1);
    // Another scope, another service account (none) or another client: a new exchange.
    token(
        &s.server,
        &form(
            Some("https://www.googleapis.com/auth/devstorage.read_only"),
            Some(TARGET_SA),
        ),
        &[],
    )
    .await;
    token(&s.server, &form(Some(SCOPE), None), &[]).await;
    token(
        &s.server,
        &form(Some(SCOPE), Some(TARGET_SA)),
        &[("X-Client-Cert-Spiffe", "spiffe://example.org/other")],
    )
    .await;
    assert_eq!(s.emulator.calls("sts.token"), 4);
    // The same, as an operator sees it in the metrics.
    let metrics = client()
        .get(s.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "token_service_access_token_cache_total{result=\"hit\"} 1",
        "token_service_access_token_cache_total{result=\"miss\"} 4",
        "token_service_upstream_requests_total{api=\"STS\",status=\"200\"} 4",
        "token_service_upstream_request_duration_seconds_count{api=\"STS\"} 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_share_one_exchange() {
    let s = setup(&[], |_| {}).await;
    s.emulator.inject(
        "sts.token",
        Fault {
            status: None,
            latency_ms: 300,
            times: None,
            message: None,
        },
    );
    let requests = (0..6).map(|_| token_request(&s.server, &form(Some(SCOPE), None), &[]).send());
    let responses = futures_join(requests).await;
    let mut tokens = std::collections::BTreeSet::new();
    for r in responses {
        let (status, json, _) = body(r.unwrap()).await;
        assert_eq!(status, 200, "{json}");
        tokens.insert(json["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(s.emulator.calls("sts.token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_never_hands_out_a_token_with_less_than_five_minutes_left() {
    // A 300-second token has no time to spare: each request gets a fresh one.
    let s = setup(&[("ACCESS_TOKEN_LIFETIME", "300")], |_| {}).await;
    for _ in 0..2 {
        let (status, json, _) =
            body(token(&s.server, &form(Some(SCOPE), Some(TARGET_SA)), &[]).await).await;
        assert_eq!(status, 200, "{json}");
        assert!(json["expires_in"].as_i64().unwrap() > 250, "{json}");
    }
    assert_eq!(s.emulator.calls("iam.generateAccessToken"), 2);
    // A 900-second token is reused for half its life; a hit still has over 5 minutes left.
    let s = setup(&[("ACCESS_TOKEN_LIFETIME", "900")], |_| {}).await;
    for _ in 0..2 {
        let (status, json, _) =
            body(token(&s.server, &form(Some(SCOPE), Some(TARGET_SA)), &[]).await).await;
        assert_eq!(status, 200, "{json}");
        assert!(json["expires_in"].as_i64().unwrap() >= 300, "{json}");
    }
    assert_eq!(s.emulator.calls("iam.generateAccessToken"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_lifetime_is_checked_at_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_token-service"))
        .arg("check-config")
        .env("TOKEN_AUDIENCE", "https://example.org")
        .env("ACCESS_TOKEN_LIFETIME", "120")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ACCESS_TOKEN_LIFETIME"), "{stderr}");
    assert!(stderr.contains("300"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_can_be_turned_off() {
    let s = setup(&[("ACCESS_TOKEN_CACHE", "off")], |_| {}).await;
    token(&s.server, &form(Some(SCOPE), None), &[]).await;
    token(&s.server, &form(Some(SCOPE), None), &[]).await;
    assert_eq!(s.emulator.calls("sts.token"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_token_is_cached_and_refreshed_ahead_of_expiry() {
    let s = setup(&[], |c| c.metadata_token_lifetime_secs = 2).await;
    let before = s.emulator.calls("metadata.token");
    assert!(before >= 1);
    assert_eq!(token(&s.server, GRANT, &[]).await.status(), 200);
    assert_eq!(
        s.emulator.calls("metadata.token"),
        before,
        "cached token reused"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let requests = (0..5).map(|_| token_request(&s.server, GRANT, &[]).send());
    for r in futures_join(requests).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    assert_eq!(
        s.emulator.calls("metadata.token"),
        before + 1,
        "one refresh for many waiting requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_clearly_while_the_metadata_server_is_unreachable() {
    let front = listener();
    let emulator = emulator_for(port_of(&front), |_| {}).await;
    // The real binary: the test reads its log.
    let server = Server::start_process_on(
        front,
        &google_settings(
            &emulator,
            &[
                ("GCE_METADATA_HOST", UNREACHABLE),
                ("UPSTREAM_TIMEOUT", "1"),
            ],
        )
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect::<Vec<_>>(),
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, json, _) = body(client().get(server.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert!(
        json["error_description"]
            .as_str()
            .unwrap()
            .contains("metadata server"),
        "{json}"
    );
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, json, _) = body(token(&server, GRANT, &[]).await).await;
    assert_eq!(
        (status, json["error"].as_str().unwrap()),
        (503, "temporarily_unavailable"),
        "{json}"
    );
    assert!(server.logs().contains("google_identity_unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_default_credentials_from_a_service_account_key_sign_tokens() {
    let front = listener();
    let emulator = emulator_for(port_of(&front), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let key = temp_file(
        &dir,
        "adc.json",
        &emulator.service_account_key_json(SELF_SA).unwrap(),
    );
    // The real binary: the test reads its log.
    let server = start_service_process(
        front,
        &emulator,
        &[
            ("GCE_METADATA_HOST", UNREACHABLE),
            ("GOOGLE_APPLICATION_CREDENTIALS", &key.display().to_string()),
        ],
    )
    .await;
    let (status, json, _) = body(token(&server, GRANT, &[]).await).await;
    assert_eq!(status, 200, "{json}");
    verify(
        json["id_token"].as_str().unwrap(),
        &server.base,
        &pool_audience(),
    )
    .await;
    assert_eq!(emulator.calls("oauth.token"), 1);
    assert_eq!(emulator.calls("metadata.token"), 0);
    let logs = server.logs();
    assert!(
        !logs.contains("PRIVATE KEY") && !logs.contains("ya29."),
        "no secret in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_default_credentials_of_a_user_need_a_service_account() {
    let listener = listener();
    let user = "developer@example.com";
    let emulator = emulator_for(port_of(&listener), |c| {
        c.token_creators.push((SELF_SA.into(), user.into()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let adc = temp_file(&dir, "adc.json", &emulator.authorized_user_json(user));
    let server = start_service(
        listener,
        &emulator,
        &[
            ("GOOGLE_APPLICATION_CREDENTIALS", &adc.display().to_string()),
            ("SERVICE_ACCOUNT", SELF_SA),
        ],
    )
    .await;
    let (status, json, _) = body(token(&server, GRANT, &[]).await).await;
    assert_eq!(status, 200, "{json}");
    verify(
        json["id_token"].as_str().unwrap(),
        &server.base,
        &pool_audience(),
    )
    .await;
}

/// Joins futures without another dependency.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// The load balancer's not-after header for a certificate that expires `seconds` from now.
fn not_after_in(seconds: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_impersonated_token_ends_with_the_certificate_and_is_not_shared_with_a_later_one() {
    let s = setup(&[], |_| {}).await;
    let long = not_after_in(86_400);
    let ask = |not_after: String| {
        let server = &s.server;
        async move {
            body(
                token(
                    server,
                    &form(Some(SCOPE), Some(TARGET_SA)),
                    &[("X-Client-Cert-Valid-Not-After", &not_after)],
                )
                .await,
            )
            .await
        }
    };
    let (status, first, _) = ask(long.clone()).await;
    assert_eq!(status, 200, "{first}");
    let expires_in = first["expires_in"].as_i64().unwrap();
    assert!(expires_in > 3500, "{first}");

    // The same client with a certificate that expires in 20 minutes: not the cached
    // hour-long token, but one that ends with this certificate.
    let (status, second, _) = ask(not_after_in(1200)).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    let expires_in = second["expires_in"].as_i64().unwrap();
    assert!((1100..=1200).contains(&expires_in), "{second}");
    assert_eq!(s.emulator.calls("iam.generateAccessToken"), 2);

    // The first certificate still gets its cached token.
    let (_, third, _) = ask(long).await;
    assert_eq!(third["access_token"], first["access_token"]);
    assert_eq!(s.emulator.calls("iam.generateAccessToken"), 2);
}
