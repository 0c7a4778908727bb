//! The client policy at fleet scale (issue 15): a policy of one rule per device serves the last
//! device and reloads while serving; `policy check` reports rules that can never match, and
//! `policy explain` names the index that skipped each rule. The decision's equivalence with the
//! plain scan is the unit test `policy::tests::index` (10,000 generated pairs); timings and
//! memory are in BENCHMARKS.md ("Client policy at fleet scale"), not asserted here.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::tls::GRANT;
use crate::support::{self as common, SPIFFE, Server};

const DEVICES: usize = 20_000;

/// One rule per device (`spiffe://tdN.example.org/ns/*/sa/*`, as the issue measured), then the
/// rule for `SPIFFE` last, deciding `decision`.
fn fleet(decision: &str) -> String {
    let mut text = String::new();
    for i in 0..DEVICES {
        let _ = writeln!(
            text,
            "[[rule]]\nname = \"device-{i}\"\ndecision = \"allow\"\n[rule.match]\nspiffe_id = \"spiffe://td{i}.example.org/ns/*/sa/*\""
        );
    }
    let _ = writeln!(
        text,
        "[[rule]]\nname = \"workload\"\ndecision = \"{decision}\"\n[rule.match]\nspiffe_id = \"{SPIFFE}\""
    );
    text
}

#[tokio::test]
async fn a_policy_of_a_rule_per_device_serves_the_last_device_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let policy = common::temp_file(&dir, "policy.toml", &fleet("allow"));
    let file = policy.display().to_string();
    let server = Server::start(&[("POLICY_FILE", &file), ("POLICY_RELOAD_INTERVAL", "1")]);
    let response = common::token(&server, GRANT, &[]).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let other = [(
        "X-Client-Cert-Spiffe",
        "spiffe://td19999.example.org/ns/a/sa/b",
    )];
    assert_eq!(common::token(&server, GRANT, &other).await.status(), 200);
    // A new version of the same size takes over once compiled; until then the old one serves.
    std::fs::write(&policy, fleet("deny")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = common::token(&server, GRANT, &[]).await.status();
        if status == 403 {
            break;
        }
        assert_eq!(
            status, 200,
            "the old policy serves until the new one is ready"
        );
        assert!(Instant::now() < deadline, "the new policy never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::token(&server, GRANT, &other).await.status(), 200);
}

fn run(dir: &tempfile::TempDir, args: &[&str]) -> std::process::Output {
    Command::new(common::BIN)
        .args(args)
        .env_clear()
        .env("DATA_DIR", dir.path().join("data"))
        .current_dir(dir.path())
        .output()
        .unwrap()
}

#[test]
fn policy_check_reports_rules_an_earlier_rule_always_beats() {
    let dir = tempfile::tempdir().unwrap();
    let policy = common::temp_file(
        &dir,
        "policy.toml",
        r#"
[[rule]]
name = "device-7"
decision = "allow"
[rule.match]
spiffe_id = "spiffe://fleet.example.org/device/7"

[[rule]]
name = "device-7-deny"
decision = "deny"
[rule.match]
spiffe_id = "spiffe://fleet.example.org/device/7"
flow = "mtls-client-credentials"

[[rule]]
name = "devices"
decision = "deny"
[rule.match]
spiffe_id = "spiffe://fleet.example.org/device/*"
"#,
    );
    let check = run(&dir, &["policy", "check", policy.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.ends_with("  unreachable: rule 'device-7-deny' (line 8) can never match: rule 'device-7' (line 2) matches every client it would, and decides first\n"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("unreachable").count(), 1, "{stdout}");
}

#[test]
fn policy_explain_names_the_index_that_skipped_a_rule() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..1_000 {
        let _ = writeln!(
            text,
            "[[rule]]\nname = \"device-{i}\"\ndecision = \"allow\"\n[rule.match]\nspiffe_id = \"spiffe://fleet.example.org/device/{i}\""
        );
    }
    let policy = common::temp_file(&dir, "policy.toml", &text);
    let issued = run(
        &dir,
        &[
            "pki",
            "client",
            "--name",
            "device",
            "--spiffe-id",
            "spiffe://fleet.example.org/device/999",
        ],
    );
    assert!(issued.status.success(), "{issued:?}");
    let cert = dir.path().join("data/pki/device.pem");
    let explain = run(
        &dir,
        &[
            "policy",
            "explain",
            "--policy",
            policy.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
    );
    assert!(explain.status.success(), "{explain:?}");
    let stdout = String::from_utf8_lossy(&explain.stdout);
    assert!(
        stdout.contains("  rule 'device-0' (line 1): skipped by the spiffe_id index: spiffe_id 'spiffe://fleet.example.org/device/999' matches none of 'spiffe://fleet.example.org/device/0'\n"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("skipped by the spiffe_id index").count(),
        999,
        "{stdout}"
    );
    assert!(
        stdout.contains("  rule 'device-999' (line 4996): matches: spiffe_id 'spiffe://fleet.example.org/device/999' matches 'spiffe://fleet.example.org/device/999'\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nDecision: ALLOW by rule 'device-999'\n"),
        "{stdout}"
    );
}
