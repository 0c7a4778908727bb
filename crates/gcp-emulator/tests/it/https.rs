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

/// An Entra access token from an HTTPS emulator, whose tenant is an OIDC issuer.
async fn https_issuer_token() -> (gcp_emulator::Emulator, String, String) {
    let issuer = Issuer::start().await;
    let upstream = start(Config {
        https: true,
        allow_loopback_issuers: true,
        entra: EntraConfig {
            tenants: vec![EntraTenant {
                tenant_id: "tenant-1".to_owned(),
                apps: vec![EntraApp {
                    client_id: "app-1".to_owned(),
                    federated_credentials: vec![gcp_emulator::FederatedCredential::new(
                        "c",
                        issuer.url.clone(),
                        "device-a",
                    )],
                }],
            }],
        },
        ..Config::default()
    })
    .await;
    let now = now();
    let assertion = issuer.sign(&serde_json::json!({
        "iss": issuer.url, "sub": "device-a", "aud": "api://AzureADTokenExchange",
        "iat": now, "exp": now + 600,
    }));
    let client = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(upstream.ca_pem().unwrap().as_bytes()).unwrap(),
        ])
        .build()
        .unwrap();
    let body: Value = client
        .post(format!(
            "{}/tenant-1/oauth2/v2.0/token",
            upstream.base_url()
        ))
        .form(&[
            ("client_id", "app-1"),
            ("grant_type", "client_credentials"),
            ("scope", "sts.amazonaws.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &assertion),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let iss = format!("{}/tenant-1/v2.0", upstream.base_url());
    (upstream, iss, token)
}

async fn assume(emu: &gcp_emulator::Emulator, token: &str) -> (u16, String) {
    let resp = http()
        .post(format!("{}/", emu.base_url()))
        .form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", "arn:aws:iam::123456789012:role/r"),
            ("RoleSessionName", "chain"),
            ("WebIdentityToken", token),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn an_https_issuer_is_fetched_under_the_issuer_ca_it_is_given() {
    let (upstream, iss, token) = https_issuer_token().await;
    let aws_config = |issuer_ca_pems: Vec<String>| {
        let mut config = Config {
            allow_loopback_issuers: true,
            issuer_ca_pems,
            ..Config::default()
        };
        config.aws.oidc_providers = vec![gcp_emulator::AwsOidcProvider::new(
            iss.clone(),
            &["sts.amazonaws.com"],
        )];
        config.aws.roles = vec![gcp_emulator::AwsRole::new(
            "arn:aws:iam::123456789012:role/r",
            iss.clone(),
        )];
        config
    };
    let untrusting = start(aws_config(vec![])).await;
    let (status, body) = assume(&untrusting, &token).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("<Code>IDPCommunicationError</Code>"),
        "{body}"
    );

    let trusting = start(aws_config(vec![upstream.ca_pem().unwrap().to_owned()])).await;
    let (status, body) = assume(&trusting, &token).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<SubjectFromWebIdentityToken>sp-app-1</SubjectFromWebIdentityToken>"),
        "{body}"
    );
}
