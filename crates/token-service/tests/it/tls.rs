//! Black-box tests of the TLS listener and the `mtls-client-credentials` flow: the real binary
//! terminating TLS with a test PKI, spoken to by reqwest, a raw rustls client and the system
//! curl; reloads of the CA bundle and CRL files while clients stay connected.

use crate::support as common;
use crate::support::tls as tls_support;

use rustls::HandshakeKind;
use serde_json::{Value, json};
use tls_support::*;

/// Requests a token with `leaf` and checks the claims against facts computed here from the DER.
async fn assert_token_with_facts_from_der(service: &TlsService, pki: &Pki, leaf: &Leaf) -> Value {
    let client = https_client(&pki.root.pem, Some(leaf));
    let (status, body) = post_token(&client, service).await;
    let token = id_token(status, &body);
    let verifier = https_client(&pki.root.pem, None);
    let claims = common::verify_with(&verifier, &token, &service.base, common::AUDIENCE).await;
    let spiffe = leaf.spec.spiffe.clone().unwrap();
    assert_eq!(claims["iss"], service.base);
    assert_eq!(claims["sub"], spiffe);
    assert_eq!(claims["client_id"], spiffe);
    assert_eq!(claims["amr"], json!([FLOW]));
    assert_eq!(
        claims["client"],
        json!({
            "x5_spiffe": spiffe,
            "x5_dnssan": leaf.spec.dns.clone().unwrap(),
            "x5_urisan": leaf.spec.uri.clone().unwrap(),
            "x5_sha256": sha256_b64(&leaf.der),
            "x5_serial": colon_hex(&der_serial(&leaf.der)),
        })
    );
    claims
}

#[tokio::test]
async fn bad_client_certificates_get_403_with_precise_reason_and_rejection_log_with_serial() {
    let pki = Pki::new();
    let crl = pki.root.crl_pem(&[&pki.revoked]);
    let service = TlsService::start_process(&pki, &pki.root.pem, Some(&crl), &[]);
    // (leaf, description, whether the description is exact or only must contain the text)
    let cases: [(&Leaf, &str, bool); 7] = [
        (&pki.expired, EXPIRED, true),
        (&pki.not_yet_valid, NOT_YET_VALID, true),
        (&pki.other_ca, UNKNOWN_ISSUER, true),
        (&pki.revoked, REVOKED, true),
        (&pki.server_auth_only, NO_CLIENT_AUTH, true),
        (&pki.self_signed, UNKNOWN_ISSUER, true),
        (&pki.no_spiffe, "MTLS_CLIENT_ID_ATTRIBUTE=spiffe", false),
    ];
    for (leaf, description, exact) in &cases {
        let client = https_client(&pki.root.pem, Some(leaf));
        let (status, body) = post_token(&client, &service).await;
        let name = &leaf.spec.name;
        if *exact {
            assert_refused(status, &body, description);
        } else {
            assert_eq!(status, 403, "{name}: {body}");
            assert!(body.get("id_token").is_none(), "{name}: {body}");
            assert_eq!(body["error"], "unauthorized_client", "{name}: {body}");
            assert!(
                body["error_description"]
                    .as_str()
                    .unwrap()
                    .contains(description),
                "{name}: {body}"
            );
        }
    }
    let rejected = service.events("client_certificate_rejected");
    for (leaf, description, _) in &cases {
        let name = &leaf.spec.name;
        let serial = colon_hex(&der_serial(&leaf.der));
        assert_eq!(serial, colon_hex(&leaf.spec.serial), "{name}");
        let line = rejected
            .iter()
            .find(|l| l["cert/serial"] == serial)
            .unwrap_or_else(|| {
                panic!("{name}: no rejection logged with serial {serial}: {rejected:#?}")
            });
        assert!(
            line["reason"].as_str().unwrap().contains(description),
            "{name}: {line}"
        );
        assert_eq!(line["flow"], FLOW, "{name}: {line}");
        assert_eq!(line["cert/sha256"], sha256_b64(&leaf.der), "{name}: {line}");
        assert!(
            line["cert/subject"]
                .as_str()
                .unwrap()
                .contains(name.as_str()),
            "{name}: {line}"
        );
        assert!(
            !line["cert/issuer"].as_str().unwrap().is_empty(),
            "{name}: {line}"
        );
    }
    assert_eq!(rejected.len(), cases.len(), "{rejected:#?}");
    assert!(service.events("token_issued").is_empty());
}

#[tokio::test]
async fn without_client_certificate_discovery_works_over_tls_and_token_is_400() {
    let pki = Pki::new();
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let client = https_client(&pki.root.pem, None);
    let response = client
        .get(service.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let discovery: Value = response.json().await.unwrap();
    assert_eq!(discovery["issuer"], service.base);
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    assert!(jwks_uri.starts_with(&service.base), "{jwks_uri}");
    let jwks = client.get(jwks_uri).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    let (status, body) = post_token(&client, &service).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "No suitable flow found for grant type 'client_credentials': mtls-client-credentials: no client certificate was presented in the TLS handshake"
    );
}

#[tokio::test]
async fn valid_client_certificate_gets_verifiable_token_with_client_facts_equal_to_der() {
    let pki = Pki::new();
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let claims = assert_token_with_facts_from_der(&service, &pki, &pki.valid).await;
    assert_eq!(claims["client"]["x5_serial"], "10:01");
    assert_eq!(
        claims["client"]["x5_urisan"],
        "https://valid.example.org/id"
    );
}

