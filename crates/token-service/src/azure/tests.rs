//! Entra's answers read: the access token, AADSTS errors mapped to the client's failure with
//! the code in its sentence, throttling and outages to 503 with `Retry-After`.

use super::*;

const APP: &str = "11111111-2222-3333-4444-555555555555";
const TENANT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn asked() -> AzureRequest<'static> {
    AzureRequest {
        client_id: APP,
        tenant_id: TENANT,
        scope: "https://graph.microsoft.com/.default",
    }
}

fn entra(error: &str, code: u64) -> String {
    serde_json::json!({
        "error": error,
        "error_description": format!("AADSTS{code}: Something Entra says. Trace ID: x"),
        "error_codes": [code],
    })
    .to_string()
}

#[track_caller]
fn refused(status: u16, body: &str) -> Failure {
    match classify(status, None, body) {
        Ok(Err(e)) => refusal(&e, &asked()),
        other => panic!("not a refusal: {:?}", other.map(|r| r.map(|_| ()))),
    }
}

#[test]
fn a_token_answer_yields_the_access_token_and_its_lifetime() {
    let body = r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ.a.b"}"#;
    let Ok(Ok(granted)) = classify(200, None, body) else {
        panic!("not granted");
    };
    assert_eq!(granted.access_token, "eyJ.a.b");
    assert_eq!(granted.expires_in, Some(3599));
    for bad in ["", "{}", r#"{"access_token":""}"#, "<html>"] {
        assert!(
            matches!(
                classify(200, None, bad),
                Err(UpstreamError::Malformed { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn federated_credential_refusals_are_403_naming_the_aadsts_code() {
    for (status, error, code, hint) in [
        (401, "invalid_client", 700_211, "issuer"),
        (401, "invalid_client", 700_213, "subject"),
        (401, "invalid_client", 700_212, "audience"),
        (401, "invalid_client", 70_021, "federated credential"),
        (400, "invalid_client", 700_024, "clock"),
        (400, "invalid_request", 50_027, "JWKS"),
    ] {
        let f = refused(status, &entra(error, code));
        assert_eq!(f.kind(), Kind::AccessDenied, "{code}");
        let message = f.message();
        assert!(message.contains(&format!("AADSTS{code}")), "{message}");
        assert!(message.contains(hint), "{message}");
        assert!(
            message.contains(APP) && message.contains(TENANT),
            "{message}"
        );
    }
}

#[test]
fn parameter_refusals_are_400() {
    for (error, code, names) in [
        ("invalid_scope", 1_002_012, "'scope'"),
        ("invalid_scope", 70_011, "'scope'"),
        ("invalid_request", 90_002, "'azure_tenant_id'"),
        ("unauthorized_client", 700_016, "'azure_client_id'"),
        ("invalid_request", 900_144, "Entra's message"),
    ] {
        let f = refused(400, &entra(error, code));
        assert_eq!(f.kind(), Kind::InvalidRequest, "{code}");
        assert!(f.message().contains(names), "{}", f.message());
        assert!(f.message().contains(&format!("AADSTS{code}")));
    }
    // The code read from the description when error_codes is missing.
    let body =
        r#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'x' not found."}"#;
    assert!(refused(400, body).message().contains("AADSTS90002"));
}

#[test]
fn throttling_and_outages_are_unavailable_with_retry_after() {
    for status in [429, 500, 503] {
        let e = classify(status, Some(7), &entra("temporarily_unavailable", 50_196))
            .err()
            .unwrap();
        assert_eq!(
            kind_of(&e),
            Kind::Unavailable { retry_after: 7 },
            "{status}"
        );
    }
    let e = classify(400, None, &entra("temporarily_unavailable", 50_196))
        .err()
        .unwrap();
    assert!(matches!(kind_of(&e), Kind::Unavailable { .. }));
    assert!(matches!(
        kind_of(&UpstreamError::Malformed {
            api: API,
            message: String::new()
        }),
        Kind::Server
    ));
    // An answer that is not Entra's JSON still becomes a failure by its status.
    let f = refused(403, "Forbidden");
    assert_eq!(f.kind(), Kind::AccessDenied);
}
