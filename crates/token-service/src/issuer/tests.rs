//! Claims of issued ID tokens, with a fixed clock and a real local key.

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::*;
use crate::model::CertificateFacts;
use crate::signer::local::LocalSigner;

const NOW: i64 = 1_750_000_000;
const ISS: &str = "https://tokens.example.com";

fn ec_signer() -> Arc<dyn Signer> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    let b64 = STANDARD.encode(doc.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    Arc::new(LocalSigner::from_pem(pem.as_bytes(), "test").unwrap())
}

fn issuer(validity_seconds: i64) -> IdTokenIssuer {
    IdTokenIssuer::new(
        IssuerSettings {
            audience: "https://audience.example.com".into(),
            validity_seconds,
            jwks_uri: None,
            min_lifetime_seconds: 60,
            certificate_bound: false,
        },
        ec_signer(),
        Clock::fixed(NOW),
    )
}

/// A client whose policy tried to set every registered claim itself.
fn client_with_hostile_claims() -> Client {
    let mut extra = Map::new();
    for name in ["iss", "sub", "aud", "iat", "exp", "jti", "amr", "client_id"] {
        extra.insert(name.into(), json!("from-policy"));
    }
    extra.insert("team".into(), json!("payments"));
    Client {
        flow: "mtls".into(),
        client_id: "device-1".into(),
        facts: CertificateFacts::default(),
        extra_claims: extra,
        lifetime_seconds: None,
        decision: None,
        audience: None,
    }
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(5))
}

fn part(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

#[tokio::test]
async fn registered_claims_win_over_policy_claims_of_the_same_name() {
    let issued = issuer(600)
        .issue(ISS, &client_with_hostile_claims(), deadline())
        .await
        .unwrap();
    let claims = part(&issued.token, 1);
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["sub"], "device-1");
    assert_eq!(claims["aud"], "https://audience.example.com");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 600);
    assert_eq!(claims["jti"], issued.jti.as_str());
    assert_eq!(claims["amr"], json!(["mtls"]));
    assert_eq!(claims["client_id"], "device-1");
    // A claim of its own name the policy may add.
    assert_eq!(claims["team"], "payments");
}

#[tokio::test]
async fn exp_is_iat_plus_the_validity_or_the_clients_own_lifetime() {
    let issuer = issuer(900);
    let mut client = client_with_hostile_claims();
    let issued = issuer.issue(ISS, &client, deadline()).await.unwrap();
    let claims = part(&issued.token, 1);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(issued.expires_at, NOW + 900);

    client.lifetime_seconds = Some(120);
    let issued = issuer.issue(ISS, &client, deadline()).await.unwrap();
    assert_eq!(part(&issued.token, 1)["exp"], NOW + 120);
    assert_eq!(issued.expires_at, NOW + 120);
}

#[tokio::test]
async fn every_token_has_its_own_jti() {
    let issuer = issuer(600);
    let client = client_with_hostile_claims();
    let first = issuer.issue(ISS, &client, deadline()).await.unwrap();
    let second = issuer.issue(ISS, &client, deadline()).await.unwrap();
    assert_ne!(first.jti, second.jti);
    assert_ne!(part(&first.token, 1)["jti"], part(&second.token, 1)["jti"]);
}

#[tokio::test]
async fn the_signature_verifies_with_the_published_key() {
    let issuer = issuer(600);
    let issued = issuer
        .issue(ISS, &client_with_hostile_claims(), deadline())
        .await
        .unwrap();
    let header = part(&issued.token, 0);
    let jwks = issuer.jwks().unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is published");
    assert_eq!(header["alg"], "ES256");
    let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(key[name].as_str().unwrap()).unwrap();
    let mut point = vec![0x04];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    let (signed, signature) = issued.token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &signature)
        .expect("the signature verifies");
    // And a changed payload does not.
    let tampered = signed.replacen('.', ".e30", 1);
    assert!(
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(tampered.as_bytes(), &signature)
            .is_err()
    );
    assert_eq!(issuer.jwks_uri(ISS).unwrap(), format!("{ISS}{JWKS_PATH}"));
}

