//! STS token exchange against a live in-test OIDC issuer: success paths and
//! each documented rejection.

use crate::support as common;

use common::*;
use gcp_emulator::{Config, Emulator};
use serde_json::{Value, json};

async fn setup() -> (Issuer, Emulator) {
    let issuer = Issuer::start().await;
    let config = Config {
        extra_service_accounts: vec![DEPLOYER.to_owned()],
        providers: vec![issuer.provider()],
        impersonation: vec![(DEPLOYER.to_owned(), pool_principal_set())],
        ..Config::default()
    };
    (issuer, start(config).await)
}

#[track_caller]
fn assert_oauth_error(got: &(u16, Value), error: &str, description_contains: &str) {
    let (status, body) = got;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains(description_contains),
        "{description:?} should contain {description_contains:?}"
    );
}

#[tokio::test]
async fn exchange_succeeds_and_the_token_impersonates_via_principal_set() {
    let (issuer, emu) = setup().await;
    let token = issuer.sign(&issuer.claims("repo:acme/app:ref:refs/heads/main"));
    let (status, body) = sts_post(&emu, &sts_form(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!(
        (590..=600).contains(&expires_in),
        "capped by the subject token: {expires_in}"
    );
    let federated = body["access_token"].as_str().unwrap();
    assert!(federated.starts_with("ya29.emu-"));
    assert_eq!(
        emu.token_principal(federated).unwrap(),
        principal("repo:acme/app:ref:refs/heads/main")
    );
    assert_eq!(emu.calls("sts.token"), 1);

    let resp = http()
        .post(format!(
            "{}/v1/projects/-/serviceAccounts/{DEPLOYER}:generateAccessToken",
            emu.base_url()
        ))
        .bearer_auth(federated)
        .json(&json!({"scope": [CLOUD_PLATFORM], "lifetime": "600s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let sa_token = body["accessToken"].as_str().unwrap();
    assert_eq!(emu.token_principal(sa_token).unwrap(), DEPLOYER);
}

#[tokio::test]
async fn long_lived_subject_tokens_get_an_hour() {
    let (issuer, emu) = setup().await;
    let mut claims = issuer.claims("alice");
    claims["exp"] = json!(now() + 7200);
    let (status, body) = sts_post(&emu, &sts_form(&issuer.sign(&claims))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 3600);
}

#[tokio::test]
async fn json_bodies_in_camel_and_snake_case_are_accepted() {
    let (issuer, emu) = setup().await;
    let token = issuer.sign(&issuer.claims("bob"));
    let camel = json!({
        "grantType": TOKEN_EXCHANGE,
        "audience": sts_audience(),
        "scope": CLOUD_PLATFORM,
        "requestedTokenType": ACCESS_TOKEN_TYPE,
        "subjectToken": token,
        "subjectTokenType": "urn:ietf:params:oauth:token-type:id_token",
    });
    let snake: serde_json::Map<String, Value> = sts_form(&token)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    for body in [camel, Value::Object(snake)] {
        let resp = http()
            .post(format!("{}/v1/token", emu.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            emu.token_principal(v["access_token"].as_str().unwrap())
                .unwrap(),
            principal("bob")
        );
    }
}

#[tokio::test]
async fn es256_subject_tokens_verify_against_ec_jwks() {
    let (issuer, emu) = setup().await;
    let ec = TestKey::ec();
    issuer.set_jwks(vec![ec.jwk("ec-1"), issuer_key().jwk(ISSUER_KID)]);
    let token = ec.sign("ec-1", &issuer.claims("ec-subject"));
    let (status, body) = sts_post(&emu, &sts_form(&token)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn request_parameters_are_checked_in_order() {
    let (issuer, emu) = setup().await;
    let good = sts_form(&issuer.sign(&issuer.claims("carol")));
    let with = |key: &str, value: &str| -> Vec<(&'static str, String)> {
        good.iter()
            .map(|(k, v)| {
                (
                    *k,
                    if *k == key {
                        value.to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    };

    let r = sts_post(&emu, &with("grant_type", "client_credentials")).await;
    assert_oauth_error(&r, "unsupported_grant_type", "client_credentials");
    let r = sts_post(
        &emu,
        &with(
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:id_token",
        ),
    )
    .await;
    assert_oauth_error(&r, "invalid_request", "requested_token_type");
    let r = sts_post(
        &emu,
        &with(
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:saml2",
        ),
    )
    .await;
    assert_oauth_error(&r, "invalid_request", "subject_token_type");
    let r = sts_post(&emu, &with("scope", "  ")).await;
    assert_oauth_error(&r, "invalid_request", "scope");
    let r = sts_post(
        &emu,
        &with("audience", &sts_audience().replace(PROVIDER, "nope")),
    )
    .await;
    assert_oauth_error(
        &r,
        "invalid_target",
        "The target service indicated by the \"audience\" parameters is invalid.",
    );
    // The check order: a bad grant type wins over a bad audience.
    let mut both = with("grant_type", "password");
    both[1].1 = "//iam.googleapis.com/nope".to_owned();
    assert_oauth_error(
        &sts_post(&emu, &both).await,
        "unsupported_grant_type",
        "password",
    );

    // A misspelt field name is refused, as Google's request binding does.
    let mut misspelt = good.clone();
    misspelt.push(("subjectTokenn", "x".to_owned()));
    assert_oauth_error(
        &sts_post(&emu, &misspelt).await,
        "invalid_request",
        "subjectTokenn",
    );

    // STS takes no Authorization header.
    let resp = http()
        .post(format!("{}/v1/token", emu.base_url()))
        .bearer_auth("ya29.something")
        .form(&good)
        .send()
        .await
        .unwrap();
    let r = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    assert_oauth_error(&r, "invalid_request", "Authorization");

    // The good request still works after all that.
    assert_eq!(sts_post(&emu, &good).await.0, 200);
}

#[tokio::test]
async fn subject_token_shape_and_issuer_checks() {
    let (issuer, emu) = setup().await;

    let r = sts_post(&emu, &sts_form("not-a-jwt")).await;
    assert_oauth_error(&r, "invalid_grant", "");
    let hs = issuer_key().sign_with_header(
        &json!({"alg": "HS256", "kid": ISSUER_KID}),
        &issuer.claims("x"),
    );
    assert_oauth_error(
        &sts_post(&emu, &sts_form(&hs)).await,
        "invalid_grant",
        "HS256",
    );
    let no_kid = issuer_key().sign_with_header(&json!({"alg": "RS256"}), &issuer.claims("x"));
    assert_oauth_error(
        &sts_post(&emu, &sts_form(&no_kid)).await,
        "invalid_grant",
        "kid",
    );

    let mut claims = issuer.claims("x");
    claims["iss"] = json!(format!("{}/", issuer.url));
    let r = sts_post(&emu, &sts_form(&issuer.sign(&claims))).await;
    assert_oauth_error(&r, "invalid_grant", "does not match the expected ISSUER");

    let unknown_kid = issuer_key().sign("rotated-away", &issuer.claims("x"));
    assert_oauth_error(
        &sts_post(&emu, &sts_form(&unknown_kid)).await,
        "invalid_grant",
        "rotated-away",
    );

    let forged = rogue_key().sign(ISSUER_KID, &issuer.claims("x"));
    assert_oauth_error(
        &sts_post(&emu, &sts_form(&forged)).await,
        "invalid_grant",
        "Invalid JWT signature",
    );

    // The discovery document fetched above is cached (no Cache-Control: the default): a
    // fresh emulator sees the changed one.
    issuer.set_discovery_issuer(&format!("{}/", issuer.url));
    let emu = start(Config {
        providers: vec![issuer.provider()],
        ..Config::default()
    })
    .await;
    let r = sts_post(&emu, &sts_form(&issuer.sign(&issuer.claims("x")))).await;
    assert_oauth_error(
        &r,
        "invalid_grant",
        "`issuer` claim in OIDC discovery document does not match the issuer specified in the request",
    );
}

#[tokio::test]
async fn keys_are_fetched_fresh_on_every_exchange_when_the_issuer_forbids_caching() {
    let (issuer, emu) = setup().await;
    issuer.set_cache_control("no-store");
    let token = issuer.sign(&issuer.claims("dave"));
    assert_eq!(sts_post(&emu, &sts_form(&token)).await.0, 200);
    issuer.set_jwks(vec![rogue_key().jwk("rogue-1")]);
    assert_oauth_error(
        &sts_post(&emu, &sts_form(&token)).await,
        "invalid_grant",
        ISSUER_KID,
    );
    let rotated = rogue_key().sign("rogue-1", &issuer.claims("dave"));
    assert_eq!(sts_post(&emu, &sts_form(&rotated)).await.0, 200);
}

#[tokio::test]
async fn unreachable_discovery_is_invalid_grant() {
    // Port 1 (tcpmux) is never served on loopback here: a connection is refused at once.
    let dead = "http://127.0.0.1:1".to_owned();
    let mut provider = gcp_emulator::Provider::new(PROJECT_NUMBER, POOL, PROVIDER, dead.clone());
    provider.allowed_audiences = vec!["custom-aud".to_owned()];
    let emu = start(Config {
        providers: vec![provider],
        ..Config::default()
    })
    .await;
    let now = now();
    let token = issuer_key().sign(
        ISSUER_KID,
        &json!({"iss": dead, "sub": "x", "aud": "custom-aud", "iat": now, "exp": now + 60}),
    );
    let r = sts_post(&emu, &sts_form(&token)).await;
    assert_oauth_error(
        &r,
        "invalid_grant",
        "discovery document could not be retrieved",
    );
}

type Mutation = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn claim_checks() {
    let (issuer, emu) = setup().await;
    let now = now();
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "wrong audience",
            Box::new(|c| c["aud"] = json!("https://example.com")),
            "does not match the expected audience",
        ),
        (
            "audience as a list without ours",
            Box::new(|c| c["aud"] = json!(["a", "b"])),
            "The audience in ID Token [a, b]",
        ),
        (
            "expired",
            Box::new(move |c| {
                c["iat"] = json!(now - 4000);
                c["exp"] = json!(now - 120)
            }),
            "expired",
        ),
        (
            "too long",
            Box::new(move |c| c["exp"] = json!(now + 86_400 + 10)),
            "24 hours",
        ),
        (
            "issued in the future",
            Box::new(move |c| {
                c["iat"] = json!(now + 600);
                c["exp"] = json!(now + 900)
            }),
            "future",
        ),
        (
            "no exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "exp",
        ),
        (
            "no iat",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            "iat",
        ),
        (
            "no sub",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "sub",
        ),
        ("empty sub", Box::new(|c| c["sub"] = json!("")), "sub"),
        (
            "long sub",
            Box::new(|c| c["sub"] = json!("s".repeat(128))),
            "127 bytes",
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut claims = issuer.claims("erin");
        mutate(&mut claims);
        let r = sts_post(&emu, &sts_form(&issuer.sign(&claims))).await;
        assert_eq!(r.1["error"], "invalid_grant", "{name}: {}", r.1);
        let d = r.1["error_description"].as_str().unwrap();
        assert!(
            d.contains(expected),
            "{name}: {d:?} should contain {expected:?}"
        );
    }
    // Within the skew and at the limits, it passes.
    let mut claims = issuer.claims("s".repeat(127).as_str());
    claims["aud"] = json!(["other", default_audience()]);
    claims["iat"] = json!(now + 30);
    claims["exp"] = json!(now + 30 + 86_400);
    let r = sts_post(&emu, &sts_form(&issuer.sign(&claims))).await;
    assert_eq!(r.0, 200, "{}", r.1);
}

#[tokio::test]
async fn custom_allowed_audiences_replace_the_default() {
    let issuer = Issuer::start().await;
    let mut provider = issuer.provider();
    provider.allowed_audiences = vec!["https://token-service.example".to_owned()];
    let emu = start(Config {
        providers: vec![provider],
        ..Config::default()
    })
    .await;
    let mut claims = issuer.claims("frank");
    assert_eq!(
        sts_post(&emu, &sts_form(&issuer.sign(&claims))).await.1["error"],
        "invalid_grant"
    );
    claims["aud"] = json!("https://token-service.example");
    assert_eq!(
        sts_post(&emu, &sts_form(&issuer.sign(&claims))).await.0,
        200
    );
}