#[tokio::test]
async fn leaf_sent_with_its_intermediate_gets_token_when_bundle_holds_only_root() {
    let pki = Pki::new();
    assert!(!pki.root.pem.contains(&pki.intermediate.pem));
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let claims = assert_token_with_facts_from_der(&service, &pki, &pki.via_intermediate).await;
    // Serial 80:02:ab has its high bit set: the DER integer carries a leading 00 byte.
    assert_eq!(claims["client"]["x5_serial"], "00:80:02:ab");
    // Without the intermediate the chain cannot be built.
    let alone = Leaf {
        chain_pem: pki.via_intermediate.pem.clone(),
        chain_der: vec![pki.via_intermediate.der.clone()],
        ..pki.via_intermediate.clone()
    };
    let client = https_client(&pki.root.pem, Some(&alone));
    let (status, body) = post_token(&client, &service).await;
    assert_refused(status, &body, UNKNOWN_ISSUER);
}

#[tokio::test]
async fn dns_san_client_id_attribute_makes_first_dns_san_the_subject_and_refuses_cert_without_one()
{
    let pki = Pki::new();
    let service = TlsService::start_process(
        &pki,
        &pki.root.pem,
        None,
        &[("MTLS_CLIENT_ID_ATTRIBUTE", "dns_san")],
    );
    let client = https_client(&pki.root.pem, Some(&pki.valid));
    let (status, body) = post_token(&client, &service).await;
    let token = id_token(status, &body);
    let claims = common::verify_with(
        &https_client(&pki.root.pem, None),
        &token,
        &service.base,
        common::AUDIENCE,
    )
    .await;
    assert_eq!(claims["sub"], "valid.example.org");
    assert_eq!(claims["client_id"], "valid.example.org");
    assert_eq!(claims["client"]["x5_dnssan"], "valid.example.org");
    assert_eq!(claims["client"]["x5_spiffe"], pki.valid.spiffe());

    let client = https_client(&pki.root.pem, Some(&pki.no_dns));
    let (status, body) = post_token(&client, &service).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains("MTLS_CLIENT_ID_ATTRIBUTE=dns_san"),
        "{description}"
    );
    let rejected = service.events("client_certificate_rejected");
    assert!(
        rejected.iter().any(|l| l["cert/serial"] == "20:08"),
        "{rejected:#?}"
    );
}

#[tokio::test]
async fn crl_written_while_connected_revokes_at_once_even_on_kept_alive_connections() {
    let pki = Pki::new();
    let empty_crl = pki.root.crl_pem(&[]);
    let service = TlsService::start_process(
        &pki,
        &pki.root.pem,
        Some(&empty_crl),
        &[("TLS_RELOAD_INTERVAL", "1")],
    );
    // One reqwest client (its pool keeps the connection alive) ...
    let client = https_client(&pki.root.pem, Some(&pki.valid));
    let (status, body) = post_token(&client, &service).await;
    id_token(status, &body);
    // ... and one raw TLS connection that certainly stays the same.
    let config = rustls_config(
        &pki.root.der,
        &pki.valid.chain_der,
        &pki.valid.key_der,
        &rustls::version::TLS13,
    );
    let mut stream = connect(&service, config).await.unwrap();
    let (status, body) = http1(&mut stream, "POST", "/token", Some(GRANT))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    let before = service.events("tls_reloaded").len();
    write_atomic(
        &service.crl_file,
        pki.root.crl_pem(&[&pki.valid]).as_bytes(),
    );
    service.wait_for_event("tls_reloaded", before).await;

    let (status, body) = post_token(&client, &service).await;
    assert_refused(status, &body, REVOKED);
    let (status, body) = http1(&mut stream, "POST", "/token", Some(GRANT))
        .await
        .expect("the kept-alive connection stays open after a reload");
    assert_refused(status, &serde_json::from_str(&body).unwrap(), REVOKED);
    let rejected = service.events("client_certificate_rejected");
    assert!(
        rejected
            .iter()
            .any(|l| l["cert/serial"] == "10:01" && l["reason"] == REVOKED),
        "{rejected:#?}"
    );
    // Another certificate of the same CA is unaffected.
    let other = https_client(&pki.root.pem, Some(&pki.no_dns));
    let (status, body) = post_token(&other, &service).await;
    id_token(status, &body);
}

#[tokio::test]
async fn ca_bundle_replaced_while_running_trusts_the_new_ca_and_no_longer_the_old() {
    let pki = Pki::new();
    let service =
        TlsService::start_process(&pki, &pki.root.pem, None, &[("TLS_RELOAD_INTERVAL", "1")]);
    let old_kept_alive = https_client(&pki.root.pem, Some(&pki.valid));
    let (status, body) = post_token(&old_kept_alive, &service).await;
    id_token(status, &body);

    let new_ca = Ca::root("New Root CA");
    let new_leaf = new_ca.issue(Spec::client("new-ca-client", &[0x30, 0x01]));
    let before = service.events("tls_reloaded").len();
    write_atomic(&service.ca_file, new_ca.pem.as_bytes());
    service.wait_for_event("tls_reloaded", before).await;

    let new_client = https_client(&pki.root.pem, Some(&new_leaf));
    let (status, body) = post_token(&new_client, &service).await;
    let token = id_token(status, &body);
    let claims = common::verify_with(
        &https_client(&pki.root.pem, None),
        &token,
        &service.base,
        common::AUDIENCE,
    )
    .await;
    assert_eq!(claims["sub"], new_leaf.spiffe());
    assert_eq!(claims["client"]["x5_serial"], "30:01");

    let old_new_connection = https_client(&pki.root.pem, Some(&pki.valid));
    let (status, body) = post_token(&old_new_connection, &service).await;
    assert_refused(status, &body, UNKNOWN_ISSUER);
    let (status, body) = post_token(&old_kept_alive, &service).await;
    assert_refused(status, &body, UNKNOWN_ISSUER);
}

