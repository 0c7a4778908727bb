//! `token-service doctor` against the real service: the demo (https with its development CA
//! and client certificate) and plain-http services with edited settings, over real sockets.
//! Each rule the service can be made to fail is failed here once, and the exit status and the
//! `--json` shape are what scripts rely on.

use crate::support as common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

/// Runs `doctor` with exactly `env` and `args` in `dir`.
fn doctor(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("doctor")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The `--json` findings; asserts their shape.
fn findings(out: &Output) -> Vec<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{e}: not JSON:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rows = parsed.as_array().expect("an array").clone();
    for row in &rows {
        let keys: BTreeSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["rule", "cloud", "status", "detail", "fix"]),
            "{row}"
        );
        assert!(
            ["all", "google", "aws", "entra"].contains(&row["cloud"].as_str().unwrap()),
            "{row}"
        );
        assert!(
            ["pass", "fail", "warn", "skip"].contains(&row["status"].as_str().unwrap()),
            "{row}"
        );
        assert_eq!(
            row["fix"] == "",
            row["status"] == "pass" || row["status"] == "skip",
            "a fix exactly where a rule failed or warns: {row}"
        );
    }
    rows
}

/// The (rule, cloud) pairs that failed.
fn failed(rows: &[Value]) -> BTreeSet<(String, String)> {
    rows.iter()
        .filter(|r| r["status"] == "fail")
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["cloud"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn row<'a>(rows: &'a [Value], rule: &str, cloud: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["rule"] == rule && r["cloud"] == cloud)
        .unwrap_or_else(|| panic!("no {rule}/{cloud} in {rows:#?}"))
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(r, c)| ((*r).to_owned(), (*c).to_owned()))
        .collect()
}

/// The demo, and the doctor arguments that reach it with its CA and client certificate.
struct Demo {
    server: Server,
}

impl Demo {
    fn start() -> Self {
        Self {
            server: Server::spawn(&["demo"], Vec::new(), tempfile::tempdir().unwrap()),
        }
    }

    fn issuer(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.port)
    }

    fn pki(&self, file: &str) -> String {
        format!("./.token-service/pki/{file}")
    }

    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        doctor(self.server.dir.path(), env, args)
    }

    /// `--ca`, `--cert` and `--key` of the demo, then `extra`.
    fn run_with_pki(&self, extra: &[&str]) -> Output {
        let (ca, cert, key) = (
            self.pki("ca.pem"),
            self.pki("client.pem"),
            self.pki("client.key"),
        );
        let mut args = vec!["--ca", &ca, "--cert", &cert, "--key", &key];
        args.extend_from_slice(extra);
        self.run(&[], &args)
    }
}

