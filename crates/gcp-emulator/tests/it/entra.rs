//! Microsoft Entra v2 token endpoint with federated identity credentials
//! against a live in-test OIDC issuer: the success, the tenant's discovery
//! document and keys, and each rejection with its own test.

use crate::support as common;

use common::*;
use gcp_emulator::{
    Config, Emulator, EntraApp, EntraConfig, EntraTenant, Fault, FederatedCredential,
};
use serde_json::{Value, json};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const EMPTY_APP: &str = "99999999-2222-3333-4444-555555555555";
const EXCHANGE_AUD: &str = "api://AzureADTokenExchange";
const SCOPE: &str = "https://management.azure.com/.default";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn entra_config(issuer: &Issuer) -> Config {
    let mut custom = FederatedCredential::new("custom-aud", issuer.url.clone(), "device-class-b");
    custom.audiences = vec!["api://custom".to_owned()];
    Config {
        entra: EntraConfig {
            tenants: vec![EntraTenant {
                tenant_id: TENANT.to_owned(),
                apps: vec![
                    EntraApp {
                        client_id: CLIENT.to_owned(),
                        federated_credentials: vec![
                            FederatedCredential::new(
                                "devices",
                                issuer.url.clone(),
                                "device-class-a",
                            ),
                            custom,
                        ],
                    },
                    EntraApp {
                        client_id: EMPTY_APP.to_owned(),
                        federated_credentials: vec![],
                    },
                ],
            }],
        },
        allow_loopback_issuers: true,
        ..Config::default()
    }
}

async fn setup() -> (Issuer, Emulator) {
    let issuer = Issuer::start().await;
    let emu = start(entra_config(&issuer)).await;
    (issuer, emu)
}

fn claims(issuer: &Issuer, sub: &str) -> Value {
    let now = now();
    json!({"iss": issuer.url, "sub": sub, "aud": EXCHANGE_AUD, "iat": now, "nbf": now, "exp": now + 900})
}

fn form(assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", CLIENT.to_owned()),
        ("grant_type", "client_credentials".to_owned()),
        ("scope", SCOPE.to_owned()),
        ("client_assertion_type", ASSERTION_TYPE.to_owned()),
        ("client_assertion", assertion.to_owned()),
    ]
}

fn with(
    mut form: Vec<(&'static str, String)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    form.retain(|(k, _)| *k != name);
    form.push((name, value.to_owned()));
    form
}

async fn post(emu: &Emulator, tenant: &str, form: &[(&str, String)]) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", emu.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[track_caller]
fn assert_aadsts(got: &(u16, Value), status: u16, error: &str, code: u64, contains: &str) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(
        description.contains(contains),
        "{description:?} should contain {contains:?}"
    );
    assert!(
        description.contains(" Trace ID: ") && description.contains(" Correlation ID: "),
        "{description}"
    );
    for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[key].is_string(), "{key} missing: {body}");
    }
}

#[tokio::test]
async fn a_matching_federated_credential_gets_an_access_token() {
    let (issuer, emu) = setup().await;
    let resp = http()
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", emu.base_url()))
        .form(&form(&issuer.sign(&claims(&issuer, "device-class-a"))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();
    let (header, access) = jwt_parts(token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(access["aud"], "https://management.azure.com");
    assert_eq!(access["appid"], CLIENT);
    assert_eq!(access["tid"], TENANT);
    assert_eq!(access["iss"], format!("{}/{TENANT}/v2.0", emu.base_url()));
    assert_eq!(emu.calls("entra.token"), 1);

    // The signing key is in the tenant's JWKS, named by the discovery document.
    let discovery: Value = http()
        .get(format!(
            "{}/{TENANT}/v2.0/.well-known/openid-configuration",
            emu.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/{TENANT}/oauth2/v2.0/token", emu.base_url())
    );
    assert_eq!(discovery["issuer"], access["iss"]);
    assert!(discovery["authorization_endpoint"].is_string());
    let keys: Value = http()
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["kid"], header["kid"]);
    assert_eq!(keys["keys"][0]["use"], "sig");
    assert_eq!(emu.calls("entra.discovery"), 1);
    assert_eq!(emu.calls("entra.keys"), 1);
}

#[tokio::test]
async fn a_credential_with_its_own_audience_matches_only_that_audience() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-class-b");
    c["aud"] = json!("api://custom");
    let (status, body) = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_eq!(status, 200, "{body}");
    let got = post(
        &emu,
        TENANT,
        &form(&issuer.sign(&claims(&issuer, "device-class-b"))),
    )
    .await;
    assert_aadsts(
        &got,
        401,
        "invalid_client",
        700_212,
        "presented assertion audience 'api://AzureADTokenExchange'",
    );
}

#[tokio::test]
async fn an_unknown_issuer_has_no_matching_federated_identity_record() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-class-a");
    c["iss"] = json!("https://token.actions.githubusercontent.com");
    let got = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_aadsts(
        &got,
        401,
        "invalid_client",
        700_211,
        "No matching federated identity record found for presented assertion issuer 'https://token.actions.githubusercontent.com'",
    );
}

#[tokio::test]
async fn a_subject_mismatch_has_no_matching_federated_identity_record() {
    let (issuer, emu) = setup().await;
    let got = post(
        &emu,
        TENANT,
        &form(&issuer.sign(&claims(&issuer, "device-class-c"))),
    )
    .await;
    assert_aadsts(
        &got,
        401,
        "invalid_client",
        700_213,
        "presented assertion subject 'device-class-c'",
    );
    // Matching is case-sensitive, and Entra says so.
    let got = post(
        &emu,
        TENANT,
        &form(&issuer.sign(&claims(&issuer, "Device-Class-A"))),
    )
    .await;
    assert_aadsts(
        &got,
        401,
        "invalid_client",
        7_002_138,
        "case-insensitive comparison, but not with case-sensitive",
    );
}

#[tokio::test]
async fn an_audience_mismatch_has_no_matching_federated_identity_record() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-class-a");
    c["aud"] = json!("sts.amazonaws.com");
    let got = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_aadsts(
        &got,
        401,
        "invalid_client",
        700_212,
        "presented assertion audience 'sts.amazonaws.com'",
    );
}

