//! `token-client executable` as Google's libraries run it: one JSON object on stdout, nothing
//! on stderr, exit 0 on success and on every failure; the output file cache.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

use serde_json::Value;
use token_client::broker::unix_now;

use crate::support::*;

/// The environment a Google library adds (the audience is the pool's //iam name).
fn library_env(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.push((
        "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE".into(),
        POOL_AUDIENCE.into(),
    ));
    env.push((
        "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE".into(),
        "urn:ietf:params:oauth:token-type:id_token".into(),
    ));
    env.push(("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE".into(), "0".into()));
    env
}

/// The response, after checking what every library needs: exit 0, empty stderr, one JSON
/// object with version 1.
fn response(output: &Output) -> Value {
    assert_eq!(output.status.code(), Some(0), "{}", stdout(output));
    assert!(stderr(output).is_empty(), "stderr: {}", stderr(output));
    let text = stdout(output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["version"], 1, "{body}");
    body
}

fn assert_success(body: &Value) {
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(
        body["token_type"],
        "urn:ietf:params:oauth:token-type:id_token"
    );
    let exp = body["expiration_time"]
        .as_u64()
        .expect("integer expiration_time");
    assert!(exp > unix_now(), "{body}");
    let token = body["id_token"].as_str().unwrap();
    assert_eq!(token_client::broker::jwt_exp(token), Some(exp));
}

fn assert_failure(body: &Value, code: &str, message: &str) {
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let text = body["message"].as_str().unwrap();
    assert!(text.contains(message), "{text}");
    assert!(body.get("id_token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_and_refusal_follow_the_executable_rules() {
    let f = Fixture::start().await;
    let ok = run_client(&["executable"], &library_env(f.client_env())).await;
    assert_success(&response(&ok));

    let (cert, key) = f.foreign_identity();
    let mut env = library_env(f.client_env());
    env.retain(|(k, _)| k != "TOKEN_CLIENT_CERT" && k != "TOKEN_CLIENT_KEY");
    env.push(("TOKEN_CLIENT_CERT".into(), cert.display().to_string()));
    env.push(("TOKEN_CLIENT_KEY".into(), key.display().to_string()));
    let refused = run_client(&["executable"], &env).await;
    assert_failure(&response(&refused), "unauthorized_client", UNKNOWN_ISSUER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_without_a_broker_answer_still_exit_0_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::root("Unused CA");
    let device = ca.issue_client(DEVICE);
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("c.key");
    std::fs::write(&cert, &device.pem).unwrap();
    std::fs::write(&key, &device.key_pem).unwrap();
    let env = |broker: &str| {
        library_env(vec![
            ("TOKEN_CLIENT_BROKER".into(), broker.into()),
            ("TOKEN_CLIENT_CERT".into(), cert.display().to_string()),
            ("TOKEN_CLIENT_KEY".into(), key.display().to_string()),
        ])
    };
    let unreachable = run_client(&["executable"], &env("https://127.0.0.1:1")).await;
    assert_failure(
        &response(&unreachable),
        "broker_unreachable",
        "could not be reached",
    );

    // A broker that accepts the connection and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut slow = env(&format!("https://{}", silent.local_addr().unwrap()));
    slow.push(("TOKEN_CLIENT_TIMEOUT".into(), "1".into()));
    let timed_out = run_client(&["executable"], &slow).await;
    assert_failure(
        &response(&timed_out),
        "broker_timeout",
        "did not answer within 1 s",
    );
    drop(silent);

    let unconfigured = run_client(&["executable"], &library_env(vec![])).await;
    assert_failure(
        &response(&unconfigured),
        "invalid_configuration",
        "TOKEN_CLIENT_BROKER",
    );

    let bad_flag = run_client(&["executable", "--no-such-flag"], &env("https://x")).await;
    assert_failure(&response(&bad_flag), "invalid_arguments", "--no-such-flag");

    let missing_key = env("https://127.0.0.1:1")
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "TOKEN_CLIENT_KEY" => (k, "/nonexistent/key.pem".into()),
            _ => (k, v),
        })
        .collect::<Vec<_>>();
    let unreadable = run_client(&["executable"], &missing_key).await;
    assert_failure(
        &response(&unreadable),
        "client_credentials_unusable",
        "TOKEN_CLIENT_KEY",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_file_is_written_0600_and_reused_without_a_request() {
    let f = Fixture::start().await;
    let cache = f.path("cache.json");
    let mut env = library_env(f.client_env());
    env.push((
        "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE".into(),
        cache.display().to_string(),
    ));
    let first = run_client(&["executable"], &env).await;
    let body = response(&first);
    assert_success(&body);
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached, body);
    let issued = f.issued();
    assert_eq!(issued, 1, "{}", f.broker.logs());

    // No request: the broker is not even reachable for the second run.
    let mut offline = env.clone();
    offline.retain(|(k, _)| k != "TOKEN_CLIENT_BROKER");
    offline.push(("TOKEN_CLIENT_BROKER".into(), "https://127.0.0.1:1".into()));
    let second = run_client(&["executable"], &offline).await;
    assert_eq!(response(&second), body);
    assert_eq!(f.issued(), issued);

    // An expired entry (or a cached failure) is replaced.
    for stale in [
        token_client::executable::success("old", unix_now() - 10),
        token_client::executable::failure("x", "y"),
    ] {
        std::fs::write(&cache, stale.to_string()).unwrap();
        let fresh = response(&run_client(&["executable"], &env).await);
        assert_success(&fresh);
        assert_ne!(fresh["id_token"], "old");
        let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        assert_eq!(cached, fresh);
    }
    assert_eq!(f.issued(), issued + 2);
}
