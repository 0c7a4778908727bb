//! Audiences per request (issue 13 point 1): the `/token` parameter `audience`, the settings
//! `TOKEN_AUDIENCES` and `TOKEN_AUDIENCE_VALIDITY`, a policy rule's `audiences` globs and
//! `[rule.audience."AUD"]` tables. Tokens are verified as a relying party would (discovery,
//! JWKS, signature, `iss`, `aud`), with the load-balancer header flow in front.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{self as common, AUDIENCE, SPIFFE, Server};

const ENTRA: &str = "api://AzureADTokenExchange";
const AWS: &str = "sts.amazonaws.com";
const LISTED: (&str, &str) = (
    "TOKEN_AUDIENCES",
    "api://AzureADTokenExchange,sts.amazonaws.com",
);

fn form(audience: &str) -> String {
    format!(
        "grant_type=client_credentials&audience={}",
        percent_encoding::utf8_percent_encode(audience, percent_encoding::NON_ALPHANUMERIC)
    )
}

async fn ask(server: &Server, body: &str) -> (u16, Value) {
    let response = common::token(server, body, &[]).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The verified claims of a token for `audience`.
async fn token_for(server: &Server, audience: &str) -> Value {
    let (status, body) = ask(server, &form(audience)).await;
    assert_eq!(status, 200, "{body}");
    common::verify(body["id_token"].as_str().unwrap(), &server.base, audience).await
}

fn lifetime(claims: &Value) -> i64 {
    claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
}

fn with_policy(policy: &str, extra: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = common::temp_file(&dir, "policy.toml", policy);
    let file = file.display().to_string();
    let mut env = vec![LISTED, ("POLICY_FILE", file.as_str())];
    env.extend_from_slice(extra);
    (Server::start(&env), dir)
}

#[tokio::test]
async fn a_listed_audience_is_the_verified_tokens_aud_and_the_default_is_unchanged() {
    let server = Server::start(&[LISTED]);
    let claims = token_for(&server, ENTRA).await;
    assert_eq!(claims["aud"], ENTRA);
    assert_eq!(claims["sub"], SPIFFE);
    assert_eq!(lifetime(&claims), 300);
    assert_eq!(token_for(&server, AWS).await["aud"], AWS);
    // Without the parameter, or naming the default, the token is for the default audience.
    for body in ["grant_type=client_credentials".to_owned(), form(AUDIENCE)] {
        let (status, body) = ask(&server, &body).await;
        assert_eq!(status, 200, "{body}");
        let claims =
            common::verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
        assert_eq!(claims["aud"], AUDIENCE);
    }
}

#[tokio::test]
async fn an_unlisted_audience_gets_403_access_denied_naming_the_parameter() {
    for settings in [&[LISTED][..], &[]] {
        let server = Server::start(settings);
        let (status, body) = ask(&server, &form("https://other.example.com")).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "access_denied");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.contains("parameter 'audience'")
                && description.contains("'https://other.example.com'")
                && description.contains("TOKEN_AUDIENCES"),
            "{description}"
        );
    }
    // Without TOKEN_AUDIENCES no other audience is served.
    let server = Server::start(&[]);
    let (status, body) = ask(&server, &form(ENTRA)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied"))
    );
}

#[tokio::test]
async fn audience_with_scope_gets_400_invalid_request() {
    let server = Server::start(&[LISTED]);
    let body = format!(
        "{}&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform",
        form(ENTRA)
    );
    let (status, body) = ask(&server, &body).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains("'audience' and 'scope'"),
        "{description}"
    );
}

const FLEET: &str = r#"
[[rule]]
name = "fleet"
decision = "allow"
audiences = ["api://*"]

[rule.audience."api://AzureADTokenExchange"]
sub = "device-class-{spiffe_trust_domain}"
token_lifetime = 1200
"#;

