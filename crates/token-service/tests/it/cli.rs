//! The command line as a user meets it: help, configuration errors, check-config, the config
//! file, and the README's quick start driven with the real `curl` binary.

use crate::support as common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// Runs the binary; `timeout` guards against a case that unexpectedly starts serving.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_setting() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in builtin_settings().iter().map(|s| s.name) {
        assert!(text.contains(name), "--help does not list {name}");
    }
    for command in ["serve", "demo", "check-config", "--config"] {
        assert!(text.contains(command), "--help does not mention {command}");
    }
}

#[test]
fn configuration_errors_name_the_variable_and_exit_nonzero_without_panic() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[],
            "TOKEN_AUDIENCE is not set and no workload identity pool is configured",
        ),
        (
            &[("TOKEN_AUDIENCE", "a"), ("AUTH_FLOWS", "nope")],
            "AUTH_FLOWS: unknown flow 'nope'; known flows: forwarded-cert-client-credentials, mtls-client-credentials, xlb-mtls-client-credentials",
        ),
        (
            &[("TOKEN_AUDIENCE", "a"), ("AUTH_FLOWS", " ")],
            "AUTH_FLOWS: the list is empty",
        ),
        (
            &[("TOKEN_AUDIENCE", "a"), ("TOKEN_VALIDITY", "90")],
            "TOKEN_VALIDITY: '90' is not valid; expected whole minutes from 1 to 60",
        ),
        (
            &[
                ("TOKEN_AUDIENCE", "a"),
                ("MTLS_HEADER_CLIENT_ID", "X-Client-Cert-Serial-Number"),
            ],
            "MTLS_HEADER_CLIENT_ID",
        ),
        (
            &[
                ("WORKLOAD_IDENITY_PROJECT_NUMBER", "1"),
                ("WORKLOAD_IDENTITY_PROJECT_NUMBER", "2"),
                ("WORKLOAD_IDENTITY_POOL_ID", "p"),
                ("WORKLOAD_IDENTITY_PROVIDER_ID", "v"),
            ],
            "both set, to different values",
        ),
        (
            &[
                ("TOKEN_AUDIENCE", "a"),
                ("SIGNING_KEY_FILE", "/nonexistent/key.pem"),
            ],
            "SIGNING_KEY_FILE: cannot read '/nonexistent/key.pem'",
        ),
        (
            &[("TOKEN_AUDIENCE", "a"), ("PORT", "http")],
            "PORT: 'http' is not valid",
        ),
    ];
    for (env, expected) in cases {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "PORT") {
            env.push(("PORT", "0"));
        }
        let out = run(&["serve"], &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert!(
            err.contains(expected),
            "{env:?}: expected {expected:?} in {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
    }
}

#[test]
fn check_config_prints_resolved_values_and_warns_about_misspelt_settings() {
    let out = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "https://aud"),
            ("K_SERVICE", "svc"),
            ("SIGNER", "local"),
            ("HEADER_READ_TIMOUT", "20"),
            ("TOKEN_CLIENT_CERT_FILE", "/device.pem"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    // What the service uses, not the help's "127.0.0.1; 0.0.0.0 when K_SERVICE is set".
    assert_eq!(line("BIND_ADDRESS"), "0.0.0.0");
    // The misspelt setting changed nothing, and is named with the setting meant.
    assert_eq!(line("HEADER_READ_TIMEOUT"), "10");
    let errors = stderr(&out);
    assert!(
        errors
            .lines()
            .any(|l| l.starts_with("warning: HEADER_READ_TIMOUT")
                && l.contains("did you mean HEADER_READ_TIMEOUT?")),
        "{errors}"
    );
    // The device-side client's variables are not the server's business.
    assert!(!errors.contains("TOKEN_CLIENT_CERT_FILE"), "{errors}");
}

