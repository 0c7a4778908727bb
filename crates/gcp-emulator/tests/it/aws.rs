//! AWS STS `AssumeRoleWithWebIdentity` against a live in-test OIDC issuer: the
//! successes (form and query API, XML as AWS sends it) and each rejection with
//! its own test.

use crate::support as common;

use common::*;
use gcp_emulator::{
    AwsConfig, AwsOidcProvider, AwsRole, Config, Emulator, Fault, TrustClaim, TrustCondition,
    TrustOperator,
};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const ROLE: &str = "arn:aws:iam::123456789012:role/devices";
const AUD_ROLE: &str = "arn:aws:iam::123456789012:role/path/other-audience";
const AWS_AUD: &str = "sts.amazonaws.com";

fn aws_config(issuer: &Issuer) -> Config {
    let mut role = AwsRole::new(ROLE, issuer.url.clone());
    role.conditions = vec![TrustCondition::new(
        TrustClaim::Sub,
        TrustOperator::StringLike,
        &["device-*", "fleet/?"],
    )];
    role.max_session_duration_secs = 7200;
    let mut aud_role = AwsRole::new(AUD_ROLE, issuer.url.clone());
    aud_role.conditions = vec![TrustCondition::new(
        TrustClaim::Aud,
        TrustOperator::StringEquals,
        &["other-client"],
    )];
    Config {
        aws: AwsConfig {
            oidc_providers: vec![AwsOidcProvider::new(
                issuer.url.clone(),
                &[AWS_AUD, "other-client"],
            )],
            roles: vec![role, aud_role],
            ..AwsConfig::default()
        },
        allow_loopback_issuers: true,
        ..Config::default()
    }
}

async fn setup() -> (Issuer, Emulator) {
    let issuer = Issuer::start().await;
    let emu = start(aws_config(&issuer)).await;
    (issuer, emu)
}

fn claims(issuer: &Issuer, sub: &str) -> Value {
    let now = now();
    json!({"iss": issuer.url, "sub": sub, "aud": AWS_AUD, "iat": now, "exp": now + 600})
}

fn params(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Action", "AssumeRoleWithWebIdentity".to_owned()),
        ("Version", "2011-06-15".to_owned()),
        ("RoleArn", ROLE.to_owned()),
        ("RoleSessionName", "device-1@fleet".to_owned()),
        ("WebIdentityToken", token.to_owned()),
    ]
}