#[tokio::test]
async fn a_rules_audiences_globs_refuse_other_listed_audiences_with_403() {
    let (server, _dir) = with_policy(FLEET, &[]);
    let (status, body) = ask(&server, &form(AWS)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains("parameter 'audience'") && description.contains(AWS),
        "{description}"
    );
    assert!(
        !description.contains("api://*"),
        "the rule stays private: {description}"
    );
    // The default audience needs no glob.
    let (status, _) = ask(&server, "grant_type=client_credentials").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_rules_audience_table_sets_sub_and_lifetime_of_that_audiences_tokens() {
    let (server, _dir) = with_policy(FLEET, &[]);
    let claims = token_for(&server, ENTRA).await;
    assert_eq!(claims["sub"], "device-class-example.org");
    assert_eq!(claims["client_id"], SPIFFE, "client_id stays the client's");
    assert_eq!(lifetime(&claims), 1200);
    let (status, body) = ask(&server, "grant_type=client_credentials").await;
    assert_eq!(status, 200);
    let claims = common::verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    assert_eq!(
        (claims["sub"].as_str(), lifetime(&claims)),
        (Some(SPIFFE), 300)
    );
}

#[tokio::test]
async fn token_audience_validity_sets_a_lifetime_per_audience() {
    let server = Server::start(&[
        LISTED,
        ("TOKEN_AUDIENCE_VALIDITY", "api://AzureADTokenExchange=15"),
    ]);
    assert_eq!(lifetime(&token_for(&server, ENTRA).await), 900);
    assert_eq!(lifetime(&token_for(&server, AWS).await), 300);
    // It beats a rule's token_lifetime; the rule's table for the audience beats it.
    let policy = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\ntoken_lifetime = 120\n[rule.audience.\"sts.amazonaws.com\"]\ntoken_lifetime = 1800\n";
    let (server, _dir) = with_policy(
        policy,
        &[(
            "TOKEN_AUDIENCE_VALIDITY",
            "api://AzureADTokenExchange=15,sts.amazonaws.com=20",
        )],
    );
    assert_eq!(lifetime(&token_for(&server, ENTRA).await), 900);
    assert_eq!(lifetime(&token_for(&server, AWS).await), 1800);
    let (_, body) = ask(&server, "grant_type=client_credentials").await;
    let claims = common::verify(body["id_token"].as_str().unwrap(), &server.base, AUDIENCE).await;
    assert_eq!(lifetime(&claims), 120);
}

#[tokio::test]
async fn the_requests_log_line_shows_the_audience() {
    let server = Server::start_process(&[LISTED]);
    assert_eq!(token_for(&server, ENTRA).await["aud"], ENTRA);
    let (status, _) = ask(&server, &form("https://other.example.com")).await;
    assert_eq!(status, 403);
    let (status, _) = ask(&server, "grant_type=client_credentials").await;
    assert_eq!(status, 200);
    let events: Vec<(Value, Value)> = crate::support::tls::log_lines(&server)
        .into_iter()
        .map(|l| l["logging.googleapis.com/labels"].clone())
        .filter(|l| l["event"] == "token_issued" || l["event"] == "authentication_failed")
        .map(|l| (l["event"].clone(), l["audience"].clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("token_issued".into(), ENTRA.into()),
            (
                "authentication_failed".into(),
                "https://other.example.com".into()
            ),
            ("token_issued".into(), AUDIENCE.into()),
        ]
    );
}

/// `serve` with `extra` on top of a minimal configuration; it must stop at startup.
fn refused_startup(extra: &[(&str, String)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let key = common::temp_file(&dir, "key.pem", &common::ec_key_pem());
    let mut env = vec![
        ("PORT", "0".to_owned()),
        ("TOKEN_AUDIENCE", AUDIENCE.to_owned()),
        ("SIGNING_KEY_FILE", key.display().to_string()),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        ("TOKEN_AUDIENCES", ENTRA.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let output = Command::new("timeout")
        .arg("20")
        .arg(common::BIN)
        .arg("serve")
        .env_clear()
        .envs(env)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    output
}

#[test]
fn lifetimes_out_of_token_validitys_bounds_stop_startup_naming_the_setting() {
    for minutes in ["0", "61"] {
        let value = format!("{ENTRA}={minutes}");
        let output = refused_startup(&[("TOKEN_AUDIENCE_VALIDITY", value.clone())]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("TOKEN_AUDIENCE_VALIDITY: '{value}' is not valid; expected whole minutes from 1 to 60")),
            "{stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = common::temp_file(
        &dir,
        "policy.toml",
        "[[rule]]\nname = \"r\"\ndecision = \"allow\"\n[rule.audience.\"api://AzureADTokenExchange\"]\ntoken_lifetime = 7200\n",
    );
    let output = refused_startup(&[("POLICY_FILE", policy.display().to_string())]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "POLICY_FILE: {}:5: rule 'r': audience.\"api://AzureADTokenExchange\": token_lifetime 7200 is out of bounds; expected seconds from 60 to 3600",
            policy.display()
        )),
        "{stderr}"
    );
}

#[test]
fn policy_check_and_explain_show_the_audiences() {
    let dir = tempfile::tempdir().unwrap();
    let policy = common::temp_file(&dir, "policy.toml", FLEET);
    let run = |args: &[&str]| {
        Command::new(common::BIN)
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
        stdout.contains("rule 'fleet': allow\n             audiences 'api://*'; 'api://AzureADTokenExchange': sub 'device-class-{spiffe_trust_domain}', token_lifetime 1200 s\n"),
        "{stdout}"
    );
    let issued = run(&[
        "pki",
        "client",
        "--name",
        "device",
        "--spiffe-id",
        "spiffe://fleet.example.org/device/7",
    ]);
    assert!(issued.status.success(), "{issued:?}");
    let cert = dir.path().join("data/pki/device.pem");
    let explain = |audience: &str| {
        run(&[
            "policy",
            "explain",
            "--policy",
            policy.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--audience",
            audience,
        ])
    };
    let allowed = explain(ENTRA);
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(allowed.status.success(), "{allowed:?}");
    for line in [
        "  audience             api://AzureADTokenExchange: allowed by the rule",
        "  sub                  device-class-fleet.example.org (for this audience)",
        "  token lifetime       1200 s (for this audience)",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    let denied = explain(AWS);
    let stdout = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(
        stdout.contains("rule 'fleet': audience 'sts.amazonaws.com' matches none of 'api://*'"),
        "{stdout}"
    );
}

/// The README's policy snippet for audiences is a valid policy, as written.
#[test]
fn the_readmes_audience_snippet_is_a_valid_policy() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let snippet = readme
        .split("```")
        .skip(1)
        .step_by(2)
        .find(|b| b.contains("[rule.audience."))
        .expect("README shows a [rule.audience.\"AUD\"] table")
        .trim_start_matches("toml");
    let dir = tempfile::tempdir().unwrap();
    let policy = common::temp_file(&dir, "policy.toml", snippet);
    let output = Command::new(common::BIN)
        .args(["policy", "check", policy.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(
            "'api://AzureADTokenExchange': sub 'device-class-{subject.OU}', token_lifetime 1200 s"
        ),
        "{output:?}"
    );
}