#[test]
fn check_config_prints_effective_settings_with_secrets_redacted() {
    let out = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "https://aud"),
            ("MTLS_LB_SECRET", "s3cr3t-value"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TOKEN_AUDIENCE") && text.contains("https://aud"),
        "{text}"
    );
    assert!(
        text.contains("MTLS_LB_SECRET") && text.contains("<redacted>"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(
        text.contains("TOKEN_VALIDITY") && text.contains("(default)"),
        "{text}"
    );
    let bad = run(&["check-config"], &[("TOKEN_VALIDITY", "0")]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn config_file_holds_settings_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(
        &dir,
        "ts.toml",
        "TOKEN_AUDIENCE = \"https://from-file\"\nTOKEN_VALIDITY = 10\n",
    );
    let file = file.to_str().unwrap();
    let out = run(
        &["--config", file, "check-config"],
        &[("TOKEN_VALIDITY", "20")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("https://from-file") && text.contains("(config file)"),
        "{text}"
    );
    let validity = text
        .lines()
        .find(|l| l.starts_with("TOKEN_VALIDITY"))
        .unwrap();
    assert!(
        validity.contains("20") && validity.contains("(environment)"),
        "{validity}"
    );
    // TOKEN_AUDIENCES is a setting now (issue 13): the misspelling is another name.
    let bad = temp_file(&dir, "bad.toml", "TOKEN_AUDIENCE_LIST = \"x\"\n");
    let out = run(&["check-config", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown setting 'TOKEN_AUDIENCE_LIST'"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_demo_and_its_curl_line_get_a_verifiable_token() {
    // On `PORT=0`, which the harness sets: `demo` names the port it bound in its issuer and its
    // curl line, and logs it.
    let server = Server::spawn(&["demo"], Vec::new(), tempfile::tempdir().unwrap());
    let port = server.port;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains("cargo run --release -- demo"),
        "the README runs the demo"
    );
    // The README's curl line, which is also what `demo` prints, with the real curl binary.
    let line = readme
        .lines()
        .find(|l| l.starts_with("curl --cert ./.token-service/pki/client.pem"))
        .expect("README has the demo's curl line")
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"));
    assert!(
        server.logs().contains(&line),
        "demo prints the README's line:\n{}",
        server.logs()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&line)
        .current_dir(server.dir.path())
        .output()
        .expect("bash and curl");
    assert!(
        out.status.success(),
        "{line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    let ca = std::fs::read(server.dir.path().join(".token-service/pki/ca.pem")).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let claims = verify_with(
        &https,
        body["id_token"].as_str().unwrap(),
        &format!("https://127.0.0.1:{port}"),
        "token-service-demo",
    )
    .await;
    assert_eq!(
        claims["sub"],
        "spiffe://token-service.local/ns/demo/sa/device-1"
    );
    assert_eq!(claims["amr"][0], "mtls-client-credentials");
    // Without the client certificate: discovery works, /token says no flow applies.
    let no_cert = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            ".token-service/pki/ca.pem",
            "-d",
            "grant_type=client_credentials",
            &format!("https://127.0.0.1:{port}/token"),
        ])
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&no_cert.stdout).unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[test]
fn pki_client_issues_a_certificate_from_the_development_ca() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = run(
        &[
            "pki",
            "client",
            "--name",
            "device-9",
            "--dns",
            "device-9.example.org",
        ],
        &[("DATA_DIR", data)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pem = std::fs::read_to_string(format!("{data}/pki/device-9.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let again = run(
        &["pki", "client", "--name", "device-9"],
        &[("DATA_DIR", data)],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("exists already"));
}

#[test]
fn check_config_loads_the_files_as_serve_would_without_writing_any() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let out = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "x"),
            ("SIGNING_KEY_FILE", missing.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SIGNING_KEY_FILE") && stderr(&out).contains("missing.pem"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "x"),
            ("AUTH_FLOWS", "mtls-client-credentials"),
            ("TLS_CERT_FILE", missing.to_str().unwrap()),
            ("TLS_KEY_FILE", missing.to_str().unwrap()),
            ("TLS_CLIENT_CA_FILE", missing.to_str().unwrap()),
            ("DATA_DIR", data),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TLS_CLIENT_CA_FILE"),
        "{}",
        stderr(&out)
    );
    // Without a key file a development key would be generated: not by check-config.
    let out = run(
        &["check-config"],
        &[("TOKEN_AUDIENCE", "x"), ("DATA_DIR", data)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !std::path::Path::new(data).exists(),
        "check-config wrote into DATA_DIR"
    );
}

/// Startup problems of independent parts are printed together, one line each: fixing the
/// first one does not reveal the next only on the following run.
#[test]
fn check_config_and_serve_print_the_problems_of_every_part_at_once() {
    for command in ["check-config", "serve"] {
        every_problem_on_its_own_line(command);
    }
}

fn every_problem_on_its_own_line(command: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let out = run(
        &[command],
        &[
            ("TOKEN_AUDIENCE", "x"),
            ("AUTH_FLOWS", "mtls-client-credentials"),
            ("TLS_CLIENT_CA_FILE", &path("ca.pem")),
            ("TLS_CERT_FILE", &path("tls.pem")),
            ("TLS_KEY_FILE", &path("tls.key")),
            ("SIGNING_KEY_FILE", &path("signing.pem")),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let errors: Vec<String> = stderr_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("error: "))
        .collect();
    let expected = [
        ("TLS_CLIENT_CA_FILE", "ca.pem"),
        ("TLS_CERT_FILE", "tls.pem"),
        ("SIGNING_KEY_FILE", "signing.pem"),
    ];
    assert_eq!(errors.len(), expected.len(), "{command}: {errors:?}");
    for (line, (setting, file)) in errors.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("error: {setting}: ")) && line.contains(file),
            "{errors:?}"
        );
    }
}

/// The lines of stderr.
fn stderr_lines(out: &Output) -> Vec<String> {
    stderr(out).lines().map(str::to_owned).collect()
}

#[test]
fn xlb_flow_on_a_tls_listener_without_mtls_lb_secret_stops_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    for flows in [
        "mtls-client-credentials,xlb-mtls-client-credentials",
        "xlb-mtls-client-credentials",
        "xlb-mtls-client-credentials,mtls-client-credentials",
    ] {
        for command in ["serve", "check-config"] {
            let out = run(
                &[command],
                &[
                    ("TOKEN_AUDIENCE", "a"),
                    ("PORT", "0"),
                    ("AUTH_FLOWS", flows),
                    ("TLS_CERT_FILE", &cert),
                    ("TLS_KEY_FILE", &key),
                    ("TLS_CLIENT_CA_FILE", &ca),
                ],
            );
            let lines = stderr_lines(&out);
            assert_eq!(out.status.code(), Some(2), "{flows} {command}: {lines:?}");
            assert_eq!(lines.len(), 1, "{flows} {command}: {lines:?}");
            assert!(
                lines[0].starts_with("error: MTLS_LB_SECRET: required") && lines[0].contains("TLS"),
                "{flows} {command}: {lines:?}"
            );
        }
    }
}

