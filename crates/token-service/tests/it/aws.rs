//! AWS (issue 13 point 2): `/token` with `aws_role_arn` against the emulator's AWS STS over
//! real sockets. The emulator trusts the service as an IAM OIDC provider (its loopback
//! allowance: `http://127.0.0.1:PORT`), fetches its discovery document and JWKS, checks the
//! token's `aud` against the provider's client IDs and the role's `sub`/`aud` conditions, and
//! answers in STS's XML; the service turns that into credentials or an OAuth error.

use std::net::TcpListener;

use gcp_emulator::{
    AwsConfig, AwsOidcProvider, AwsRole, Config as EmulatorConfig, Emulator, Fault, TrustClaim,
    TrustCondition, TrustOperator,
};
use serde_json::Value;

use crate::support::{self as common, AUDIENCE, SPIFFE, Server};

const AWS: &str = "sts.amazonaws.com";
const ROLE: &str = "arn:aws:iam::123456789012:role/fleet/devices";
const UNKNOWN_ROLE: &str = "arn:aws:iam::123456789012:role/not-registered";
const LISTED: (&str, &str) = ("TOKEN_AUDIENCES", AWS);
/// The session name derived from [`SPIFFE`].
const DERIVED: &str = "spiffe---example.org-ns-prod-sa-workload-1";

/// The emulated account: the service's issuer as OIDC provider accepting `client_ids`, and
/// [`ROLE`] trusting it for `sub` = [`SPIFFE`] and `aud` = [`AWS`].
async fn emulator(issuer: &str, client_ids: &[&str]) -> Emulator {
    let mut role = AwsRole::new(ROLE, issuer);
    role.conditions = vec![
        TrustCondition::new(TrustClaim::Sub, TrustOperator::StringEquals, &[SPIFFE]),
        TrustCondition::new(TrustClaim::Aud, TrustOperator::StringEquals, client_ids),
    ];
    role.max_session_duration_secs = 7200;
    let config = EmulatorConfig {
        aws: AwsConfig {
            oidc_providers: vec![AwsOidcProvider::new(issuer, client_ids)],
            roles: vec![role],
            ..AwsConfig::default()
        },
        allow_loopback_issuers: true,
        ..EmulatorConfig::default()
    };
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

struct Setup {
    emulator: Emulator,
    server: Server,
    _dir: tempfile::TempDir,
}

/// The emulator and the service (in-process, or the binary when `process`), with `extra`
/// settings and, when given, a policy file.
async fn setup_with(
    client_ids: &[&str],
    extra: &[(&str, &str)],
    policy: Option<&str>,
    process: bool,
) -> Setup {
    let front: TcpListener = common::listener();
    let issuer = format!("http://127.0.0.1:{}", common::port_of(&front));
    let emulator = emulator(&issuer, client_ids).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = emulator.base_url();
    let mut env = vec![("AWS_STS_ENDPOINT", endpoint.as_str())];
    let file;
    if let Some(policy) = policy {
        file = common::temp_file(&dir, "policy.toml", policy)
            .display()
            .to_string();
        env.push(("POLICY_FILE", file.as_str()));
    }
    env.extend_from_slice(extra);
    let server = if process {
        Server::start_process_on(front, &env)
    } else {
        Server::start_on(front, &env)
    };
    Setup {
        emulator,
        server,
        _dir: dir,
    }
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    setup_with(&[AWS], &[&[LISTED][..], extra].concat(), None, false).await
}

fn form(role: &str, more: &str) -> String {
    let role = percent_encoding::utf8_percent_encode(role, percent_encoding::NON_ALPHANUMERIC);
    format!("grant_type=client_credentials&aws_role_arn={role}{more}")
}

async fn ask(server: &Server, body: &str) -> (u16, Value, Option<String>) {
    let response = common::token(server, body, &[]).await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), retry_after)
}

