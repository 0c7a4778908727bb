//! Google's own libraries with configurations written by `token-client google-config`: Python
//! google-auth and Node google-auth-library run `token-client executable`, exchange its ID
//! token at STS (the emulator) and impersonate a service account; a broker refusal reaches
//! the application with its code and message; a valid output file is reused.
//!
//! Needs `.ci/run`'s installs (see [`crate::support::libraries`]) and `node` on PATH.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::libraries;
use crate::support::*;

#[derive(Clone, Copy, Debug)]
enum Library {
    Python,
    Node,
}

impl Library {
    fn command(self) -> Command {
        match self {
            Library::Python => libraries::google_auth_py(),
            Library::Node => libraries::google_auth_js(),
        }
    }
}

/// Writes an executable-source configuration with the broker settings `env`, the emulator's
/// endpoints, an output file and, optionally, impersonation; returns its path.
async fn executable_config(
    f: &Fixture,
    name: &str,
    env: &[(String, String)],
    impersonate: bool,
) -> PathBuf {
    let base = f.emulator.base_url();
    let config = f.path(&format!("{name}.json"));
    let cache = f.path(&format!("{name}-cache.json"));
    let (sts, config_arg, cache_arg) = (
        format!("{base}/v1/token"),
        config.display().to_string(),
        cache.display().to_string(),
    );
    let mut args = vec![
        "google-config",
        "--source",
        "executable",
        "--audience",
        POOL_AUDIENCE,
        "--config-file",
        &config_arg,
        "--sts-url",
        &sts,
        "--iam-credentials-endpoint",
        &base,
        "--executable-output-file",
        &cache_arg,
    ];
    if impersonate {
        args.extend(["--service-account", TARGET_SA]);
    }
    let output = run_client(&args, env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    config
}

/// Runs the library with only the environment `google-config` printed (PATH and the
/// project besides).
async fn run_library(library: Library, config: &Path) -> (bool, Value) {
    let mut command = library.command();
    // NODE_PATH (set by the command) survives; nothing else of the test's environment does.
    libraries::clear_env_keeping_own(&mut command);
    command
        .env("GOOGLE_APPLICATION_CREDENTIALS", config)
        .env("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        // Without a project, Node asks the real Cloud Resource Manager for the pool's.
        .env("GOOGLE_CLOUD_PROJECT", "demo-project")
        .env("SCOPE", SCOPE);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let body: Value = serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "{library:?} printed no JSON:\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), body)
}

async fn executable_source_end_to_end(library: Library) {
    let f = Fixture::start().await;
    let env = f.client_env();
    let config = executable_config(&f, "impersonated", &env, true).await;
    let (ok, body) = run_library(library, &config).await;
    assert!(ok, "{library:?}: {body}");
    let principal = f.emulator.token_principal(body["token"].as_str().unwrap());
    assert_eq!(principal.as_deref(), Some(TARGET_SA), "{body}");

    // The library reads the output file our executable wrote (0600) and runs nothing.
    let cache = f.path("impersonated-cache.json");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let issued = f.issued();
    let (ok, body) = run_library(library, &config).await;
    assert!(ok, "{library:?}: {body}");
    assert_eq!(f.issued(), issued, "the cached ID token was not reused");

    let direct = executable_config(&f, "direct", &env, false).await;
    let (ok, body) = run_library(library, &direct).await;
    assert!(ok, "{library:?}: {body}");
    let principal = f
        .emulator
        .token_principal(body["token"].as_str().unwrap())
        .unwrap();
    assert!(
        principal.ends_with(&format!("/subject/{DEVICE}")),
        "{principal}"
    );
}

async fn refusal_reaches_the_application(library: Library) {
    let f = Fixture::start().await;
    let (cert, key) = f.foreign_identity();
    let mut env = f.client_env();
    env.retain(|(k, _)| k != "TOKEN_CLIENT_CERT" && k != "TOKEN_CLIENT_KEY");
    env.push(("TOKEN_CLIENT_CERT".into(), cert.display().to_string()));
    env.push(("TOKEN_CLIENT_KEY".into(), key.display().to_string()));
    let config = executable_config(&f, "refused", &env, false).await;
    let (ok, body) = run_library(library, &config).await;
    assert!(!ok, "{library:?}: {body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("unauthorized_client"),
        "{library:?}: {error}"
    );
    assert!(error.contains(UNKNOWN_ISSUER), "{library:?}: {error}");
    assert!(!f.path("refused-cache.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_google_auth_runs_the_executable_source() {
    executable_source_end_to_end(Library::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_google_auth_shows_the_brokers_refusal() {
    refusal_reaches_the_application(Library::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_google_auth_library_runs_the_executable_source() {
    executable_source_end_to_end(Library::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_google_auth_library_shows_the_brokers_refusal() {
    refusal_reaches_the_application(Library::Node).await;
}
