//! token-client's AWS outputs (issue 13 point 5) against the real broker and the emulator's
//! AWS STS: `credential-process` prints the credential_process JSON of the role (one line on
//! stderr on failure, never a secret), and `serve`'s `GET /aws/credentials` answers the
//! container credential provider's JSON only with the authorization token file's token, with
//! one broker request for many callers.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// The emulator's one session, checked against the device and the role.
#[track_caller]
fn only_session(f: &Fixture) -> gcp_emulator::AwsSession {
    let sessions = f.emulator.aws_sessions();
    assert_eq!(sessions.len(), 1, "one AssumeRoleWithWebIdentity expected");
    let session = sessions[0].clone();
    assert_eq!(session.role_arn, AWS_ROLE);
    assert_eq!(session.subject, DEVICE);
    assert_eq!(session.audience, AWS_AUDIENCE);
    session
}

fn unix(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_prints_the_roles_credentials() {
    let f = Fixture::start().await;
    let output = run_client(
        &[
            "credential-process",
            "--aws-role-arn",
            AWS_ROLE,
            "--aws-role-session-name",
            "device-1",
            "--aws-duration-seconds",
            "900",
        ],
        &f.client_env(),
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
    let body: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let session = only_session(&f);
    assert_eq!(session.session_name, "device-1");
    assert_eq!(body["Version"], 1);
    assert_eq!(body["AccessKeyId"], session.access_key_id.as_str());
    assert_eq!(body["SecretAccessKey"], session.secret_access_key.as_str());
    assert_eq!(body["SessionToken"], session.session_token.as_str());
    assert_eq!(
        unix(body["Expiration"].as_str().unwrap()),
        session.expiration
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((session.expiration - now - 900).abs() < 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_failures_are_one_line_on_stderr() {
    let f = Fixture::start().await;
    let unknown = "arn:aws:iam::123456789012:role/not-registered";
    let refused = run_client(
        &["credential-process", "--aws-role-arn", unknown],
        &f.client_env(),
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(stdout(&refused), "");
    let line = stderr(&refused);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("token-client credential-process: The broker refused"));
    assert!(f.emulator.aws_sessions().is_empty());

    let missing = run_client(&["credential-process"], &f.client_env()).await;
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stdout(&missing), "");
    assert_eq!(
        stderr(&missing),
        "token-client credential-process: --aws-role-arn is not set: pass --aws-role-arn arn:aws:iam::123456789012:role/NAME or set TOKEN_CLIENT_AWS_ROLE_ARN\n"
    );

    let invalid = run_client(
        &[
            "credential-process",
            "--aws-role-arn",
            AWS_ROLE,
            "--aws-duration-seconds",
            "60",
        ],
        &f.client_env(),
    )
    .await;
    assert_eq!(invalid.status.code(), Some(2));
    let line = stderr(&invalid);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("--aws-duration-seconds"), "{line}");

    f.relay.stop();
    let mut env = f.client_env();
    env.push(("TOKEN_CLIENT_AWS_ROLE_ARN".into(), AWS_ROLE.into()));
    env.push(("TOKEN_CLIENT_TIMEOUT".into(), "2".into()));
    let down = run_client(&["credential-process"], &env).await;
    assert_eq!(down.status.code(), Some(1));
    assert_eq!(stderr(&down).lines().count(), 1, "{}", stderr(&down));
}

/// `serve` with the AWS endpoint; the authorization token file in the fixture's folder.
fn serve_aws(f: &Fixture) -> Process {
    let file = f.path("aws-authorization-token");
    start_serve(
        &f.client_env(),
        &[
            "--no-metadata",
            "--aws-role-arn",
            AWS_ROLE,
            "--aws-authorization-token-file",
            &file.display().to_string(),
        ],
    )
}

async fn credentials(serve: &Process, authorization: Option<&str>) -> Answer {
    match authorization {
        Some(token) => get(&serve.url, "/aws/credentials", &[("Authorization", token)]).await,
        None => get(&serve.url, "/aws/credentials", &[]).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_container_provider_only_with_the_token() {
    let f = Fixture::start().await;
    let serve = serve_aws(&f);
    let file = f.path("aws-authorization-token");
    let token = std::fs::read_to_string(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(token.len() >= 40);

    let missing = credentials(&serve, None).await;
    assert_eq!(missing.status, 401, "{missing:?}");
    let wrong = credentials(&serve, Some("not-the-token")).await;
    assert_eq!(wrong.status, 403, "{wrong:?}");
    assert!(!wrong.body.contains(&token));

    let url = serve.url.clone();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (url, token) = (url.clone(), token.clone());
            tokio::spawn(async move {
                get(&url, "/aws/credentials", &[("Authorization", &token)]).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    let session = only_session(&f);
    for answer in answers {
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.header("content-type"), "application/json");
        let body = answer.json();
        assert_eq!(body["AccessKeyId"], session.access_key_id.as_str());
        assert_eq!(body["SecretAccessKey"], session.secret_access_key.as_str());
        assert_eq!(body["Token"], session.session_token.as_str());
        assert_eq!(
            unix(body["Expiration"].as_str().unwrap()),
            session.expiration
        );
    }
    let status = get(&serve.url, "/status", &[]).await.json();
    assert_eq!(status["aws_credentials"]["role_arn"], AWS_ROLE);
    assert_eq!(status["aws_credentials"]["state"]["refreshes"], 1);
    assert!(!status.to_string().contains(&session.secret_access_key));
    let logs = serve.logs();
    assert!(!logs.contains(&session.secret_access_key) && !logs.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_a_given_token_and_answers_503_without_credentials() {
    let f = Fixture::start().await;
    let file = f.path("aws-authorization-token");
    std::fs::write(&file, "given-token\n").unwrap();
    f.relay.stop();
    let serve = serve_aws(&f);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "given-token\n");
    let mut answer = credentials(&serve, Some("given-token")).await;
    for _ in 0..50 {
        if answer.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = credentials(&serve, Some("given-token")).await;
    }
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer
            .body
            .contains("token-client serve has no valid AWS credentials"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn serve_needs_the_token_file_with_a_role() {
    let output = run_client(
        &[
            "serve",
            "--no-metadata",
            "--broker",
            "https://broker.test",
            "--cert",
            "/c.pem",
            "--key",
            "/k.pem",
            "--aws-role-arn",
            AWS_ROLE,
        ],
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--aws-role-arn needs --aws-authorization-token-file FILE"),
        "{}",
        stderr(&output)
    );
}
