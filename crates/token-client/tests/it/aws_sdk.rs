//! The real AWS SDK for Python (boto3, installed by `.ci/run`) gets a role's credentials
//! from token-client in each of its three ways (issue 13 point 5), against the real broker and
//! the emulator's AWS STS:
//!
//! - web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` (a file `serve --audience-token-file`
//!   keeps fresh) with `AWS_ROLE_ARN`, STS at the emulator (`AWS_ENDPOINT_URL_STS`);
//! - `credential_process = token-client credential-process …` in an AWS config file;
//! - the container provider: `AWS_CONTAINER_CREDENTIALS_FULL_URI` at `serve`'s
//!   `/aws/credentials` with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
//!
//! Each run asserts that boto3 holds the keys the emulator issued to the device.

use std::time::Duration;

use serde_json::Value;

use crate::support::libraries::python;
use crate::support::*;

/// boto3's resolved credentials and their provider's name, as one JSON line.
const SCRIPT: &str = r#"
import json, boto3
credentials = boto3.Session(region_name="us-east-1").get_credentials()
frozen = credentials.get_frozen_credentials()
print(json.dumps({"method": credentials.method, "access_key": frozen.access_key,
                  "secret_key": frozen.secret_key, "token": frozen.token}))
"#;

/// Runs [`SCRIPT`] with only `env` (and PATH, and HOME in the fixture's folder), no other
/// AWS settings.
async fn boto3(f: &Fixture, env: &[(String, String)]) -> Value {
    boto3_after(f, env, "").await
}

/// [`boto3`] after the shell lines `exports` (as the README writes them).
async fn boto3_after(f: &Fixture, env: &[(String, String)], exports: &str) -> Value {
    let home = f.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let interpreter = python().get_program().to_owned();
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!("{exports}\nexec \"$0\" -c \"$1\""))
        .arg(interpreter)
        .arg(SCRIPT)
        .env_clear()
        .env("PATH", env_setting("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().cloned());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "boto3 failed:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    serde_json::from_str(stdout(&output).trim()).unwrap()
}

/// boto3 holds the keys of the emulator's only session of the device.
#[track_caller]
fn assert_emulator_keys(f: &Fixture, got: &Value, method: &str) {
    let sessions = f.emulator.aws_sessions();
    assert_eq!(sessions.len(), 1, "{got}");
    let session = &sessions[0];
    assert_eq!(session.role_arn, AWS_ROLE);
    assert_eq!(session.subject, DEVICE);
    assert_eq!(got["method"], method, "{got}");
    assert_eq!(got["access_key"], session.access_key_id.as_str());
    assert_eq!(got["secret_key"], session.secret_access_key.as_str());
    assert_eq!(got["token"], session.session_token.as_str());
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_web_identity_reads_the_token_file_serve_keeps() {
    let f = Fixture::start().await;
    let file = f.path("aws.jwt");
    let item = format!("{AWS_AUDIENCE}={}", file.display());
    let serve = start_serve(
        &f.client_env(),
        &["--no-metadata", "--audience-token-file", &item],
    );
    for _ in 0..100 {
        if file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(file.exists(), "no token file:\n{}", serve.logs());
    let got = boto3(
        &f,
        &env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &file.display().to_string()),
            ("AWS_ROLE_ARN", AWS_ROLE),
            ("AWS_ROLE_SESSION_NAME", "boto3-device"),
            ("AWS_ENDPOINT_URL_STS", &f.emulator.base_url()),
        ]),
    )
    .await;
    assert_emulator_keys(&f, &got, "assume-role-with-web-identity");
    assert_eq!(f.emulator.aws_sessions()[0].session_name, "boto3-device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_runs_token_client_as_its_credential_process() {
    let f = Fixture::start().await;
    let config = f.path("aws-config");
    std::fs::write(
        &config,
        format!("[default]\ncredential_process = {CLIENT} credential-process --aws-role-arn {AWS_ROLE}\n"),
    )
    .unwrap();
    let mut vars = f.client_env();
    vars.push(("AWS_CONFIG_FILE".into(), config.display().to_string()));
    let got = boto3(&f, &vars).await;
    assert_emulator_keys(&f, &got, "custom-process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_gets_credentials_from_serves_container_endpoint() {
    let f = Fixture::start().await;
    let file = f.path("aws-authorization-token");
    let serve = start_serve(
        &f.client_env(),
        &[
            "--no-metadata",
            "--aws-role-arn",
            AWS_ROLE,
            "--aws-authorization-token-file",
            &file.display().to_string(),
        ],
    );
    let got = boto3(
        &f,
        &env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &format!("{}/aws/credentials", serve.url),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                &file.display().to_string(),
            ),
        ]),
    )
    .await;
    assert_emulator_keys(&f, &got, "container-role");
}

/// The README's block of kind `kind` (`sh`, `ini`) in its AWS credentials paragraph that
/// contains `marker`.
fn readme_block(kind: &str, marker: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("**AWS credentials from token-client.**")
        .expect("README has no AWS credentials paragraph");
    let rest = &readme[start..];
    let rest = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    rest.split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|b| b.strip_prefix(kind)?.strip_prefix('\n'))
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("no {kind} block with {marker:?}"))
        .to_owned()
}

/// The README's two AWS commands as written (the binary's path, the port and HOME replaced):
/// boto3 with its `credential_process` profile, and with `serve`'s container endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_aws_commands_run_as_written() {
    let f = Fixture::start().await;
    let home = f.path("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::create_dir_all(home.join(".cache/token-client")).unwrap();
    let profile = readme_block("ini", "credential_process");
    assert!(profile.contains(AWS_ROLE), "{profile}");
    let profile = profile.replace(
        "= token-client credential-process",
        &format!("= {CLIENT} credential-process"),
    );
    std::fs::write(home.join(".aws/config"), profile).unwrap();
    let mut vars = f.client_env();
    vars.push(("AWS_PROFILE".into(), "device".into()));
    let got = boto3(&f, &vars).await;
    assert_eq!(got["method"], "custom-process", "{got}");
    assert_emulator_keys(&f, &got, "custom-process");

    let block = readme_block("sh", "--aws-authorization-token-file");
    let (serve_line, exports) = block.split_once(" &\n").unwrap();
    assert!(
        serve_line.contains("--listen 127.0.0.1:8955"),
        "{serve_line}"
    );
    let serve_line = serve_line
        .replace("token-client serve", &format!("exec {CLIENT} serve"))
        .replace("127.0.0.1:8955", "127.0.0.1:0");
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(serve_line)
        .env_clear()
        .env("HOME", &home)
        .envs(f.client_env());
    let serve = Process::start(command, "listening on ");
    let exports = exports.replace("http://127.0.0.1:8955", &serve.url);
    std::fs::remove_file(home.join(".aws/config")).unwrap();
    let got = boto3_after(&f, &[], &exports).await;
    assert_eq!(got["method"], "container-role", "{got}");
    let sessions = f.emulator.aws_sessions();
    assert_eq!(sessions.len(), 2);
    assert_eq!(got["access_key"], sessions[1].access_key_id.as_str());
    assert_eq!(got["token"], sessions[1].session_token.as_str());
}
