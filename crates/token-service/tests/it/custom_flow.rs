//! The example of "Writing a custom flow" (`examples/custom_flow.rs`) as its user meets it:
//! the example binary is the real server (`cli::main_with`: TLS, limits, drain), its setting
//! is in `--help`, `check-config` and `--config`, and it issues tokens next to the built-in
//! flow. The binary is started with `PORT=0`; the address comes from its startup log line.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::{Value, json};

const ISSUER: &str = "https://tokens.example";
const AUDIENCE: &str = "https://aud.example";
const SPIFFE: &str = "spiffe://example.org/ns/prod/sa/device";

/// `target/debug/examples/custom_flow`, next to this test's `deps` folder. `cargo test`
/// builds the examples, but not when only this test is selected: cargo is asked once (a
/// no-op when the example is up to date).
fn example() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
            let name = profile.file_name().and_then(|n| n.to_str()).unwrap();
            let profile_name = if name == "debug" { "dev" } else { name };
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "token-service",
                    "--example",
                    "custom_flow",
                ])
                .args(["--profile", profile_name])
                .status()
                .unwrap();
            assert!(status.success(), "cargo build --example custom_flow failed");
            profile.join("examples").join("custom_flow")
        })
        .clone()
}

fn run(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    Command::new(example())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The environment of a server with the xlb flow and the example's flow.
fn settings(data_dir: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PORT", "0".into()),
        (
            "AUTH_FLOWS",
            "xlb-mtls-client-credentials,static-client-credentials".into(),
        ),
        ("TOKEN_ISSUER", ISSUER.into()),
        ("TOKEN_AUDIENCE", AUDIENCE.into()),
        ("DATA_DIR", data_dir.into()),
        (
            "STATIC_CLIENT_SECRETS",
            "batch-job=pw-123, nightly=pw-456".into(),
        ),
        ("RATE_LIMIT_PER_CLIENT", "1".into()),
        ("RATE_LIMIT_PER_CLIENT_BURST", "3".into()),
    ]
}

struct Running {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the example with `PORT=0` and reads the bound address from its log line.
fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(example())
        .arg("serve")
        .env_clear()
        .envs(settings(dir.path().join("data").to_str().unwrap()))
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("listening on http://") {
                let address: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                    .collect();
                let _ = tx.send(address);
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example logs `listening on http://…`");
    Running {
        child,
        base: format!("http://{address}"),
        _dir: dir,
    }
}

async fn post(base: &str, body: &str, lb: bool) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if lb {
        request = request
            .header("x-client-cert-present", "true")
            .header("x-client-cert-chain-verified", "true")
            .header("x-client-cert-spiffe", SPIFFE);
    }
    request.send().await.unwrap()
}

/// Verifies an ID token against the keys the server publishes.
async fn claims(base: &str, response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let token = body["id_token"].as_str().unwrap();
    let jwks: JwkSet = reqwest::get(format!("{base}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = decode_header(token).unwrap();
    let jwk = jwks.find(&header.kid.clone().unwrap()).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    let key = DecodingKey::from_jwk(jwk).unwrap();
    decode::<Value>(token, &key, &validation).unwrap().claims
}

#[tokio::test]
async fn the_example_serves_tokens_through_the_real_server() {
    let server = start();
    let base = server.base.as_str();
    let doc: Value = reqwest::get(format!("{base}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["tls_client_auth", "client_secret_post"])
    );

    let good = "grant_type=client_credentials&client_id=batch-job&client_secret=pw-123";
    let claims_of = claims(base, post(base, good, false).await).await;
    assert_eq!(claims_of["sub"], "batch-job");
    assert_eq!(claims_of["amr"], json!(["static-client-credentials"]));

    let wrong = "grant_type=client_credentials&client_id=batch-job&client_secret=nope";
    assert_eq!(post(base, wrong, false).await.status(), 403);
    let none = post(base, "grant_type=client_credentials", false).await;
    assert_eq!(none.status(), 400);

    // The built-in flow still serves its own requests, first in AUTH_FLOWS.
    let xlb = claims(base, post(base, good, true).await).await;
    assert_eq!(xlb["amr"], json!(["xlb-mtls-client-credentials"]));
    assert_eq!(xlb["sub"], SPIFFE);

    // The real server: the limits are in force (the per-client limit's 429).
    let mut limited = false;
    for _ in 0..10 {
        if post(base, good, false).await.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "RATE_LIMIT_PER_CLIENT applies to the example's flow"
    );
}

#[test]
fn the_examples_setting_is_in_help_check_config_and_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let help = run(&["--help"], &[], dir.path());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("STATIC_CLIENT_SECRETS"), "{help}");
    assert!(help.contains("MTLS_LB_SECRET"), "{help}");

    let env = [
        ("TOKEN_AUDIENCE", AUDIENCE),
        ("AUTH_FLOWS", "static-client-credentials"),
        ("STATIC_CLIENT_SECRETS", "batch-job=pw-123"),
    ];
    let out = run(&["check-config"], &env, dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("STATIC_CLIENT_SECRETS"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("<redacted>") && !text.contains("pw-123"),
        "{text}"
    );

    let bad = run(
        &["check-config"],
        &[env[0], env[1], ("STATIC_CLIENT_SECRETS", "batch-job")],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("error: STATIC_CLIENT_SECRETS: entry 1 is not client-id=secret"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let file = dir.path().join("settings.toml");
    std::fs::write(&file, "static_client_secrets = [\"batch-job=pw-123\"]\n").unwrap();
    let from_file = run(
        &["--config", file.to_str().unwrap(), "check-config"],
        &[env[0], env[1]],
        dir.path(),
    );
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
}