fn with(
    mut params: Vec<(&'static str, String)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    params.retain(|(k, _)| *k != name);
    params.push((name, value.to_owned()));
    params
}

/// POST the form API; returns (status, XML body).
async fn post(emu: &Emulator, form: &[(&str, String)]) -> (u16, String) {
    let resp = http()
        .post(format!("{}/", emu.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The text of the first `<name>` element.
fn field(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[track_caller]
fn assert_aws_error(got: &(u16, String), status: u16, code: &str, message_contains: &str) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{body}");
    assert!(
        body.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"),
        "{body}"
    );
    assert_eq!(field(body, "Code").as_deref(), Some(code), "{body}");
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    assert_eq!(field(body, "Type").as_deref(), Some(kind), "{body}");
    assert!(
        field(body, "RequestId").is_some_and(|r| r.len() == 36),
        "{body}"
    );
    let message = field(body, "Message").unwrap();
    assert!(
        message.contains(message_contains),
        "{message:?} should contain {message_contains:?}"
    );
}

#[tokio::test]
async fn form_api_returns_credentials_as_aws_sends_them() {
    let (issuer, emu) = setup().await;
    let token = issuer.sign(&claims(&issuer, "device-42"));
    let resp = http()
        .post(format!("{}/", emu.base_url()))
        .form(&params(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/xml");
    let request_id = resp.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.text().await.unwrap();
    assert!(body.starts_with("<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"), "{body}");
    assert!(body.contains("<AssumeRoleWithWebIdentityResult>"));
    assert_eq!(field(&body, "RequestId").unwrap(), request_id);
    assert_eq!(
        field(&body, "SubjectFromWebIdentityToken").unwrap(),
        "device-42"
    );
    assert_eq!(field(&body, "Audience").unwrap(), AWS_AUD);
    let host = issuer.url.strip_prefix("http://").unwrap();
    assert_eq!(
        field(&body, "Provider").unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{host}")
    );
    assert_eq!(
        field(&body, "Arn").unwrap(),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/devices/device-1@fleet")
    );
    let role_id = field(&body, "AssumedRoleId").unwrap();
    assert!(
        role_id.starts_with("AROA") && role_id.ends_with(":device-1@fleet"),
        "{role_id}"
    );
    let key_id = field(&body, "AccessKeyId").unwrap();
    assert!(key_id.starts_with("ASIA") && key_id.len() == 20, "{key_id}");
    assert_eq!(field(&body, "SecretAccessKey").unwrap().len(), 40);
    assert!(!field(&body, "SessionToken").unwrap().is_empty());
    let expiration = time::OffsetDateTime::parse(
        &field(&body, "Expiration").unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        (expiration - now() - 3600).abs() <= 5,
        "default duration is an hour"
    );

    let sessions = emu.aws_sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].access_key_id, key_id);
    assert_eq!(sessions[0].role_arn, ROLE);
    assert_eq!(sessions[0].subject, "device-42");
    assert_eq!(emu.calls("aws.sts"), 1);
}

#[tokio::test]
async fn query_api_with_es256_and_a_duration_up_to_the_role_maximum() {
    let (issuer, emu) = setup().await;
    let ec = TestKey::ec();
    issuer.set_jwks(vec![issuer_key().jwk(ISSUER_KID), ec.jwk("ec-1")]);
    let token = ec.sign("ec-1", &claims(&issuer, "fleet/a"));
    let query = with(params(&token), "DurationSeconds", "7200");
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&query)
        .finish();
    let resp = http()
        .get(format!("{}/?{encoded}", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert_eq!(
        field(&body, "SubjectFromWebIdentityToken").unwrap(),
        "fleet/a"
    );
    let s = &emu.aws_sessions()[0];
    assert!((s.expiration - now() - 7200).abs() <= 5);
}

#[tokio::test]
async fn get_root_without_action_is_still_the_metadata_server() {
    let (_issuer, emu) = setup().await;
    let resp = http()
        .get(format!("{}/", emu.base_url()))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "computeMetadata/\n");
    assert_eq!(emu.calls("aws.sts"), 0);
}

#[tokio::test]
async fn an_algorithm_aws_does_not_accept_is_an_invalid_identity_token() {
    let (issuer, emu) = setup().await;
    for alg in ["HS256", "PS256", "none", "EdDSA"] {
        let header = json!({"alg": alg, "kid": ISSUER_KID, "typ": "JWT"});
        let token = issuer_key().sign_with_header(&header, &claims(&issuer, "device-1"));
        let got = post(&emu, &params(&token)).await;
        assert_aws_error(&got, 400, "InvalidIdentityToken", &format!("\"{alg}\""));
    }
}

#[tokio::test]
async fn an_unknown_kid_is_an_invalid_identity_token() {
    let (issuer, emu) = setup().await;
    let token = issuer_key().sign("not-published", &claims(&issuer, "device-1"));
    let got = post(&emu, &params(&token)).await;
    assert_aws_error(
        &got,
        400,
        "InvalidIdentityToken",
        "Couldn't retrieve verification key",
    );
}

#[tokio::test]
async fn a_missing_kid_is_an_invalid_identity_token() {
    let (issuer, emu) = setup().await;
    let token =
        issuer_key().sign_with_header(&json!({"alg": "RS256"}), &claims(&issuer, "device-1"));
    let got = post(&emu, &params(&token)).await;
    assert_aws_error(&got, 400, "InvalidIdentityToken", "no kid");
}

#[tokio::test]
async fn a_bad_signature_is_an_invalid_identity_token() {
    let (issuer, emu) = setup().await;
    let token = rogue_key().sign(ISSUER_KID, &claims(&issuer, "device-1"));
    let got = post(&emu, &params(&token)).await;
    assert_aws_error(&got, 400, "InvalidIdentityToken", "signature");
}

#[tokio::test]
async fn not_a_jwt_is_an_invalid_identity_token() {
    let (_issuer, emu) = setup().await;
    let got = post(&emu, &params("opaque-access-token")).await;
    assert_aws_error(&got, 400, "InvalidIdentityToken", "not a valid JWT");
}

#[tokio::test]
async fn an_audience_outside_the_client_id_list_is_refused() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-1");
    c["aud"] = json!(["https://iam.googleapis.com/x", "api://AzureADTokenExchange"]);
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(
        &got,
        400,
        "InvalidIdentityToken",
        "Incorrect token audience",
    );
}

#[tokio::test]
async fn an_issuer_without_a_registered_provider_is_refused() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-1");
    c["iss"] = json!("https://elsewhere.example");
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(
        &got,
        400,
        "InvalidIdentityToken",
        "No OpenIDConnect provider found in your account for https://elsewhere.example",
    );
}

#[tokio::test]
async fn a_sub_the_trust_condition_does_not_match_is_access_denied() {
    let (issuer, emu) = setup().await;
    for sub in ["laptop-1", "fleet/ab", "Device-1"] {
        let got = post(&emu, &params(&issuer.sign(&claims(&issuer, sub)))).await;
        assert_aws_error(
            &got,
            403,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        );
    }
    assert!(emu.aws_sessions().is_empty());
}

#[tokio::test]
async fn an_aud_the_trust_condition_does_not_match_is_access_denied() {
    let (issuer, emu) = setup().await;
    let form = with(
        params(&issuer.sign(&claims(&issuer, "x1"))),
        "RoleArn",
        AUD_ROLE,
    );
    assert_aws_error(
        &post(&emu, &form).await,
        403,
        "AccessDenied",
        "Not authorized",
    );
    let mut c = claims(&issuer, "x1");
    c["aud"] = json!("other-client");
    let form = with(params(&issuer.sign(&c)), "RoleArn", AUD_ROLE);
    let (status, body) = post(&emu, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "Audience").unwrap(), "other-client");
}

#[tokio::test]
async fn an_unknown_role_is_access_denied() {
    let (issuer, emu) = setup().await;
    let form = with(
        params(&issuer.sign(&claims(&issuer, "device-1"))),
        "RoleArn",
        "arn:aws:iam::123456789012:role/nope",
    );
    assert_aws_error(
        &post(&emu, &form).await,
        403,
        "AccessDenied",
        "Not authorized",
    );
}

#[tokio::test]
async fn an_expired_token_is_an_expired_token_exception() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-1");
    c["iat"] = json!(now() - 1200);
    c["exp"] = json!(now() - 301);
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(
        &got,
        400,
        "ExpiredTokenException",
        "Token expired: current date/time",
    );
    // Within the 300 s skew it is still accepted.
    c["exp"] = json!(now() - 200);
    let (status, body) = post(&emu, &params(&issuer.sign(&c))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-1");
    c["nbf"] = json!(now() + 400);
    c["exp"] = json!(now() + 900);
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(&got, 400, "InvalidIdentityToken", "not valid yet");
}

#[tokio::test]
async fn iat_in_the_future_is_refused() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-1");
    c["iat"] = json!(now() + 400);
    c["exp"] = json!(now() + 900);
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(&got, 400, "InvalidIdentityToken", "issued in the future");
}

