//! `token-client serve` against the real broker over mTLS and the Google API emulator: the
//! metadata server's paths, headers and content types, the URL source, token files, the
//! status endpoint, one broker request for many concurrent clients, refusals at startup, and
//! SIGTERM.

use base64::Engine as _;
use serde_json::Value;

use crate::support::*;

const V1: &str = "/computeMetadata/v1";

/// The claims of a JWT.
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The broker's `aud` for the pool.
pub fn broker_audience() -> String {
    format!("https:{}", POOL_AUDIENCE)
}

/// `serve` for the metadata server as [`TARGET_SA`], with `extra` arguments.
pub fn serve_metadata(f: &Fixture, extra: &[&str]) -> Process {
    let mut args = vec!["--service-account", TARGET_SA];
    args.extend_from_slice(extra);
    start_serve(&f.client_env(), &args)
}

fn assert_metadata_text(a: &Answer, body: &str) {
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, body);
    assert_eq!(a.header("content-type"), "application/text");
    assert_eq!(a.header("metadata-flavor"), "Google");
}

async fn check_probes_and_header_rules(base: &str) {
    let root = get(base, "/", &[]).await;
    assert_eq!(root.status, 200);
    assert_eq!(root.header("metadata-flavor"), "Google");
    let probe = get(base, &format!("{V1}/instance"), &[FLAVOR]).await;
    assert_eq!(probe.status, 200, "{probe:?}");
    assert_eq!(probe.header("metadata-flavor"), "Google");
    for path in [
        "/instance/service-accounts/default/token",
        "/project/project-id",
    ] {
        let bare = get(base, &format!("{V1}{path}"), &[]).await;
        assert_eq!(bare.status, 403, "{path}: {bare:?}");
        assert!(bare.body.contains("Metadata-Flavor"), "{}", bare.body);
        assert_eq!(bare.header("metadata-flavor"), "Google");
        let forwarded = [FLAVOR, ("X-Forwarded-For", "203.0.113.9")];
        assert_eq!(
            get(base, &format!("{V1}{path}"), &forwarded).await.status,
            403
        );
    }
    let rebinding = get(base, "/token", &[("Host", "evil.example:80")]).await;
    assert_eq!(rebinding.status, 403, "{rebinding:?}");
    for path in [
        "/computeMetadata/v1/instance/zone",
        "/computeMetadata/v2/x",
        "/nothing",
    ] {
        let unknown = get(base, path, &[FLAVOR]).await;
        assert_eq!(unknown.status, 404, "{path}");
        assert_eq!(unknown.header("metadata-flavor"), "Google");
    }
    let accounts = format!("{V1}/instance/service-accounts/other@x.iam.gserviceaccount.com/email");
    assert_eq!(get(base, &accounts, &[FLAVOR]).await.status, 404);
}

async fn check_account_and_project(base: &str) {
    let account = format!("{V1}/instance/service-accounts/default");
    assert_metadata_text(
        &get(base, &format!("{account}/email"), &[FLAVOR]).await,
        TARGET_SA,
    );
    let by_email = format!("{V1}/instance/service-accounts/{TARGET_SA}/email");
    assert_metadata_text(&get(base, &by_email, &[FLAVOR]).await, TARGET_SA);
    let info = get(base, &format!("{account}/?recursive=true"), &[FLAVOR]).await;
    assert_eq!(info.header("content-type"), "application/json");
    assert_eq!(
        info.json(),
        serde_json::json!({"email": TARGET_SA, "scopes": [SCOPE], "aliases": ["default"]})
    );
    let all = get(
        base,
        &format!("{V1}/instance/service-accounts/?recursive=true"),
        &[FLAVOR],
    )
    .await;
    assert_eq!(all.json()["default"]["email"], TARGET_SA);
    assert_eq!(all.json()[TARGET_SA]["aliases"][0], "default");
    let project_id = get(base, &format!("{V1}/project/project-id"), &[FLAVOR]).await;
    assert_metadata_text(&project_id, "demo-project");
    let number = get(base, &format!("{V1}/project/numeric-project-id"), &[FLAVOR]).await;
    assert_metadata_text(&number, PROJECT_NUMBER);
}

