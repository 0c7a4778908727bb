//! Interoperability with Google's own client library: Python `google-auth` runs an
//! executable-sourced external-account credential whose command calls Token Service with
//! `format=external_credential`, parses our response with its own parser, and exchanges the ID
//! token at STS (the emulator; current google-auth accepts any token URL) for an access token,
//! optionally impersonating a service account.
//!
//! Needs a Python with google-auth: `.ci/run` creates `.venv` at the repository root; set
//! TOKEN_SERVICE_TEST_PYTHON to use another interpreter.

use crate::support as common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use gcp_emulator::{Config as EmulatorConfig, Emulator, Provider};

const PROJECT_NUMBER: &str = "123456789012";
const SA: &str = "storage-reader@demo-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TOKEN_SERVICE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    assert!(
        venv.exists(),
        "no Python with google-auth: run .ci/run (it creates .venv) or set TOKEN_SERVICE_TEST_PYTHON"
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_auth_accepts_our_executable_response_and_gets_access_tokens() {
    let listener = listener();
    let issuer = format!("http://127.0.0.1:{}", port_of(&listener));
    let config = EmulatorConfig {
        project_number: PROJECT_NUMBER.into(),
        extra_service_accounts: vec![SA.into()],
        providers: vec![Provider {
            project_number: PROJECT_NUMBER.into(),
            pool_id: "devices".into(),
            provider_id: "token-service".into(),
            issuer_uri: issuer.clone(),
            allowed_audiences: vec![],
        }],
        impersonation: vec![(
            SA.into(),
            format!(
                "principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/devices/*"
            ),
        )],
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = Server::start_on(
        listener,
        &[
            ("TOKEN_AUDIENCE", ""),
            ("WORKLOAD_IDENTITY_PROJECT_NUMBER", PROJECT_NUMBER),
            ("WORKLOAD_IDENTITY_POOL_ID", "devices"),
            ("WORKLOAD_IDENTITY_PROVIDER_ID", "token-service"),
        ],
    );
    // The executable a device would configure: curl with its certificate; here curl plays the
    // load balancer's headers.
    let script = temp_file(
        &server.dir,
        "token-command.sh",
        &format!(
            "#!/bin/sh\nexec curl -sS {issuer}/token -H 'X-Client-Cert-Present: true' -H 'X-Client-Cert-Chain-Verified: true' \
             -H 'X-Client-Cert-Spiffe: {SPIFFE}' -d grant_type=client_credentials -d format=external_credential\n"
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let audience = format!(
        "//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/devices/providers/token-service"
    );
    let base = emulator.base_url();
    for impersonate in [false, true] {
        let mut command = Command::new(python());
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/support/google_auth_exec.py"
            ))
            .env("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("COMMAND", &script)
            .env("AUDIENCE", &audience)
            .env("STS_URL", format!("{base}/v1/token"))
            .env("SCOPE", SCOPE);
        if impersonate {
            command.env(
                "IMPERSONATION_URL",
                format!("{base}/v1/projects/-/serviceAccounts/{SA}:generateAccessToken"),
            );
        }
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "google-auth failed against {}:\n{}",
            server.base,
            String::from_utf8_lossy(&output.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let principal = emulator
            .token_principal(result["token"].as_str().unwrap())
            .unwrap();
        if impersonate {
            assert_eq!(principal, SA);
        } else {
            assert!(
                principal.ends_with(&format!("/subject/{SPIFFE}")),
                "{principal}"
            );
        }
    }
    assert_eq!(emulator.calls("sts.token"), 2);
}