#[tokio::test]
async fn a_lifetime_over_the_limit_is_an_idp_rejected_claim() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-1");
    c["iat"] = json!(now() - 60);
    c["exp"] = json!(now() + 24 * 3600);
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(&got, 403, "IDPRejectedClaim", "lifetime");
}

#[tokio::test]
async fn missing_time_claims_or_sub_are_refused() {
    let (issuer, emu) = setup().await;
    let mut c = claims(&issuer, "device-1");
    c.as_object_mut().unwrap().remove("iat");
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(&got, 400, "InvalidIdentityToken", "exp and iat");
    let mut c = claims(&issuer, "device-1");
    c["exp"] = json!(1.5e9 + 0.5);
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(&got, 400, "InvalidIdentityToken", "exp claim");
    let mut c = claims(&issuer, "device-1");
    c.as_object_mut().unwrap().remove("sub");
    let got = post(&emu, &params(&issuer.sign(&c))).await;
    assert_aws_error(&got, 403, "IDPRejectedClaim", "no sub");
}

#[tokio::test]
async fn a_bad_role_session_name_is_a_validation_error() {
    let (issuer, emu) = setup().await;
    let token = issuer.sign(&claims(&issuer, "device-1"));
    let got = post(&emu, &with(params(&token), "RoleSessionName", "device 1/x")).await;
    assert_aws_error(
        &got,
        400,
        "ValidationError",
        "1 validation error detected: Value 'device 1/x' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*",
    );
    let got = post(&emu, &with(params(&token), "RoleSessionName", "a")).await;
    assert_aws_error(
        &got,
        400,
        "ValidationError",
        "Member must have length greater than or equal to 2",
    );
    let got = post(
        &emu,
        &with(params(&token), "RoleSessionName", &"s".repeat(65)),
    )
    .await;
    assert_aws_error(
        &got,
        400,
        "ValidationError",
        "Member must have length less than or equal to 64",
    );
    let (status, _) = post(
        &emu,
        &with(params(&token), "RoleSessionName", &"s".repeat(64)),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_duration_out_of_range_is_a_validation_error() {
    let (issuer, emu) = setup().await;
    let token = issuer.sign(&claims(&issuer, "device-1"));
    let got = post(&emu, &with(params(&token), "DurationSeconds", "899")).await;
    assert_aws_error(
        &got,
        400,
        "ValidationError",
        "Value '899' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900",
    );
    let got = post(&emu, &with(params(&token), "DurationSeconds", "43201")).await;
    assert_aws_error(&got, 400, "ValidationError", "less than or equal to 43200");
    let got = post(&emu, &with(params(&token), "DurationSeconds", "7201")).await;
    assert_aws_error(
        &got,
        400,
        "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
    );
    let got = post(&emu, &with(params(&token), "DurationSeconds", "1h")).await;
    assert_aws_error(&got, 400, "InvalidParameterValue", "DurationSeconds");
    let (status, _) = post(&emu, &with(params(&token), "DurationSeconds", "900")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn missing_parameters_are_listed_in_one_validation_error() {
    let (_issuer, emu) = setup().await;
    let form = vec![
        ("Action", "AssumeRoleWithWebIdentity".to_owned()),
        ("Version", "2011-06-15".to_owned()),
    ];
    let got = post(&emu, &form).await;
    assert_aws_error(
        &got,
        400,
        "ValidationError",
        "3 validation errors detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null;",
    );
    let got = post(&emu, &with(form.clone(), "Version", "2012-01-01")).await;
    assert_aws_error(
        &got,
        400,
        "InvalidAction",
        "Could not find operation AssumeRoleWithWebIdentity for version 2012-01-01",
    );
    let got = post(&emu, &with(form, "Action", "AssumeRole")).await;
    assert_aws_error(&got, 400, "InvalidAction", "AssumeRole");
}

#[tokio::test]
async fn an_unreachable_issuer_is_an_idp_communication_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut config = Config {
        allow_loopback_issuers: true,
        ..Config::default()
    };
    config.aws.oidc_providers = vec![AwsOidcProvider::new(dead.clone(), &[AWS_AUD])];
    config.aws.roles = vec![AwsRole::new(ROLE, dead.clone())];
    let emu = start(config).await;
    let now = now();
    let token = issuer_key().sign(
        ISSUER_KID,
        &json!({"iss": dead, "sub": "d", "aud": AWS_AUD, "iat": now, "exp": now + 60}),
    );
    let got = post(&emu, &params(&token)).await;
    assert_aws_error(
        &got,
        400,
        "IDPCommunicationError",
        "Couldn't retrieve verification key",
    );
}

#[tokio::test]
async fn issuer_urls_aws_refuses_cannot_be_registered() {
    let issuer = Issuer::start().await;
    // The test issuer is http://127.0.0.1:PORT: refused without the local allowance.
    let mut config = aws_config(&issuer);
    config.allow_loopback_issuers = false;
    let err = Emulator::start(config, loopback())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not accepted by AWS IAM: it must start with https://"),
        "{err}"
    );
    assert!(err.contains("--allow-loopback-issuers"), "{err}");
    for (url, problem) in [
        ("https://issuer.example:8443", "it must not name a port"),
        (
            "https://issuer.example/?tenant=a",
            "it must not have a query",
        ),
        ("http://issuer.example", "it must start with https://"),
    ] {
        let mut config = Config {
            allow_loopback_issuers: true,
            ..Config::default()
        };
        config.aws.oidc_providers = vec![AwsOidcProvider::new(url, &[AWS_AUD])];
        let err = Emulator::start(config, loopback())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(problem), "{url}: {err}");
    }
    let mut config = Config::default();
    config.aws.oidc_providers = vec![AwsOidcProvider::new(
        "https://issuer.example/path",
        &[AWS_AUD],
    )];
    config.aws.roles = vec![AwsRole::new(
        "arn:aws:iam::999999999999:role/x",
        "https://issuer.example/path",
    )];
    let err = Emulator::start(config, loopback())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("must look like arn:aws:iam::ACCOUNT:role/NAME"),
        "{err}"
    );
}

