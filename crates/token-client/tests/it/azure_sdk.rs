//! The real Azure Identity library for Python (azure-identity with MSAL, installed by
//! `.ci/run`) gets an Entra access token with `WorkloadIdentityCredential` from the federated
//! token file that `token-client serve --audience-token-file api://AzureADTokenExchange=PATH`
//! keeps fresh (issue 13 point 5), against the real broker and the emulator's Entra v2 token
//! endpoint.
//!
//! azure-identity accepts only an https authority, so the emulator serves HTTPS with a CA of its
//! own, which the library trusts through `REQUESTS_CA_BUNDLE` (and serves the tenant's discovery
//! document, should MSAL ask); `disable_instance_discovery=True` keeps MSAL from asking
//! login.microsoftonline.com about the authority. The emulator's app trusts the broker through
//! a federated identity credential whose subject is the device's SPIFFE ID; it fetches the
//! broker's discovery document and keys as Entra does, and takes RS256 only, so this broker
//! signs with an RSA key.

use std::time::Duration;

use base64::Engine as _;
use gcp_emulator::{
    Config as EmulatorConfig, Emulator, EntraApp, EntraConfig, EntraTenant, FederatedCredential,
};
use serde_json::Value;

use crate::support::libraries::python;
use crate::support::*;

const TENANT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
/// The app whose federated credential names [`DEVICE`].
const APP: &str = "11111111-2222-3333-4444-555555555555";
/// An app whose only federated credential names another subject.
const OTHER_APP: &str = "22222222-2222-3333-4444-555555555555";
const SCOPE_GRAPH: &str = "https://graph.microsoft.com/.default";

/// One token from `WorkloadIdentityCredential` (settings from the environment, as a pod
/// with workload identity has them), as a JSON line; an error is printed to stderr with its
/// message (which carries the AADSTS code).
const SCRIPT: &str = r#"
import json, sys
from azure.identity import WorkloadIdentityCredential
from azure.core.exceptions import ClientAuthenticationError
credential = WorkloadIdentityCredential(disable_instance_discovery=True)
try:
    token = credential.get_token(sys.argv[1])
except ClientAuthenticationError as error:
    print(error.message, file=sys.stderr)
    sys.exit(3)
print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
"#;

/// The emulated tenant (over HTTPS): [`APP`] trusts `issuer` for [`DEVICE`] with Entra's
/// default audience, [`OTHER_APP`] for another subject.
async fn entra(issuer: &str) -> Emulator {
    let config = EmulatorConfig {
        https: true,
        allow_loopback_issuers: true,
        entra: EntraConfig {
            tenants: vec![EntraTenant {
                tenant_id: TENANT.into(),
                apps: vec![
                    EntraApp {
                        client_id: APP.into(),
                        federated_credentials: vec![FederatedCredential::new(
                            "devices", issuer, DEVICE,
                        )],
                    },
                    EntraApp {
                        client_id: OTHER_APP.into(),
                        federated_credentials: vec![FederatedCredential::new(
                            "others",
                            issuer,
                            "spiffe://example.org/ns/prod/sa/someone-else",
                        )],
                    },
                ],
            }],
        },
        ..EmulatorConfig::default()
    };
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Runs [`SCRIPT`] for `client_id` with only the workload identity variables (and PATH, HOME).
async fn azure_identity(
    f: &Fixture,
    emulator: &Emulator,
    client_id: &str,
    token_file: &str,
) -> std::process::Output {
    let ca = f.path("entra-ca.pem");
    std::fs::write(&ca, emulator.ca_pem().unwrap()).unwrap();
    let home = f.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = python();
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg(SCOPE_GRAPH)
        .env_clear()
        .env("PATH", env_setting("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AZURE_AUTHORITY_HOST", emulator.base_url())
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", client_id)
        .env("AZURE_FEDERATED_TOKEN_FILE", token_file)
        .env("REQUESTS_CA_BUNDLE", &ca);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// The claims of a JWT, unverified.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// `serve` keeping the federated token file for Entra's audience; waits for the file.
async fn serve_entra_file(f: &Fixture) -> (Process, String) {
    let file = f.path("azure-federated.jwt");
    let item = format!("{ENTRA_AUDIENCE}={}", file.display());
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
    (serve, file.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_credential_reads_the_token_file_serve_keeps() {
    let f = Fixture::with_rsa_signing_key().await;
    let emulator = entra(&f.issuer()).await;
    let (_serve, file) = serve_entra_file(&f).await;
    let federated = claims(std::fs::read_to_string(&file).unwrap().trim());
    assert_eq!(federated["aud"], ENTRA_AUDIENCE);
    assert_eq!(federated["sub"], DEVICE);

    let output = azure_identity(&f, &emulator, APP, &file).await;
    assert!(
        output.status.success(),
        "azure-identity failed:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    let got: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let access = claims(got["token"].as_str().unwrap());
    assert_eq!(access["appid"], APP, "{access}");
    assert_eq!(access["tid"], TENANT);
    assert_eq!(access["aud"], "https://graph.microsoft.com");
    assert_eq!(
        access["iss"],
        format!("{}/{TENANT}/v2.0", emulator.base_url())
    );
    // One assertion reached the token endpoint, over HTTPS with the emulator's CA.
    assert_eq!(emulator.calls("entra.token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_whose_credential_names_another_subject_refuses_the_device() {
    let f = Fixture::with_rsa_signing_key().await;
    let emulator = entra(&f.issuer()).await;
    let (_serve, file) = serve_entra_file(&f).await;
    let output = azure_identity(&f, &emulator, OTHER_APP, &file).await;
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(message.contains("AADSTS700213"), "{message}");
    assert_eq!(emulator.calls("entra.token"), 1);
}