async fn check_tokens(base: &str) -> (String, String) {
    let account = format!("{V1}/instance/service-accounts/default");
    let token = get(base, &format!("{account}/token"), &[FLAVOR]).await;
    assert_eq!(token.status, 200, "{token:?}");
    assert_eq!(token.header("content-type"), "application/json");
    assert_eq!(token.header("metadata-flavor"), "Google");
    let body = token.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() >= 300, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert!(!access.is_empty());
    let audience = broker_audience();
    let identity = format!("{account}/identity?audience={audience}&format=full&licenses=TRUE");
    let id = get(base, &identity, &[FLAVOR]).await;
    assert_eq!(id.status, 200, "{id:?}");
    assert_eq!(id.header("content-type"), "application/text");
    assert_eq!(claims(&id.body)["aud"], audience);
    assert_eq!(claims(&id.body)["sub"], DEVICE);
    // An audience the broker does not allow: its refusal (serve_audiences.rs has the rest).
    let other = get(
        base,
        &format!("{account}/identity?audience={UNLISTED_AUDIENCE}"),
        &[FLAVOR],
    )
    .await;
    assert_eq!(other.status, 403);
    assert!(
        other.body.contains("access_denied") && other.body.contains("parameter 'audience'"),
        "{}",
        other.body
    );
    assert_eq!(
        get(base, &format!("{account}/identity"), &[FLAVOR])
            .await
            .status,
        400
    );
    let url = get(base, "/token", &[]).await;
    assert_eq!(url.status, 200);
    assert_eq!(url.header("content-type"), "application/json");
    assert_eq!(url.json()["id_token"], id.body.as_str());
    (access, id.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_server_answers_as_gce_does() {
    let f = Fixture::start().await;
    let file = f.path("token.jwt");
    let extra = [
        "--numeric-project-id",
        PROJECT_NUMBER,
        "--token-file",
        file.to_str().unwrap(),
    ];
    let mut serve = serve_metadata(&f, &extra);
    check_probes_and_header_rules(&serve.url).await;
    check_account_and_project(&serve.url).await;
    let (access, id) = check_tokens(&serve.url).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let status = get(&serve.url, "/status", &[]).await;
    assert_eq!(status.status, 200);
    let body = status.json();
    assert_eq!(body["id_token"]["serving"], true, "{body}");
    assert_eq!(body["access_tokens"][0]["service_account"], TARGET_SA);
    assert!(!status.body.contains(&id) && !status.body.contains(&access));
    let exit = serve.terminate();
    assert_eq!(exit.code(), Some(0), "{}", serve.logs());
    let logs = serve.logs();
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(
        !logs.contains(&id) && !logs.contains(&access),
        "a token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_cause_one_broker_request() {
    let f = Fixture::start().await;
    let serve = serve_metadata(&f, &[]);
    let ready = || async {
        let body = get(&serve.url, "/status", &[]).await.json();
        body["id_token"]["refreshes"] == 1 && body["access_tokens"][0]["refreshes"] == 1
    };
    for _ in 0..100 {
        if ready().await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready().await, "{}", serve.logs());
    let before = f.issued();
    let path = format!(
        "{V1}/instance/service-accounts/default/token?scopes={SCOPE},https://www.googleapis.com/auth/userinfo.email"
    );
    let default = format!("{V1}/instance/service-accounts/default/token");
    let mut calls = Vec::new();
    for i in 0..40 {
        let (base, path) = (
            serve.url.clone(),
            if i % 2 == 0 {
                path.clone()
            } else {
                default.clone()
            },
        );
        calls.push(tokio::spawn(
            async move { get(&base, &path, &[FLAVOR]).await },
        ));
    }
    let mut tokens = std::collections::HashSet::new();
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        tokens.insert(answer.json()["access_token"].as_str().unwrap().to_owned());
    }
    assert!(tokens.len() <= 2, "{tokens:?}");
    assert_eq!(f.issued(), before + 1, "{}", f.broker.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_what_it_cannot_do_safely() {
    let env: Vec<(String, String)> = [
        ("TOKEN_CLIENT_BROKER", "https://127.0.0.1:9"),
        ("TOKEN_CLIENT_CERT", "/nonexistent/c.pem"),
        ("TOKEN_CLIENT_KEY", "/nonexistent/k.pem"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let no_account = run_client(&["serve", "--listen", "127.0.0.1:0"], &env).await;
    assert_eq!(no_account.status.code(), Some(2));
    let message = stderr(&no_account);
    assert!(
        message.contains("The metadata server needs a service account")
            && message.contains("--service-account")
            && message.contains("--no-metadata"),
        "{message}"
    );
    let open = ["serve", "--no-metadata", "--listen", "0.0.0.0:0"];
    let open = run_client(&open, &env).await;
    assert_eq!(open.status.code(), Some(2));
    assert!(
        stderr(&open).contains("not a loopback address"),
        "{}",
        stderr(&open)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_access_tokens_are_refused_with_the_fix() {
    // The broker's shortest impersonated tokens: 5 minutes, which serve cannot hand out.
    let f = Fixture::with(Lifetimes {
        access_token_lifetime_seconds: Some(300),
        ..Lifetimes::default()
    })
    .await;
    let serve = serve_metadata(&f, &[]);
    let token = format!("{V1}/instance/service-accounts/default/token");
    let answer = get(&serve.url, &token, &[FLAVOR]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.body.contains("ACCESS_TOKEN_LIFETIME"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("access_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_it_starts_answers_503_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("device.pem").display().to_string();
    let env: Vec<(String, String)> = [
        ("TOKEN_CLIENT_BROKER", "https://127.0.0.1:9"),
        ("TOKEN_CLIENT_CERT", missing.as_str()),
        ("TOKEN_CLIENT_KEY", missing.as_str()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let mut serve = start_serve(&env, &["--no-metadata"]);
    let answer = get(&serve.url, "/token", &[]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("no valid ID token"), "{}", answer.body);
    assert!(answer.body.contains("TOKEN_CLIENT_CERT"), "{}", answer.body);
    let status = get(&serve.url, "/status", &[]).await.json();
    assert_eq!(status["id_token"]["serving"], false);
    assert!(status["id_token"]["consecutive_failures"].as_u64().unwrap() >= 1);
    let metadata = "/computeMetadata/v1/instance/service-accounts/default/token";
    assert_eq!(get(&serve.url, metadata, &[FLAVOR]).await.status, 404);
    assert_eq!(serve.signal("-INT").code(), Some(0), "{}", serve.logs());
    let logs = serve.logs();
    assert!(logs.contains("refreshing the ID token failed"), "{logs}");
}