#[tokio::test]
async fn injected_faults_answer_in_the_aws_format() {
    let (issuer, emu) = setup().await;
    let token = issuer.sign(&claims(&issuer, "device-1"));
    emu.inject("aws.sts", Fault::status(400).times(1));
    assert_aws_error(
        &post(&emu, &params(&token)).await,
        400,
        "Throttling",
        "Fault injected",
    );
    emu.inject(
        "aws.sts",
        Fault::status(400)
            .times(1)
            .message("IDPCommunicationError: the IdP is down"),
    );
    assert_aws_error(
        &post(&emu, &params(&token)).await,
        400,
        "IDPCommunicationError",
        "the IdP is down",
    );
    emu.inject("aws.sts", Fault::status(503).times(1));
    assert_aws_error(
        &post(&emu, &params(&token)).await,
        503,
        "ServiceUnavailable",
        "",
    );
    let (status, _) = post(&emu, &params(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(emu.calls("aws.sts"), 4);
}

#[tokio::test]
async fn xml_special_characters_in_claims_are_escaped() {
    let (issuer, emu) = setup().await;
    let (status, body) = post(
        &emu,
        &params(&issuer.sign(&claims(&issuer, "device-<1>&\"x\""))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(
            "<SubjectFromWebIdentityToken>device-&lt;1&gt;&amp;\"x\"</SubjectFromWebIdentityToken>"
        ),
        "{body}"
    );
}

/// Sign `claims` with `alg` (RS384/RS512 with the issuer's RSA key; ES384, else ES512, with a
/// fresh EC key) and return the token and the JWK that verifies it.
fn sign_with(alg: &str, kid: &str, claims: &Value) -> (String, Value) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
    let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64(serde_json::to_vec(&header).unwrap()),
        b64(serde_json::to_vec(claims).unwrap())
    );
    let rng = SystemRandom::new();
    let (curve, signing, size) = match alg {
        "RS384" | "RS512" => {
            let TestKey::Rsa(pair) = issuer_key() else {
                unreachable!()
            };
            let padding = if alg == "RS384" {
                &signature::RSA_PKCS1_SHA384
            } else {
                &signature::RSA_PKCS1_SHA512
            };
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(padding, &rng, input.as_bytes(), &mut sig)
                .unwrap();
            let mut jwk = issuer_key().jwk(kid);
            jwk["alg"] = json!(alg);
            return (format!("{input}.{}", b64(sig)), jwk);
        }
        "ES384" => ("P-384", &signature::ECDSA_P384_SHA384_FIXED_SIGNING, 48),
        _ => ("P-521", &signature::ECDSA_P521_SHA512_FIXED_SIGNING, 66),
    };
    let pair = EcdsaKeyPair::generate(signing).unwrap();
    let sig = pair.sign(&rng, input.as_bytes()).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": curve, "alg": alg, "use": "sig", "kid": kid,
        "x": b64(&point[1..=size]), "y": b64(&point[size + 1..])});
    (format!("{input}.{}", b64(sig.as_ref())), jwk)
}

