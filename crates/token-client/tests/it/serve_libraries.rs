//! Google's own libraries against `token-client serve`, as unmodified applications: Python
//! google-auth and Node google-auth-library through the emulated metadata server
//! (`GCE_METADATA_HOST` and `GCE_METADATA_IP`), and Python's identity-pool credentials with
//! the file source and the URL source (configurations written by `token-client
//! google-config`), which exchange the ID token at the emulated STS themselves.
//!
//! Needs what `.ci/run` installs (see [`crate::support::libraries`]) and `node` on PATH.

use std::process::Command;

use serde_json::Value;

use crate::serve::{broker_audience, claims, serve_metadata};
use crate::support::libraries;
use crate::support::*;

/// Prints the ID token that google.oauth2.id_token.fetch_id_token gets for `AUDIENCE`
/// (through the metadata server's identity endpoint).
const FETCH_ID_TOKEN_PY: &str = r#"
import os, json
import google.auth.transport.requests
import google.oauth2.id_token
request = google.auth.transport.requests.Request()
print(json.dumps({"token": google.oauth2.id_token.fetch_id_token(request, os.environ["AUDIENCE"])}))
"#;

/// Runs a library with a clean environment plus what the command set and `env`; its JSON
/// line.
async fn library(mut command: Command, home: &std::path::Path, env: &[(&str, String)]) -> Value {
    libraries::clear_env_keeping_own(&mut command);
    command.env("HOME", home).env("SCOPE", SCOPE);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

fn metadata_env(serve: &Process) -> Vec<(&'static str, String)> {
    let host = serve.url.trim_start_matches("http://").to_owned();
    vec![
        ("GCE_METADATA_HOST", host.clone()),
        ("GCE_METADATA_IP", host),
    ]
}

async fn metadata_token(serve: &Process) -> String {
    let path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let answer = get(&serve.url, path, &[FLAVOR]).await;
    answer.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_google_auth_uses_the_metadata_server() {
    let f = Fixture::start().await;
    let serve = serve_metadata(&f, &[]);
    let env = metadata_env(&serve);
    let got = library(libraries::google_auth_py(), f.dir.path(), &env).await;
    assert_eq!(
        got["type"], "google.auth.compute_engine.credentials",
        "{got}"
    );
    assert_eq!(got["token"], metadata_token(&serve).await.as_str());
    let mut env = env;
    env.push(("AUDIENCE", broker_audience()));
    let mut fetch = libraries::python();
    fetch.args(["-c", FETCH_ID_TOKEN_PY]);
    let id = library(fetch, f.dir.path(), &env).await;
    let id = id["token"].as_str().unwrap();
    assert_eq!(claims(id)["aud"], broker_audience());
    assert_eq!(claims(id)["sub"], DEVICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_google_auth_library_uses_the_metadata_server() {
    let f = Fixture::start().await;
    let serve = serve_metadata(&f, &[]);
    let got = library(
        libraries::google_auth_js(),
        f.dir.path(),
        &metadata_env(&serve),
    )
    .await;
    assert_eq!(got["token"], metadata_token(&serve).await.as_str(), "{got}");
}

/// `token-client google-config` for `source` with the emulator's STS and impersonation.
async fn config(f: &Fixture, name: &str, source: &[&str]) -> String {
    let path = f.path(name).display().to_string();
    let base = f.emulator.base_url();
    let sts = format!("{base}/v1/token");
    let mut args = vec![
        "google-config",
        "--audience",
        POOL_AUDIENCE,
        "--config-file",
        &path,
        "--service-account",
        TARGET_SA,
        "--sts-url",
        &sts,
        "--iam-credentials-endpoint",
        &base,
    ];
    args.extend_from_slice(source);
    let output = run_client(&args, &f.client_env()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_identity_pool_credentials_use_the_token_file_and_the_url() {
    let f = Fixture::start().await;
    let file = f.path("token.jwt").display().to_string();
    let serve = start_serve(&f.client_env(), &["--no-metadata", "--token-file", &file]);
    let address = serve.url.trim_start_matches("http://").to_owned();
    for _ in 0..50 {
        if std::path::Path::new(&file).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let file_config = config(
        &f,
        "file.json",
        &["--source", "file", "--token-file", &file],
    )
    .await;
    let url_config = config(&f, "url.json", &["--source", "url", "--listen", &address]).await;
    for credentials in [file_config, url_config] {
        let env = [("GOOGLE_APPLICATION_CREDENTIALS", credentials.clone())];
        let got = library(libraries::google_auth_py(), f.dir.path(), &env).await;
        assert_eq!(
            got["type"], "google.auth.identity_pool",
            "{credentials}: {got}"
        );
        assert!(!got["token"].as_str().unwrap().is_empty());
    }
}
