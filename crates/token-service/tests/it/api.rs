//! Black-box tests of the HTTP API: the real binary on a loopback port, spoken to over HTTP.

use crate::support as common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use serde_json::{Value, json};

const GRANT: &str = "grant_type=client_credentials";

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn issued_token_verifies_through_discovery_and_jwks_with_all_claims() {
    let server = Server::start(&[]);
    let response = token(&server, GRANT, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body = json_of(response).await;
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["id_token"],
        "{body}"
    );
    let jwt = body["id_token"].as_str().unwrap();
    let claims = verify(jwt, &server.base, AUDIENCE).await;
    assert_eq!(claims["iss"], server.base);
    assert_eq!(claims["sub"], SPIFFE);
    assert_eq!(claims["client_id"], SPIFFE);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["amr"], json!(["xlb-mtls-client-credentials"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    assert_eq!(
        claims["client"],
        json!({
            "x5_spiffe": SPIFFE,
            "x5_dnssan": "device-1.example.org",
            "x5_urisan": "",
            "x5_sha256": "q1Ki0fHfPVfPs2QhGOqPm6qOoJx6JxGNOpr3jxNKsL4",
            "x5_serial": "10:01",
        })
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["alg"], "ES256");
}

#[tokio::test]
async fn rsa_key_file_signs_rs256_and_publishes_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = temp_file(
        &dir,
        "keys.pem",
        &format!("{}{}", rsa_key_pem(), ec_key_pem()),
    );
    let server = Server::start(&[("SIGNING_KEY_FILE", keys.to_str().unwrap())]);
    let jwks: Value = json_of(
        client()
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert_eq!(key["use"], "sig");
        assert!(key["kid"].is_string());
    }
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[1]["alg"], "ES256");
    let body = json_of(token(&server, GRANT, &[]).await).await;
    let jwt = body["id_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(jwt).unwrap().kid.as_deref(),
        keys[0]["kid"].as_str()
    );
    verify(jwt, &server.base, AUDIENCE).await;
    let discovery = json_of(
        client()
            .get(server.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // The signing key's algorithm first, then those of the other published keys.
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
}

#[tokio::test]
async fn generated_key_is_written_once_and_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let kid = |server: &Server| {
        let url = server.url("/.well-known/jwks.json");
        async move { json_of(client().get(url).send().await.unwrap()).await["keys"][0]["kid"].clone() }
    };
    let first = Server::start_process(&[("SIGNING_KEY_FILE", ""), ("DATA_DIR", data)]);
    let first_kid = kid(&first).await;
    assert!(first.logs().contains("development"), "{}", first.logs());
    drop(first);
    let second = Server::start_process(&[("SIGNING_KEY_FILE", ""), ("DATA_DIR", data)]);
    assert_eq!(kid(&second).await, first_kid);
    let body = json_of(token(&second, GRANT, &[]).await).await;
    let claims = verify(body["id_token"].as_str().unwrap(), &second.base, AUDIENCE).await;
    assert_eq!(claims["sub"], SPIFFE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(format!("{data}/signing-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn token_validity_and_pool_audience_come_from_settings() {
    let server = Server::start(&[
        ("TOKEN_VALIDITY", "7"),
        ("TOKEN_AUDIENCE", ""),
        ("WORKLOAD_IDENITY_PROJECT_NUMBER", "42"),
        ("WORKLOAD_IDENITY_POOL_ID", "pool"),
        ("WORKLOAD_IDENITY_PROVIDER_ID", "prov"),
    ]);
    let aud = "https://iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/pool/providers/prov";
    let body = json_of(token(&server, GRANT, &[]).await).await;
    let claims = verify(body["id_token"].as_str().unwrap(), &server.base, aud).await;
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        420
    );
}

#[tokio::test]
async fn discovery_document_has_every_field_and_caching_headers() {
    let server = Server::start(&[]);
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/openid-metadata",
    ] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "public, max-age=300");
        let doc = json_of(response).await;
        let base = &server.base;
        assert_eq!(doc["issuer"], *base);
        assert_eq!(doc["token_endpoint"], format!("{base}/token"));
        assert_eq!(doc["authorization_endpoint"], format!("{base}/token"));
        assert_eq!(doc["jwks_uri"], format!("{base}/.well-known/jwks.json"));
        assert_eq!(doc["response_types_supported"], json!(["none"]));
        assert_eq!(doc["grant_types_supported"], json!(["client_credentials"]));
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["tls_client_auth"])
        );
    }
    let jwks = client()
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.headers()["cache-control"], "public, max-age=300");
}