#[tokio::test]
async fn broken_new_ca_bundle_is_refused_with_log_and_old_material_keeps_issuing() {
    let pki = Pki::new();
    let service =
        TlsService::start_process(&pki, &pki.root.pem, None, &[("TLS_RELOAD_INTERVAL", "1")]);
    let client = https_client(&pki.root.pem, Some(&pki.valid));
    let (status, body) = post_token(&client, &service).await;
    id_token(status, &body);

    let broken: [&[u8]; 2] = [
        b"this is not a PEM bundle\n",
        b"-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    ];
    for garbage in broken {
        let before = service.events("tls_reload_failed").len();
        write_atomic(&service.ca_file, garbage);
        let failed = service.wait_for_event("tls_reload_failed", before).await;
        assert!(
            failed["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("TLS_CLIENT_CA_FILE"),
            "{failed}"
        );
        // Old material: the kept-alive client, a new connection, and the old CA's verdicts.
        let (status, body) = post_token(&client, &service).await;
        id_token(status, &body);
        let fresh = https_client(&pki.root.pem, Some(&pki.valid));
        let (status, body) = post_token(&fresh, &service).await;
        id_token(status, &body);
        let stranger = https_client(&pki.root.pem, Some(&pki.other_ca));
        let (status, body) = post_token(&stranger, &service).await;
        assert_refused(status, &body, UNKNOWN_ISSUER);
    }
    assert!(service.events("tls_reloaded").is_empty());
}

#[tokio::test]
async fn client_signing_handshake_with_another_key_than_its_certificate_gets_no_response() {
    let pki = Pki::new();
    let service = TlsService::start_process(&pki, &pki.root.pem, None, &[]);
    let impostor_key = rcgen::KeyPair::generate().unwrap().serialize_der();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        // The same client code with the right key gets a token.
        let honest = rustls_config(
            &pki.root.der,
            &pki.valid.chain_der,
            &pki.valid.key_der,
            version,
        );
        let mut stream = connect(&service, honest).await.unwrap();
        let (status, body) = http1(&mut stream, "POST", "/token", Some(GRANT))
            .await
            .unwrap();
        assert_eq!(status, 200, "{version:?}: {body}");

        let impostor = rustls_config(&pki.root.der, &pki.valid.chain_der, &impostor_key, version);
        let outcome = match connect(&service, impostor).await {
            Err(e) => Err(e),
            // With TLS 1.3 the client finishes its side first; the refusal shows on reading.
            Ok(mut stream) => http1(&mut stream, "POST", "/token", Some(GRANT)).await,
        };
        // The server refuses the CertificateVerify signature with a decrypt_error alert.
        let error = outcome.expect_err(&format!("{version:?}: the impostor got an answer"));
        assert!(
            format!("{error:?}").contains("DecryptError"),
            "{version:?}: {error:?}"
        );
    }
    assert_eq!(service.events("token_issued").len(), 2);
    assert!(service.events("client_certificate_rejected").is_empty());
}

#[tokio::test]
async fn system_curl_gets_verifiable_token_over_h2_http1_and_tls12_but_not_tls11() {
    let pki = Pki::new();
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let verifier = https_client(&pki.root.pem, None);
    let runs: [(&[&str], &str, &str); 3] = [
        (&[], "2", "TLSv1.3"),
        (&["--http1.1"], "1.1", "TLSv1.3"),
        (&["--tlsv1.2", "--tls-max", "1.2"], "2", "TLSv1.2"),
    ];
    for (args, http_version, tls_version) in runs {
        let run = curl_token(&service, &pki.root.pem, &pki.valid, args);
        assert!(run.success, "{args:?}: {:?}\n{}", run.code, run.stderr);
        assert_eq!(run.http_code, "200", "{args:?}: {}", run.body);
        assert_eq!(run.http_version, http_version, "{args:?}");
        assert!(
            run.stderr
                .contains(&format!("SSL connection using {tls_version}")),
            "{args:?}: {}",
            run.stderr
        );
        let body: Value = serde_json::from_str(&run.body).unwrap();
        let token = body["id_token"].as_str().unwrap();
        let claims = common::verify_with(&verifier, token, &service.base, common::AUDIENCE).await;
        assert_eq!(claims["sub"], pki.valid.spiffe());
        assert_eq!(claims["client"]["x5_sha256"], sha256_b64(&pki.valid.der));
    }
    let run = curl_token(&service, &pki.root.pem, &pki.valid, &["--tls-max", "1.1"]);
    assert!(!run.success, "TLS 1.1 must fail: {}", run.body);
    assert!(!run.body.contains("id_token"), "{}", run.body);
}

#[tokio::test]
async fn certificate_revoked_at_startup_is_refused_on_full_and_resumed_tls_sessions() {
    let pki = Pki::new();
    let crl = pki.root.crl_pem(&[&pki.revoked]);
    let service = TlsService::start(&pki, &pki.root.pem, Some(&crl), &[]);
    // reqwest: two requests on one client.
    let client = https_client(&pki.root.pem, Some(&pki.revoked));
    for _ in 0..2 {
        let (status, body) = post_token(&client, &service).await;
        assert_refused(status, &body, REVOKED);
    }
    // A raw rustls client: a full handshake, then a resumption of that session.
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for (leaf, expect) in [(&pki.revoked, Some(REVOKED)), (&pki.valid, None)] {
            let config = rustls_config(&pki.root.der, &leaf.chain_der, &leaf.key_der, version);
            for attempt in ["full", "resumed"] {
                let mut stream = connect(&service, config.clone()).await.unwrap();
                let (status, body) = http1(&mut stream, "POST", "/token", Some(GRANT))
                    .await
                    .unwrap();
                let kind = stream.get_ref().1.handshake_kind();
                let what = format!("{version:?} {} {attempt}: {kind:?}", leaf.spec.name);
                if attempt == "full" {
                    assert_ne!(kind, Some(HandshakeKind::Resumed), "{what}");
                } else {
                    assert_eq!(kind, Some(HandshakeKind::Resumed), "{what}");
                }
                let body: Value = serde_json::from_str(&body).unwrap();
                match expect {
                    Some(description) => assert_refused(status, &body, description),
                    None => {
                        // The resumed session still carries the certificate.
                        id_token(status, &body);
                    }
                }
            }
        }
    }
}