/// A signer whose keys are not known: not ready (with a reason), or ready without saying
/// where its keys are.
struct Keyless(Option<&'static str>);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Reason(&'static str);

#[async_trait::async_trait]
impl Signer for Keyless {
    fn algorithm(&self) -> &str {
        "RS256"
    }
    fn key_id(&self) -> Option<String> {
        None
    }
    fn publication(&self) -> Option<Publication> {
        None
    }
    fn readiness(&self) -> Result<(), NotReady> {
        self.0
            .map_or(Ok(()), |reason| Err(NotReady::new(Reason(reason))))
    }
    async fn sign(&self, _: &Map<String, Value>, _: Deadline) -> Result<String, Failure> {
        Err(Failure::server("no keys"))
    }
}

/// Discovery cannot name the keys of a signer that has none yet: a 503 that says why.
#[test]
fn discovery_without_keys_is_unavailable_with_the_signers_reason() {
    let issuer_of = |signer: Keyless| {
        IdTokenIssuer::new(
            IssuerSettings {
                audience: "https://audience.example.com".into(),
                validity_seconds: 600,
                jwks_uri: None,
                min_lifetime_seconds: 60,
                certificate_bound: false,
            },
            Arc::new(signer),
            Clock::fixed(NOW),
        )
    };
    let flows = FlowSummary::default();
    let cases = [
        (
            Keyless(Some("the identity is being checked")),
            "The signing keys are not available yet: the identity is being checked",
        ),
        (
            Keyless(None),
            "The signing keys are not available yet: the signing keys are not known yet",
        ),
    ];
    for (signer, message) in cases {
        let failure =
            Failure::from(discovery_document(ISS, &issuer_of(signer), &flows).unwrap_err());
        assert_eq!(failure.message(), message);
        assert_eq!(
            failure.kind(),
            crate::error::Kind::Unavailable { retry_after: 5 }
        );
    }
    let document = discovery_document(ISS, &issuer(600), &flows).unwrap();
    assert_eq!(document["jwks_uri"], format!("{ISS}{JWKS_PATH}"));
}

const ENTRA: &str = "api://AzureADTokenExchange";

fn with_audiences(validity_seconds: i64) -> IdTokenIssuer {
    issuer(validity_seconds).with_audiences(AudienceSettings {
        allowed: vec![ENTRA.into(), "sts.amazonaws.com".into()],
        lifetimes: [(ENTRA.to_owned(), 900)].into_iter().collect(),
    })
}

#[test]
fn a_requested_audience_is_the_default_or_one_of_token_audiences() {
    let service = with_audiences(300);
    assert_eq!(
        service.requested_audience("https://audience.example.com"),
        Ok(None)
    );
    assert_eq!(service.requested_audience(ENTRA), Ok(Some(ENTRA)));
    let refused = service
        .requested_audience("https://other.example")
        .unwrap_err();
    assert_eq!(refused.kind(), crate::error::Kind::AccessDenied);
    let message = refused.message();
    assert!(
        message.contains("'https://other.example'")
            && message.contains("parameter 'audience'")
            && message.contains("TOKEN_AUDIENCES"),
        "{message}"
    );
    // Without TOKEN_AUDIENCES only the default audience is served.
    assert!(issuer(300).requested_audience(ENTRA).is_err());
}

