//! The example of "Writing a custom flow": a flow defined outside the crate, registered with
//! one line, served on a real loopback socket next to the built-in flow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support as common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use common::{AUDIENCE, SPIFFE, client, ec_key_pem, lb_headers, temp_file, verify};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use token_service::config::source::{Origin, Values};
use token_service::config::{KnownFlows, load};
use token_service::flows::{Flow, FlowError, FlowRegistry};
use token_service::model::{
    AuthenticatedClient, CLIENT_CREDENTIALS, CertificateFacts, TokenRequest,
};

/// Example flow: clients from a static table authenticate with `client_id` and
/// `client_secret` form parameters (RFC 6749 §2.3.1, `client_secret_post`).
struct StaticClientsFlow {
    clients: BTreeMap<String, String>,
}

#[async_trait]
impl Flow for StaticClientsFlow {
    fn name(&self) -> &str {
        "static-client-credentials"
    }
    fn grant_type(&self) -> &str {
        CLIENT_CREDENTIALS
    }
    fn auth_method(&self) -> &str {
        "client_secret_post"
    }
    fn can_handle(&self, request: &TokenRequest) -> bool {
        request.params.contains_key("client_id") && request.params.contains_key("client_secret")
    }
    async fn authenticate(&self, request: &TokenRequest) -> Result<AuthenticatedClient, FlowError> {
        let id = request.params.get("client_id").cloned().unwrap_or_default();
        let secret = request
            .params
            .get("client_secret")
            .cloned()
            .unwrap_or_default();
        let expected = self
            .clients
            .get(&id)
            .ok_or_else(|| FlowError::Unauthorized(format!("Unknown client '{id}'")))?;
        if !bool::from(expected.as_bytes().ct_eq(secret.as_bytes())) {
            return Err(FlowError::Unauthorized("Wrong client secret".into()));
        }
        Ok(AuthenticatedClient {
            flow: self.name().into(),
            client_id: id,
            facts: CertificateFacts::default(),
        })
    }
}

async fn start() -> String {
    let mut registry = FlowRegistry::builtin();
    registry.register("static-client-credentials", "client_secret_post", |_| {
        Ok(Arc::new(StaticClientsFlow {
            clients: BTreeMap::from([("batch-job".into(), "pw-123".into())]),
        }))
    });
    let dir = tempfile::tempdir().unwrap();
    let key = temp_file(&dir, "k.pem", &ec_key_pem());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let values: Values = [
        (
            "AUTH_FLOWS",
            "xlb-mtls-client-credentials, static-client-credentials",
        ),
        ("TOKEN_ISSUER", base.as_str()),
        ("TOKEN_AUDIENCE", AUDIENCE),
        ("SIGNING_KEY_FILE", key.to_str().unwrap()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), (v.to_owned(), Origin::Env)))
    .collect();
    let config = load(values, KnownFlows(&registry.names())).unwrap();
    let router = token_service::app::build(&config, &registry)
        .unwrap()
        .router;
    tokio::spawn(async move {
        std::mem::forget(dir);
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    base
}

async fn post(base: &str, body: &str, lb: bool) -> reqwest::Response {
    let mut request = client()
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if lb {
        for (k, v) in lb_headers(SPIFFE) {
            request = request.header(k, v);
        }
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn registered_custom_flow_issues_tokens_and_appears_in_discovery() {
    let base = start().await;
    let doc: Value = client()
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["tls_client_auth", "client_secret_post"])
    );

    let response = post(
        &base,
        "grant_type=client_credentials&client_id=batch-job&client_secret=pw-123",
        false,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let claims = verify(body["id_token"].as_str().unwrap(), &base, AUDIENCE).await;
    assert_eq!(claims["sub"], "batch-job");
    assert_eq!(claims["amr"], json!(["static-client-credentials"]));
    assert_eq!(claims["client"]["x5_spiffe"], "");

    let wrong = post(
        &base,
        "grant_type=client_credentials&client_id=batch-job&client_secret=nope",
        false,
    )
    .await;
    assert_eq!(wrong.status(), 403);
    let none = post(&base, "grant_type=client_credentials", false).await;
    assert_eq!(none.status(), 400);
}

#[tokio::test]
async fn first_enabled_flow_that_can_handle_the_request_wins() {
    let base = start().await;
    let body: Value = post(
        &base,
        "grant_type=client_credentials&client_id=batch-job&client_secret=pw-123",
        true,
    )
    .await
    .json()
    .await
    .unwrap();
    let claims = verify(body["id_token"].as_str().unwrap(), &base, AUDIENCE).await;
    assert_eq!(claims["amr"], json!(["xlb-mtls-client-credentials"]));
    assert_eq!(claims["sub"], SPIFFE);
}
