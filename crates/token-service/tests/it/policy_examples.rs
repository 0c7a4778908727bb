//! The policy files in `policy/` and the README's policy commands, as a new user would use them:
//! every file passes `policy check`, each worked example decides as the README says (through
//! `policy explain` on certificates made here), and the README's command block runs as written.

use crate::support as common;
use crate::support::tls as tls_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::BIN;
use tls_support::{Ca, Leaf, Spec};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn policy_dir() -> PathBuf {
    repo().join("policy")
}

fn run(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("POLICY_FILE");
    command
        .env_remove("MTLS_CLIENT_ID_ATTRIBUTE")
        .env_remove("TLS_CLIENT_CA_FILE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

struct Explained {
    code: i32,
    text: String,
}

fn explain(policy: &Path, leaf: &Leaf, ca: &Ca, extra: &[&str], env: &[(&str, &str)]) -> Explained {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, &leaf.chain_pem).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let mut args = vec![
        "policy",
        "explain",
        "--policy",
        policy.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--ca",
        ca_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = run(&args, env, dir.path());
    Explained {
        code: output.status.code().unwrap_or(-1),
        text: text(&output),
    }
}

fn leaf(ca: &Ca, name: &str, spiffe: Option<&str>, dns: Option<&str>) -> Leaf {
    ca.issue(Spec {
        spiffe: spiffe.map(str::to_owned),
        dns: dns.map(str::to_owned),
        uri: None,
        ..Spec::client(name, &[0x42, name.len() as u8])
    })
}

#[test]
fn every_policy_file_in_the_repository_passes_policy_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(policy_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let output = run(&["policy", "check", path.to_str().unwrap()], &[], &repo());
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                text(&output)
            );
            assert!(text(&output).contains("valid"), "{}", text(&output));
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "expected example.toml and the three README examples"
    );
    // And a broken one is refused with its line, exit status 1.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.match]\ndns_san = \"[x\"\n",
    )
    .unwrap();
    let output = run(&["policy", "check", bad.to_str().unwrap()], &[], dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("bad.toml:5:") && text(&output).contains("bad glob"),
        "{}",
        text(&output)
    );
    // A misspelt flow would never match (a deny rule naming it would let everyone by): refused.
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"no-proxies\"\ndecision = \"deny\"\nreason = \"r\"\n[rule.match]\nflow = \"forwarded-cert-client-credential\"\n",
    )
    .unwrap();
    let output = run(&["policy", "check", bad.to_str().unwrap()], &[], dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    for words in [
        "bad.toml:1:",
        "'forwarded-cert-client-credential' is not a flow",
        "forwarded-cert-client-credentials, ",
    ] {
        assert!(text(&output).contains(words), "{words}: {}", text(&output));
    }
}

