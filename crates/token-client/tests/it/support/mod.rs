//! Test harness: a test PKI (rcgen), the REAL `token-service` binary with TLS and the
//! `mtls-client-credentials` flow, the Google API emulator as its STS/IAM, and runs of the
//! `token-client` binary.
//!
//! Google's STS (the emulator) fetches the issuer's discovery document; it cannot trust the
//! test CA, so the issuer is a plain-HTTP loopback front ([`DiscoveryFront`]) that relays
//! GETs to the broker over TLS.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use gcp_emulator::{Config as EmulatorConfig, Emulator, Provider};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub mod pki;

pub use pki::{Ca, Leaf};

pub const CLIENT: &str = env!("CARGO_BIN_EXE_token-client");
pub const PROJECT_NUMBER: &str = "123456789012";
pub const POOL: &str = "devices";
pub const PROVIDER: &str = "token-service";
/// The pool provider as Google's libraries name it (the `audience` of a configuration).
pub const POOL_AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/devices/providers/token-service";
/// An account the pool's principals may impersonate.
pub const TARGET_SA: &str = "storage-reader@demo-project.iam.gserviceaccount.com";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The SPIFFE ID of the device certificate [`Fixture::device`].
pub const DEVICE: &str = "spiffe://example.org/ns/prod/sa/device-1";
/// The broker's refusal of a certificate from another CA.
pub const UNKNOWN_ISSUER: &str =
    "The client certificate was not issued by a CA in TLS_CLIENT_CA_FILE (unknown issuer)";

/// The `token-service` binary: next to this test binary's target folder; built when missing
/// (`cargo test -p token-client` does not build other packages' binaries).
pub fn broker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = target_dir();
        let bin = target.join("debug").join("token-service");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "token-service", "--bin", "token-service"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .status()
                .unwrap();
            assert!(status.success(), "cargo build -p token-service failed");
        }
        bin
    })
    .clone()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")),
    }
}

/// A test setting the test's environment may override (interpreter paths).
pub fn env_setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Everything a test needs: PKI files, the emulator, the broker and its discovery front.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: Ca,
    /// The device's certificate and key files (issued by the root).
    pub device: Leaf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub emulator: Emulator,
    pub broker: Broker,
    _front: DiscoveryFront,
}

impl Fixture {
    pub async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = Ca::root("Test Root CA");
        let server = root.issue_server();
        let device = root.issue_client(DEVICE);
        let file = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let ca = file("ca.pem", &root.pem);
        let cert = file("device.pem", &device.pem);
        let key = file("device.key", &device.key_pem);
        file("server.pem", &server.pem);
        file("server.key", &server.key_pem);
        file("signing.pem", &pki::ec_key_pem());
        let front = DiscoveryFront::bind().await;
        let emulator =
            Emulator::start(emulator_config(&front.base), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
        let broker = Broker::start(dir.path(), &front.base, &emulator.base_url());
        front.relay_to(&broker.base, &root.pem);
        Fixture {
            dir,
            root,
            device,
            cert,
            key,
            ca,
            emulator,
            broker,
            _front: front,
        }
    }

    /// The broker settings as environment variables for `token-client`.
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            ("TOKEN_CLIENT_BROKER".into(), self.broker.base.clone()),
            ("TOKEN_CLIENT_CERT".into(), self.cert.display().to_string()),
            ("TOKEN_CLIENT_KEY".into(), self.key.display().to_string()),
            ("TOKEN_CLIENT_CA".into(), self.ca.display().to_string()),
        ]
    }

    /// A path in the fixture's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a certificate and key of another CA (which the broker refuses) into the
    /// fixture's folder; returns their paths.
    pub fn foreign_identity(&self) -> (PathBuf, PathBuf) {
        let other = Ca::root("Other CA").issue_client("spiffe://example.org/ns/prod/sa/stranger");
        let cert = self.path("stranger.pem");
        let key = self.path("stranger.key");
        std::fs::write(&cert, &other.pem).unwrap();
        std::fs::write(&key, &other.key_pem).unwrap();
        (cert, key)
    }
}