#[tokio::test]
async fn a_token_for_a_granted_audience_has_that_aud_and_the_policys_sub() {
    let issuer = with_audiences(300);
    let mut client = client_with_hostile_claims();
    let issued = issuer.issue(ISS, &client, deadline()).await.unwrap();
    assert_eq!(
        part(&issued.token, 1)["aud"],
        "https://audience.example.com"
    );
    assert_eq!(issued.audience, "https://audience.example.com");

    client.audience = Some(crate::model::AudienceGrant {
        audience: ENTRA.into(),
        subject: Some("device-class-a".into()),
        lifetime_seconds: None,
    });
    let issued = issuer.issue(ISS, &client, deadline()).await.unwrap();
    let claims = part(&issued.token, 1);
    assert_eq!(claims["aud"], ENTRA);
    assert_eq!(issued.audience, ENTRA);
    assert_eq!(claims["sub"], "device-class-a");
    assert_eq!(
        claims["client_id"], "device-1",
        "client_id stays the client's"
    );
}

#[tokio::test]
async fn the_most_specific_lifetime_wins() {
    let service = with_audiences(300);
    let lifetime = |rule: Option<i64>, audience: Option<(&str, Option<i64>)>| {
        let mut client = client_with_hostile_claims();
        client.lifetime_seconds = rule;
        client.audience = audience.map(|(aud, lifetime_seconds)| crate::model::AudienceGrant {
            audience: aud.into(),
            subject: None,
            lifetime_seconds,
        });
        service.lifetime(&client)
    };
    assert_eq!(lifetime(None, None), 300, "TOKEN_VALIDITY");
    assert_eq!(lifetime(Some(120), None), 120, "the rule's token_lifetime");
    assert_eq!(
        lifetime(Some(120), Some(("sts.amazonaws.com", None))),
        120,
        "an audience without a lifetime of its own"
    );
    assert_eq!(
        lifetime(Some(120), Some((ENTRA, None))),
        900,
        "TOKEN_AUDIENCE_VALIDITY beats the rule's lifetime"
    );
    assert_eq!(
        lifetime(Some(120), Some((ENTRA, Some(1200)))),
        1200,
        "the rule's lifetime for the audience beats all"
    );
    let mut client = client_with_hostile_claims();
    client.audience = Some(crate::model::AudienceGrant::new(ENTRA));
    let issued = service.issue(ISS, &client, deadline()).await.unwrap();
    assert_eq!(part(&issued.token, 1)["exp"], NOW + 900);
    assert_eq!(issued.expires_at, NOW + 900);
}

#[tokio::test]
async fn the_certificates_not_after_caps_exp_and_a_nearly_expired_one_is_refused() {
    let issuer = issuer(600);
    let mut client = client_with_hostile_claims();
    client.facts.not_after = Some(NOW + 200);
    let issued = issuer.issue(ISS, &client, deadline()).await.unwrap();
    assert_eq!(part(&issued.token, 1)["exp"], NOW + 200);
    assert_eq!(issued.expires_at, NOW + 200);
    assert_eq!(issued.issued_at, NOW);

    // TOKEN_MIN_LIFETIME is 60 s here: 59 s left is refused, 60 s is issued.
    client.facts.not_after = Some(NOW + 59);
    let refused = issuer.issue(ISS, &client, deadline()).await.unwrap_err();
    assert_eq!(refused.kind(), crate::error::Kind::UnauthorizedClient);
    assert!(
        refused
            .message()
            .contains("in 59 s, sooner than TOKEN_MIN_LIFETIME (60 s)")
    );
    client.facts.not_after = Some(NOW + 60);
    let issued = issuer.issue(ISS, &client, deadline()).await.unwrap();
    assert_eq!(issued.expires_at, NOW + 60);
}

#[test]
fn x5t_s256_re_encodes_a_base64_sha256_digest_and_refuses_anything_else() {
    let digest = [0xfb_u8; 32];
    let expected = URL_SAFE_NO_PAD.encode(digest);
    for form in [
        STANDARD.encode(digest),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest),
        URL_SAFE_NO_PAD.encode(digest),
    ] {
        assert_eq!(
            x5t_s256(&form).as_deref(),
            Some(expected.as_str()),
            "{form}"
        );
    }
    assert_eq!(x5t_s256(&STANDARD.encode([1_u8; 20])), None);
    assert_eq!(x5t_s256("not base64!"), None);
}
