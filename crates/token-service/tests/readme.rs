//! The README as a contract: its settings table names every setting, and its local
//! end-to-end walkthrough (emulator + Token Service + curl) runs as written, with only the
//! ports and `cargo run` replaced by the built binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
    for setting in token_service::config::SETTINGS {
        assert!(
            readme.contains(&format!("`{}`", setting.name)),
            "README does not document {}",
            setting.name
        );
    }
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

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(script: &str, dir: &std::path::Path) -> Killed {
    Killed(
        Command::new("bash")
            .arg("-c")
            .arg(format!("exec env {script}"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough_with_the_emulator_runs_as_written() {
    let readme = readme();
    let (emu_port, ts_port) = (free_port(), free_port());
    let ports = |s: String| {
        s.replace("9090", &emu_port.to_string())
            .replace("8080", &ts_port.to_string())
    };
    let emulator = ports(block(&readme, "cargo run -p gcp-emulator")).replace(
        "cargo run -p gcp-emulator --",
        emulator_binary().to_str().unwrap(),
    );
    // The README's service listens on the default port; here it gets a free one.
    let service = format!(
        "PORT={ts_port} {}",
        ports(block(&readme, "SIGNER=iam")).replace("cargo run --", BIN)
    );
    let curl = ports(block(&readme, "service_account=storage-reader"));
    let dir = tempfile::tempdir().unwrap();
    let _emulator = spawn(&emulator, dir.path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _service = spawn(&service, dir.path());
    let ready = format!("http://127.0.0.1:{ts_port}/readyz");
    let mut ok = false;
    for _ in 0..100 {
        if client()
            .get(&ready)
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
        "Token Service from the README did not become ready:\n{service}"
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
        .get(format!("http://127.0.0.1:{emu_port}/emulator/calls"))
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
