//! Microsoft Entra (issue 13 point 3): `/token` with `azure_client_id`, `azure_tenant_id` and
//! `scope` against the emulator's Entra v2 token endpoint over real sockets. The emulated
//! tenant's app trusts the service through a federated identity credential (issuer = the
//! service's `http://127.0.0.1:PORT` issuer, the emulator's loopback allowance; an exact
//! subject; audience `api://AzureADTokenExchange`); the emulator fetches the service's
//! discovery document and JWKS, checks the assertion as Entra does and answers in Entra's
//! JSON; the service turns that into an access token or an OAuth error.

use std::net::TcpListener;

use base64::Engine as _;
use gcp_emulator::{
    Config as EmulatorConfig, Emulator, EntraApp, EntraConfig, EntraTenant, Fault,
    FederatedCredential,
};
use serde_json::Value;

use crate::support::{self as common, AUDIENCE, SPIFFE, Server};

const ENTRA: &str = "api://AzureADTokenExchange";
const TENANT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const APP: &str = "11111111-2222-3333-4444-555555555555";
/// An app of the tenant whose only credential names another subject.
const OTHER_SUBJECT_APP: &str = "22222222-2222-3333-4444-555555555555";
/// An app not registered in the tenant.
const UNKNOWN_APP: &str = "99999999-2222-3333-4444-555555555555";
const SCOPE: &str = "https://graph.microsoft.com/.default";
const LISTED: (&str, &str) = ("TOKEN_AUDIENCES", ENTRA);