/// The demo's https issuer with its CA trusted: everything passes but what a local issuer
/// cannot: AWS refuses the port, and AWS and Entra cannot reach 127.0.0.1 (Google could, with
/// an uploaded JWK Set: a warning). Exit status 1.
#[test]
fn the_demo_with_its_ca_fails_only_the_port_and_the_loopback_host() {
    let demo = Demo::start();
    let issuer = demo.issuer();
    let out = demo.run_with_pki(&["--issuer", &issuer, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = findings(&out);
    assert_eq!(
        failed(&rows),
        pairs(&[
            ("issuer-no-port", "aws"),
            ("issuer-public-host", "aws"),
            ("issuer-public-host", "entra"),
        ]),
        "{rows:#?}"
    );
    for (rule, cloud) in [
        ("issuer-https", "all"),
        ("discovery-reachable", "all"),
        ("discovery-issuer-matches", "all"),
        ("jwks-reachable", "all"),
        ("jwks-keys-kid", "all"),
        ("jwks-keys-use-sig", "all"),
        ("token-obtained", "all"),
        ("token-signature", "all"),
        ("token-iss-matches", "all"),
        ("token-sub", "all"),
        ("token-iat", "all"),
        ("clock-skew-token", "all"),
        ("clock-skew-server", "all"),
        ("token-algorithm", "entra"),
        ("token-lifetime", "aws"),
    ] {
        assert_eq!(
            row(&rows, rule, cloud)["status"],
            "pass",
            "{rule}/{cloud}: {rows:#?}"
        );
    }
    let port = row(&rows, "issuer-no-port", "aws");
    assert!(
        port["detail"]
            .as_str()
            .unwrap()
            .contains(&demo.server.port.to_string())
            && port["fix"].as_str().unwrap().contains("443"),
        "{port}"
    );
    // The demo's 5-minute tokens: Azure's SDK re-reads a token file only every 10 minutes.
    assert_eq!(row(&rows, "token-lifetime", "entra")["status"], "warn");
    assert_eq!(row(&rows, "issuer-public-host", "google")["status"], "warn");
}

/// The table names each rule, its cloud, FAIL and the fix; `--cloud google` keeps Google's
/// rules and the common ones, which all pass for the demo: exit status 0.
#[test]
fn the_table_and_a_cloud_that_passes() {
    let demo = Demo::start();
    let issuer = demo.issuer();
    let out = demo.run_with_pki(&["--issuer", &issuer]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("issuer-no-port"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("aws") && line.contains("FAIL") && line.contains("fix:"),
        "{line}"
    );
    assert!(text.lines().next().unwrap().starts_with("RULE"), "{text}");
    assert!(text.contains("3 failed"), "{text}");
    let out = demo.run_with_pki(&["--issuer", &issuer, "--cloud", "google", "--json"]);
    let rows = findings(&out);
    assert_eq!(out.status.code(), Some(0), "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r["cloud"] == "google" || r["cloud"] == "all")
    );
    assert!(failed(&rows).is_empty());
}

/// Without `--ca` the demo's certificate is not valid TLS: discovery and the token fail.
/// With `TOKEN_ISSUER` in the environment instead of `--issuer`, and no token asked for.
#[test]
fn without_the_ca_the_demos_tls_is_not_valid() {
    let demo = Demo::start();
    let issuer = demo.issuer();
    let out = demo.run(&[("TOKEN_ISSUER", &issuer)], &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = findings(&out);
    let reach = row(&rows, "discovery-reachable", "all");
    assert_eq!(reach["status"], "fail", "{reach}");
    assert!(
        reach["detail"].as_str().unwrap().contains("certificate"),
        "{reach}"
    );
    assert_eq!(row(&rows, "jwks-reachable", "all")["status"], "skip");
    assert_eq!(row(&rows, "token-obtained", "all")["status"], "skip");
}

/// `--issuer` other than the service's `TOKEN_ISSUER` (the certificate also names
/// localhost): discovery and the token's `iss` name another issuer.
#[test]
fn an_issuer_other_than_iss_fails_the_byte_comparisons() {
    let demo = Demo::start();
    let other = format!("https://localhost:{}", demo.server.port);
    let rows = findings(&demo.run_with_pki(&["--issuer", &other, "--json"]));
    let matches = row(&rows, "discovery-issuer-matches", "all");
    assert_eq!(matches["status"], "fail", "{matches}");
    assert!(
        matches["detail"].as_str().unwrap().contains(&demo.issuer()),
        "{matches}"
    );
    assert_eq!(row(&rows, "token-iss-matches", "all")["status"], "fail");
}

/// A plain-http issuer fails https everywhere, for the issuer and its `jwks_uri`.
#[test]
fn an_http_issuer_fails_https() {
    let server = Server::start(&[]);
    assert!(server.base.starts_with("http://"), "{}", server.base);
    let out = doctor(
        server.dir.path(),
        &[("TOKEN_ISSUER", &server.base)],
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = findings(&out);
    let https = row(&rows, "issuer-https", "all");
    assert_eq!(https["status"], "fail");
    assert!(https["fix"].as_str().unwrap().contains("https"), "{https}");
    assert_eq!(row(&rows, "jwks-uri-https", "all")["status"], "fail");
    assert_eq!(row(&rows, "discovery-reachable", "all")["status"], "pass");
    assert_eq!(row(&rows, "jwks-keys-kid", "all")["status"], "pass");
}

/// `JWKS_URI` where nothing listens.
#[test]
fn an_unreachable_jwks_uri_fails() {
    let jwks = format!("https://{UNREACHABLE}/jwks.json");
    let server = Server::start(&[("JWKS_URI", &jwks)]);
    let rows = findings(&doctor(
        server.dir.path(),
        &[("TOKEN_ISSUER", &server.base)],
        &["--json"],
    ));
    let reach = row(&rows, "jwks-reachable", "all");
    assert_eq!(reach["status"], "fail", "{reach}");
    assert!(reach["detail"].as_str().unwrap().contains(&jwks), "{reach}");
    assert_eq!(row(&rows, "jwks-keys-kid", "all")["status"], "skip");
}

/// Serves `body` as JSON to every request on a port of its own, until the test ends.
fn serve_json(body: Value) -> String {
    serve_json_with(body, "")
}

/// Like [`serve_json`], with `headers` (each line ending in CRLF) added to the response.
fn serve_json_with(body: Value, headers: &'static str) -> String {
    let listener = listener();
    let url = format!("http://127.0.0.1:{}/jwks.json", port_of(&listener));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// An issuer whose server's clock is years off and whose discovery document lacks
/// `response_types_supported`.
#[test]
fn a_server_clock_off_and_discovery_without_response_types_fail() {
    let url = serve_json_with(
        json!({"issuer": "https://elsewhere.example"}),
        "date: Thu, 01 Jan 2015 00:00:00 GMT\r\n",
    );
    let issuer = url.trim_end_matches("/jwks.json");
    let dir = tempfile::tempdir().unwrap();
    let rows = findings(&doctor(dir.path(), &[], &["--json", "--issuer", issuer]));
    let skew = row(&rows, "clock-skew-server", "all");
    assert_eq!(skew["status"], "fail", "{rows:#?}");
    assert!(skew["fix"].as_str().unwrap().contains("NTP"), "{skew}");
    assert_eq!(
        row(&rows, "discovery-response-types", "aws")["status"],
        "fail"
    );
    assert_eq!(
        row(&rows, "discovery-issuer-matches", "all")["status"],
        "fail"
    );
}

/// A published key without `kid` or `use: "sig"`, and too many of them for AWS.
#[test]
fn keys_without_kid_or_sig_and_too_many_keys_fail() {
    let mut keys = vec![json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "use": "enc"})];
    keys.extend(
        (0..100).map(|i| json!({"kty": "EC", "crv": "P-256", "kid": i.to_string(), "use": "sig"})),
    );
    let jwks = serve_json(json!({ "keys": keys }));
    let server = Server::start(&[("JWKS_URI", &jwks)]);
    let rows = findings(&doctor(
        server.dir.path(),
        &[("TOKEN_ISSUER", &server.base)],
        &["--json"],
    ));
    assert_eq!(
        row(&rows, "jwks-keys-kid", "all")["status"],
        "fail",
        "{rows:#?}"
    );
    assert_eq!(row(&rows, "jwks-keys-use-sig", "all")["status"], "fail");
    assert_eq!(row(&rows, "jwks-key-count", "aws")["status"], "fail");
    assert_eq!(row(&rows, "jwks-key-count", "google")["status"], "warn");
}

/// A token signed with the service's own key (so that kid and signature are right), with
/// `claims` and the header's kid replaced as given.
fn sample_token(server: &Server, kid: Option<&str>, claims: &Value) -> PathBuf {
    let pem = std::fs::read_to_string(server.dir.path().join("key.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_der(&der);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let token = jsonwebtoken::encode(&header, claims, &key).unwrap();
    temp_file(&server.dir, "token.jwt", &token)
}

/// The service's one key id, from its JWK Set.
async fn kid_of(server: &Server) -> String {
    let set: Value = client()
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    set["keys"][0]["kid"].as_str().unwrap().to_owned()
}

fn now() -> i64 {
    token_service::clock::Clock::system().now()
}

/// `--token FILE`: a token that lives two days fails every cloud's lifetime; one without kid
/// fails kid; without sub and iat fails those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_tokens_with_long_lifetime_no_kid_no_sub_no_iat_fail() {
    let server = Server::start(&[]);
    let kid = kid_of(&server).await;
    let iat = now();
    let claims = json!({"iss": server.base, "sub": "device", "aud": "a", "iat": iat, "exp": iat + 2 * 86_400});
    let file = sample_token(&server, Some(&kid), &claims);
    let run = |file: PathBuf| {
        let issuer = server.base.clone();
        let dir = server.dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            findings(&doctor(
                &dir,
                &[("TOKEN_ISSUER", &issuer)],
                &["--json", "--token", file.to_str().unwrap()],
            ))
        })
    };
    let rows = run(file).await.unwrap();
    for cloud in ["google", "aws", "entra"] {
        let lifetime = row(&rows, "token-lifetime", cloud);
        assert_eq!(lifetime["status"], "fail", "{lifetime}");
        assert!(
            lifetime["detail"].as_str().unwrap().contains("172800 s"),
            "{lifetime}"
        );
    }
    assert_eq!(
        row(&rows, "token-signature", "all")["status"],
        "pass",
        "{rows:#?}"
    );
    assert_eq!(row(&rows, "token-algorithm", "entra")["status"], "fail");
    let file = sample_token(&server, None, &claims);
    let rows = run(file).await.unwrap();
    assert_eq!(row(&rows, "token-kid", "all")["status"], "fail");
    let claims = json!({"iss": server.base, "aud": "a", "exp": iat + 300});
    let file = sample_token(&server, Some(&kid), &claims);
    let rows = run(file).await.unwrap();
    assert_eq!(row(&rows, "token-sub", "all")["status"], "fail");
    assert_eq!(row(&rows, "token-iat", "all")["status"], "fail");
    assert_eq!(row(&rows, "token-signature", "all")["status"], "pass");
}

/// `--token FILE`: a token signed by another key under the service's kid, an expired one and
/// one issued in the future each fail their rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_tokens_with_a_wrong_signature_expired_or_from_the_future_fail() {
    let server = Server::start(&[]);
    let kid = kid_of(&server).await;
    let impostor = Server::start(&[]);
    let iat = now();
    let run = |file: PathBuf| {
        let issuer = server.base.clone();
        let dir = server.dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            findings(&doctor(
                &dir,
                &[("TOKEN_ISSUER", &issuer)],
                &["--json", "--token", file.to_str().unwrap()],
            ))
        })
    };
    let claims = json!({"iss": server.base, "sub": "d", "aud": "a", "iat": iat, "exp": iat + 300});
    let rows = run(sample_token(&impostor, Some(&kid), &claims))
        .await
        .unwrap();
    assert_eq!(
        row(&rows, "token-kid", "all")["status"],
        "pass",
        "{rows:#?}"
    );
    assert_eq!(row(&rows, "token-signature", "all")["status"], "fail");
    let claims =
        json!({"iss": server.base, "sub": "d", "aud": "a", "iat": iat - 600, "exp": iat - 300});
    let rows = run(sample_token(&server, Some(&kid), &claims))
        .await
        .unwrap();
    assert_eq!(row(&rows, "token-not-expired", "all")["status"], "fail");
    assert_eq!(row(&rows, "clock-skew-token", "all")["status"], "pass");
    let claims =
        json!({"iss": server.base, "sub": "d", "aud": "a", "iat": iat + 600, "exp": iat + 900});
    let rows = run(sample_token(&server, Some(&kid), &claims))
        .await
        .unwrap();
    assert_eq!(row(&rows, "clock-skew-token", "all")["status"], "fail");
}