/// The server picks the cipher suite by its own order, AES-128-GCM first (SHA-256 key schedule),
/// even though rustls clients, like most, list AES-256-GCM-SHA384 first.
#[tokio::test]
async fn server_order_picks_aes_128_gcm_over_the_clients_preferred_aes_256_gcm() {
    let pki = Pki::new();
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let client_default = rustls::crypto::aws_lc_rs::default_provider();
    let client_first = client_default.cipher_suites.first().map(|s| s.suite());
    assert_eq!(
        client_first,
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    let expected = [
        (
            &rustls::version::TLS13,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS12,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ];
    for (version, suite) in expected {
        let leaf = &pki.valid;
        let config = rustls_config(&pki.root.der, &leaf.chain_der, &leaf.key_der, version);
        let mut stream = connect(&service, config).await.unwrap();
        let (status, body) = http1(&mut stream, "POST", "/token", Some(GRANT))
            .await
            .unwrap();
        id_token(status, &serde_json::from_str(&body).unwrap());
        let negotiated = stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite());
        assert_eq!(negotiated, Some(suite), "{version:?}");
    }
}

/// `/readyz` reports TLS material that is no longer valid: after a reload to an expired server
/// certificate it answers 503 naming the file, while `/healthz` stays 200.
#[test]
fn readyz_turns_503_when_the_server_certificate_in_force_has_expired() {
    let pki = Pki::new();
    let service = TlsService::start(&pki, &pki.root.pem, None, &[("TLS_RELOAD_INTERVAL", "1")]);
    let get = |path: &str| {
        let output = std::process::Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}", &service.url(path)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(get("/readyz").ends_with("\n200"), "{}", get("/readyz"));
    let dir = service.files.path();
    write_atomic(&dir.join("server.key"), pki.expired.key_pem.as_bytes());
    write_atomic(&dir.join("server.pem"), pki.expired.chain_pem.as_bytes());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let answer = get("/readyz");
        if answer.ends_with("\n503") {
            assert!(
                answer.contains("TLS_CERT_FILE") && answer.contains("expired"),
                "{answer}"
            );
            break;
        }
        assert!(std::time::Instant::now() < until, "still {answer}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(get("/healthz").ends_with("\n200"));
    // The reload is counted for operators.
    let metrics = get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("token_service_reloads_total{material=\"tls\",result=\"ok\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn flow_order_does_not_matter_a_request_without_the_lb_secret_is_left_to_direct_mtls() {
    const SECRET: &str = "a-load-balancer-secret-of-32-byte";
    let pki = Pki::new();
    let service = TlsService::start_process(
        &pki,
        &pki.root.pem,
        None,
        &[
            (
                "AUTH_FLOWS",
                "xlb-mtls-client-credentials,mtls-client-credentials",
            ),
            ("MTLS_LB_SECRET", SECRET),
        ],
    );
    // A direct-mTLS client, with the load-balancer flow listed first: served by mtls.
    let client = https_client(&pki.root.pem, Some(&pki.valid));
    let (status, body) = post_token(&client, &service).await;
    let token = id_token(status, &body);
    let verifier = https_client(&pki.root.pem, None);
    let claims = common::verify_with(&verifier, &token, &service.base, common::AUDIENCE).await;
    assert_eq!(claims["amr"], json!([FLOW]));
    assert_eq!(claims["sub"], pki.valid.spiffe());

    // No certificate and no load-balancer headers: the answer names what each flow missed.
    let anonymous = https_client(&pki.root.pem, None);
    let (status, body) = post_token(&anonymous, &service).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let description = body["error_description"].as_str().unwrap();
    for expected in [
        "No suitable flow found for grant type 'client_credentials'",
        "mtls-client-credentials: no client certificate was presented in the TLS handshake",
        "xlb-mtls-client-credentials: no load-balancer certificate headers with a valid secret",
    ] {
        assert!(description.contains(expected), "{expected:?} in {body}");
    }

    // Forged load-balancer headers without the secret are never trusted, in either order.
    let forged = |secret: Option<&str>| {
        let mut request = anonymous
            .post(service.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(GRANT)
            .header("X-Client-Cert-Present", "true")
            .header("X-Client-Cert-Chain-Verified", "true")
            .header("X-Client-Cert-Spiffe", "spiffe://example.org/admin");
        if let Some(secret) = secret {
            request = request.header("X-Token-Service-LB-Secret", secret);
        }
        request.send()
    };
    for secret in [None, Some("wrong"), Some(&SECRET[1..])] {
        let response = forged(secret).await.unwrap();
        assert_eq!(response.status(), 403, "{secret:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized_client", "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("x-token-service-lb-secret"),
            "{body}"
        );
    }
    // With the secret, the load balancer's own request is served by the xlb flow.
    let response = forged(Some(SECRET)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        !service.server.logs().contains(SECRET),
        "the secret is never logged"
    );
}

/// Issue 10, finding 12: every `spiffe://` URI SAN (scheme in any letter case) is validated
/// against the SPIFFE ID specification; a certificate with a malformed one or with two is
/// refused saying what is wrong; other URI SANs stay allowed.
#[tokio::test]
async fn spiffe_ids_are_validated_and_a_certificate_may_carry_only_one() {
    let pki = Pki::new();
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let issue = |spiffe: &str, uri: Option<&str>| {
        pki.root.issue(Spec {
            spiffe: Some(spiffe.to_owned()),
            uri: uri.map(str::to_owned),
            ..Spec::client("workload", &[0x40, 0x01])
        })
    };
    let token = |leaf: Leaf| {
        let client = https_client(&pki.root.pem, Some(&leaf));
        let service = &service;
        async move { post_token(&client, service).await }
    };
    let invalid = |shown: &str, why: &str| {
        format!("The client certificate's SPIFFE ID '{shown}' is not valid: {why}")
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "SPIFFE://example.org/ns/prod/sa/a",
            invalid(
                "SPIFFE://example.org/ns/prod/sa/a",
                "the scheme must be written in lowercase ('spiffe://')",
            ),
        ),
        (
            "spiffe://Example.org/a",
            invalid(
                "spiffe://Example.org/a",
                "the trust domain must be lowercase",
            ),
        ),
        (
            "spiffe://user@example.org/a",
            invalid(
                "spiffe://user@example.org/a",
                "the trust domain must not carry userinfo ('@')",
            ),
        ),
        (
            "spiffe://example.org:8443/a",
            invalid(
                "spiffe://example.org:8443/a",
                "the trust domain must not carry a port (':')",
            ),
        ),
        (
            "spiffe://example.org/ns/../admin",
            invalid(
                "spiffe://example.org/ns/../admin",
                "the path has a '..' segment",
            ),
        ),
        (
            "spiffe://example.org/ns/./a",
            invalid("spiffe://example.org/ns/./a", "the path has a '.' segment"),
        ),
        (
            "spiffe://example.org/a?admin=1",
            invalid(
                "spiffe://example.org/a?admin=1",
                "it must not contain a query ('?')",
            ),
        ),
        (
            "spiffe://example.org/a#admin",
            invalid(
                "spiffe://example.org/a#admin",
                "it must not contain a fragment ('#')",
            ),
        ),
        (
            "spiffe://example.org/ns%2Fadmin",
            invalid(
                "spiffe://example.org/ns%2Fadmin",
                "it must not contain percent-encoding ('%')",
            ),
        ),
        (
            "spiffe://example.org//a",
            invalid(
                "spiffe://example.org//a",
                "the path has an empty segment ('//')",
            ),
        ),
        (
            "spiffe://example.org/a/",
            invalid("spiffe://example.org/a/", "the path must not end with '/'"),
        ),
        (
            "spiffe://example.org/a\nb",
            invalid(
                "spiffe://example.org/a\\nb",
                "it contains the control character '\\n'",
            ),
        ),
        (
            "spiffe:example.org/a",
            invalid(
                "spiffe:example.org/a",
                "it must start with 'spiffe://' followed by the trust domain",
            ),
        ),
    ];
    for (spiffe, description) in &cases {
        let (status, body) = token(issue(spiffe, None)).await;
        assert_refused(status, &body, description);
    }
    let long = format!("spiffe://example.org/{}", "a".repeat(2100));
    let (status, body) = token(issue(&long, None)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .ends_with("is not valid: it is 2121 bytes long, more than the 2048 allowed"),
        "{body}"
    );

    // Two SPIFFE IDs, in either order or letter case, are refused.
    let two = "The client certificate has more than one SPIFFE ID (URI SAN with scheme spiffe); a SPIFFE certificate carries exactly one";
    let (status, body) = token(issue(
        "spiffe://example.org/a",
        Some("spiffe://example.org/b"),
    ))
    .await;
    assert_refused(status, &body, two);
    let (status, body) = token(issue(
        "spiffe://example.org/a",
        Some("Spiffe://example.org/b"),
    ))
    .await;
    assert_refused(
        status,
        &body,
        &invalid(
            "Spiffe://example.org/b",
            "the scheme must be written in lowercase ('spiffe://')",
        ),
    );

    // Other URI SANs stay allowed; the SPIFFE ID is found by scheme.
    for uri in [
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "https://example.org/SPIFFE://x",
    ] {
        let leaf = issue("spiffe://example.org/ns/prod/sa/workload", Some(uri));
        let (status, body) = token(leaf).await;
        let token = id_token(status, &body);
        let claims = common::verify_with(
            &https_client(&pki.root.pem, None),
            &token,
            &service.base,
            common::AUDIENCE,
        )
        .await;
        assert_eq!(claims["sub"], "spiffe://example.org/ns/prod/sa/workload");
        assert_eq!(claims["client"]["x5_urisan"], uri, "{claims}");
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 10: chains, revocation and trust material
// ---------------------------------------------------------------------------------------------

/// One POST /token on a new TLS 1.3 connection presenting `chain` (signed with `key`).
async fn token_on_new_connection(
    service: &TlsService,
    pki: &Pki,
    chain: &[Vec<u8>],
    key: &[u8],
) -> (u16, Value) {
    let config = rustls_config(&pki.root.der, chain, key, &rustls::version::TLS13);
    let mut stream = connect(service, config).await.unwrap();
    let (status, body) = http1(&mut stream, "POST", "/token", Some(GRANT))
        .await
        .unwrap();
    (status, serde_json::from_str(&body).unwrap())
}

/// Finding 2: a leaf plus nine self-issued CAs of one name used to make path building run to
/// its limit (~170 ms of CPU per request). Refused now before any path is built; measured
/// through the server's own CPU time against the same number of good requests.
#[tokio::test]
async fn refusing_a_leaf_with_nine_self_issued_cas_costs_about_what_a_good_request_costs() {
    const N: usize = 6;
    let pki = Pki::new();
    let service = TlsService::start_process(&pki, &pki.root.pem, None, &[]);
    let attacks: Vec<_> = (0..N).map(|_| self_issued_ca_chain(9)).collect();
    // Warm up (first handshake, first signature).
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    id_token(status, &body);

    let start = service.cpu_seconds();
    for _ in 0..N {
        let (status, body) =
            token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
        id_token(status, &body);
    }
    let good = service.cpu_seconds() - start;

    let start = service.cpu_seconds();
    let mut answers = Vec::new();
    for (chain, key) in &attacks {
        answers.push(token_on_new_connection(&service, &pki, chain, key).await);
    }
    let attack = service.cpu_seconds() - start;
    // Generous: a tick of CPU accounting is 10 ms, and a refusal logs a line a token does not.
    assert!(
        attack <= 3.0 * good + 0.3,
        "{N} refused chains took {attack:.2} s of server CPU, {N} tokens {good:.2} s"
    );
    for (status, body) in answers {
        assert_refused(
            status,
            &body,
            "The client sent 9 CA certificates after its own; at most 4 are accepted: send only the intermediates between the client certificate and a CA in TLS_CLIENT_CA_FILE",
        );
    }
    // Discovery stays served, and the refusals were logged with the leaf's facts.
    let discovery = https_client(&pki.root.pem, None)
        .get(service.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(discovery.status(), 200);
    let rejected = service.events("client_certificate_rejected");
    assert_eq!(rejected.len(), N, "{rejected:#?}");
    assert!(rejected.iter().all(|l| l["cert/serial"] == "66:01"));
}

/// Finding 5: revocation of an intermediate counts: a root CRL that lists the issuing CA stops
/// that CA's leaves, while the root's own leaves keep working.
#[tokio::test]
async fn root_crl_listing_the_issuing_ca_refuses_the_leaves_it_issued() {
    let pki = Pki::new();
    let crl = pki.root.crl_pem_revoking_cas(&[&pki.intermediate]);
    let service = TlsService::start_process(&pki, &pki.root.pem, Some(&crl), &[]);
    let revoked_ca = "The client certificate's issuing CA 'O=Token Service TLS tests, CN=Test Intermediate CA' has been revoked";
    let client = https_client(&pki.root.pem, Some(&pki.via_intermediate));
    let (status, body) = post_token(&client, &service).await;
    assert_refused(status, &body, revoked_ca);
    let leaf = &pki.via_intermediate;
    let (status, body) =
        token_on_new_connection(&service, &pki, &leaf.chain_der, &leaf.key_der).await;
    assert_refused(status, &body, revoked_ca);
    let rejected = service.events("client_certificate_rejected");
    assert!(
        rejected
            .iter()
            .any(|l| l["cert/serial"] == "00:80:02:ab" && l["reason"] == revoked_ca),
        "{rejected:#?}"
    );
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    id_token(status, &body);
}

/// Finding 8: verdicts hold a version number, not the trust material: with a 60,000-entry CRL
/// reloaded again and again, and a new client after each reload, the server's RSS stays flat.
#[tokio::test]
async fn memory_stays_flat_when_a_large_crl_is_reloaded_with_a_new_client_each_time() {
    const RELOADS: usize = 12;
    let pki = Pki::new();
    let serials: Vec<Vec<u8>> = (0..60_000u32)
        .map(|i| [&[0x7f][..], &i.to_be_bytes()].concat())
        .collect();
    let serials: Vec<&[u8]> = serials.iter().map(Vec::as_slice).collect();
    let crl = pki.root.crl_pem_of(
        &serials,
        time::OffsetDateTime::now_utc() + time::Duration::days(1),
    );
    let service = TlsService::start_process(
        &pki,
        &pki.root.pem,
        Some(&crl),
        &[("TLS_RELOAD_INTERVAL", "1")],
    );
    let mut baseline = None;
    for i in 0..RELOADS {
        let leaf = pki
            .root
            .issue(Spec::client(&format!("client-{i}"), &[0x31, i as u8]));
        let (status, body) =
            token_on_new_connection(&service, &pki, &leaf.chain_der, &leaf.key_der).await;
        id_token(status, &body);
        if i == 2 {
            baseline = Some(service.rss_mib());
        }
        let before = service.events("tls_reloaded").len();
        write_atomic(&service.crl_file, crl.as_bytes());
        service.wait_for_event("tls_reloaded", before).await;
    }
    let leaf = pki.root.issue(Spec::client("last", &[0x32, 0x01]));
    let (status, body) =
        token_on_new_connection(&service, &pki, &leaf.chain_der, &leaf.key_der).await;
    id_token(status, &body);
    let (baseline, end) = (baseline.unwrap(), service.rss_mib());
    assert!(
        end - baseline < 40.0,
        "RSS grew from {baseline:.0} MiB to {end:.0} MiB over {} reloads",
        RELOADS - 3
    );
}

/// Finding 10: a CRL whose signature does not verify (here: made by another key under the
/// root's name) is refused like any broken file, on reload and at startup; placed before the
/// real CRL it does not shadow it.
#[tokio::test]
async fn crl_whose_signature_does_not_verify_is_refused_on_reload_and_at_startup() {
    let pki = Pki::new();
    let impostor = Ca::root("Test Root CA");
    let forged = impostor.crl_pem(&[&pki.valid]);
    let (status, printed) =
        TlsService::start_expecting_failure(&pki, &pki.root.pem, Some(&forged), &[]);
    assert!(!status.success(), "{printed}");
    assert!(
        printed.contains("TLS_CLIENT_CRL_FILE") && printed.contains("signature does not verify"),
        "{printed}"
    );
    assert!(!printed.contains("panicked"), "{printed}");

    let service = TlsService::start_process(
        &pki,
        &pki.root.pem,
        Some(&pki.root.crl_pem(&[&pki.revoked])),
        &[("TLS_RELOAD_INTERVAL", "1")],
    );
    let real = pki.root.crl_pem(&[&pki.revoked]);
    for file in [forged.clone(), format!("{forged}{real}")] {
        let before = service.events("client_ca_reload_failed").len();
        write_atomic(&service.crl_file, file.as_bytes());
        let failed = service
            .wait_for_event("client_ca_reload_failed", before)
            .await;
        let reason = failed["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("TLS_CLIENT_CRL_FILE") && reason.contains("CRL 1"),
            "{failed}"
        );
        // The old material stays: the forged CRL's victim still gets a token, the real CRL's
        // revocation still holds.
        let (status, body) =
            token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
        id_token(status, &body);
        let (status, body) =
            token_on_new_connection(&service, &pki, &pki.revoked.chain_der, &pki.revoked.key_der)
                .await;
        assert_refused(status, &body, REVOKED);
    }
    let metrics = reqwest_get(&service, &pki, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("token_service_reloads_total{material=\"client_ca\",result=\"error\"} 2")),
        "{metrics}"
    );
}

/// The body of a GET over TLS without a client certificate.
async fn reqwest_get(service: &TlsService, pki: &Pki, path: &str) -> String {
    https_client(&pki.root.pem, None)
        .get(service.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Finding 14: an issuing CA whose keyUsage extension lacks keyCertSign is refused, sent by
/// the client (403 with the reason) or in TLS_CLIENT_CA_FILE (startup refused, naming the file
/// and the certificate); a CA without a keyUsage extension stays accepted.
#[tokio::test]
async fn issuing_ca_with_key_usage_without_key_cert_sign_is_refused() {
    let pki = Pki::new();
    let no_cert_sign = pki.root.intermediate_with_key_usages(
        "No CertSign CA",
        Some(vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::CrlSign,
        ]),
    );
    let no_key_usage = pki
        .root
        .intermediate_with_key_usages("No KeyUsage CA", Some(vec![]));
    let service = TlsService::start(&pki, &pki.root.pem, None, &[]);
    let refused = no_cert_sign.issue(Spec::client("under-no-cert-sign", &[0x40, 0x01]));
    let (status, body) =
        token_on_new_connection(&service, &pki, &refused.chain_der, &refused.key_der).await;
    assert_refused(
        status,
        &body,
        "The client certificate's chain holds the CA certificate 'O=Token Service TLS tests, CN=No CertSign CA', which has a keyUsage extension without keyCertSign, so it may not issue certificates (RFC 5280 4.2.1.3)",
    );
    let accepted = no_key_usage.issue(Spec::client("under-no-key-usage", &[0x40, 0x02]));
    let (status, body) =
        token_on_new_connection(&service, &pki, &accepted.chain_der, &accepted.key_der).await;
    id_token(status, &body);

    let bad_root = Ca::root_with_key_usages(
        "Signing-only root",
        Some(vec![rcgen::KeyUsagePurpose::DigitalSignature]),
    );
    let bundle = format!("{}{}", pki.root.pem, bad_root.pem);
    let (status, printed) = TlsService::start_expecting_failure(&pki, &bundle, None, &[]);
    assert!(!status.success(), "{printed}");
    assert!(
        printed.contains("TLS_CLIENT_CA_FILE")
            && printed.contains("certificate 2 ('O=Token Service TLS tests, CN=Signing-only root') has a keyUsage extension without keyCertSign"),
        "{printed}"
    );
    // A bundle CA without keyUsage is fine.
    let plain_root = Ca::root_with_key_usages("Root without keyUsage", Some(vec![]));
    let plain_leaf = plain_root.issue(Spec::client("under-plain-root", &[0x40, 0x03]));
    let service = TlsService::start(
        &pki,
        &format!("{}{}", pki.root.pem, plain_root.pem),
        None,
        &[],
    );
    let (status, body) =
        token_on_new_connection(&service, &pki, &plain_leaf.chain_der, &plain_leaf.key_der).await;
    id_token(status, &body);
}

/// "Also": a CRL past its nextUpdate under TLS_CLIENT_CRL_EXPIRED=warn (the default) still
/// revokes what it lists, with a warning line, a metric and a /readyz warning (still 200).
#[tokio::test]
async fn expired_crl_under_warn_still_revokes_and_is_reported_in_logs_metrics_and_readyz() {
    let pki = Pki::new();
    let crl = pki.root.expired_crl_pem(&[&pki.revoked]);
    let service = TlsService::start_process(&pki, &pki.root.pem, Some(&crl), &[]);
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.revoked.chain_der, &pki.revoked.key_der).await;
    assert_refused(status, &body, REVOKED);
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    id_token(status, &body);
    let warned = service.events("client_crl_expired");
    assert_eq!(warned.len(), 1, "{warned:#?}");
    let response = https_client(&pki.root.pem, None)
        .get(service.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let warning = ready["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("Test Root CA")
            && warning.contains("TLS_CLIENT_CRL_FILE")
            && warning.contains("TLS_CLIENT_CRL_EXPIRED=warn"),
        "{ready}"
    );
    let metrics = reqwest_get(&service, &pki, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "token_service_client_crls_expired 1"),
        "{metrics}"
    );
}

/// "Also": TLS_CLIENT_CRL_EXPIRED=deny refuses the certificates of a CA whose CRL has expired
/// until a fresh CRL loads; other CAs are unaffected.
#[tokio::test]
async fn expired_crl_under_deny_refuses_that_cas_certificates_until_a_fresh_crl_loads() {
    let pki = Pki::new();
    let other = Ca::root("Other fresh CA");
    let other_leaf = other.issue(Spec::client("other-fresh", &[0x41, 0x01]));
    let crls = format!("{}{}", pki.root.expired_crl_pem(&[]), other.crl_pem(&[]));
    let service = TlsService::start_process(
        &pki,
        &format!("{}{}", pki.root.pem, other.pem),
        Some(&crls),
        &[
            ("TLS_CLIENT_CRL_EXPIRED", "deny"),
            ("TLS_RELOAD_INTERVAL", "1"),
        ],
    );
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    assert_refused(
        status,
        &body,
        "The client certificate cannot be checked for revocation: the CRL of a CA of its chain is past its nextUpdate, and TLS_CLIENT_CRL_EXPIRED=deny refuses certificates until a fresh CRL is loaded",
    );
    let (status, body) =
        token_on_new_connection(&service, &pki, &other_leaf.chain_der, &other_leaf.key_der).await;
    id_token(status, &body);
    let before = service.events("tls_reloaded").len();
    write_atomic(
        &service.crl_file,
        format!("{}{}", pki.root.crl_pem(&[]), other.crl_pem(&[])).as_bytes(),
    );
    service.wait_for_event("tls_reloaded", before).await;
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    id_token(status, &body);
}

/// "Also": TLS_CLIENT_CRL_REQUIRED=true refuses the certificates of a CA without a CRL
/// (intermediates included); the default accepts them.
#[tokio::test]
async fn crl_required_refuses_certificates_of_a_ca_without_a_crl() {
    let pki = Pki::new();
    let other = Ca::root("CA without CRL");
    let other_leaf = other.issue(Spec::client("no-crl-ca", &[0x42, 0x01]));
    let bundle = format!("{}{}", pki.root.pem, other.pem);
    let crl = pki.root.crl_pem(&[]);
    let missing = "The client certificate has an unknown revocation status: TLS_CLIENT_CRL_FILE holds no CRL of a CA of its chain, which TLS_CLIENT_CRL_REQUIRED=true requires";
    let required = TlsService::start(
        &pki,
        &bundle,
        Some(&crl),
        &[("TLS_CLIENT_CRL_REQUIRED", "true")],
    );
    let by_default = TlsService::start(&pki, &bundle, Some(&crl), &[]);
    for (leaf, refused) in [
        (&other_leaf, true),
        (&pki.via_intermediate, true),
        (&pki.valid, false),
    ] {
        let (status, body) =
            token_on_new_connection(&required, &pki, &leaf.chain_der, &leaf.key_der).await;
        if refused {
            assert_refused(status, &body, missing);
        } else {
            id_token(status, &body);
        }
        let (status, body) =
            token_on_new_connection(&by_default, &pki, &leaf.chain_der, &leaf.key_der).await;
        id_token(status, &body);
    }
    let (status, printed) = TlsService::start_expecting_failure(
        &pki,
        &bundle,
        None,
        &[("TLS_CLIENT_CRL_REQUIRED", "true")],
    );
    assert!(!status.success(), "{printed}");
    assert!(
        printed.contains("TLS_CLIENT_CRL_REQUIRED") && printed.contains("TLS_CLIENT_CRL_FILE"),
        "{printed}"
    );
}

/// The two revocation settings refuse values they do not know, naming the valid ones.
#[test]
fn invalid_crl_policy_values_stop_startup_naming_the_setting_and_its_values() {
    let pki = Pki::new();
    let crl = pki.root.crl_pem(&[]);
    for (name, value, expected) in [
        ("TLS_CLIENT_CRL_EXPIRED", "ignore", "expected warn or deny"),
        ("TLS_CLIENT_CRL_REQUIRED", "maybe", "expected true or false"),
    ] {
        let (status, printed) =
            TlsService::start_expecting_failure(&pki, &pki.root.pem, Some(&crl), &[(name, value)]);
        assert!(!status.success(), "{printed}");
        assert!(
            printed.contains(&format!("{name}: '{value}' is not valid; {expected}")),
            "{printed}"
        );
        assert!(!printed.contains("panicked"), "{printed}");
    }
}

/// "Also" with finding 8: a verdict cached while the CRL was fresh does not outlive its
/// nextUpdate under `TLS_CLIENT_CRL_EXPIRED=deny` (no file changes, so the trust version stays
/// the same: the cache itself must know when the verdict stops holding).
#[tokio::test]
async fn a_cached_verdict_ends_when_the_crl_expires_under_deny() {
    let pki = Pki::new();
    let next_update = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let crl = pki.root.crl_pem_of(&[], next_update);
    let service = TlsService::start(
        &pki,
        &pki.root.pem,
        Some(&crl),
        &[("TLS_CLIENT_CRL_EXPIRED", "deny")],
    );
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    id_token(status, &body);
    while time::OffsetDateTime::now_utc() <= next_update + time::Duration::seconds(1) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    assert_refused(
        status,
        &body,
        "The client certificate cannot be checked for revocation: the CRL of a CA of its chain is past its nextUpdate, and TLS_CLIENT_CRL_EXPIRED=deny refuses certificates until a fresh CRL is loaded",
    );
}

/// Finding 5: every CA of TLS_CLIENT_CA_FILE is a trust anchor, and anchors are never checked
/// against CRLs; so an intermediate kept in the bundle (as the proxy recipes require) that its
/// root's CRL lists is left out of the trusted CAs, with a `client_ca_revoked` warning at load
/// and on every reload. Its leaves, even sent without it, are refused naming it; the root's
/// own leaves keep working.
#[tokio::test]
async fn bundle_intermediate_listed_on_its_roots_crl_is_left_out_of_the_trusted_cas() {
    let pki = Pki::new();
    let bundle = format!("{}{}", pki.root.pem, pki.intermediate.pem);
    let crl = pki.root.crl_pem_revoking_cas(&[&pki.intermediate]);
    let service =
        TlsService::start_process(&pki, &bundle, Some(&crl), &[("TLS_RELOAD_INTERVAL", "1")]);
    let subject = "O=Token Service TLS tests, CN=Test Intermediate CA";
    let serial = colon_hex(&der_serial(&pki.intermediate.der));
    let warned = |events: Vec<Value>| {
        events
            .iter()
            .filter(|l| l["ca"] == subject && l["serial"] == serial.as_str())
            .count()
    };
    assert_eq!(warned(service.events("client_ca_revoked")), 1);
    let revoked_ca = format!("The client certificate's issuing CA '{subject}' has been revoked");
    let leaf = &pki.via_intermediate;
    let (status, body) =
        token_on_new_connection(&service, &pki, &leaf.chain_der[..1], &leaf.key_der).await;
    assert_refused(status, &body, &revoked_ca);
    let (status, body) =
        token_on_new_connection(&service, &pki, &leaf.chain_der, &leaf.key_der).await;
    assert_refused(status, &body, &revoked_ca);
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    id_token(status, &body);

    let before = service.events("tls_reloaded").len();
    write_atomic(&service.crl_file, crl.as_bytes());
    service.wait_for_event("tls_reloaded", before).await;
    assert_eq!(warned(service.events("client_ca_revoked")), 2);
    let (status, body) =
        token_on_new_connection(&service, &pki, &leaf.chain_der[..1], &leaf.key_der).await;
    assert_refused(status, &body, &revoked_ca);
    let (status, body) =
        token_on_new_connection(&service, &pki, &pki.valid.chain_der, &pki.valid.key_der).await;
    id_token(status, &body);
}
