//! The STS answers as the exchange reads them: credentials, error XML, oversize and garbage,
//! and what each AWS error code means to the client.

use super::*;

const ROLE: &str = "arn:aws:iam::123456789012:role/devices";

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{message}</Message>\n  </Error>\n  <RequestId>r</RequestId>\n</ErrorResponse>\n"
    )
}

fn success_xml(expiration: &str) -> String {
    format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>secret&amp;key</SecretAccessKey>
      <SessionToken>session</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"
    )
}

#[test]
fn a_success_answer_yields_the_credentials_with_an_rfc3339_expiration() {
    let got = classify(200, None, &success_xml("2026-12-03T20:00:00.000Z"))
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret&key".into(),
            session_token: "session".into(),
            expiration: "2026-12-03T20:00:00Z".into(),
        }
    );
    for body in [
        success_xml("tomorrow"),
        success_xml(""),
        error_xml("X", "y"),
        "<a>".to_owned(),
        "{\"json\": true}".to_owned(),
    ] {
        let e = classify(200, None, &body).unwrap_err();
        assert!(matches!(e, UpstreamError::Malformed { .. }), "{body}: {e}");
        assert_eq!(e.kind(), Kind::Server);
    }
}

#[test]
fn an_error_answer_carries_its_code_and_message() {
    let got = classify(
        400,
        None,
        &error_xml("InvalidIdentityToken", "Incorrect token &lt;audience&gt;"),
    )
    .unwrap()
    .unwrap_err();
    assert_eq!(got.code, "InvalidIdentityToken");
    assert_eq!(got.message, "Incorrect token <audience>");
    // Not XML: the status names it.
    let plain = classify(403, None, "denied").unwrap().unwrap_err();
    assert_eq!(
        (plain.code.as_str(), plain.message.as_str()),
        ("HTTP403", "denied")
    );
    // 429 and 5xx are upstream errors, retried, with the code in the message.
    let busy = classify(503, Some(9), &error_xml("ServiceUnavailable", "busy")).unwrap_err();
    assert_eq!(busy.kind(), Kind::Unavailable { retry_after: 9 });
    assert!(
        busy.to_string().contains("ServiceUnavailable: busy"),
        "{busy}"
    );
    assert!(busy.is_transient());
}

#[test]
fn each_aws_error_code_maps_to_its_oauth_error_with_the_code_in_the_description() {
    let error = |status, code: &str| StsError {
        status,
        code: code.into(),
        message: "AWS says".into(),
        retry_after: None,
    };
    let cases = [
        (403, "AccessDenied", Kind::AccessDenied),
        (400, "InvalidIdentityToken", Kind::AccessDenied),
        (403, "IDPRejectedClaim", Kind::AccessDenied),
        (400, "ExpiredTokenException", Kind::AccessDenied),
        (
            400,
            "IDPCommunicationError",
            Kind::Unavailable { retry_after: 2 },
        ),
        (400, "Throttling", Kind::Unavailable { retry_after: 2 }),
        (400, "ValidationError", Kind::InvalidRequest),
        (403, "RegionDisabledException", Kind::AccessDenied),
        (404, "Unknown", Kind::Server),
    ];
    for (status, code, kind) in cases {
        let failure = refusal(&error(status, code), ROLE);
        assert_eq!(failure.kind(), kind, "{code}");
        let message = failure.message();
        assert!(
            message.starts_with(&format!(
                "AWS STS refused AssumeRoleWithWebIdentity for role '{ROLE}': {code}: AWS says"
            )),
            "{message}"
        );
    }
    let with_retry = StsError {
        retry_after: Some(500),
        ..error(400, "Throttling")
    };
    assert_eq!(
        refusal(&with_retry, ROLE).kind(),
        Kind::Unavailable { retry_after: 60 }
    );
}

/// A body over the cap is refused unread, whether it says its length or not.
#[tokio::test]
async fn an_answer_over_the_cap_is_refused() {
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut chunked = false;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let big = "x".repeat(MAX_ANSWER_BYTES + 1);
            let answer = if chunked {
                format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                    big.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}",
                    big.len()
                )
            };
            chunked = !chunked;
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let upstream = Upstream::new(Duration::from_secs(5), 4, metrics).unwrap();
    let exchange = AwsExchange::new(
        AwsConfig {
            audience: "sts.amazonaws.com".into(),
            sts_endpoint: url,
        },
        upstream,
    );
    for _ in 0..2 {
        let call = AssumeRole {
            role_arn: ROLE,
            session_name: "s1",
            duration_seconds: None,
            web_identity_token: "t",
        };
        let failure = exchange
            .assume_role(call, Deadline::after(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_eq!(failure.kind(), Kind::Server);
        assert!(
            failure.message().contains("the body exceeds 65536 bytes"),
            "{failure:?}"
        );
    }
    server.abort();
}
