//! The README as a contract: its settings table names every setting, its custom flow is the
//! example that runs, and its local
//! end-to-end walkthrough (emulator + Token Service + curl) runs as written, with only the
//! ports and `cargo run` replaced by the built binaries.

use crate::support as common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap()
}

fn block(readme: &str, marker: &str) -> String {
    readme
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.trim_start_matches("sh").trim().to_owned())
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("README has no code block with {marker:?}"))
}

#[test]
fn readme_settings_table_names_every_setting() {
    let readme = readme();
    for setting in builtin_settings() {
        assert!(
            readme.contains(&format!("`{}`", setting.name)),
            "README does not document {}",
            setting.name
        );
    }
}

/// "Writing a custom flow" shows the example that `tests/it/custom_flow.rs` runs as the real
/// server, verbatim: the README cannot drift from code that compiles and serves tokens.
#[test]
fn readme_custom_flow_is_the_example_that_runs() {
    let readme = readme();
    let shown = block(&readme, "cli::main_with");
    let shown = shown.trim_start_matches("rust").trim();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/custom_flow.rs"
    ))
    .unwrap();
    assert_eq!(
        shown,
        example.trim(),
        "README and examples/custom_flow.rs differ"
    );
}

fn emulator_binary() -> PathBuf {
    let path = PathBuf::from(BIN).with_file_name("gcp-emulator");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "gcp-emulator", "--bin", "gcp-emulator"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

/// `script` as a shell runs it, the last program exec'd (so its process is the script's).
fn shell(script: &str) -> Command {
    let mut command = Command::new("bash");
    command.arg("-c").arg(format!("exec env {script}"));
    command
}

/// `from` replaced by `to` in `text`, which must contain it.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    text.replace(from, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_with_the_emulator_runs_as_written() {
    let readme = readme();
    // The README's commands name fixed ports, each in the other's command line. The emulator
    // binds port 0 and logs its address; the service's issuer, whose discovery document the
    // emulator reads, is a listener the test holds and forwards to the service, which binds
    // port 0 and logs its address too.
    let front = listener();
    let issuer = format!("127.0.0.1:{}", port_of(&front));
    let emulator = block(&readme, "cargo run -p gcp-emulator");
    let emulator = substitute(&emulator, "--port 9090", "--port 0");
    let emulator = substitute(&emulator, "127.0.0.1:8080", &issuer);
    let emulator = substitute(
        &emulator,
        "cargo run -p gcp-emulator --",
        emulator_binary().to_str().unwrap(),
    );
    let emulator = Server::spawn_command(None, shell(&emulator), tempfile::tempdir().unwrap());
    let emu = format!("127.0.0.1:{}", emulator.port);
    // The README's service listens on the default port; here on one the kernel picks.
    let service = block(&readme, "SIGNER=iam");
    let service = substitute(&service, "127.0.0.1:9090", &emu);
    let service = substitute(&service, "127.0.0.1:8080", &issuer);
    let service = format!("PORT=0 {}", substitute(&service, "cargo run --", BIN));
    let service = Server::spawn_command(Some(front), shell(&service), tempfile::tempdir().unwrap());
    let curl = block(&readme, "service_account=storage-reader");
    let curl = substitute(&curl, "127.0.0.1:8080", &issuer);
    let mut ok = false;
    for _ in 0..100 {
        if client()
            .get(service.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "Token Service from the README did not become ready:\n{}",
        service.logs()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash").arg("-c").arg(&curl).output().unwrap()
    })
    .await
    .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert!(body["id_token"].is_string(), "{body}");
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert!(body["access_token"].as_str().unwrap().len() > 10, "{body}");
    let calls: Value = client()
        .get(emulator.url("/emulator/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["iam.generateAccessToken"], 1, "{calls}");
    assert_eq!(calls["sts.token"], 1, "{calls}");
}

/// The README's "run it" command picks the service's binary from the repository root (a
/// workspace with two binaries needs the right default member). Run as written but with
/// `--help` instead of `demo` and without `--release`, so the test does not build twice.
#[test]
fn readme_run_command_selects_the_service_binary_from_the_repository_root() {
    let readme = readme();
    let run = block(&readme, "-- demo");
    assert_eq!(
        run, "cargo run --release -- demo",
        "the README's first command changed"
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--", "--help"])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("token-service") && stdout.contains("demo"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Python with PyJWT: TOKEN_SERVICE_TEST_PYTHON, else the `.venv` that `.ci/run` creates.
fn python_with_pyjwt() -> PathBuf {
    let python = std::env::var("TOKEN_SERVICE_TEST_PYTHON").map_or_else(
        |_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.venv/bin/python"
            ))
        },
        PathBuf::from,
    );
    let ok = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} has no PyJWT: run .ci/run (it creates .venv with PyJWT) or set TOKEN_SERVICE_TEST_PYTHON",
        python.display()
    );
    python
}

