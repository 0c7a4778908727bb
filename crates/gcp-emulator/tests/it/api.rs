//! Metadata server, IAM Credentials, service-account JWKS, the OAuth token
//! endpoint for ADC files, and fault injection, over real loopback HTTP.

use crate::support as common;

use std::time::{Duration, Instant};

use common::*;
use gcp_emulator::{Config, Emulator, Fault};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

fn md(emu: &Emulator, path: &str) -> String {
    format!("{}/computeMetadata/v1/{path}", emu.base_url())
}

fn iam(emu: &Emulator, email: &str, method: &str) -> String {
    format!(
        "{}/v1/projects/-/serviceAccounts/{email}:{method}",
        emu.base_url()
    )
}

async fn post_json(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = http().post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[track_caller]
fn assert_google_error(got: &(u16, Value), code: u16, status: &str, message_contains: &str) {
    let (http_status, body) = got;
    assert_eq!(*http_status, code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(message_contains),
        "{message:?} should contain {message_contains:?}"
    );
}

// ---------------------------------------------------------------- metadata

#[tokio::test]
async fn metadata_requires_the_flavor_header() {
    let emu = start(Config::default()).await;
    for path in [
        "instance/service-accounts/default/email",
        "instance/service-accounts/default/token",
        "project/project-id",
    ] {
        let resp = http().get(md(&emu, path)).send().await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["metadata-flavor"], "Google");
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("Missing Metadata-Flavor:Google header")
        );
        let wrong = http()
            .get(md(&emu, path))
            .header("Metadata-Flavor", "google-ish")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 403);
    }
    assert_eq!(emu.calls("metadata.token"), 2);
    assert_eq!(emu.token_principal("nothing"), None);
}

#[tokio::test]
async fn metadata_serves_email_token_and_project() {
    let emu = start(Config {
        project_id: "my-proj".into(),
        project_number: "555".into(),
        metadata_token_lifetime_secs: 1234,
        ..Config::default()
    })
    .await;
    let get = |path: &str| {
        http()
            .get(md(&emu, path))
            .header("Metadata-Flavor", "Google")
            .send()
    };

    let resp = get("instance/service-accounts/default/email")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["metadata-flavor"], "Google");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(resp.text().await.unwrap(), DEFAULT_SA);
    assert_eq!(
        get("project/project-id")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "my-proj"
    );
    assert_eq!(
        get("project/numeric-project-id")
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "555"
    );

    let resp = get("instance/service-accounts/default/token?scopes=a,b")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 1234);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("ya29.emu-"));
    assert_eq!(emu.token_principal(token).unwrap(), DEFAULT_SA);

    let by_email = get(&format!("instance/service-accounts/{DEFAULT_SA}/email"))
        .await
        .unwrap();
    assert_eq!(by_email.status(), 200);
    let missing = get("instance/service-accounts/default/nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["metadata-flavor"], "Google");
    assert_eq!(get("project/zone").await.unwrap().status(), 404);

    assert_eq!(emu.calls("metadata.email"), 2);
    assert_eq!(emu.calls("metadata.project"), 2);
    assert_eq!(emu.calls("metadata.token"), 1);
}

// ---------------------------------------------------------------- IAM signJwt

fn sign_config() -> Config {
    Config {
        extra_service_accounts: vec![DEPLOYER.to_owned()],
        token_creators: vec![(DEPLOYER.to_owned(), DEFAULT_SA.to_owned())],
        ..Config::default()
    }
}