#[test]
fn example_spiffe_trust_domain_per_workload_class() {
    let policy = policy_dir().join("spiffe-workload-classes.toml");
    let ca = Ca::root("Workload CA");
    let batch = leaf(
        &ca,
        "etl",
        Some("spiffe://prod.example.org/ns/batch/sa/etl"),
        None,
    );
    let web = leaf(
        &ca,
        "frontend",
        Some("spiffe://prod.example.org/ns/web/sa/frontend"),
        None,
    );
    let staging = leaf(
        &ca,
        "etl-staging",
        Some("spiffe://staging.example.org/ns/batch/sa/etl"),
        None,
    );
    let other = leaf(
        &ca,
        "other",
        Some("spiffe://prod.example.org/ns/tools/sa/x"),
        None,
    );
    let cloud = ["--scope", "https://www.googleapis.com/auth/cloud-platform"];

    let e = explain(
        &policy,
        &batch,
        &ca,
        &[
            &[
                "--service-account",
                "batch-etl@prod-project.iam.gserviceaccount.com",
            ],
            &cloud[..],
        ]
        .concat(),
        &[],
    );
    assert_eq!(e.code, 0, "{}", e.text);
    assert!(e.text.contains("ALLOW by rule 'batch'"), "{}", e.text);
    assert!(
        e.text.contains(r#""workload_class":"batch""#)
            && e.text.contains(r#""namespace_path":"/ns/batch/sa/etl""#),
        "{}",
        e.text
    );

    let e = explain(
        &policy,
        &batch,
        &ca,
        &[
            &[
                "--service-account",
                "web-frontend@prod-project.iam.gserviceaccount.com",
            ],
            &cloud[..],
        ]
        .concat(),
        &[],
    );
    assert_eq!(e.code, 1, "{}", e.text);
    assert!(e.text.contains("access_denied"), "{}", e.text);

    let e = explain(
        &policy,
        &web,
        &ca,
        &[
            "--service-account",
            "web-frontend@prod-project.iam.gserviceaccount.com",
        ],
        &[],
    );
    assert_eq!(e.code, 0, "{}", e.text);
    assert!(
        e.text.contains("ALLOW by rule 'web'") && e.text.contains("token lifetime       900 s"),
        "{}",
        e.text
    );

    let e = explain(&policy, &staging, &ca, &[], &[]);
    assert_eq!(e.code, 1, "{}", e.text);
    assert!(
        e.text.contains(
            "DENY by rule 'staging-never': staging workloads must use the staging Token Service"
        ),
        "{}",
        e.text
    );

    let e = explain(&policy, &other, &ca, &[], &[]);
    assert_eq!(e.code, 1, "{}", e.text);
    assert!(e.text.contains("(no rule matched)"), "{}", e.text);

    // A misspelt --flow is bad input (exit 2), not a silent "no rule matched".
    let e = explain(&policy, &batch, &ca, &["--flow", "mtls"], &[]);
    assert_eq!(e.code, 2, "{}", e.text);
    assert!(
        e.text.contains("--flow: 'mtls' is not a flow"),
        "{}",
        e.text
    );
}

#[test]
fn example_device_fleet_keyed_by_dns_san_with_a_revocation_list() {
    // Work on a copy, so the test can revoke a device like an operator would.
    let dir = tempfile::tempdir().unwrap();
    for file in ["device-fleet.toml", "device-fleet-revoked.txt"] {
        std::fs::copy(policy_dir().join(file), dir.path().join(file)).unwrap();
    }
    let policy = dir.path().join("device-fleet.toml");
    let fleet_ca = Ca::root("Fleet Device CA 2026");
    let sensor = leaf(
        &fleet_ca,
        "sensor-0042",
        None,
        Some("sensor-0042.devices.example.com"),
    );
    let env = [("MTLS_CLIENT_ID_ATTRIBUTE", "dns_san")];
    let pubsub = [
        "--service-account",
        "telemetry-writer@fleet-project.iam.gserviceaccount.com",
        "--scope",
        "https://www.googleapis.com/auth/pubsub",
    ];

    let e = explain(&policy, &sensor, &fleet_ca, &pubsub, &env);
    assert_eq!(e.code, 0, "{}", e.text);
    assert!(
        e.text
            .contains("client_id            device-sensor-0042.devices.example.com"),
        "{}",
        e.text
    );
    assert!(
        e.text.contains(r#""fleet":"example-sensors""#),
        "{}",
        e.text
    );

    // Another CA's certificate with a fleet name is not a fleet device.
    let other_ca = Ca::root("Some Other CA");
    let impostor = leaf(
        &other_ca,
        "sensor-0043",
        None,
        Some("sensor-0043.devices.example.com"),
    );
    let e = explain(&policy, &impostor, &other_ca, &[], &env);
    assert_eq!(e.code, 1, "{}", e.text);
    assert!(
        e.text
            .contains("issuer.CN 'Some Other CA' matches none of 'Fleet Device CA*'"),
        "{}",
        e.text
    );

    // Revoke the sensor: append its fingerprint as `openssl x509 -fingerprint -sha256` prints it.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &sensor.der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let mut revoked = std::fs::read_to_string(dir.path().join("device-fleet-revoked.txt")).unwrap();
    revoked.push_str(&format!("{}  # sensor-0042: lost\n", hex.join(":")));
    std::fs::write(dir.path().join("device-fleet-revoked.txt"), revoked).unwrap();
    let e = explain(&policy, &sensor, &fleet_ca, &pubsub, &env);
    assert_eq!(e.code, 1, "{}", e.text);
    assert!(
        e.text.contains("DENY by deny_lists.sha256_fingerprints"),
        "{}",
        e.text
    );
}

#[test]
fn example_single_client_allowed_one_service_account() {
    let policy = policy_dir().join("single-client.toml");
    let ca = Ca::root("CI CA");
    let agent = leaf(
        &ca,
        "release",
        Some("spiffe://ci.example.org/agent/release"),
        None,
    );
    let other = leaf(
        &ca,
        "nightly",
        Some("spiffe://ci.example.org/agent/nightly"),
        None,
    );
    let cloud = ["--scope", "https://www.googleapis.com/auth/cloud-platform"];
    let release = [
        "--service-account",
        "release@ci-project.iam.gserviceaccount.com",
    ];

    let e = explain(
        &policy,
        &agent,
        &ca,
        &[&release[..], &cloud[..]].concat(),
        &[],
    );
    assert_eq!(e.code, 0, "{}", e.text);
    assert!(
        e.text.contains("ALLOW by rule 'release-agent'"),
        "{}",
        e.text
    );
    let e = explain(
        &policy,
        &agent,
        &ca,
        &[
            &[
                "--service-account",
                "admin@ci-project.iam.gserviceaccount.com",
            ],
            &cloud[..],
        ]
        .concat(),
        &[],
    );
    assert_eq!(e.code, 1, "{}", e.text);
    let e = explain(
        &policy,
        &agent,
        &ca,
        &[
            &release[..],
            &[
                "--scope",
                "https://www.googleapis.com/auth/devstorage.full_control",
            ],
        ]
        .concat(),
        &[],
    );
    assert_eq!(e.code, 1, "{}", e.text);
    let e = explain(
        &policy,
        &other,
        &ca,
        &[&release[..], &cloud[..]].concat(),
        &[],
    );
    assert_eq!(e.code, 1, "{}", e.text);
    assert!(e.text.contains("(no rule matched)"), "{}", e.text);
}

#[test]
fn readme_policy_commands_run_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```")
        .skip(1)
        .step_by(2)
        .find(|b| b.contains("policy explain"))
        .expect("README has a block with policy explain");
    // Run in a scratch copy of the repository layout the commands expect.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    for entry in std::fs::read_dir(policy_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("policy").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let mut last = None;
    for line in block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo run -- "))
    {
        let args: Vec<&str> = line["cargo run -- ".len()..].split_whitespace().collect();
        let output = run(&args, &[("DATA_DIR", "")], dir.path());
        assert!(output.status.success(), "{line}: {}", text(&output));
        last = Some(text(&output));
    }
    let last = last.expect("the block runs commands");
    assert!(last.contains("ALLOW by rule 'release-agent'"), "{last}");
}