#[tokio::test]
async fn an_assertion_not_signed_with_rs256_is_refused() {
    let (issuer, emu) = setup().await;
    let ec = TestKey::ec();
    issuer.set_jwks(vec![issuer_key().jwk(ISSUER_KID), ec.jwk("ec-1")]);
    let got = post(
        &emu,
        TENANT,
        &form(&ec.sign("ec-1", &claims(&issuer, "device-class-a"))),
    )
    .await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        50027,
        "must be signed with RS256",
    );
}

#[tokio::test]
async fn an_expired_assertion_is_not_within_its_valid_time_range() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-class-a");
    c["iat"] = json!(now() - 1200);
    c["nbf"] = json!(now() - 1200);
    c["exp"] = json!(now() - 301);
    let got = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_aadsts(
        &got,
        401,
        "invalid_client",
        700_024,
        "Client assertion is not within its valid time range. Current time: ",
    );
    c["exp"] = json!(now() - 200);
    let (status, body) = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_eq!(status, 200, "five minutes' skew: {body}");
}

#[tokio::test]
async fn an_assertion_not_yet_valid_is_not_within_its_valid_time_range() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-class-a");
    c["nbf"] = json!(now() + 400);
    let got = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_aadsts(&got, 401, "invalid_client", 700_024, "assertion valid from");
    let mut c = claims(&issuer, "device-class-a");
    c.as_object_mut().unwrap().remove("nbf");
    c["iat"] = json!(now() + 400);
    let got = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_aadsts(&got, 401, "invalid_client", 700_024, "valid time range");
    let mut c = claims(&issuer, "device-class-a");
    c.as_object_mut().unwrap().remove("exp");
    let got = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_aadsts(&got, 400, "invalid_request", 50027, "no exp claim");
}

#[tokio::test]
async fn a_bad_signature_or_unknown_kid_is_an_invalid_jwt() {
    let (issuer, emu) = setup().await;
    let c = claims(&issuer, "device-class-a");
    let got = post(&emu, TENANT, &form(&rogue_key().sign(ISSUER_KID, &c))).await;
    assert_aadsts(&got, 400, "invalid_request", 50027, "signature is invalid");
    let got = post(&emu, TENANT, &form(&issuer_key().sign("rotated-away", &c))).await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        50027,
        "no key with kid \"rotated-away\"",
    );
    let got = post(&emu, TENANT, &form("not-a-jwt")).await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        50027,
        "JWT token is invalid or malformed.",
    );
}

#[tokio::test]
async fn an_app_without_federated_credentials_has_no_matching_record() {
    let (issuer, emu) = setup().await;
    let f = with(
        form(&issuer.sign(&claims(&issuer, "device-class-a"))),
        "client_id",
        EMPTY_APP,
    );
    let got = post(&emu, TENANT, &f).await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        70021,
        "No matching federated identity record found for presented assertion. Assertion Issuer: ",
    );
}

#[tokio::test]
async fn entra_issued_tokens_are_refused() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-class-a");
    c["iss"] = json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
    let got = post(&emu, TENANT, &form(&issuer.sign(&c))).await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        700_222,
        "AAD-issued tokens may not be used",
    );
}