#[test]
fn xlb_flow_without_mtls_lb_secret_on_a_non_loopback_address_is_warned_about() {
    let warning = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.starts_with("warning: ") && l.contains("MTLS_LB_SECRET"))
            .count()
    };
    for address in ["0.0.0.0", "::", "10.1.2.3"] {
        let out = run(
            &["check-config"],
            &[("TOKEN_AUDIENCE", "a"), ("BIND_ADDRESS", address)],
        );
        let lines = stderr_lines(&out);
        assert!(out.status.success(), "{address}: {lines:?}");
        assert_eq!(warning(&lines), 1, "{address}: {lines:?}");
        let line = lines.iter().find(|l| l.contains("MTLS_LB_SECRET")).unwrap();
        assert!(
            line.contains("xlb-mtls-client-credentials") && line.contains("X-Client-Cert"),
            "the warning names the flow and the risk: {line}"
        );
    }
    for env in [
        &[("TOKEN_AUDIENCE", "a"), ("BIND_ADDRESS", "127.0.0.1")][..],
        &[("TOKEN_AUDIENCE", "a"), ("BIND_ADDRESS", "::1")],
        &[
            ("TOKEN_AUDIENCE", "a"),
            ("BIND_ADDRESS", "0.0.0.0"),
            ("MTLS_LB_SECRET", "0123456789abcdef0123"),
        ],
    ] {
        let out = run(&["check-config"], env);
        assert!(out.status.success(), "{env:?}: {}", stderr(&out));
        assert_eq!(warning(&stderr_lines(&out)), 0, "{env:?}: {}", stderr(&out));
    }
    // On loopback, but beside the forwarded-certificate flow (a proxy in front would pass a
    // client's own X-Client-Cert-* headers through).
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&ca, ca_params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let out = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "a"),
            ("BIND_ADDRESS", "127.0.0.1"),
            (
                "AUTH_FLOWS",
                "forwarded-cert-client-credentials,xlb-mtls-client-credentials",
            ),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("TLS_CLIENT_CA_FILE", ca.to_str().unwrap()),
        ],
    );
    let lines = stderr_lines(&out);
    assert!(out.status.success(), "{lines:?}");
    assert_eq!(warning(&lines), 1, "beside a proxy flow: {lines:?}");
    // `serve` logs the same warning at startup.
    let server = Server::start_process(&[("BIND_ADDRESS", "0.0.0.0")]);
    let logged = server
        .json_logs()
        .into_iter()
        .filter(|l| {
            l["severity"] == "WARNING"
                && l["logging.googleapis.com/labels"]["event"] == "config_warning"
                && l["message"].as_str().unwrap().contains("MTLS_LB_SECRET")
        })
        .count();
    assert_eq!(logged, 1, "{}", server.logs());
}

