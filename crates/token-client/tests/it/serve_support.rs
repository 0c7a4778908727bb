//! What the `serve` tests need beyond [`crate::support`]: a broker whose token lifetime they
//! choose (`TOKEN_VALIDITY`), reached through a TCP relay that a test can cut (a broker
//! outage without killing the broker), and a running `token-client serve` with its logs.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use gcp_emulator::{Config as EmulatorConfig, Emulator, Provider};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// PKI, emulator, broker (with `TOKEN_VALIDITY` minutes), its discovery front and a relay.
pub struct ServeFixture {
    pub dir: tempfile::TempDir,
    pub root: Ca,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub emulator: Emulator,
    pub broker: Process,
    /// What token-client talks to: `https://127.0.0.1:PORT` of the relay.
    pub relay: Relay,
    _front: Relay,
}

impl ServeFixture {
    pub async fn start(token_validity_minutes: u32) -> ServeFixture {
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
        file("signing.pem", &crate::support::pki::ec_key_pem());
        let front = Relay::bind().await;
        let issuer = format!("http://{}", front.address);
        let emulator = Emulator::start(emulator_config(&issuer), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let broker = start_broker(
            dir.path(),
            &issuer,
            &emulator.base_url(),
            token_validity_minutes,
        );
        let broker_address = broker.url.trim_start_matches("https://").to_owned();
        front.start_http_to_tls(&broker.url, &root.pem);
        let relay = Relay::bind().await;
        relay.start_tcp(&broker_address);
        ServeFixture {
            dir,
            root,
            cert,
            key,
            ca,
            emulator,
            broker,
            relay,
            _front: front,
        }
    }

    /// The broker settings (through the relay) as environment variables.
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "TOKEN_CLIENT_BROKER".into(),
                format!("https://{}", self.relay.address),
            ),
            ("TOKEN_CLIENT_CERT".into(), self.cert.display().to_string()),
            ("TOKEN_CLIENT_KEY".into(), self.key.display().to_string()),
            ("TOKEN_CLIENT_CA".into(), self.ca.display().to_string()),
        ]
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// How many tokens the broker issued so far.
    pub fn issued(&self) -> usize {
        self.broker.logs().matches("\"token_issued\"").count()
    }
}

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

fn start_broker(dir: &Path, issuer: &str, emulator: &str, validity: u32) -> Process {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut command = Command::new(broker_bin());
    command
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
        .env("TOKEN_VALIDITY", validity.to_string())
        .env("WORKLOAD_IDENTITY_PROJECT_NUMBER", PROJECT_NUMBER)
        .env("WORKLOAD_IDENTITY_POOL_ID", POOL)
        .env("WORKLOAD_IDENTITY_PROVIDER_ID", PROVIDER)
        .env("STS_ENDPOINT", emulator)
        .env("IAM_CREDENTIALS_ENDPOINT", emulator)
        .env("RATE_LIMIT_PER_CLIENT", "0")
        .env("RATE_LIMIT_AUTH_FAILURES", "0");
    Process::start(command, "listening on ")
}

/// A child process whose stdout and stderr are collected; `url` is the first
/// `scheme://address` after `marker` in its output.
pub struct Process {
    pub url: String,
    logs: Arc<Mutex<String>>,
    child: Child,
}

impl Process {
    pub fn start(mut command: Command, marker: &'static str) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let (sink, tx) = (logs.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(url) = url_after(&line, marker) {
                        let _ = tx.send(url);
                    }
                    let mut logs = sink.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not start:\n{}", logs.lock().unwrap());
        };
        Process { url, logs, child }
    }

    pub fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success());
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no exit within 10 s of {signal}:\n{}", self.logs());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.rfind(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        .unwrap_or(rest.len());
    let url = &rest[..end];
    url.contains("://").then(|| url.to_owned())
}

/// `token-client serve` on a free loopback port with `env` and `args`.
pub fn start_serve(env: &[(String, String)], args: &[&str]) -> Process {
    let mut command = Command::new(CLIENT);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .envs(env.iter().cloned());
    Process::start(command, "listening on ")
}

/// A loopback listener that relays connections: raw TCP to the broker ([`Relay::start_tcp`],
/// cut with [`Relay::stop`]) or plain HTTP GETs to it over TLS (the issuer URL that the
/// emulated STS fetches discovery and keys from).
pub struct Relay {
    pub address: std::net::SocketAddr,
    listener: Mutex<Option<tokio::net::TcpListener>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn bind() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Relay {
            address: listener.local_addr().unwrap(),
            listener: Mutex::new(Some(listener)),
            tasks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn listener(&self) -> tokio::net::TcpListener {
        if let Some(listener) = self.listener.lock().unwrap().take() {
            return listener;
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.address).unwrap();
        socket.listen(128).unwrap()
    }

    /// Relays every connection to `target` byte for byte (TLS passes through).
    pub fn start_tcp(&self, target: &str) {
        let listener = self.listener();
        let target = target.to_owned();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every relayed connection: the broker is unreachable.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    fn start_http_to_tls(&self, broker: &str, ca_pem: &str) {
        let listener = self.listener();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let broker = broker.to_owned();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(relay_get(socket, http.clone(), broker.clone()));
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn relay_get(mut socket: tokio::net::TcpStream, http: reqwest::Client, broker: String) {
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

/// One GET to `serve`: status, headers and body.
pub async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// The metadata header.
pub const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}
