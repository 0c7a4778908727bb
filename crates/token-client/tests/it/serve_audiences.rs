//! `token-client serve` and audiences other than the broker's default (issue 13 point 1):
//! the metadata server's `identity?audience=A` for an audience the broker lists (URL-encoded
//! or raw, as Node's gcp-metadata sends it), cached per audience; a refused one answers 403
//! with the broker's message; at most 8 asked-for audiences are kept (429 beyond); and
//! `--audience-token-file` keeps files for other audiences fresh, mode 0600.

use std::time::Duration;

use crate::serve::{claims, serve_metadata};
use crate::support::*;

const IDENTITY: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";

/// Waits until the startup refreshes (ID token and default access token) are done.
async fn settled(serve: &Process) {
    for _ in 0..100 {
        let body = get(&serve.url, "/status", &[]).await.json();
        if body["id_token"]["refreshes"] == 1 && body["access_tokens"][0]["refreshes"] == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("serve did not get its first tokens: {}", serve.logs());
}

async fn identity(serve: &Process, audience: &str) -> Answer {
    get(
        &serve.url,
        &format!("{IDENTITY}?audience={audience}&format=full"),
        &[FLAVOR],
    )
    .await
}

/// `audience` with every byte outside `[A-Za-z0-9]` percent-encoded.
fn encoded(audience: &str) -> String {
    audience
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_serves_listed_audiences_once_each_and_refuses_others_with_the_reason() {
    let f = Fixture::start().await;
    let serve = serve_metadata(&f, &[]);
    settled(&serve).await;
    let before = f.issued();
    let aws = identity(&serve, AWS_AUDIENCE).await;
    assert_eq!(aws.status, 200, "{aws:?}");
    assert_eq!(aws.header("content-type"), "application/text");
    assert_eq!(claims(&aws.body)["aud"], AWS_AUDIENCE);
    assert_eq!(claims(&aws.body)["sub"], DEVICE);
    assert_eq!(identity(&serve, AWS_AUDIENCE).await.body, aws.body);
    assert_eq!(
        f.issued(),
        before + 1,
        "a second call asks the broker again"
    );
    // Encoded (Python) and raw (Node) forms name the same audience: one token.
    let entra = identity(&serve, &encoded(ENTRA_AUDIENCE)).await;
    assert_eq!(entra.status, 200, "{entra:?}");
    assert_eq!(claims(&entra.body)["aud"], ENTRA_AUDIENCE);
    assert_eq!(identity(&serve, ENTRA_AUDIENCE).await.body, entra.body);
    assert_eq!(f.issued(), before + 2);
    // The default audience comes from the default slot, with no request.
    let default = identity(&serve, &crate::serve::broker_audience()).await;
    assert_eq!(default.status, 200);
    assert_eq!(f.issued(), before + 2);

    let refused = identity(&serve, UNLISTED_AUDIENCE).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.header("metadata-flavor"), "Google");
    for part in [
        "access_denied",
        "parameter 'audience'",
        UNLISTED_AUDIENCE,
        "TOKEN_AUDIENCES",
    ] {
        assert!(refused.body.contains(part), "{part}: {}", refused.body);
    }
    let status = get(&serve.url, "/status", &[]).await.json();
    let kept: Vec<_> = status["audience_id_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["audience"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept.len(), 2, "a refused audience is not kept: {status}");
    assert!(kept.contains(&AWS_AUDIENCE.to_owned()) && kept.contains(&ENTRA_AUDIENCE.to_owned()));
    let logs = serve.logs();
    assert!(
        !logs.contains(&aws.body) && !logs.contains(&entra.body),
        "a token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_eight_asked_audiences_are_kept() {
    let f = Fixture::start().await;
    let serve = serve_metadata(&f, &[]);
    let mut audiences = vec![AWS_AUDIENCE, ENTRA_AUDIENCE];
    audiences.extend_from_slice(&LISTED_AUDIENCES[..6]);
    for audience in &audiences {
        let answer = identity(&serve, audience).await;
        assert_eq!(answer.status, 200, "{audience}: {answer:?}");
    }
    let ninth = identity(&serve, LISTED_AUDIENCES[6]).await;
    assert_eq!(ninth.status, 429, "{ninth:?}");
    assert!(
        ninth.body.contains("at most 8 audiences") && ninth.body.contains("GET /status"),
        "{}",
        ninth.body
    );
    // Those kept are still served; the default audience does not count.
    assert_eq!(identity(&serve, AWS_AUDIENCE).await.status, 200);
    let default = identity(&serve, &crate::serve::broker_audience()).await;
    assert_eq!(default.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_token_files_hold_tokens_for_their_audience() {
    let f = Fixture::start().await;
    let aws = f.path("aws.jwt");
    let entra = f.path("entra.jwt");
    let aws_flag = format!("{AWS_AUDIENCE}={}", aws.display());
    let entra_flag = format!("{ENTRA_AUDIENCE}={}", entra.display());
    let args = [
        "--no-metadata",
        "--audience-token-file",
        &aws_flag,
        "--audience-token-file",
        &entra_flag,
    ];
    let serve = start_serve(&f.client_env(), &args);
    for _ in 0..100 {
        if aws.exists() && entra.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (file, audience) in [(&aws, AWS_AUDIENCE), (&entra, ENTRA_AUDIENCE)] {
        let token = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), serve.logs()));
        assert_eq!(claims(&token)["aud"], audience);
        assert_eq!(claims(&token)["sub"], DEVICE);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let status = get(&serve.url, "/status", &[]).await.json();
    assert_eq!(
        status["audience_token_files"][1]["audience"], ENTRA_AUDIENCE,
        "{status}"
    );
    assert_eq!(
        status["audience_id_tokens"][0]["audience"], AWS_AUDIENCE,
        "{status}"
    );
    // The default token file stays the default audience's: `/token` is unchanged.
    let url = get(&serve.url, "/token", &[]).await.json();
    assert_eq!(
        claims(url["id_token"].as_str().unwrap())["aud"],
        crate::serve::broker_audience()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_audience_token_file_stops_startup() {
    let env: Vec<(String, String)> = [
        ("TOKEN_CLIENT_BROKER", "https://127.0.0.1:9"),
        ("TOKEN_CLIENT_CERT", "/nonexistent/c.pem"),
        ("TOKEN_CLIENT_KEY", "/nonexistent/k.pem"),
        ("TOKEN_CLIENT_AUDIENCE_TOKEN_FILE", "sts.amazonaws.com"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let output = run_client(&["serve", "--no-metadata", "--listen", "127.0.0.1:0"], &env).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--audience-token-file 'sts.amazonaws.com' is not AUDIENCE=FILE"),
        "{}",
        stderr(&output)
    );
}