#[test]
fn blank_mtls_lb_secret_stops_startup_and_a_short_one_is_warned_about() {
    for blank in ["", " ", "\t  "] {
        for command in ["serve", "check-config"] {
            let out = run(
                &[command],
                &[
                    ("TOKEN_AUDIENCE", "a"),
                    ("PORT", "0"),
                    ("MTLS_LB_SECRET", blank),
                ],
            );
            let lines = stderr_lines(&out);
            assert_eq!(out.status.code(), Some(2), "{blank:?} {command}: {lines:?}");
            assert_eq!(lines.len(), 1, "{blank:?} {command}: {lines:?}");
            assert!(
                lines[0].starts_with("error: MTLS_LB_SECRET: ") && lines[0].contains("blank"),
                "{lines:?}"
            );
        }
    }
    let out = run(
        &["check-config"],
        &[("TOKEN_AUDIENCE", "a"), ("MTLS_LB_SECRET", "short-secret")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stderr_lines(&out);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: MTLS_LB_SECRET")
                && l.contains("12 bytes")
                && l.contains("16")),
        "{lines:?}"
    );
    assert!(!stderr(&out).contains("short-secret"), "{lines:?}");
    let out = run(
        &["check-config"],
        &[
            ("TOKEN_AUDIENCE", "a"),
            ("MTLS_LB_SECRET", "sixteen-bytes-ok"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("MTLS_LB_SECRET"), "{}", stderr(&out));
}

#[test]
fn trusted_proxies_that_cover_the_internet_are_warned_about() {
    let base = |proxies: &'static str| {
        vec![
            ("TOKEN_AUDIENCE", "a"),
            ("AUTH_FLOWS", "forwarded-cert-client-credentials"),
            ("TLS_CLIENT_CA_FILE", "/nonexistent/ca.pem"),
            ("TRUSTED_PROXIES", proxies),
        ]
    };
    // check-config stops at the missing CA file; the warnings come first.
    for proxies in [
        "0.0.0.0/0",
        "::/0",
        "::ffff:0.0.0.0/96",
        "10.0.0.0/8,0.0.0.0/1",
        "2000::/3",
        "64.0.0.0/2",
    ] {
        let out = run(&["check-config"], &base(proxies));
        let lines = stderr_lines(&out);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("warning: TRUSTED_PROXIES") && l.contains("Internet")),
            "{proxies}: {lines:?}"
        );
    }
    for proxies in [
        "10.0.0.0/8",
        "127.0.0.1/32,192.168.0.0/16",
        "fd00::/8",
        "2001:db8::/32",
    ] {
        let out = run(&["check-config"], &base(proxies));
        assert!(
            !stderr(&out).contains("warning: TRUSTED_PROXIES"),
            "{proxies}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn toml_syntax_errors_name_line_and_column_without_showing_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "TOKEN_AUDIENCE = \"a\"\nMTLS_LB_SECRET = \"hunter2-secret-value\" trailing\n",
            "line 2, column",
        ),
        (
            "TOKEN_AUDIENCE = \"a\"\n\nMTLS_LB_SECRET = \"hunter2-secret-value\n",
            "line 3, column",
        ),
        ("MTLS_LB_SECRET = hunter2-secret-value\n", "line 1, column"),
    ];
    for (i, (text, position)) in cases.iter().enumerate() {
        let file = temp_file(&dir, &format!("bad-{i}.toml"), text);
        let out = run(&["--config", file.to_str().unwrap(), "check-config"], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(position), "{position:?} in {err}");
        assert!(err.contains("bad-"), "names the file: {err}");
        assert!(!err.contains("hunter2"), "shows a secret: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_data_dir_or_key_file_other_users_can_change_stops_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o777);
    let data_text = data.display().to_string();
    for command in ["serve", "check-config"] {
        let out = run(
            &[command],
            &[
                ("TOKEN_AUDIENCE", "a"),
                ("PORT", "0"),
                ("DATA_DIR", &data_text),
            ],
        );
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {lines:?}");
        let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{command}: {lines:?}");
        assert!(
            errors[0].starts_with("error: DATA_DIR: ")
                && errors[0].contains(&format!("chmod 700 {data_text}")),
            "{command}: {lines:?}"
        );
        assert!(!data.join("signing-key.pem").exists(), "no key is written");
    }
    let key = dir.path().join("key.pem");
    std::fs::write(&key, ec_key_pem()).unwrap();
    chmod(&key, 0o666);
    let key_text = key.display().to_string();
    for command in ["serve", "check-config"] {
        let out = run(
            &[command],
            &[
                ("TOKEN_AUDIENCE", "a"),
                ("PORT", "0"),
                ("SIGNING_KEY_FILE", &key_text),
            ],
        );
        let lines = stderr_lines(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {lines:?}");
        let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{command}: {lines:?}");
        assert!(
            errors[0].starts_with("error: SIGNING_KEY_FILE: ")
                && errors[0].contains(&format!("chmod go-w {key_text}")),
            "{command}: {lines:?}"
        );
    }
    // World-readable (Kubernetes' default secret mode) is a warning, not a refusal.
    chmod(&key, 0o644);
    let out = run(
        &["check-config"],
        &[("TOKEN_AUDIENCE", "a"), ("SIGNING_KEY_FILE", &key_text)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr_lines(&out)
            .iter()
            .any(|l| l.starts_with("warning: SIGNING_KEY_FILE") && l.contains("chmod 600")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn starts_interrupted_while_writing_the_key_or_the_demo_pki_recover_or_name_the_file() {
    // The development PKI: a CA key written, the process killed before its certificate.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = data.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::write(pki.join("ca.key"), "-----BEGIN PRIVATE KEY-----\nMIGH").unwrap();
    let data_text = data.display().to_string();
    let out = run(
        &["pki", "client", "--name", "device-3"],
        &[("DATA_DIR", &data_text)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pki.join("ca.pem").exists() && pki.join("device-3.pem").exists());
    // The demo client's key written, its certificate not.
    std::fs::remove_file(pki.join("client.pem")).unwrap();
    std::fs::write(pki.join("client.key"), "half").unwrap();
    let out = run(
        &["pki", "client", "--name", "device-4"],
        &[("DATA_DIR", &data_text)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pki.join("client.pem").exists());
    assert!(
        std::fs::read_to_string(pki.join("client.key"))
            .unwrap()
            .contains("PRIVATE KEY")
    );
    // A half-written signing key (what a crash left before writes were atomic): the one
    // error line names the exact file to delete.
    let key = data.join("signing-key.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nMIIEv").unwrap();
    chmod(&key, 0o600);
    chmod(&data, 0o700);
    let out = run(
        &["serve"],
        &[
            ("TOKEN_AUDIENCE", "a"),
            ("PORT", "0"),
            ("DATA_DIR", &data_text),
        ],
    );
    let lines = stderr_lines(&out);
    assert_eq!(out.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!("delete '{}'", key.display())),
        "{lines:?}"
    );
}
