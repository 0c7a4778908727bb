//! The emulator over HTTPS with its own CA (`Config::https`): every API on the one port,
//! trusted through the CA PEM and refused without it.

use crate::support as common;

use common::*;
use gcp_emulator::{Config, EntraApp, EntraConfig, EntraTenant};
use serde_json::Value;

#[tokio::test]
async fn https_serves_google_and_entra_endpoints_under_the_generated_ca() {
    let config = Config {
        https: true,
        entra: EntraConfig {
            tenants: vec![EntraTenant {
                tenant_id: "tenant-1".to_owned(),
                apps: vec![EntraApp {
                    client_id: "app-1".to_owned(),
                    federated_credentials: vec![],
                }],
            }],
        },
        ..Config::default()
    };
    let emu = start(config).await;
    let base = emu.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let ca = emu.ca_pem().unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    let refused = untrusting
        .get(format!(
            "{base}/tenant-1/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await;
    assert!(refused.is_err(), "a client without the CA must not connect");

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let url = format!(
            "https://{host}:{}/tenant-1/v2.0/.well-known/openid-configuration",
            emu.addr().port()
        );
        let discovery: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            discovery["token_endpoint"],
            format!("{base}/tenant-1/oauth2/v2.0/token")
        );
    }
    let project = client
        .get(format!("{base}/computeMetadata/v1/project/project-id"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(project, "demo-project");
    let key_file: Value =
        serde_json::from_str(&emu.service_account_key_json(DEFAULT_SA).unwrap()).unwrap();
    assert_eq!(key_file["token_uri"], format!("{base}/token"));
}