#[tokio::test]
async fn sign_jwt_signs_with_a_key_published_in_the_jwks() {
    let emu = start(sign_config()).await;
    let token = metadata_token(&emu).await;
    let exp = now() + 600;
    let payload =
        json!({"iss": DEFAULT_SA, "sub": "user-1", "aud": "https://ts.example", "exp": exp});
    let r = post_json(
        &iam(&emu, DEFAULT_SA, "signJwt"),
        Some(&token),
        &json!({"payload": payload.to_string()}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let key_id = r.1["keyId"].as_str().unwrap();
    assert_eq!(key_id.len(), 40);
    assert!(key_id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    let jwt = r.1["signedJwt"].as_str().unwrap();
    let (header, _) = jwt_parts(jwt);
    assert_eq!(header, json!({"alg": "RS256", "kid": key_id, "typ": "JWT"}));

    let resp = http()
        .get(format!(
            "{}/service_accounts/v1/metadata/jwk/{DEFAULT_SA}",
            emu.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let raw: Value = resp.json().await.unwrap();
    assert_eq!(raw["keys"][0]["kty"], "RSA");
    assert_eq!(raw["keys"][0]["alg"], "RS256");
    assert_eq!(raw["keys"][0]["use"], "sig");
    let set: JwkSet = serde_json::from_value(raw).unwrap();
    let key = DecodingKey::from_jwk(set.find(key_id).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["https://ts.example"]);
    validation.set_issuer(&[DEFAULT_SA]);
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], "user-1");
    assert_eq!(data.claims["exp"], exp);

    // As a token creator, the default SA may sign as the deployer too.
    let r = post_json(
        &iam(&emu, DEPLOYER, "signJwt"),
        Some(&token),
        &json!({"payload": "{\"sub\":\"x\"}"}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    // A missing exp is added, one hour ahead.
    let (_, claims) = jwt_parts(r.1["signedJwt"].as_str().unwrap());
    let added = claims["exp"].as_i64().unwrap() - now();
    assert!((3590..=3600).contains(&added), "{added}");
    assert_eq!(emu.calls("iam.signJwt"), 2);
    assert_eq!(emu.calls("jwks"), 1);

    let unknown = http()
        .get(format!(
            "{}/service_accounts/v1/metadata/jwk/ghost@demo-project.iam.gserviceaccount.com",
            emu.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn sign_jwt_refusals() {
    let emu = start(Config {
        extra_service_accounts: vec![DEPLOYER.to_owned()],
        ..Config::default()
    })
    .await;
    let token = metadata_token(&emu).await;
    let url = iam(&emu, DEFAULT_SA, "signJwt");
    let ok_body = json!({"payload": "{\"sub\":\"x\"}"});

    // Authentication.
    assert_google_error(
        &post_json(&url, None, &ok_body).await,
        401,
        "UNAUTHENTICATED",
        "missing required authentication",
    );
    assert_google_error(
        &post_json(&url, Some("ya29.forged"), &ok_body).await,
        401,
        "UNAUTHENTICATED",
        "invalid authentication",
    );
    let resp = http()
        .post(&url)
        .header("Authorization", format!("Basic {token}"))
        .json(&ok_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));

    // Permission: nobody made the default SA a token creator on the deployer.
    let r = post_json(&iam(&emu, DEPLOYER, "signJwt"), Some(&token), &ok_body).await;
    assert_google_error(
        &r,
        403,
        "PERMISSION_DENIED",
        "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not exist).",
    );

    // Payload limits.
    let far = json!({"payload": json!({"sub": "x", "exp": now() + 12 * 3600 + 60}).to_string()});
    assert_google_error(
        &post_json(&url, Some(&token), &far).await,
        400,
        "INVALID_ARGUMENT",
        "12 hours",
    );
    let near = json!({"payload": json!({"sub": "x", "exp": now() + 12 * 3600 - 60}).to_string()});
    assert_eq!(post_json(&url, Some(&token), &near).await.0, 200);
    let past = json!({"payload": json!({"exp": now() - 10}).to_string()});
    assert_google_error(
        &post_json(&url, Some(&token), &past).await,
        400,
        "INVALID_ARGUMENT",
        "past",
    );
    for bad in [
        json!({"payload": "[1,2]"}),
        json!({"payload": "not json"}),
        json!({}),
        json!({"payload": {"sub": "x"}}),
    ] {
        assert_google_error(
            &post_json(&url, Some(&token), &bad).await,
            400,
            "INVALID_ARGUMENT",
            "",
        );
    }
    // Wrong field name, as Google's proto-JSON parser reports it.
    let r = post_json(&url, Some(&token), &json!({"claims": "{}"})).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT", "Unknown name \"claims\"");
    let resp = http()
        .post(&url)
        .bearer_auth(&token)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Resource names.
    let r = post_json(
        &iam(
            &emu,
            "ghost@demo-project.iam.gserviceaccount.com",
            "signJwt",
        ),
        Some(&token),
        &ok_body,
    )
    .await;
    assert_google_error(
        &r,
        404,
        "NOT_FOUND",
        "Gaia id not found for email ghost@demo-project.iam.gserviceaccount.com",
    );
    let wrong_project = format!(
        "{}/v1/projects/demo-project/serviceAccounts/{DEFAULT_SA}:signJwt",
        emu.base_url()
    );
    assert_google_error(
        &post_json(&wrong_project, Some(&token), &ok_body).await,
        400,
        "INVALID_ARGUMENT",
        "-",
    );
    assert_eq!(
        post_json(&iam(&emu, DEFAULT_SA, "signBlobby"), Some(&token), &ok_body)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn self_signing_can_be_withheld() {
    let emu = start(Config {
        self_sign_allowed: false,
        ..Config::default()
    })
    .await;
    let token = metadata_token(&emu).await;
    let r = post_json(
        &iam(&emu, DEFAULT_SA, "signJwt"),
        Some(&token),
        &json!({"payload": "{}"}),
    )
    .await;
    assert_google_error(&r, 403, "PERMISSION_DENIED", "iam.serviceAccounts.signJwt");
}

// ---------------------------------------------------------------- IAM generateAccessToken

#[tokio::test]
async fn generate_access_token_checks_grants_scopes_and_lifetimes() {
    let emu = start(Config {
        extra_service_accounts: vec![
            DEPLOYER.to_owned(),
            "other@demo-project.iam.gserviceaccount.com".to_owned(),
        ],
        impersonation: vec![(DEPLOYER.to_owned(), DEFAULT_SA.to_owned())],
        max_impersonation_lifetime_secs: 7200,
        ..Config::default()
    })
    .await;
    let token = metadata_token(&emu).await;
    let url = iam(&emu, DEPLOYER, "generateAccessToken");

    let r = post_json(
        &url,
        Some(&token),
        &json!({"scope": [CLOUD_PLATFORM], "lifetime": "7200s"}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let access = r.1["accessToken"].as_str().unwrap();
    assert_eq!(emu.token_principal(access).unwrap(), DEPLOYER);
    let expire = time::OffsetDateTime::parse(
        r.1["expireTime"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(r.1["expireTime"].as_str().unwrap().ends_with('Z'));
    let delta = expire.unix_timestamp() - now();
    assert!((7190..=7200).contains(&delta), "{delta}");

    let default_lifetime = post_json(&url, Some(&token), &json!({"scope": [CLOUD_PLATFORM]})).await;
    assert_eq!(default_lifetime.0, 200);

    // The impersonated token can itself call IAM (it carries cloud-platform).
    let r = post_json(
        &iam(&emu, DEPLOYER, "signJwt"),
        Some(access),
        &json!({"payload": "{}"}),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);

    let r = post_json(
        &iam(
            &emu,
            "other@demo-project.iam.gserviceaccount.com",
            "generateAccessToken",
        ),
        Some(&token),
        &json!({"scope": [CLOUD_PLATFORM]}),
    )
    .await;
    assert_google_error(
        &r,
        403,
        "PERMISSION_DENIED",
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
    );

    for lifetime in ["7201s", "0s", "3600", "1h", "-5s", "0.5s"] {
        let r = post_json(
            &url,
            Some(&token),
            &json!({"scope": [CLOUD_PLATFORM], "lifetime": lifetime}),
        )
        .await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT", "lifetime");
    }
    for body in [json!({"scope": []}), json!({}), json!({"lifetime": "60s"})] {
        assert_google_error(
            &post_json(&url, Some(&token), &body).await,
            400,
            "INVALID_ARGUMENT",
            "scope",
        );
    }
    let r = post_json(&url, Some(&token), &json!({"scopes": [CLOUD_PLATFORM]})).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT", "Unknown name \"scopes\"");
    let r = post_json(&url, Some(&token), &json!({"scope": CLOUD_PLATFORM})).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT", "Invalid value at 'scope'");
    assert_google_error(
        &post_json(&url, None, &json!({"scope": [CLOUD_PLATFORM]})).await,
        401,
        "UNAUTHENTICATED",
        "",
    );
    assert_eq!(emu.calls("iam.generateAccessToken"), 15);
}

#[tokio::test]
async fn delegation_chains_need_every_hop_and_tokens_need_scope() {
    let emu = start(Config {
        extra_service_accounts: vec![
            DEPLOYER.to_owned(),
            "hop@demo-project.iam.gserviceaccount.com".to_owned(),
        ],
        impersonation: vec![
            (
                "hop@demo-project.iam.gserviceaccount.com".to_owned(),
                format!("serviceAccount:{DEFAULT_SA}"),
            ),
            (
                DEPLOYER.to_owned(),
                "hop@demo-project.iam.gserviceaccount.com".to_owned(),
            ),
        ],
        ..Config::default()
    })
    .await;
    let token = metadata_token(&emu).await;
    let url = iam(&emu, DEPLOYER, "generateAccessToken");
    let direct = post_json(&url, Some(&token), &json!({"scope": [CLOUD_PLATFORM]})).await;
    assert_eq!(direct.0, 403);
    let chained = json!({"scope": [CLOUD_PLATFORM], "delegates": ["projects/-/serviceAccounts/hop@demo-project.iam.gserviceaccount.com"]});
    let r = post_json(&url, Some(&token), &chained).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let bad = json!({"scope": [CLOUD_PLATFORM], "delegates": ["hop@demo-project.iam.gserviceaccount.com"]});
    assert_google_error(
        &post_json(&url, Some(&token), &bad).await,
        400,
        "INVALID_ARGUMENT",
        "delegate",
    );

    // A metadata token minted for an unrelated scope may not call IAM.
    let body: Value = http()
        .get(md(&emu, "instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/userinfo.email"))
        .header("Metadata-Flavor", "Google")
        .send().await.unwrap().json().await.unwrap();
    let narrow = body["access_token"].as_str().unwrap();
    let r = post_json(
        &iam(&emu, DEFAULT_SA, "signJwt"),
        Some(narrow),
        &json!({"payload": "{}"}),
    )
    .await;
    assert_google_error(
        &r,
        403,
        "PERMISSION_DENIED",
        "insufficient authentication scopes",
    );
}

// ---------------------------------------------------------------- ADC / OAuth token endpoint

async fn token_post(emu: &Emulator, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/token", emu.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn jwt_bearer_with_a_service_account_key_file() {
    let emu = start(sign_config()).await;
    let file: Value =
        serde_json::from_str(&emu.service_account_key_json(DEPLOYER).unwrap()).unwrap();
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["project_id"], "demo-project");
    assert_eq!(file["client_email"], DEPLOYER);
    assert_eq!(file["token_uri"], format!("{}/token", emu.base_url()));
    let kid = file["private_key_id"].as_str().unwrap();
    assert_eq!(kid.len(), 40);
    let pem = file["private_key"].as_str().unwrap();
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n")
            && pem.ends_with("-----END PRIVATE KEY-----\n")
    );
    assert!(
        emu.service_account_key_json("ghost@demo-project.iam.gserviceaccount.com")
            .is_err()
    );

    // Sign the assertion the way a client library does: PKCS#8 from the PEM.
    let der: Vec<u8> = {
        use base64::Engine;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let key = TestKey::Rsa(aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der).unwrap());
    let now = now();
    let claims = |aud: &str, iat: i64, exp: i64| json!({"iss": DEPLOYER, "aud": aud, "scope": CLOUD_PLATFORM, "iat": iat, "exp": exp});
    let token_uri = file["token_uri"].as_str().unwrap();
    let assertion = key.sign(kid, &claims(token_uri, now, now + 3600));
    let r = token_post(
        &emu,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ],
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["token_type"], "Bearer");
    assert_eq!(r.1["expires_in"], 3599);
    let access = r.1["access_token"].as_str().unwrap();
    assert_eq!(emu.token_principal(access).unwrap(), DEPLOYER);

    // The created key is published alongside the Google-managed one.
    let set: Value = http()
        .get(format!(
            "{}/service_accounts/v1/metadata/jwk/{DEPLOYER}",
            emu.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid)
    );

    let jwt_bearer = |assertion: String| {
        let emu = emu.clone();
        async move {
            token_post(
                &emu,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &assertion),
                ],
            )
            .await
        }
    };
    let r = jwt_bearer(key.sign(kid, &claims(token_uri, now, now + 3601))).await;
    assert_eq!(
        (r.0, r.1["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );
    assert!(
        r.1["error_description"]
            .as_str()
            .unwrap()
            .contains("short-lived")
    );
    let r = jwt_bearer(key.sign(kid, &claims("https://example.com/token", now, now + 60))).await;
    assert_eq!(r.1["error"], "invalid_grant");
    let r = jwt_bearer(rogue_key().sign(kid, &claims(token_uri, now, now + 60))).await;
    assert_eq!(r.1["error"], "invalid_grant");
    assert_eq!(r.1["error_description"], "Invalid JWT Signature.");
    let mut no_scope = claims(token_uri, now, now + 60);
    no_scope.as_object_mut().unwrap().remove("scope");
    assert_eq!(
        jwt_bearer(key.sign(kid, &no_scope)).await.1["error"],
        "invalid_scope"
    );
    let mut other = claims(token_uri, now, now + 60);
    other["iss"] = json!("ghost@demo-project.iam.gserviceaccount.com");
    assert_eq!(
        jwt_bearer(key.sign(kid, &other)).await.1["error"],
        "invalid_grant"
    );

    let r = token_post(&emu, &[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (r.0, r.1["error"].as_str().unwrap()),
        (400, "unsupported_grant_type")
    );
    assert_eq!(emu.calls("oauth.token"), 7);
}

#[tokio::test]
async fn refresh_token_with_an_authorized_user_file() {
    let emu = start(Config::default()).await;
    let file: Value = serde_json::from_str(&emu.authorized_user_json("dev@example.com")).unwrap();
    assert_eq!(file["type"], "authorized_user");
    let s = |k: &str| file[k].as_str().unwrap().to_owned();
    let (id, secret, refresh) = (s("client_id"), s("client_secret"), s("refresh_token"));
    assert_eq!(s("token_uri"), format!("{}/token", emu.base_url()));

    let r = token_post(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["expires_in"], 3599);
    assert_eq!(r.1["token_type"], "Bearer");
    let access = r.1["access_token"].as_str().unwrap();
    assert_eq!(emu.token_principal(access).unwrap(), "dev@example.com");

    // HTTP Basic client authentication works too.
    let resp = http()
        .post(format!("{}/token", emu.base_url()))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let r = token_post(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", "wrong"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(
        (r.0, r.1["error"].as_str().unwrap()),
        (401, "invalid_client")
    );
    let r = token_post(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "nope"),
            ("client_secret", &secret),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(
        (r.0, r.1["error"].as_str().unwrap()),
        (401, "invalid_client")
    );
    let r = token_post(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("refresh_token", "1//other"),
        ],
    )
    .await;
    assert_eq!(
        (r.0, r.1["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );
    let r = token_post(&emu, &[("client_id", &id)]).await;
    assert_eq!(
        (r.0, r.1["error"].as_str().unwrap()),
        (400, "invalid_request")
    );
    let json_body = http()
        .post(format!("{}/token", emu.base_url()))
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 400);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn faults_via_the_handle() {
    let emu = start(sign_config()).await;
    let token = metadata_token(&emu).await;
    let url = iam(&emu, DEFAULT_SA, "signJwt");
    let body = json!({"payload": "{}"});

    emu.inject(
        "iam.signJwt",
        Fault::status(503).times(2).message("backend is sad"),
    );
    for _ in 0..2 {
        assert_google_error(
            &post_json(&url, Some(&token), &body).await,
            503,
            "UNAVAILABLE",
            "backend is sad",
        );
    }
    assert_eq!(post_json(&url, Some(&token), &body).await.0, 200);
    assert_eq!(emu.calls("iam.signJwt"), 3);

    // Each API fails in its own format.
    emu.inject("metadata.token", Fault::status(500).times(1));
    let resp = http()
        .get(md(&emu, "instance/service-accounts/default/token"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["metadata-flavor"], "Google");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    emu.inject("sts.token", Fault::status(429));
    let r = sts_post(&emu, &sts_form("x")).await;
    assert_eq!(r.0, 429);
    assert!(r.1["error"].is_string() && r.1["error_description"].is_string());
    emu.inject("oauth.token", Fault::status(400).message("nope"));
    let r = token_post(&emu, &[("grant_type", "refresh_token")]).await;
    assert_eq!(
        (r.0, r.1["error_description"].as_str().unwrap()),
        (400, "nope")
    );

    // Latency-only faults delay, then serve.
    emu.clear_faults();
    emu.inject("jwks", Fault::latency(300).times(1));
    let jwks = format!(
        "{}/service_accounts/v1/metadata/jwk/{DEFAULT_SA}",
        emu.base_url()
    );
    let started = Instant::now();
    assert_eq!(http().get(&jwks).send().await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(http().get(&jwks).send().await.unwrap().status(), 200);
    assert!(started.elapsed() < Duration::from_millis(300));

    assert_eq!(emu.calls("sts.token"), 1);
    emu.inject("sts.token", Fault::status(503));
    emu.reset();
    assert_eq!(emu.calls("sts.token"), 0);
    assert_eq!(emu.calls("iam.signJwt"), 0);
    assert_eq!(
        sts_post(&emu, &sts_form("x")).await.0,
        400,
        "fault cleared by reset"
    );
}

#[tokio::test]
async fn faults_via_the_admin_api() {
    let emu = start(Config::default()).await;
    let admin = |p: &str| format!("{}/emulator/{p}", emu.base_url());
    let resp = http()
        .post(admin("faults"))
        .json(&json!({"endpoint": "metadata.email", "status": 503, "times": 1, "latency_ms": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let listed: Value = http()
        .get(admin("faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["metadata.email"]["status"], 503);

    let email = || {
        http()
            .get(md(&emu, "instance/service-accounts/default/email"))
            .header("Metadata-Flavor", "Google")
            .send()
    };
    assert_eq!(email().await.unwrap().status(), 503);
    assert_eq!(email().await.unwrap().status(), 200);

    let calls: Value = http()
        .get(admin("calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["metadata.email"], 2);
    assert_eq!(calls["iam.signJwt"], 0);

    let bad = http()
        .post(admin("faults"))
        .json(&json!({"endpoint": "iam.signjwt", "status": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = http()
        .post(admin("faults"))
        .json(&json!({"endpoint": "jwks", "status": 200}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    http()
        .post(admin("faults"))
        .json(&json!({"endpoint": "metadata.email", "status": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        http()
            .delete(admin("faults"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(email().await.unwrap().status(), 200);
    assert_eq!(
        http().post(admin("reset")).send().await.unwrap().status(),
        204
    );
    assert_eq!(emu.calls("metadata.email"), 0);
}

#[tokio::test]
async fn unknown_routes_are_google_404s_and_shutdown_stops_serving() {
    let emu = start(Config::default()).await;
    let resp = http()
        .get(format!("{}/v2/whatever", emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    emu.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{}/v2/whatever", emu.base_url()))
            .send()
            .await
            .is_err()
    );
}