/// An issuer with a query (AWS) or longer than 600 characters (Entra), as given to `--issuer`.
#[test]
fn an_issuer_with_a_query_or_too_long_fails() {
    let server = Server::start(&[]);
    let query = format!("{}?tenant=a", server.base);
    let rows = findings(&doctor(
        server.dir.path(),
        &[],
        &["--json", "--issuer", &query],
    ));
    assert_eq!(row(&rows, "issuer-no-query", "aws")["status"], "fail");
    assert_eq!(row(&rows, "issuer-length", "entra")["status"], "pass");
    let long = format!("{}/{}", server.base, "t".repeat(600));
    let rows = findings(&doctor(
        server.dir.path(),
        &[],
        &["--json", "--issuer", &long],
    ));
    assert_eq!(row(&rows, "issuer-length", "entra")["status"], "fail");
    assert_eq!(row(&rows, "discovery-reachable", "all")["status"], "fail");
}

/// Exit status 2, one line saying what to do, when the doctor cannot run.
#[test]
fn without_an_issuer_or_with_an_unreadable_file_the_doctor_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = doctor(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set TOKEN_ISSUER") && stderr.contains("--issuer"),
        "{stderr}"
    );
    let out = doctor(
        dir.path(),
        &[],
        &["--issuer", "https://a.example", "--token", "missing.jwt"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the token file 'missing.jwt'"),
        "{stderr}"
    );
    let out = doctor(dir.path(), &[("TOKEN_ISSUER", "ftp://x")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: TOKEN_ISSUER"));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("doctor"));
}
