//! The STS's cache of the issuer's discovery document and JWK Set: kept for the responses'
//! `Cache-Control: max-age`, not at all with `no-store`, for the default without a header;
//! an unknown `kid` is refused until the entry expires, without a fetch.

use std::time::Duration;

use crate::support as common;

use common::*;
use gcp_emulator::{Config, Emulator};

async fn setup(cache_control: Option<&str>) -> (Issuer, Emulator) {
    let issuer = Issuer::start().await;
    if let Some(value) = cache_control {
        issuer.set_cache_control(value);
    }
    let config = Config {
        providers: vec![issuer.provider()],
        ..Config::default()
    };
    (issuer, start(config).await)
}

async fn exchange(emu: &Emulator, token: &str) -> (u16, serde_json::Value) {
    sts_post(emu, &sts_form(token)).await
}

#[tokio::test]
async fn a_key_added_to_the_set_is_unknown_until_max_age_has_passed() {
    let (issuer, emu) = setup(Some("public, max-age=1")).await;
    let (status, body) = exchange(&emu, &issuer.sign(&issuer.claims("alice"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.fetches(), (1, 1));

    // The issuer publishes a second key and signs with it at once: the cached set lacks it.
    let next = TestKey::ec();
    issuer.set_jwks(vec![issuer_key().jwk(ISSUER_KID), next.jwk("next-1")]);
    let token = next.sign("next-1", &issuer.claims("alice"));
    let (status, body) = exchange(&emu, &token).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("next-1"),
        "{body}"
    );
    // No refetch on the unknown kid.
    assert_eq!(issuer.fetches(), (1, 1));

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = exchange(&emu, &token).await;
    assert_eq!(
        status, 200,
        "after max-age the set is fetched again: {body}"
    );
    assert_eq!(issuer.fetches(), (2, 2));
}

#[tokio::test]
async fn no_store_is_fetched_for_every_exchange() {
    let (issuer, emu) = setup(Some("no-store")).await;
    for _ in 0..2 {
        let (status, body) = exchange(&emu, &issuer.sign(&issuer.claims("alice"))).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(issuer.fetches(), (2, 2));
}

#[tokio::test]
async fn without_cache_control_the_default_keeps_the_set() {
    let (issuer, emu) = setup(None).await;
    for _ in 0..3 {
        let (status, body) = exchange(&emu, &issuer.sign(&issuer.claims("alice"))).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(issuer.fetches(), (1, 1));
    // A key the issuer dropped stays usable while the entry is fresh, as at any HTTP cache.
    issuer.set_jwks(vec![]);
    let (status, body) = exchange(&emu, &issuer.sign(&issuer.claims("alice"))).await;
    assert_eq!(status, 200, "{body}");
}
