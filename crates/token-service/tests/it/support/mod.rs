//! Test harness: runs the real `token-service` binary on a loopback port and talks HTTP to it;
//! verifies tokens the way an outside party would (discovery → jwks_uri → signature).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

pub mod google;
pub mod http2;
pub mod tls;

pub const BIN: &str = env!("CARGO_BIN_EXE_token-service");
pub const AUDIENCE: &str =
    "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/v";
pub const SPIFFE: &str = "spiffe://example.org/ns/prod/sa/workload-1";
/// The certificate fingerprint [`lb_headers`] report (base64, no padding).
pub const LB_HASH: &str = "q1Ki0fHfPVfPs2QhGOqPm6qOoJx6JxGNOpr3jxNKsL4";

/// A running service.
pub struct Server {
    pub base: String,
    pub port: u16,
    logs: Arc<Mutex<String>>,
    child: Child,
    pub dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub fn ec_key_pem() -> String {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .unwrap();
    pem("PRIVATE KEY", doc.as_ref())
}

pub fn rsa_key_pem() -> String {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    pem("PRIVATE KEY", pair.as_der().unwrap().as_ref())
}

impl Server {
    /// Starts the service with a fixed http issuer on a free port, an EC key file and the given
    /// extra settings (which win).
    pub fn start(extra: &[(&str, &str)]) -> Server {
        Self::start_on(free_port(), extra)
    }

    /// Like [`Server::start`] on a given port.
    pub fn start_on(port: u16, extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, ec_key_pem()).unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("PORT".into(), port.to_string()),
            ("TOKEN_ISSUER".into(), format!("http://127.0.0.1:{port}")),
            ("TOKEN_AUDIENCE".into(), AUDIENCE.into()),
            ("SIGNING_KEY_FILE".into(), key.display().to_string()),
            (
                "DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            if !v.is_empty() {
                env.push(((*k).into(), (*v).into()));
            }
        }
        Self::spawn(&["serve"], env, dir, port)
    }

    pub fn spawn(
        args: &[&str],
        env: Vec<(String, String)>,
        dir: tempfile::TempDir,
        port: u16,
    ) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening") {
                    let _ = tx.send(());
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("service did not start:\n{}", logs.lock().unwrap());
        }
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            logs,
            child,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        // Log lines are written synchronously before the response; a short pause lets the
        // reader thread catch up with the pipe.
        std::thread::sleep(Duration::from_millis(100));
        self.logs.lock().unwrap().clone()
    }

    /// Parsed JSON log lines.
    pub fn json_logs(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as Cloud Run and Kubernetes do.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Headers of a load balancer that verified a certificate with this SPIFFE ID.
pub fn lb_headers(spiffe: &str) -> Vec<(String, String)> {
    vec![
        ("X-Client-Cert-Present".into(), "true".into()),
        ("X-Client-Cert-Chain-Verified".into(), "true".into()),
        ("X-Client-Cert-Error".into(), String::new()),
        ("X-Client-Cert-Hash".into(), LB_HASH.into()),
        ("X-Client-Cert-Spiffe".into(), spiffe.into()),
        ("X-Client-Cert-URI-SANs".into(), String::new()),
        (
            "X-Client-Cert-DNSName-SANs".into(),
            STANDARD.encode("device-1.example.org,device-1.alt.example.org"),
        ),
        ("X-Client-Cert-Serial-Number".into(), "10:01".into()),
        (
            "X-Client-Cert-Valid-Not-Before".into(),
            "2020-01-01T00:00:00Z".into(),
        ),
        (
            "X-Client-Cert-Valid-Not-After".into(),
            "2099-01-01T00:00:00Z".into(),
        ),
    ]
}

/// POSTs a form to /token with load-balancer headers, overriding or removing (empty value)
/// some of them.
pub async fn token(server: &Server, body: &str, overrides: &[(&str, &str)]) -> reqwest::Response {
    token_request(server, body, overrides).send().await.unwrap()
}

/// The request [`token`] sends, owned, for spawning concurrent requests.
pub fn token_request(
    server: &Server,
    body: &str,
    overrides: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let mut headers = lb_headers(SPIFFE);
    for (k, v) in overrides {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        if !v.is_empty() {
            headers.push(((*k).into(), (*v).into()));
        }
    }
    let mut request = client()
        .post(server.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(k, v);
    }
    request
}

/// Verifies an ID token as a relying party would: discovery at `{iss}/.well-known/...`, keys
/// from `jwks_uri`, signature, `iss`, `aud`, `exp`. Returns the claims.
pub async fn verify(token: &str, issuer: &str, audience: &str) -> Value {
    verify_with(&client(), token, issuer, audience).await
}

/// [`verify`] with a given HTTP client (e.g. one that trusts a test CA for an https issuer).
pub async fn verify_with(
    http: &reqwest::Client,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Value {
    let discovery: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer);
    let jwks: JwkSet = http
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = decode_header(token).unwrap();
    let kid = header.kid.clone().expect("kid in header");
    let jwk = jwks.find(&kid).expect("kid published in jwks_uri");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims
}

pub fn temp_file(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