/// The quick start's verification runs as written (only the port and the Python interpreter
/// replaced) against `demo`: PyJWT fetches the keys, checks signature, audience and issuer, and
/// prints the claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_token_verifies_with_pyjwt_as_written() {
    let readme = readme();
    let verify = block(&readme, "PyJWKClient");
    assert_eq!(verify.lines().count(), 2, "two lines:\n{verify}");
    assert!(
        readme.contains("audience `token-service-demo`"),
        "the README names the demo's audience"
    );
    // On `PORT=0`, which the harness sets: `demo` names the port it bound in its issuer and its
    // curl line, and logs it.
    let server = Server::spawn(&["demo"], Vec::new(), tempfile::tempdir().unwrap());
    let port = server.port;
    let python = python_with_pyjwt();
    let script = verify
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"))
        .replace("python3 -c", &format!("{} -c", python.display()));
    let dir = server.dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{verify}\n{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    for claim in [
        "'aud': 'token-service-demo'",
        &format!("'iss': 'https://127.0.0.1:{port}'"),
        "'sub': 'spiffe://token-service.local/ns/demo/sa/device-1'",
    ] {
        assert!(stdout.contains(claim), "{claim} not in {stdout}");
    }
}

/// The install line names the service's package, whose binary is `token-service`, and a lock
/// file `--locked` can use.
#[test]
fn readme_install_line_names_the_service_package() {
    let readme = readme();
    let install = block(&readme, "cargo install");
    assert_eq!(
        install,
        "cargo install --path crates/token-service --locked"
    );
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    assert!(root.join("Cargo.lock").is_file());
    let manifest = std::fs::read_to_string(root.join("crates/token-service/Cargo.toml")).unwrap();
    let manifest: toml::Table = manifest.parse().unwrap();
    let bins = manifest["bin"].as_array().unwrap();
    assert!(
        bins.iter()
            .any(|b| b["name"].as_str() == Some("token-service")),
        "{bins:?}"
    );
    // The README's other commands run the binary under that name.
    assert!(readme.contains("token-service serve"));
}

/// The rows of a `doctor` table that failed, as (rule, cloud).
fn failed_rows(table: &str) -> std::collections::BTreeSet<(String, String)> {
    table
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.get(2) == Some(&"FAIL")).then(|| (words[0].to_owned(), words[1].to_owned()))
        })
        .collect()
}

/// "Checking federation: doctor" runs as written against `demo` (only the port and
/// `cargo run --release --` replaced): it exits 1, and the rows that fail are the ones the
/// README shows, word for word but the port.
#[test]
fn readme_doctor_against_the_demo_fails_the_rules_it_shows() {
    let readme = readme();
    let command = block(&readme, "-- doctor");
    let shown = block(&readme, "issuer-public-host        aws");
    let shown = shown.trim_start_matches("text").trim();
    let server = Server::spawn(&["demo"], Vec::new(), tempfile::tempdir().unwrap());
    let port = server.port.to_string();
    let script = substitute(&command, "127.0.0.1:8443", &format!("127.0.0.1:{port}"));
    let script = substitute(&script, "cargo run --release --", BIN);
    let out = Command::new("bash")
        .args(["-c", &script])
        .env_clear()
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!failed_rows(shown).is_empty(), "{shown}");
    assert_eq!(failed_rows(&stdout), failed_rows(shown), "{stdout}");
    let as_shown = stdout.replace(&format!("port {port}"), "port 8443");
    for line in shown.lines() {
        assert!(
            as_shown.lines().any(|l| l == line),
            "{line:?} not in:\n{stdout}"
        );
    }
}