#[track_caller]
fn assert_error(got: &(u16, Value, Option<String>), status: u16, code: &str, contains: &[&str]) {
    let (got_status, body, _) = got;
    assert_eq!(*got_status, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let description = body["error_description"].as_str().unwrap();
    for part in contains {
        assert!(description.contains(part), "{description:?} lacks {part:?}");
    }
}

fn rfc3339(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_yields_its_credentials_and_the_id_token_for_aws() {
    let s = setup(&[]).await;
    let (status, body, _) = ask(&s.server, &form(ROLE, "")).await;
    assert_eq!(status, 200, "{body}");
    let claims = common::verify(body["id_token"].as_str().unwrap(), &s.server.base, AWS).await;
    assert_eq!(claims["sub"], SPIFFE);
    let credentials = &body["aws_credentials"];
    let sessions = s.emulator.aws_sessions();
    assert_eq!(sessions.len(), 1);
    let session = &sessions[0];
    assert_eq!(credentials["access_key_id"], session.access_key_id.as_str());
    assert_eq!(
        credentials["secret_access_key"],
        session.secret_access_key.as_str()
    );
    assert_eq!(credentials["session_token"], session.session_token.as_str());
    assert_eq!(
        rfc3339(credentials["expiration"].as_str().unwrap()),
        session.expiration
    );
    assert_eq!(session.role_arn, ROLE);
    assert_eq!(session.session_name, DERIVED);
    assert_eq!(session.subject, SPIFFE);
    assert_eq!(session.audience, AWS);
    // AWS's default duration: one hour.
    assert!((session.expiration - now() - 3600).abs() < 60);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_format_with_a_chosen_session_name_and_duration() {
    let s = setup(&[]).await;
    let more = "&aws_role_session_name=device-1%40fleet&aws_duration_seconds=1800&format=aws_credential_process";
    let (status, body, _) = ask(&s.server, &form(ROLE, more)).await;
    assert_eq!(status, 200, "{body}");
    let session = s.emulator.aws_sessions().pop().unwrap();
    assert_eq!(session.session_name, "device-1@fleet");
    assert!((session.expiration - now() - 1800).abs() < 60);
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "AccessKeyId",
            "Expiration",
            "SecretAccessKey",
            "SessionToken",
            "Version"
        ]
    );
    assert_eq!(body["Version"], 1);
    assert_eq!(body["AccessKeyId"], session.access_key_id.as_str());
    assert_eq!(body["SecretAccessKey"], session.secret_access_key.as_str());
    assert_eq!(body["SessionToken"], session.session_token.as_str());
    assert_eq!(
        rfc3339(body["Expiration"].as_str().unwrap()),
        session.expiration
    );
    // The format needs a role; errors in it are OAuth JSON.
    let (status, body, _) = ask(
        &s.server,
        "grant_type=client_credentials&format=aws_credential_process",
    )
    .await;
    assert_error(
        &(status, body, None),
        400,
        "invalid_request",
        &["'aws_credential_process'", "'aws_role_arn'"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_the_policy_rule_does_not_list_is_403_without_calling_aws() {
    let policy = r#"
[[rule]]
name = "fleet"
decision = "allow"
aws_roles = ["arn:aws:iam::123456789012:role/fleet/*"]

[[rule]]
name = "never"
decision = "allow"
match.flow = ["mtls-client-credentials"]
aws_roles = []
"#;
    let s = setup_with(&[AWS], &[LISTED], Some(policy), false).await;
    let (status, body, _) = ask(&s.server, &form(ROLE, "")).await;
    assert_eq!(status, 200, "{body}");
    let other = "arn:aws:iam::123456789012:role/admin";
    assert_error(
        &ask(&s.server, &form(other, "")).await,
        403,
        "access_denied",
        &["AWS role", other],
    );
    assert_eq!(s.emulator.calls("aws.sts"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_refusals_become_oauth_errors_naming_the_aws_code() {
    let s = setup(&[]).await;
    // A role that does not exist or does not trust the token: AccessDenied.
    assert_error(
        &ask(&s.server, &form(UNKNOWN_ROLE, "")).await,
        403,
        "access_denied",
        &["AccessDenied", UNKNOWN_ROLE, "trust policy"],
    );
    // More than the role's MaxSessionDuration: STS's ValidationError is the request's fault.
    assert_error(
        &ask(&s.server, &form(ROLE, "&aws_duration_seconds=9000")).await,
        400,
        "invalid_request",
        &["ValidationError", "MaxSessionDuration"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_an_audience_the_provider_does_not_list_is_invalid_identity_token() {
    let other = "https://aws.example.com";
    let listed = format!("{AWS},{other}");
    let s = setup_with(
        &[AWS],
        &[("TOKEN_AUDIENCES", &listed), ("AWS_AUDIENCE", other)],
        None,
        false,
    )
    .await;
    assert_error(
        &ask(&s.server, &form(ROLE, "")).await,
        403,
        "access_denied",
        &[
            "InvalidIdentityToken",
            "Incorrect token audience",
            "AWS_AUDIENCE",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_idp_communication_errors_are_503_with_retry_after() {
    let s = setup(&[]).await;
    for (status, message, code) in [
        (400, "Throttling: Rate exceeded", "Throttling"),
        (
            400,
            "IDPCommunicationError: JWKS unreachable",
            "IDPCommunicationError",
        ),
        (503, "ServiceUnavailable: down", "ServiceUnavailable"),
    ] {
        s.emulator.clear_faults();
        s.emulator
            .inject("aws.sts", Fault::status(status).message(message));
        let got = ask(&s.server, &form(ROLE, "")).await;
        assert_error(&got, 503, "temporarily_unavailable", &[code]);
        assert!(got.2.is_some(), "Retry-After for {code}");
    }
    s.emulator.clear_faults();
    let (status, body, _) = ask(&s.server, &form(ROLE, "")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_them_without_calling_aws() {
    let s = setup(&[]).await;
    for (body, named) in [
        (form("arn:aws:iam::1234:role/devices", ""), "'aws_role_arn'"),
        (form("arn:aws:s3:::bucket", ""), "'aws_role_arn'"),
        (
            form(ROLE, "&aws_duration_seconds=899"),
            "'aws_duration_seconds'",
        ),
        (
            form(ROLE, "&aws_duration_seconds=43201"),
            "'aws_duration_seconds'",
        ),
        (
            form(ROLE, "&aws_role_session_name=a"),
            "'aws_role_session_name'",
        ),
        (
            form(ROLE, "&aws_role_session_name=has%20space"),
            "'aws_role_session_name'",
        ),
        (
            form(
                ROLE,
                "&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform",
            ),
            "'scope'",
        ),
        (form(ROLE, "&audience=api%3A%2F%2Fother"), "'audience'"),
    ] {
        assert_error(
            &ask(&s.server, &body).await,
            400,
            "invalid_request",
            &[named],
        );
    }
    // In its own error shape: executable-sourced credentials hold an ID token only.
    let (status, body, _) = ask(&s.server, &form(ROLE, "&format=external_credential")).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &Value::from("invalid_request"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("'aws_credential_process'")
    );
    assert_eq!(s.emulator.calls("aws.sts"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_audience_must_be_allowed_like_any_requested_audience() {
    // Not in TOKEN_AUDIENCES: 403 naming the parameter 'audience', no call.
    let s = setup_with(&[AWS], &[], None, false).await;
    assert_error(
        &ask(&s.server, &form(ROLE, "")).await,
        403,
        "access_denied",
        &["'sts.amazonaws.com'", "TOKEN_AUDIENCES"],
    );
    assert_eq!(s.emulator.calls("aws.sts"), 0);
    // Listed, but the policy rule's audiences do not admit it.
    let policy = r#"
[[rule]]
name = "fleet"
decision = "allow"
audiences = ["api://*"]
"#;
    let s = setup_with(&[AWS], &[LISTED], Some(policy), false).await;
    assert_error(
        &ask(&s.server, &form(ROLE, "")).await,
        403,
        "access_denied",
        &["'sts.amazonaws.com'", "audience"],
    );
    assert_eq!(s.emulator.calls("aws.sts"), 0);
    // AWS_AUDIENCE may be the default audience itself, which needs no listing.
    let s = setup_with(&[AUDIENCE], &[("AWS_AUDIENCE", AUDIENCE)], None, false).await;
    let (status, body, _) = ask(&s.server, &form(ROLE, "")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.emulator.aws_sessions()[0].audience, AUDIENCE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_log_line_shows_the_role_and_never_the_credentials() {
    let s = setup_with(&[AWS], &[LISTED], None, true).await;
    let (status, body, _) = ask(&s.server, &form(ROLE, "")).await;
    assert_eq!(status, 200, "{body}");
    let _ = ask(&s.server, &form(UNKNOWN_ROLE, "")).await;
    let logs = s.server.json_logs();
    let lines: Vec<&Value> = logs
        .iter()
        .filter(|l| l["logging.googleapis.com/labels"]["aws_role_arn"].is_string())
        .collect();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(text.contains(ROLE) && text.contains(UNKNOWN_ROLE), "{text}");
    assert!(
        text.contains("token_issued") && text.contains("AccessDenied"),
        "{text}"
    );
    let all = s.server.logs();
    for secret in ["secret_access_key", "session_token"] {
        let value = body["aws_credentials"][secret].as_str().unwrap();
        assert!(!all.contains(value), "{secret} logged");
    }
    assert!(!all.contains(body["id_token"].as_str().unwrap()));
}

#[test]
fn policy_check_and_explain_show_the_aws_roles() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[rule]]\nname = \"fleet\"\ndecision = \"allow\"\naudiences = [\"sts.amazonaws.com\"]\naws_roles = [\"arn:aws:iam::123456789012:role/fleet/*\"]\n";
    let policy = common::temp_file(&dir, "policy.toml", text);
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .env_clear()
            .env("DATA_DIR", dir.path().join("data"))
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let check = run(&["policy", "check", policy.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("             aws_roles 'arn:aws:iam::123456789012:role/fleet/*'\n"),
        "{stdout}"
    );
    let issued = run(&["pki", "client", "--name", "device", "--spiffe-id", SPIFFE]);
    assert!(issued.status.success(), "{issued:?}");
    let cert = dir.path().join("data/pki/device.pem");
    let explain = |role: &str| {
        run(&[
            "policy",
            "explain",
            "--policy",
            policy.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--aws-role-arn",
            role,
        ])
    };
    let allowed = explain(ROLE);
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(allowed.status.success(), "{allowed:?}");
    for line in [
        "  audience             sts.amazonaws.com: allowed by the rule",
        &format!("  aws role             {ROLE}: allowed"),
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    let denied = explain(UNKNOWN_ROLE);
    let stdout = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(
        stdout.contains(&format!(
            "rule 'fleet': AWS role '{UNKNOWN_ROLE}' matches none of"
        )),
        "{stdout}"
    );
}

/// The README's AWS request, as written: its form parameters (the `-d` arguments of the curl
/// line) get credentials from the emulator for a role of that ARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_aws_request_gets_credentials() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("\n## AWS\n").nth(1).unwrap();
    let line = section
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("aws_role_arn="))
        .unwrap();
    let params: Vec<&str> = line
        .split(" -d ")
        .skip(1)
        .map(|p| p.split_whitespace().next().unwrap())
        .collect();
    let role = params
        .iter()
        .find_map(|p| p.strip_prefix("aws_role_arn="))
        .unwrap();
    let front: TcpListener = common::listener();
    let issuer = format!("http://127.0.0.1:{}", common::port_of(&front));
    let mut account = AwsRole::new(role, issuer.clone());
    account.max_session_duration_secs = 3600;
    let emulator = Emulator::start(
        EmulatorConfig {
            aws: AwsConfig {
                oidc_providers: vec![AwsOidcProvider::new(issuer, &[AWS])],
                roles: vec![account],
                ..AwsConfig::default()
            },
            allow_loopback_issuers: true,
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let endpoint = emulator.base_url();
    let server = Server::start_on(front, &[LISTED, ("AWS_STS_ENDPOINT", &endpoint)]);
    let (status, body, _) = ask(&server, &params.join("&")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["aws_credentials"]["session_token"].is_string(),
        "{body}"
    );
    assert_eq!(emulator.aws_sessions()[0].role_arn, role);
}

/// [`ask`] for a certificate that the load balancer says expires `seconds` from now.
async fn ask_expiring(server: &Server, body: &str, seconds: i64) -> (u16, Value, Option<String>) {
    let at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let response = common::token(server, body, &[("X-Client-Cert-Valid-Not-After", &at)]).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap(), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_ends_with_the_certificate_and_one_expiring_too_soon_for_aws_is_refused() {
    let s = setup(&[]).await;
    // AWS's default hour, and an asked 1800 s, both capped at the certificate's 1500 s.
    for more in ["", "&aws_duration_seconds=1800"] {
        let (status, body, _) = ask_expiring(&s.server, &form(ROLE, more), 1500).await;
        assert_eq!(status, 200, "{body}");
        let session = s.emulator.aws_sessions().pop().unwrap();
        let left = session.expiration - now();
        assert!((1400..=1500).contains(&left), "{left}");
    }
    // Asked for less than the certificate has left: as asked.
    let (status, body, _) =
        ask_expiring(&s.server, &form(ROLE, "&aws_duration_seconds=900"), 1500).await;
    assert_eq!(status, 200, "{body}");
    let session = s.emulator.aws_sessions().pop().unwrap();
    assert!((session.expiration - now() - 900).abs() < 60);

    let before = s.emulator.aws_sessions().len();
    let got = ask_expiring(&s.server, &form(ROLE, ""), 600).await;
    assert_error(
        &got,
        403,
        "unauthorized_client",
        &[
            "sooner than AWS's shortest session (DurationSeconds 900)",
            "renew it",
        ],
    );
    assert_eq!(s.emulator.aws_sessions().len(), before, "STS was called");
}