/// The emulated directory: [`TENANT`] with [`APP`] trusting `issuer` for `sub` = [`SPIFFE`]
/// and audience `audience`, and [`OTHER_SUBJECT_APP`] trusting it for another subject.
async fn emulator(issuer: &str, audience: &str) -> Emulator {
    let mut credential = FederatedCredential::new("devices", issuer, SPIFFE);
    credential.audiences = vec![audience.to_owned()];
    let config = EmulatorConfig {
        entra: EntraConfig {
            tenants: vec![EntraTenant {
                tenant_id: TENANT.into(),
                apps: vec![
                    EntraApp {
                        client_id: APP.into(),
                        federated_credentials: vec![credential],
                    },
                    EntraApp {
                        client_id: OTHER_SUBJECT_APP.into(),
                        federated_credentials: vec![FederatedCredential::new(
                            "other",
                            issuer,
                            "spiffe://example.org/ns/prod/sa/someone-else",
                        )],
                    },
                ],
            }],
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

/// The emulator (its credential for `audience`) and the service (in-process, or the binary
/// when `process`), with `extra` settings and, when given, a policy file.
async fn setup_with(
    audience: &str,
    extra: &[(&str, &str)],
    policy: Option<&str>,
    process: bool,
) -> Setup {
    let front: TcpListener = common::listener();
    let issuer = format!("http://127.0.0.1:{}", common::port_of(&front));
    let emulator = emulator(&issuer, audience).await;
    let dir = tempfile::tempdir().unwrap();
    let host = emulator.base_url();
    // Entra takes RS256 assertions only: the first key of SIGNING_KEY_FILE signs.
    let key = common::temp_file(&dir, "rsa.pem", &common::rsa_key_pem())
        .display()
        .to_string();
    let mut env = vec![
        ("AZURE_AUTHORITY_HOST", host.as_str()),
        ("SIGNING_KEY_FILE", key.as_str()),
    ];
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

async fn setup() -> Setup {
    setup_with(ENTRA, &[LISTED], None, false).await
}

fn enc(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn form(app: &str, more: &str) -> String {
    format!(
        "grant_type=client_credentials&azure_client_id={app}&azure_tenant_id={TENANT}&scope={}{more}",
        enc(SCOPE)
    )
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

/// The claims of a JWT, unverified (the emulator's access token).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_yields_its_access_token_and_the_id_token_for_entra() {
    let s = setup().await;
    let (status, body, _) = ask(&s.server, &form(APP, "")).await;
    assert_eq!(status, 200, "{body}");
    let id = common::verify(body["id_token"].as_str().unwrap(), &s.server.base, ENTRA).await;
    assert_eq!(id["sub"], SPIFFE);
    let access = claims(body["access_token"].as_str().unwrap());
    assert_eq!(access["appid"], APP);
    assert_eq!(access["tid"], TENANT);
    assert_eq!(access["aud"], "https://graph.microsoft.com");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["scope"], SCOPE);
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "id_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(s.emulator.calls("entra.token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_refusals_become_oauth_errors_naming_the_aadsts_code() {
    let s = setup().await;
    // The app's only federated credential names another subject.
    assert_error(
        &ask(&s.server, &form(OTHER_SUBJECT_APP, "")).await,
        403,
        "access_denied",
        &[
            "AADSTS700213",
            OTHER_SUBJECT_APP,
            TENANT,
            "subject",
            "sub template",
        ],
    );
    // No such app in the tenant.
    assert_error(
        &ask(&s.server, &form(UNKNOWN_APP, "")).await,
        400,
        "invalid_request",
        &["AADSTS700016", "'azure_client_id'"],
    );
    // No such tenant.
    let elsewhere = form(APP, "").replace(TENANT, "contoso.onmicrosoft.com");
    assert_error(
        &ask(&s.server, &elsewhere).await,
        400,
        "invalid_request",
        &["AADSTS90002", "'azure_tenant_id'"],
    );
    // A scope Entra's client credentials refuse.
    let user_scope = form(APP, "").replace(&enc(SCOPE), "User.Read");
    assert_error(
        &ask(&s.server, &user_scope).await,
        400,
        "invalid_request",
        &["AADSTS1002012", "'scope'", "/.default"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_for_another_audience_is_aadsts700212() {
    // The app's credential expects another audience than AZURE_AUDIENCE.
    let s = setup_with("api://other", &[LISTED], None, false).await;
    assert_error(
        &ask(&s.server, &form(APP, "")).await,
        403,
        "access_denied",
        &["AADSTS700212", "AZURE_AUDIENCE"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_outages_are_503_with_retry_after() {
    let s = setup().await;
    for (status, message) in [
        (
            429,
            "AADSTS50196: The server terminated an operation because it encountered a client request loop.",
        ),
        (
            503,
            "AADSTS90033: A transient error has occurred. Please try again.",
        ),
        (500, "AADSTS50000: There was an error issuing a token."),
    ] {
        s.emulator.clear_faults();
        s.emulator
            .inject("entra.token", Fault::status(status).message(message));
        let got = ask(&s.server, &form(APP, "")).await;
        assert_error(&got, 503, "temporarily_unavailable", &["Microsoft Entra"]);
        assert!(got.2.is_some(), "Retry-After for {status}");
    }
    s.emulator.clear_faults();
    let (status, body, _) = ask(&s.server, &form(APP, "")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_the_policy_rule_does_not_list_is_403_without_calling_entra() {
    let policy = format!(
        r#"
[[rule]]
name = "fleet"
decision = "allow"
azure_clients = ["{APP}"]
"#
    );
    let s = setup_with(ENTRA, &[LISTED], Some(&policy), false).await;
    let (status, body, _) = ask(&s.server, &form(APP, "")).await;
    assert_eq!(status, 200, "{body}");
    assert_error(
        &ask(&s.server, &form(OTHER_SUBJECT_APP, "")).await,
        403,
        "access_denied",
        &["Entra app", OTHER_SUBJECT_APP],
    );
    assert_eq!(s.emulator.calls("entra.token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_them_without_calling_entra() {
    let s = setup().await;
    let base = "grant_type=client_credentials";
    for (body, named) in [
        (form("my-app", ""), "'azure_client_id'"),
        (
            form(APP, "").replace(TENANT, "not%20a%20tenant"),
            "'azure_tenant_id'",
        ),
        (form(APP, "").replace(TENANT, "..%2Fx"), "'azure_tenant_id'"),
        (
            format!("{base}&azure_client_id={APP}&azure_tenant_id={TENANT}"),
            "'scope'",
        ),
        (
            format!("{base}&azure_client_id={APP}&scope={SCOPE}"),
            "'azure_tenant_id'",
        ),
        (
            format!("{base}&azure_tenant_id={TENANT}&scope={SCOPE}"),
            "'azure_client_id'",
        ),
        (
            form(
                APP,
                "&aws_role_arn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fd",
            ),
            "'aws_role_arn'",
        ),
        (
            form(APP, "&service_account=a%40p.iam.gserviceaccount.com"),
            "'service_account'",
        ),
        (form(APP, "&audience=api%3A%2F%2Fother"), "'audience'"),
    ] {
        assert_error(
            &ask(&s.server, &body).await,
            400,
            "invalid_request",
            &[named],
        );
    }
    // In its own error shape: executable-sourced credentials hold an ID token only.
    let (status, body, _) = ask(&s.server, &form(APP, "&format=external_credential")).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &Value::from("invalid_request"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("'azure_client_id'")
    );
    assert_eq!(s.emulator.calls("entra.token"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entra_audience_must_be_allowed_like_any_requested_audience() {
    // Not in TOKEN_AUDIENCES: 403 naming the audience, no call.
    let s = setup_with(ENTRA, &[], None, false).await;
    assert_error(
        &ask(&s.server, &form(APP, "")).await,
        403,
        "access_denied",
        &["'api://AzureADTokenExchange'", "TOKEN_AUDIENCES"],
    );
    assert_eq!(s.emulator.calls("entra.token"), 0);
    // Listed, but the policy rule's audiences do not admit it.
    let policy = "[[rule]]\nname = \"fleet\"\ndecision = \"allow\"\naudiences = [\"sts.*\"]\n";
    let s = setup_with(ENTRA, &[LISTED], Some(policy), false).await;
    assert_error(
        &ask(&s.server, &form(APP, "")).await,
        403,
        "access_denied",
        &["'api://AzureADTokenExchange'", "audience"],
    );
    assert_eq!(s.emulator.calls("entra.token"), 0);
    // AZURE_AUDIENCE may be the default audience itself, which needs no listing.
    let s = setup_with(AUDIENCE, &[("AZURE_AUDIENCE", AUDIENCE)], None, false).await;
    let (status, body, _) = ask(&s.server, &form(APP, "")).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_log_line_shows_the_app_and_tenant_and_never_a_token() {
    let s = setup_with(ENTRA, &[LISTED], None, true).await;
    let (status, body, _) = ask(&s.server, &form(APP, "")).await;
    assert_eq!(status, 200, "{body}");
    let _ = ask(&s.server, &form(OTHER_SUBJECT_APP, "")).await;
    let logs = s.server.json_logs();
    let lines: Vec<&Value> = logs
        .iter()
        .filter(|l| l["logging.googleapis.com/labels"]["azure_client_id"].is_string())
        .collect();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        text.contains(APP) && text.contains(OTHER_SUBJECT_APP),
        "{text}"
    );
    assert!(text.contains(TENANT), "{text}");
    assert!(
        text.contains("token_issued") && text.contains("AADSTS700213"),
        "{text}"
    );
    let all = s.server.logs();
    for token in ["access_token", "id_token"] {
        assert!(
            !all.contains(body[token].as_str().unwrap()),
            "{token} logged"
        );
    }
}

#[test]
fn policy_check_and_explain_show_the_azure_clients() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[rule]]\nname = \"fleet\"\ndecision = \"allow\"\naudiences = [\"api://AzureADTokenExchange\"]\nazure_clients = [\"{APP}\"]\n"
    );
    let policy = common::temp_file(&dir, "policy.toml", &text);
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
        stdout.contains(&format!("             azure_clients '{APP}'\n")),
        "{stdout}"
    );
    let issued = run(&["pki", "client", "--name", "device", "--spiffe-id", SPIFFE]);
    assert!(issued.status.success(), "{issued:?}");
    let cert = dir.path().join("data/pki/device.pem");
    let explain = |app: &str| {
        run(&[
            "policy",
            "explain",
            "--policy",
            policy.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--azure-client-id",
            app,
        ])
    };
    let allowed = explain(APP);
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(allowed.status.success(), "{allowed:?}");
    for line in [
        "  audience             api://AzureADTokenExchange: allowed by the rule",
        &format!("  azure client         {APP}: allowed"),
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    let denied = explain(UNKNOWN_APP);
    let stdout = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(
        stdout.contains(&format!(
            "rule 'fleet': Entra app '{UNKNOWN_APP}' matches none of"
        )),
        "{stdout}"
    );
}

/// The README's Entra request, as written: its form parameters (the `-d` arguments of the
/// curl line) get an access token from the emulator for an app and tenant of those IDs, whose
/// federated credential is the README's (issuer set to the test service's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_entra_request_gets_an_access_token() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("\n## Microsoft Entra\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let line = section
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("azure_client_id="))
        .unwrap();
    let params: Vec<&str> = line
        .split(" -d ")
        .skip(1)
        .map(|p| p.split_whitespace().next().unwrap())
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
    };
    let fic: Value = {
        let json = section.split("```json\n").nth(1).unwrap();
        serde_json::from_str(json.split("```").next().unwrap()).unwrap()
    };
    assert_eq!(fic["audiences"][0], ENTRA);
    let front: TcpListener = common::listener();
    let issuer = format!("http://127.0.0.1:{}", common::port_of(&front));
    let credential = FederatedCredential::new(
        fic["name"].as_str().unwrap(),
        issuer,
        fic["subject"].as_str().unwrap(),
    );
    let emulator = Emulator::start(
        EmulatorConfig {
            entra: EntraConfig {
                tenants: vec![EntraTenant {
                    tenant_id: param("azure_tenant_id").into(),
                    apps: vec![EntraApp {
                        client_id: param("azure_client_id").into(),
                        federated_credentials: vec![credential],
                    }],
                }],
            },
            allow_loopback_issuers: true,
            ..EmulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = common::temp_file(&dir, "rsa.pem", &common::rsa_key_pem());
    let host = emulator.base_url();
    let server = Server::start_on(
        front,
        &[
            LISTED,
            ("AZURE_AUTHORITY_HOST", &host),
            ("SIGNING_KEY_FILE", key.to_str().unwrap()),
        ],
    );
    let (status, body, _) = ask(&server, &params.join("&")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let access = claims(body["access_token"].as_str().unwrap());
    assert_eq!(access["appid"], param("azure_client_id"));
    assert_eq!(body["scope"], param("scope"));
}
