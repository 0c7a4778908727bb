//! `token-client token`: each output, with a scope and an impersonated service account
//! through the broker, and a refusal.

use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_the_id_token_the_access_token_and_json() {
    let f = Fixture::start().await;
    let env = f.client_env();
    let id = run_client(&["token"], &env).await;
    assert!(id.status.success(), "{}", stderr(&id));
    let id_token = stdout(&id).trim().to_owned();
    assert_eq!(id_token.split('.').count(), 3, "{id_token}");
    assert!(stderr(&id).is_empty());

    let mut scoped = env.clone();
    scoped.push(("TOKEN_CLIENT_SCOPE".into(), SCOPE.into()));
    scoped.push(("TOKEN_CLIENT_SERVICE_ACCOUNT".into(), TARGET_SA.into()));
    let access = run_client(&["token", "--output", "access-token"], &scoped).await;
    assert!(access.status.success(), "{}", stderr(&access));
    let principal = f.emulator.token_principal(stdout(&access).trim()).unwrap();
    assert_eq!(principal, TARGET_SA);

    let json = run_client(&["token", "--output", "json"], &scoped).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let body: Value = serde_json::from_str(&stdout(&json)).unwrap();
    let now = token_client::broker::unix_now();
    let id_exp = body["id_token_expires_at"].as_u64().unwrap();
    assert!(id_exp > now && id_exp <= now + 3600, "{body}");
    assert_eq!(
        token_client::broker::jwt_exp(body["id_token"].as_str().unwrap()),
        Some(id_exp)
    );
    assert!(
        body["access_token_expires_at"].as_u64().unwrap() > now,
        "{body}"
    );
    assert!(body["expires_in"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(body["token_type"], "Bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_names_the_refusal_and_missing_settings() {
    let f = Fixture::start().await;
    let (cert, key) = f.foreign_identity();
    let mut env = f.client_env();
    env.retain(|(k, _)| k != "TOKEN_CLIENT_CERT" && k != "TOKEN_CLIENT_KEY");
    let refused = run_client(
        &[
            "token",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(message.contains("403 unauthorized_client"), "{message}");
    assert!(message.contains(UNKNOWN_ISSUER), "{message}");
    assert!(stdout(&refused).is_empty());

    let missing = run_client(&["token"], &[]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("TOKEN_CLIENT_BROKER"),
        "{}",
        stderr(&missing)
    );

    let no_scope = run_client(&["token", "--output", "access-token"], &f.client_env()).await;
    assert_eq!(no_scope.status.code(), Some(2));
    assert!(stderr(&no_scope).contains("TOKEN_CLIENT_SCOPE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_audience_asks_the_broker_for_that_audience() {
    let f = Fixture::start().await;
    let env = f.client_env();
    let aws = run_client(&["token", "--audience", AWS_AUDIENCE], &env).await;
    assert!(aws.status.success(), "{}", stderr(&aws));
    let aws = claims(stdout(&aws).trim());
    assert_eq!(
        (&aws["aud"], &aws["sub"]),
        (&AWS_AUDIENCE.into(), &DEVICE.into())
    );
    let mut entra = env.clone();
    entra.push(("TOKEN_CLIENT_TOKEN_AUDIENCE".into(), ENTRA_AUDIENCE.into()));
    let json = run_client(&["token", "--output", "json"], &entra).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let body: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["aud"],
        ENTRA_AUDIENCE
    );
    // google-config's TOKEN_CLIENT_AUDIENCE (the pool provider) does not change `token`.
    let mut pool = env.clone();
    pool.push(("TOKEN_CLIENT_AUDIENCE".into(), POOL_AUDIENCE.into()));
    let default = run_client(&["token"], &pool).await;
    assert!(default.status.success(), "{}", stderr(&default));
    assert_eq!(
        claims(stdout(&default).trim())["aud"],
        format!("https:{POOL_AUDIENCE}")
    );

    let refused = run_client(&["token", "--audience", UNLISTED_AUDIENCE], &env).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains("403 access_denied")
            && message.contains("parameter 'audience'")
            && message.contains(UNLISTED_AUDIENCE),
        "{message}"
    );
    assert!(stdout(&refused).is_empty());
    let with_scope = ["token", "--audience", AWS_AUDIENCE, "--scope", SCOPE];
    let with_scope = run_client(&with_scope, &env).await;
    assert_eq!(with_scope.status.code(), Some(2));
    assert!(
        stderr(&with_scope).contains("TOKEN_CLIENT_SCOPE"),
        "{}",
        stderr(&with_scope)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_used_without_restart() {
    let f = Fixture::start().await;
    // The Kubernetes layout: the files are symlinks into a folder that is swapped.
    let first = f.path("..2026_01");
    let second = f.path("..2026_02");
    std::fs::create_dir(&first).unwrap();
    std::fs::create_dir(&second).unwrap();
    std::fs::write(first.join("tls.crt"), &f.device.pem).unwrap();
    std::fs::write(first.join("tls.key"), &f.device.key_pem).unwrap();
    let rotated = f
        .root
        .issue_client("spiffe://example.org/ns/prod/sa/device-rotated");
    std::fs::write(second.join("tls.crt"), &rotated.pem).unwrap();
    std::fs::write(second.join("tls.key"), &rotated.key_pem).unwrap();
    let data = f.path("..data");
    std::os::unix::fs::symlink(&first, &data).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", f.path("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", f.path("tls.key")).unwrap();

    let settings = token_client::settings::BrokerSettings {
        token_url: format!("{}/token", f.broker_url()).parse().unwrap(),
        broker: f.broker_url(),
        cert: f.path("tls.crt"),
        key: f.path("tls.key"),
        ca: Some(f.ca.clone()),
        timeout: std::time::Duration::from_secs(10),
    };
    let broker = token_client::broker::Broker::new(settings);
    let query = token_client::broker::Query::id_token();
    let before = broker.fetch(&query).await.unwrap();
    assert_eq!(claims(&before.id_token)["sub"], DEVICE);

    let next = f.path("..data.tmp");
    std::os::unix::fs::symlink(&second, &next).unwrap();
    std::fs::rename(&next, &data).unwrap();
    let after = broker.fetch(&query).await.unwrap();
    assert_eq!(
        claims(&after.id_token)["sub"],
        "spiffe://example.org/ns/prod/sa/device-rotated"
    );
}

/// The claims of a JWT (unverified: the broker's own tests verify signatures).
pub fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