#[tokio::test]
async fn jwks_uri_setting_overrides_the_published_uri() {
    let server = Server::start(&[("JWKS_URI", "https://keys.example.com/jwks")]);
    let doc = json_of(
        client()
            .get(server.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(doc["jwks_uri"], "https://keys.example.com/jwks");
}

#[tokio::test]
async fn issuer_is_derived_from_host_when_not_configured() {
    let server = Server::start_process(&[("TOKEN_ISSUER", "")]);
    assert!(
        server.logs().contains("TOKEN_ISSUER is not set"),
        "{}",
        server.logs()
    );
    let doc = json_of(
        client()
            .get(server.url("/.well-known/openid-configuration"))
            .header("host", "Tokens.Example.com")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(doc["issuer"], "https://tokens.example.com");
    assert_eq!(
        doc["jwks_uri"],
        "https://tokens.example.com/.well-known/jwks.json"
    );
    let response = client()
        .post(server.url("/token"))
        .header("host", "tokens.example.com")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Client-Cert-Present", "true")
        .header("X-Client-Cert-Chain-Verified", "true")
        .header("X-Client-Cert-Spiffe", SPIFFE)
        .body(GRANT)
        .send()
        .await
        .unwrap();
    let body = json_of(response).await;
    let payload = body["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["iss"], "https://tokens.example.com");
    let bad = client()
        .get(server.url("/.well-known/openid-configuration"))
        .header("host", "user@evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(json_of(bad).await["error"], "invalid_request");
}

#[tokio::test]
async fn issuer_setting_loses_its_trailing_slash() {
    let front = listener();
    let port = port_of(&front);
    let dir = tempfile::tempdir().unwrap();
    let key = temp_file(&dir, "k.pem", &ec_key_pem());
    let env = vec![
        (
            "TOKEN_ISSUER".to_owned(),
            format!("http://127.0.0.1:{port}/"),
        ),
        ("TOKEN_AUDIENCE".to_owned(), "aud".to_owned()),
        ("SIGNING_KEY_FILE".to_owned(), key.display().to_string()),
    ];
    let server = Server::spawn_on(front, &["serve"], env, dir);
    let body = json_of(token(&server, GRANT, &[]).await).await;
    verify(body["id_token"].as_str().unwrap(), &server.base, "aud").await;
    assert!(
        server.logs().contains("uses http://"),
        "http issuer warning expected"
    );
}

#[tokio::test]
async fn root_redirects_and_unknown_paths_and_methods_get_json_errors() {
    let server = Server::start(&[]);
    let root = client().get(server.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 307);
    // Absolute, under the issuer (TOKEN_ISSUER here).
    assert_eq!(
        root.headers()["location"],
        format!("{}/.well-known/openid-configuration", server.base)
    );
    let missing = client().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(json_of(missing).await["error"], "not_found");
    let get = client().get(server.url("/token")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    assert_eq!(get.headers()["cache-control"], "no-store");
    assert!(
        json_of(get).await["error_description"]
            .as_str()
            .unwrap()
            .contains("use POST")
    );
    let post = client()
        .post(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(json_of(post).await["error"], "method_not_allowed");
}

#[tokio::test]
async fn malformed_requests_get_oauth_errors() {
    let server = Server::start_process(&[]);
    let send = |content_type: &'static str, body: Vec<u8>| {
        let url = server.url("/token");
        async move {
            let mut r = client().post(url).body(body);
            for (k, v) in lb_headers(SPIFFE) {
                r = r.header(k, v);
            }
            if !content_type.is_empty() {
                r = r.header("content-type", content_type);
            }
            r.send().await.unwrap()
        }
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "application/json",
            br#"{"grant_type":"client_credentials"}"#.to_vec(),
            415,
            "invalid_request",
            "application/x-www-form-urlencoded",
        ),
        (
            "",
            GRANT.as_bytes().to_vec(),
            415,
            "invalid_request",
            "application/x-www-form-urlencoded",
        ),
        (
            "application/x-www-form-urlencoded",
            vec![b'a'; 16 * 1024 + 1],
            413,
            "invalid_request",
            "16 KiB",
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&grant_type=client_credentials".to_vec(),
            400,
            "invalid_request",
            "more than once",
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&x=\xff".to_vec(),
            400,
            "invalid_request",
            "UTF-8",
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&x=%C3%28".to_vec(),
            400,
            "invalid_request",
            "UTF-8",
        ),
        (
            "application/x-www-form-urlencoded",
            b"scope=x".to_vec(),
            400,
            "invalid_request",
            "'grant_type' is required",
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=password".to_vec(),
            400,
            "unsupported_grant_type",
            "'password' is not supported",
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&format=xml".to_vec(),
            400,
            "invalid_request",
            "external_credential",
        ),
        (
            "application/x-www-form-urlencoded; charset=UTF-8",
            b"grant_type=client_credentials&scope=https://www.googleapis.com/auth/cloud-platform"
                .to_vec(),
            400,
            "invalid_request",
            "Access tokens are not configured",
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&service_account=sa@p.iam.gserviceaccount.com".to_vec(),
            400,
            "invalid_request",
            "Access tokens are not configured",
        ),
    ];
    for (content_type, body, status, error, text) in cases {
        let response = send(content_type, body.clone()).await;
        assert_eq!(
            response.status(),
            status,
            "{content_type} {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
        let json = json_of(response).await;
        assert_eq!(json["error"], error, "{json}");
        assert!(
            json["error_description"].as_str().unwrap().contains(text),
            "{json}"
        );
    }
    let logs = server.logs();
    assert!(
        logs.contains("\"event\":\"bad_request\""),
        "bad input is logged: {logs}"
    );
    assert!(!logs.contains("\"severity\":\"ERROR\""), "{logs}");
}

#[tokio::test]
async fn requests_without_a_usable_flow_or_with_bad_headers_are_refused() {
    let server = Server::start_process(&[]);
    let no_cert = token(&server, GRANT, &[("X-Client-Cert-Present", "false")]).await;
    assert_eq!(no_cert.status(), 400);
    assert_eq!(
        json_of(no_cert).await["error_description"],
        "No suitable flow found for grant type 'client_credentials': xlb-mtls-client-credentials: header x-client-cert-present holds 'false' rather than 'true': no client certificate was presented to the load balancer"
    );
    let missing = token(&server, GRANT, &[("X-Client-Cert-Present", "")]).await;
    assert_eq!(missing.status(), 400);
    let logs = server.logs();
    assert!(
        logs.contains("holds 'false'") && logs.contains("is missing"),
        "{logs}"
    );

    let bad_b64 = token(
        &server,
        GRANT,
        &[("X-Client-Cert-DNSName-SANs", "@@not-base64@@")],
    )
    .await;
    assert_eq!(bad_b64.status(), 400);
    assert!(
        json_of(bad_b64).await["error_description"]
            .as_str()
            .unwrap()
            .contains("not valid base64")
    );

    let mut request = client()
        .post(server.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(GRANT);
    for (k, v) in lb_headers(SPIFFE) {
        request = request.header(k, v);
    }
    let odd = request
        .header(
            "X-Client-Cert-Serial-Number",
            reqwest::header::HeaderValue::from_bytes(b"\xe9t\xe9").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 400);
    let huge = token(
        &server,
        GRANT,
        &[("X-Client-Cert-Spiffe", &"a".repeat(60_000))],
    )
    .await;
    assert_eq!(huge.status(), 400);
    assert!(
        json_of(huge).await["error_description"]
            .as_str()
            .unwrap()
            .contains("exceeds 8 KiB")
    );
}

#[tokio::test]
async fn unverified_chain_is_unauthorized_and_logged_with_every_certificate_header() {
    let server = Server::start_process(&[]);
    let response = token(
        &server,
        GRANT,
        &[
            ("X-Client-Cert-Chain-Verified", "false"),
            ("X-Client-Cert-Error", "client_cert_chain_invalid_eku"),
        ],
    )
    .await;
    assert_eq!(response.status(), 403);
    let body = json_of(response).await;
    assert_eq!(body["error"], "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("client_cert_chain_invalid_eku")
    );
    // The request's one log line names the event and carries the outcome and every
    // certificate header the load balancer sent.
    let logs = server.json_logs();
    let line = logs
        .iter()
        .find(|l| l["logging.googleapis.com/labels"]["event"] == "client_certificate_unverified")
        .expect("one line per authentication attempt");
    assert_eq!(line["severity"], "WARNING");
    let labels = &line["logging.googleapis.com/labels"];
    assert_eq!(
        labels["header/x-client-cert-error"],
        "client_cert_chain_invalid_eku"
    );
    assert_eq!(labels["header/x-client-cert-chain-verified"], "false");
    assert_eq!(labels["header/x-client-cert-spiffe"], SPIFFE);
    assert_eq!(labels["header/x-client-cert-serial-number"], "10:01");
    assert_eq!(labels["outcome"], "unauthorized_client");
    assert_eq!(labels["flow"], "xlb-mtls-client-credentials");

    // (header set to a bad value, words the description must contain)
    let refused = [
        ("X-Client-Cert-Spiffe", "", "x-client-cert-spiffe"),
        (
            "X-Client-Cert-Valid-Not-After",
            "2021-01-01T00:00:00Z",
            "expired",
        ),
        ("X-Client-Cert-Valid-Not-Before", "01/01/2020", ""),
    ];
    for (header, value, words) in refused {
        let response = token(&server, GRANT, &[(header, value)]).await;
        assert_eq!(response.status(), 403, "{header}: {value}");
        let description = json_of(response).await["error_description"].clone();
        assert!(
            description.as_str().unwrap().contains(words),
            "{header}: {value}: {description}"
        );
    }
}

#[tokio::test]
async fn external_credential_format_follows_aip_4117() {
    let server = Server::start(&[]);
    let ok = token(
        &server,
        "grant_type=client_credentials&format=external_credential",
        &[],
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    let body = json_of(ok).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["version"], 1);
    assert_eq!(
        body["token_type"],
        "urn:ietf:params:oauth:token-type:id_token"
    );
    let claims = verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    assert_eq!(body["expiration_time"], claims["exp"]);
    let denied = token(
        &server,
        "grant_type=client_credentials&format=external_credential",
        &[("X-Client-Cert-Chain-Verified", "false")],
    )
    .await;
    assert_eq!(denied.status(), 403);
    let body = json_of(denied).await;
    assert_eq!(body["success"], false);
    assert_eq!(body["version"], 1);
    assert_eq!(body["code"], "unauthorized_client");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("could not be verified")
    );
}

#[tokio::test]
async fn client_id_from_dns_san_header_is_decoded() {
    let server = Server::start(&[("MTLS_HEADER_CLIENT_ID", "X-Client-Cert-DNSName-SANs")]);
    let per_entry = format!(
        "{},{}",
        STANDARD.encode("dev-7.example.org"),
        STANDARD.encode("x.example.org")
    );
    let body = json_of(
        token(
            &server,
            GRANT,
            &[("X-Client-Cert-DNSName-SANs", &per_entry)],
        )
        .await,
    )
    .await;
    let claims = verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    assert_eq!(claims["client_id"], "dev-7.example.org");
    assert_eq!(claims["sub"], "dev-7.example.org");
    assert_eq!(claims["client"]["x5_dnssan"], "dev-7.example.org");
}

#[tokio::test]
async fn custom_header_names_are_honoured() {
    let server = Server::start(&[
        ("MTLS_HEADER_CLIENT_CERT_PRESENT", "X-Mtls-Present"),
        ("MTLS_HEADER_CLIENT_CERT_CHAIN_VERIFIED", "X-Mtls-Verified"),
        ("MTLS_HEADER_CLIENT_CERT_SPIFFE_ID", "X-Mtls-Spiffe"),
        ("MTLS_HEADER_CLIENT_ID", "X-Mtls-Spiffe"),
    ]);
    let response = token(
        &server,
        GRANT,
        &[
            ("X-Mtls-Present", "true"),
            ("X-Mtls-Verified", "true"),
            ("X-Mtls-Spiffe", "spiffe://custom/x"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let claims = verify(
        json_of(response).await["id_token"].as_str().unwrap(),
        &server.base,
        AUDIENCE,
    )
    .await;
    assert_eq!(claims["sub"], "spiffe://custom/x");
}

#[tokio::test]
async fn load_balancer_secret_header_is_required_when_configured() {
    let server = Server::start_process(&[
        ("MTLS_LB_SECRET", "correct horse"),
        ("MTLS_LB_SECRET_HEADER", "X-LB-Auth"),
    ]);
    let without = token(&server, GRANT, &[]).await;
    assert_eq!(without.status(), 403);
    assert!(
        json_of(without).await["error_description"]
            .as_str()
            .unwrap()
            .contains("x-lb-auth")
    );
    let wrong = token(&server, GRANT, &[("X-LB-Auth", "correct horsE")]).await;
    assert_eq!(wrong.status(), 403);
    let right = token(&server, GRANT, &[("X-LB-Auth", "correct horse")]).await;
    assert_eq!(right.status(), 200);
    assert!(
        !server.logs().contains("correct horse"),
        "the secret never reaches a log"
    );
}

#[tokio::test]
async fn logs_are_cloud_logging_json_with_trace_and_never_contain_tokens() {
    let server = Server::start_process(&[("GOOGLE_CLOUD_PROJECT", "my-project")]);
    let mut tokens = Vec::new();
    let traced = token(
        &server,
        GRANT,
        &[(
            "X-Cloud-Trace-Context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )],
    )
    .await;
    tokens.push(
        json_of(traced).await["id_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let w3c = token(
        &server,
        "grant_type=client_credentials&format=external_credential",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;
    tokens.push(json_of(w3c).await["id_token"].as_str().unwrap().to_owned());
    let logs = server.json_logs();
    for line in &logs {
        assert!(
            line["severity"].is_string() && line["message"].is_string(),
            "{line}"
        );
    }
    let issued: Vec<&Value> = logs
        .iter()
        .filter(|l| l["logging.googleapis.com/labels"]["event"] == "token_issued")
        .collect();
    assert_eq!(issued.len(), 2, "one line per authentication attempt");
    assert_eq!(issued[0]["severity"], "INFO");
    assert_eq!(
        issued[0]["logging.googleapis.com/trace"],
        "projects/my-project/traces/105445aa7843bc8bf206b12000100000"
    );
    assert_eq!(
        issued[1]["logging.googleapis.com/trace"],
        "projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        issued[0]["logging.googleapis.com/labels"]["client_id"],
        SPIFFE
    );
    assert_eq!(
        issued[0]["logging.googleapis.com/labels"]["flow"],
        "xlb-mtls-client-credentials"
    );
    let raw = server.logs();
    for jwt in &tokens {
        for part in jwt.split('.').skip(1) {
            assert!(!raw.contains(part), "a token part reached the log");
        }
    }
    let key = std::fs::read_to_string(server.dir.path().join("key.pem")).unwrap();
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !raw.contains(&key_body[..32]),
        "key material reached the log"
    );
}

#[tokio::test]
async fn text_log_format_is_for_terminals() {
    let server = Server::start_process(&[("LOG_FORMAT", "text")]);
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    let logs = server.logs();
    assert!(logs.contains("issued a token to client"), "{logs}");
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "{logs}"
    );
}

#[tokio::test]
async fn text_logs_escape_newlines_and_terminal_escapes_from_certificate_facts() {
    let server = Server::start_process(&[
        ("LOG_FORMAT", "text"),
        ("MTLS_HEADER_CLIENT_ID", "X-Client-Cert-DNSName-SANs"),
    ]);
    let forged = "dev.example.org\n2026-01-01T00:00:00Z  INFO forged line\u{1b}[2K\u{1b}[31m";
    let sans = STANDARD.encode(forged);
    let response = token(&server, GRANT, &[("X-Client-Cert-DNSName-SANs", &sans)]).await;
    assert_eq!(response.status(), 200);
    let logs = server.logs();
    assert!(logs.contains("dev.example.org\\n2026-01-01"), "{logs}");
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line: {logs}"
    );
    assert!(!logs.contains('\u{1b}'), "a raw escape: {logs:?}");
}

/// Sends one raw HTTP/1.1 GET with exactly these header lines; returns the status and body.
async fn raw_get(server: &Server, path: &str, header_lines: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\n{header_lines}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// Without TOKEN_ISSUER the issuer comes from the request's authority: an empty host, an empty
/// or out-of-range port gets 400 over HTTP/1.1 and HTTP/2; HTTP/2 uses `:authority`, and a
/// `Host` that contradicts it is refused. `GET /` redirects under the derived issuer.
#[tokio::test]
async fn derived_issuer_needs_a_valid_host_over_http1_and_authority_over_http2() {
    let server = Server::start(&[("TOKEN_ISSUER", "")]);
    const DISCOVERY: &str = "/.well-known/openid-configuration";
    for bad in [
        ":80",
        "evil.example:",
        "evil.example:99999",
        "evil.example:0",
        "",
    ] {
        let (status, body) = raw_get(&server, DISCOVERY, &format!("Host: {bad}\r\n")).await;
        assert_eq!(status, 400, "Host '{bad}': {body}");
        assert!(
            body.contains("invalid_request") && body.contains("Host"),
            "{body}"
        );
    }
    let (status, body) = raw_get(&server, DISCOVERY, "Host: Good.Example:8443\r\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["issuer"],
        "https://good.example:8443"
    );
    let (status, _) = raw_get(&server, "/", "Host: :80\r\n").await;
    assert_eq!(status, 400);

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut h2 = http2::client(tcp).await;
    for bad in [":80", "evil.example:", "evil.example:99999"] {
        let (status, _, body) = http2::get(&mut h2, http2::request(bad, DISCOVERY, None)).await;
        assert_eq!(status, 400, ":authority '{bad}': {body}");
    }
    let (status, _, body) =
        http2::get(&mut h2, http2::request("h2.example:9443", DISCOVERY, None)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["issuer"],
        "https://h2.example:9443"
    );
    // A Host header does not override :authority.
    let (status, _, body) = http2::get(
        &mut h2,
        http2::request("h2.example", DISCOVERY, Some("evil.example")),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, headers, _) = http2::get(&mut h2, http2::request("h2.example", "/", None)).await;
    assert_eq!(status, 307);
    assert_eq!(
        headers["location"],
        "https://h2.example/.well-known/openid-configuration"
    );
}
