//! `token-client serve` when things change under it: a rotated certificate is used at the
//! next refresh without a restart; during a broker outage the last good token is served
//! until it expires, then a 503 says why (never an empty or expired token, and the token
//! file is removed), and the first request after the broker returns gets a new token.
//! The broker issues one-minute ID tokens (TOKEN_VALIDITY=1).

use std::time::Duration;

use crate::serve::claims;
use crate::support::*;

/// The broker's one-minute ID tokens: expiry within a test's time.
const ONE_MINUTE_ID_TOKENS: Lifetimes = Lifetimes {
    token_validity_minutes: Some(1),
    access_token_lifetime_seconds: None,
};

const DEVICE_2: &str = "spiffe://example.org/ns/prod/sa/device-2";

fn now() -> u64 {
    token_client::broker::unix_now()
}

async fn id_token(serve: &Process) -> Answer {
    get(&serve.url, "/token", &[]).await
}

fn subject(answer: &Answer) -> String {
    let token = answer.json()["id_token"].as_str().unwrap().to_owned();
    claims(&token)["sub"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_used_without_a_restart() {
    let f = Fixture::with(ONE_MINUTE_ID_TOKENS).await;
    let serve = start_serve(&f.client_env(), &["--no-metadata"]);
    assert_eq!(subject(&id_token(&serve).await), DEVICE);
    // Replace both files by rename, as a renewal tool or a secret mount does.
    let next = f.root.issue_client(DEVICE_2);
    std::fs::write(f.path("next.pem"), &next.pem).unwrap();
    std::fs::write(f.path("next.key"), &next.key_pem).unwrap();
    std::fs::rename(f.path("next.key"), &f.key).unwrap();
    std::fs::rename(f.path("next.pem"), &f.cert).unwrap();
    let mut seen = String::new();
    for _ in 0..70 {
        let answer = id_token(&serve).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        seen = subject(&answer);
        if seen == DEVICE_2 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(seen, DEVICE_2, "{}", serve.logs());
}

/// Every answer during the outage: a valid token, or a 503 that says why.
fn check_during_outage(answer: &Answer) -> bool {
    if answer.status == 200 {
        let token = answer.json()["id_token"].as_str().unwrap().to_owned();
        assert!(!token.is_empty());
        let exp = claims(&token)["exp"].as_u64().unwrap();
        assert!(exp > now(), "an expired token was served");
        return false;
    }
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("no valid ID token"), "{}", answer.body);
    assert!(
        answer.body.contains("could not be reached"),
        "{}",
        answer.body
    );
    true
}

fn check_token_file(file: &std::path::Path) {
    if let Ok(token) = std::fs::read_to_string(file) {
        assert!(!token.is_empty(), "an empty token file");
        assert!(
            claims(&token)["exp"].as_u64().unwrap() > now(),
            "an expired token file"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_the_last_token_is_served_until_it_expires() {
    let f = Fixture::with(ONE_MINUTE_ID_TOKENS).await;
    let file = f.path("token.jwt");
    let serve = start_serve(
        &f.client_env(),
        &["--no-metadata", "--token-file", file.to_str().unwrap()],
    );
    let first = id_token(&serve).await;
    let token = first.json()["id_token"].as_str().unwrap().to_owned();
    let exp = claims(&token)["exp"].as_u64().unwrap();
    f.relay.stop();
    let mut failed = false;
    while !failed && now() < exp + 15 {
        failed = check_during_outage(&id_token(&serve).await);
        check_token_file(&file);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(failed, "no 503 after the token expired:\n{}", serve.logs());
    assert!(
        now() + 15 >= exp,
        "the token was dropped {} s early",
        exp - now()
    );
    for _ in 0..30 {
        if !file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!file.exists(), "the expired token file was kept");
    let status = get(&serve.url, "/status", &[]).await.json();
    assert_eq!(status["id_token"]["serving"], false, "{status}");
    assert!(
        status["id_token"]["last_error"]
            .as_str()
            .unwrap()
            .contains("could not be reached")
    );
    let logs = serve.logs();
    assert!(logs.contains("no valid ID token"), "{logs}");
    assert!(!logs.contains(&token), "a token was logged");
    // The broker is back: the next request refreshes.
    f.relay
        .start_tcp(f.broker.url.trim_start_matches("https://"));
    let mut back = id_token(&serve).await;
    for _ in 0..20 {
        if back.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        back = id_token(&serve).await;
    }
    assert_eq!(back.status, 200, "{back:?}\n{}", serve.logs());
    assert!(
        claims(back.json()["id_token"].as_str().unwrap())["exp"]
            .as_u64()
            .unwrap()
            > exp
    );
}

/// Token files are rewritten at half the token's life, well before it expires: a reader never
/// needs a token from the file's last moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_files_are_refreshed_well_before_expiry() {
    let f = Fixture::with(ONE_MINUTE_ID_TOKENS).await;
    let file = f.path("token.jwt");
    let serve = start_serve(
        &f.client_env(),
        &["--no-metadata", "--token-file", file.to_str().unwrap()],
    );
    let mut first = None;
    for _ in 0..100 {
        if let Ok(token) = std::fs::read_to_string(&file) {
            first = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.unwrap_or_else(|| panic!("no token file:\n{}", serve.logs()));
    let exp = claims(&first)["exp"].as_u64().unwrap();
    while now() < exp {
        let current = std::fs::read_to_string(&file).unwrap();
        if current != first {
            let left = exp.saturating_sub(now());
            assert!(
                left >= 20,
                "rewritten only {left} s before the old token expired"
            );
            assert!(claims(&current)["exp"].as_u64().unwrap() > exp);
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "the token file was not rewritten before expiry:\n{}",
        serve.logs()
    );
}