#[tokio::test]
async fn unknown_tenants_and_apps_and_malformed_requests_are_refused() {
    let (issuer, emu) = setup().await;
    let assertion = issuer.sign(&claims(&issuer, "device-class-a"));
    let got = post(&emu, "no-such-tenant", &form(&assertion)).await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        90002,
        "Tenant 'no-such-tenant' not found.",
    );
    let got = post(&emu, TENANT, &with(form(&assertion), "client_id", "nope")).await;
    assert_aadsts(
        &got,
        400,
        "unauthorized_client",
        700_016,
        "Application with identifier 'nope' was not found in the directory",
    );
    let got = post(
        &emu,
        TENANT,
        &with(
            form(&assertion),
            "scope",
            "https://management.azure.com/user_impersonation",
        ),
    )
    .await;
    assert_aadsts(&got, 400, "invalid_scope", 1_002_012, "/.default");
    let got = post(
        &emu,
        TENANT,
        &with(form(&assertion), "grant_type", "password"),
    )
    .await;
    assert_aadsts(&got, 400, "unsupported_grant_type", 70003, "password");
    let got = post(
        &emu,
        TENANT,
        &with(form(&assertion), "client_assertion_type", "jwt"),
    )
    .await;
    assert_aadsts(
        &got,
        401,
        "invalid_client",
        7_000_216,
        "'client_assertion', 'client_secret' or 'request' is required",
    );
    let mut f = form(&assertion);
    f.retain(|(k, _)| *k != "scope");
    let got = post(&emu, TENANT, &f).await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        900_144,
        "The request body must contain the following parameter: 'scope'.",
    );
    let resp = http()
        .get(format!(
            "{}/no-such-tenant/v2.0/.well-known/openid-configuration",
            emu.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_tenant");
}

#[tokio::test]
async fn registries_entra_refuses_cannot_be_configured() {
    let issuer = Issuer::start().await;
    let mut config = entra_config(&issuer);
    config.entra.tenants[0].apps[0].federated_credentials = (0..21)
        .map(|i| FederatedCredential::new(format!("c{i}"), issuer.url.clone(), format!("s{i}")))
        .collect();
    let err = Emulator::start(config, loopback())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has 21 federated identity credentials; Entra allows at most 20"),
        "{err}"
    );
    let mut config = entra_config(&issuer);
    config.entra.tenants[0].apps[0].federated_credentials[0]
        .audiences
        .push("second".into());
    let err = Emulator::start(config, loopback())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one audience"), "{err}");
    let mut config = entra_config(&issuer);
    let first = config.entra.tenants[0].apps[0].federated_credentials[0].clone();
    config.entra.tenants[0].apps[0]
        .federated_credentials
        .push(FederatedCredential {
            name: "dup".into(),
            ..first
        });
    let err = Emulator::start(config, loopback())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("same issuer and subject"), "{err}");
}

#[tokio::test]
async fn an_http_issuer_needs_the_local_allowance() {
    let issuer = Issuer::start().await;
    let mut config = entra_config(&issuer);
    config.allow_loopback_issuers = false;
    let emu = start(config).await;
    let got = post(
        &emu,
        TENANT,
        &form(&issuer.sign(&claims(&issuer, "device-class-a"))),
    )
    .await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        50027,
        "is not fetched: it must start with https://",
    );
    assert_eq!(emu.calls("entra.token"), 1);
}

#[tokio::test]
async fn injected_faults_answer_in_the_entra_format() {
    let (issuer, emu) = setup().await;
    let assertion = issuer.sign(&claims(&issuer, "device-class-a"));
    emu.inject("entra.token", Fault::status(503).times(1).message("AADSTS50196: The server terminated an operation because it encountered a client request loop."));
    let got = post(&emu, TENANT, &form(&assertion)).await;
    assert_eq!(got.0, 503);
    assert_eq!(got.1["error"], "temporarily_unavailable");
    assert_eq!(got.1["error_codes"], json!([50196]));
    assert!(
        got.1["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS50196: The server terminated")
    );
    let (status, _) = post(&emu, TENANT, &form(&assertion)).await;
    assert_eq!(status, 200);
    assert_eq!(emu.calls("entra.token"), 2);
}

#[tokio::test]
async fn a_key_whose_use_is_not_sig_is_refused() {
    let (issuer, emu) = setup().await;
    let mut jwk = issuer_key().jwk(ISSUER_KID);
    jwk["use"] = json!("sign");
    issuer.set_jwks(vec![jwk]);
    let got = post(
        &emu,
        TENANT,
        &form(&issuer.sign(&claims(&issuer, "device-class-a"))),
    )
    .await;
    assert_aadsts(
        &got,
        400,
        "invalid_request",
        50027,
        "a signing key must say \"sig\"",
    );
}
