//! The `gcp-emulator` binary: help text, the listening line, serving, SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gcp-emulator");

#[tokio::test]
async fn help_documents_flags_endpoints_and_admin_api() {
    let out = Command::new(BIN).arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--port",
        "--bind",
        "--project-id",
        "--project-number",
        "--service-account",
        "--extra-service-account",
        "--provider",
        "--allow-impersonation",
        "--metadata-token-lifetime",
        "--max-impersonation-lifetime",
        "/computeMetadata/v1/",
        ":signJwt",
        ":generateAccessToken",
        "/v1/token",
        "/service_accounts/v1/metadata/jwk/",
        "/emulator/faults",
        "/emulator/calls",
        "/emulator/reset",
        "--aws-oidc-provider",
        "--aws-role",
        "--aws-role-condition",
        "--aws-role-max-session",
        "--entra-app",
        "--entra-federated-credential",
        "--allow-loopback-issuers",
        "--https-ca-out",
        "Action=AssumeRoleWithWebIdentity",
        "/{TENANT}/oauth2/v2.0/token",
        "/{TENANT}/v2.0/.well-known/openid-configuration",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let bad = Command::new(BIN)
        .args(["--provider", "no-slash=https://x"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
}

#[tokio::test]
async fn binary_prints_its_listening_line_and_serves_until_sigterm() {
    let mut child = Command::new(BIN)
        .args([
            // Port 0: the emulator picks one and names it in its listening line.
            "--port", "0",
            "--project-id", "cli-project",
            "--extra-service-account", "deployer@cli-project.iam.gserviceaccount.com",
            "--provider", "pool/prov=https://issuer.example",
            "--allow-impersonation", "deployer@cli-project.iam.gserviceaccount.com=token-service@demo-project.iam.gserviceaccount.com",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = line
        .strip_prefix("gcp-emulator listening on ")
        .unwrap_or_else(|| panic!("not the listening line: {line}"))
        .to_owned();
    let port: u16 = base
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("not a loopback URL: {base}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0, "{line}");

    let client = reqwest::Client::new();
    let project = client
        .get(format!("{base}/computeMetadata/v1/project/project-id"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(project, "cli-project");
    let token: serde_json::Value = client
        .get(format!(
            "{base}/computeMetadata/v1/instance/service-accounts/default/token"
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client
        .post(format!("{base}/v1/projects/-/serviceAccounts/deployer@cli-project.iam.gserviceaccount.com:generateAccessToken"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(&serde_json::json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}))
        .send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let calls: serde_json::Value = client
        .get(format!("{base}/emulator/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["iam.generateAccessToken"], 1);

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[tokio::test]
async fn binary_serves_https_and_writes_its_ca_for_aws_and_entra_flags() {
    let dir = std::env::temp_dir().join(format!("gcp-emulator-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    let role = "arn:aws:iam::123456789012:role/devices";
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--https-ca-out"])
        .arg(&ca_path)
        .args([
            "--allow-loopback-issuers",
            "--aws-oidc-provider",
            "http://127.0.0.1:8080=sts.amazonaws.com,other",
            "--aws-role",
            &format!("{role}=http://127.0.0.1:8080"),
            "--aws-role-condition",
            &format!("{role}=sub:StringLike:device-*"),
            "--aws-role-max-session",
            &format!("{role}=7200"),
            "--entra-federated-credential",
            "tenant-1/app-1=http://127.0.0.1:8080|device-class-a",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = line
        .strip_prefix("gcp-emulator listening on ")
        .unwrap_or_else(|| panic!("not the listening line: {line}"))
        .to_owned();
    assert!(base.starts_with("https://127.0.0.1:"), "{line}");
    let ca = std::fs::read(&ca_path).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let discovery: serde_json::Value = client
        .get(format!(
            "{base}/tenant-1/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], format!("{base}/tenant-1/v2.0"));
    // The role exists: a token from an unregistered issuer is refused by the token check,
    // not by the role lookup.
    let resp = client
        .post(format!("{base}/"))
        .form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", "cli"),
            ("WebIdentityToken", "e30.e30.sig"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("<Code>InvalidIdentityToken</Code>")
    );
    child.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn registrations_the_clouds_refuse_stop_the_binary() {
    for args in [
        vec![
            "--aws-oidc-provider",
            "http://127.0.0.1:8080=sts.amazonaws.com",
        ],
        vec![
            "--aws-oidc-provider",
            "https://issuer.example:8443=sts.amazonaws.com",
        ],
        vec![
            "--aws-role-condition",
            "arn:aws:iam::123456789012:role/r=sub:StringLike:x",
        ],
        vec![
            "--aws-role-condition",
            "arn:aws:iam::123456789012:role/r=iss:StringLike:x",
        ],
        vec![
            "--entra-federated-credential",
            "tenant-only=https://issuer.example|s",
        ],
    ] {
        let out = Command::new(BIN)
            .args(["--port", "0"])
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?} should be refused");
    }
}