/// Runs `token-client` with only `env` (plus PATH) and `args`.
pub async fn run_client(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(CLIENT);
    command.args(args).env_clear().envs(env.iter().cloned());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The pool trusts the broker (issuer `issuer`); its principals may impersonate [`TARGET_SA`].
fn emulator_config(issuer: &str) -> EmulatorConfig {
    EmulatorConfig {
        project_number: PROJECT_NUMBER.into(),
        extra_service_accounts: vec![TARGET_SA.into()],
        providers: vec![Provider::new(PROJECT_NUMBER, POOL, PROVIDER, issuer)],
        impersonation: vec![(
            TARGET_SA.into(),
            format!(
                "principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/*"
            ),
        )],
        ..EmulatorConfig::default()
    }
}

/// The real `token-service serve` with TLS and mTLS, on a port it picks (`PORT=0`).
pub struct Broker {
    /// `https://127.0.0.1:PORT`, read from its `listening on` log line.
    pub base: String,
    logs: Arc<Mutex<String>>,
    child: Child,
}

impl Broker {
    fn start(dir: &Path, issuer: &str, emulator: &str) -> Broker {
        let path = |name: &str| dir.join(name).display().to_string();
        let mut child = Command::new(broker_bin())
            .arg("serve")
            .env_clear()
            .env("PORT", "0")
            .env("AUTH_FLOWS", "mtls-client-credentials")
            .env("TLS_CERT_FILE", path("server.pem"))
            .env("TLS_KEY_FILE", path("server.key"))
            .env("TLS_CLIENT_CA_FILE", path("ca.pem"))
            .env("SIGNING_KEY_FILE", path("signing.pem"))
            .env("DATA_DIR", path("data"))
            .env("TOKEN_ISSUER", issuer)
            .env("WORKLOAD_IDENTITY_PROJECT_NUMBER", PROJECT_NUMBER)
            .env("WORKLOAD_IDENTITY_POOL_ID", POOL)
            .env("WORKLOAD_IDENTITY_PROVIDER_ID", PROVIDER)
            .env("STS_ENDPOINT", emulator)
            .env("IAM_CREDENTIALS_ENDPOINT", emulator)
            .env("RATE_LIMIT_PER_CLIENT", "0")
            .env("RATE_LIMIT_AUTH_FAILURES", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = url_after(&line, "listening on ") {
                    let _ = tx.send(url);
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
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let Ok(base) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("the broker did not start:\n{}", logs.lock().unwrap());
        };
        Broker { base, logs, child }
    }

    /// Everything the broker printed so far.
    pub fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        self.logs.lock().unwrap().clone()
    }

    /// How many tokens the broker issued so far (its `token_issued` log lines).
    pub fn issued(&self) -> usize {
        self.logs().matches("\"token_issued\"").count()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `scheme://address` after `marker` in a log line.
fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.rfind(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .unwrap_or(rest.len());
    let url = &rest[..end];
    url.contains("://").then(|| url.to_owned())
}

/// A plain-HTTP loopback listener that relays each GET to the broker over TLS (trusting the
/// test CA): the issuer URL that Google's STS (the emulator) can fetch discovery and keys from.
pub struct DiscoveryFront {
    pub base: String,
    listener: Mutex<Option<tokio::net::TcpListener>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl DiscoveryFront {
    async fn bind() -> DiscoveryFront {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        DiscoveryFront {
            base,
            listener: Mutex::new(Some(listener)),
            task: Mutex::new(None),
        }
    }

    fn relay_to(&self, broker: &str, ca_pem: &str) {
        let listener = self.listener.lock().unwrap().take().unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let broker = broker.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(relay(socket, http.clone(), broker.clone()));
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }
}

impl Drop for DiscoveryFront {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

async fn relay(mut socket: tokio::net::TcpStream, http: reqwest::Client, broker: String) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = match http.get(format!("{broker}{path}")).send().await {
        Ok(r) => (r.status().as_u16(), r.bytes().await.unwrap_or_default()),
        Err(_) => (502, Default::default()),
    };
    let head = format!(
        "HTTP/1.1 {status} Relayed\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(&body).await;
}