#[tokio::test]
async fn every_algorithm_aws_accepts_verifies() {
    let (issuer, emu) = setup().await;
    // The set changes for each algorithm: not to be cached.
    issuer.set_cache_control("no-store");
    for alg in ["RS384", "RS512", "ES384", "ES512"] {
        let kid = format!("{alg}-key");
        let (token, jwk) = sign_with(alg, &kid, &claims(&issuer, "device-1"));
        issuer.set_jwks(vec![jwk.clone()]);
        let (status, body) = post(&emu, &params(&token)).await;
        assert_eq!(status, 200, "{alg}: {body}");
        // A signature by another key of the same kind does not verify.
        let (forged, _) = sign_with(alg, &kid, &claims(&issuer, "device-2"));
        if alg.starts_with("ES") {
            let got = post(&emu, &params(&forged)).await;
            assert_aws_error(&got, 400, "InvalidIdentityToken", "signature");
        }
    }
}

/// AWS keeps the issuer's discovery document and JWK Set for their `max-age` (its own cache,
/// by the STS's rules): two exchanges, one fetch each.
#[tokio::test]
async fn the_issuers_keys_are_kept_for_their_max_age() {
    let (issuer, emu) = setup().await;
    issuer.set_cache_control("public, max-age=60");
    let token = issuer.sign(&claims(&issuer, "device-1"));
    for _ in 0..2 {
        let (status, body) = post(&emu, &params(&token)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(issuer.fetches(), (1, 1));
}
