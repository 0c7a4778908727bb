//! Test harness: runs the real `token-service` binary on a loopback port and talks HTTP to it;
//! verifies tokens the way an outside party would (discovery → jwks_uri → signature).

use std::io::{BufRead as _, BufReader};
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
mod in_process;
pub mod tls;

pub const BIN: &str = env!("CARGO_BIN_EXE_token-service");
pub const AUDIENCE: &str =
    "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/v";
pub const SPIFFE: &str = "spiffe://example.org/ns/prod/sa/workload-1";
/// The certificate fingerprint [`lb_headers`] report (base64, no padding).
pub const LB_HASH: &str = "q1Ki0fHfPVfPs2QhGOqPm6qOoJx6JxGNOpr3jxNKsL4";

/// A running service: in-process ([`Server::start`]) or the real binary
/// ([`Server::start_process`]) where the process itself is what a test looks at (its log, its
/// exit, its signals, its /proc counters).
pub struct Server {
    /// Where clients reach the service; its `TOKEN_ISSUER` unless the test set another.
    pub base: String,
    /// The port the service itself listens on (raw-socket tests connect here).
    pub port: u16,
    /// The admin listener's URL, when `ADMIN_PORT` is set (processes only).
    pub admin: Option<String>,
    pub dir: tempfile::TempDir,
    run: Run,
}

enum Run {
    /// Held for its `Drop`, which stops the service.
    InProcess {
        _app: in_process::InProcess,
    },
    Process(Process),
}

struct Process {
    logs: Arc<Mutex<String>>,
    child: Child,
    /// Holds the issuer's port, if the test chose one, and forwards it to the process.
    _front: Option<Forwarder>,
}

/// Every setting of the service with the built-in flows, in help order: what `--help` and
/// `check-config` list.
pub fn builtin_settings() -> Vec<token_service::config::Setting> {
    token_service::config::table(&token_service::flows::FlowRegistry::builtin())
}

/// A loopback listener on a port the kernel picks; handed to the service (or to the forwarder
/// in front of a process, or to a proxy as its socket), never dropped and bound again. A
/// process that binds its own port starts on port 0 and logs the address ([`Server::spawn`]).
pub fn listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

pub fn port_of(listener: &std::net::TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

/// An address where nothing listens: port 1 (tcpmux) is never served on loopback here, so a
/// connection is refused at once.
pub const UNREACHABLE: &str = "127.0.0.1:1";

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

/// The settings every test service starts with, `extra` winning (an empty value unsets).
/// `TOKEN_ISSUER` is the service's own address on `port`, https when TLS ends at the service.
fn settings(port: u16, dir: &tempfile::TempDir, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let key = dir.path().join("key.pem");
    std::fs::write(&key, ec_key_pem()).unwrap();
    let owned: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let scheme = scheme_of(&owned);
    let mut env: Vec<(String, String)> = vec![
        (
            "TOKEN_ISSUER".into(),
            format!("{scheme}://127.0.0.1:{port}"),
        ),
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
    env
}

impl Server {
    /// Starts the service in-process with a fixed issuer on a port of its own, an EC key file
    /// and the given extra settings (which win).
    pub fn start(extra: &[(&str, &str)]) -> Server {
        Self::start_on(listener(), extra)
    }

    /// Like [`Server::start`] on a listener the test bound (to know the port beforehand).
    pub fn start_on(listener: std::net::TcpListener, extra: &[(&str, &str)]) -> Server {
        let port = port_of(&listener);
        let dir = tempfile::tempdir().unwrap();
        let env = settings(port, &dir, extra);
        let scheme = scheme_of(&env);
        let app = in_process::spawn_app(listener, &env)
            .unwrap_or_else(|problems| panic!("service did not start:\n{problems}"));
        Server {
            base: format!("{scheme}://127.0.0.1:{port}"),
            port,
            admin: None,
            dir,
            run: Run::InProcess { _app: app },
        }
    }

    /// Runs the real binary (`serve`) with the settings of [`Server::start`].
    pub fn start_process(extra: &[(&str, &str)]) -> Server {
        Self::start_process_on(listener(), extra)
    }

    /// Like [`Server::start_process`]; `front` is the issuer's address, forwarded to the port
    /// the process binds.
    pub fn start_process_on(front: std::net::TcpListener, extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut env = settings(port_of(&front), &dir, extra);
        env.push(("PORT".into(), "0".into()));
        Self::spawn_on(front, &["serve"], env, dir)
    }

    /// Runs the binary with exactly `env` (and `PORT=0` unless `env` sets a port) in `dir`;
    /// waits for its `listening` log line and reads the bound address from it, which is
    /// [`Server::base`].
    pub fn spawn(args: &[&str], env: Vec<(String, String)>, dir: tempfile::TempDir) -> Server {
        Self::try_spawn_on(None, args, env, dir)
            .unwrap_or_else(|logs| panic!("service did not start:\n{logs}"))
    }

    /// Like [`Server::spawn`]; `front` (whose port `env` may name, e.g. in `TOKEN_ISSUER`)
    /// forwards to the process, and [`Server::base`] is its address.
    pub fn spawn_on(
        front: std::net::TcpListener,
        args: &[&str],
        env: Vec<(String, String)>,
        dir: tempfile::TempDir,
    ) -> Server {
        Self::try_spawn_on(Some(front), args, env, dir)
            .unwrap_or_else(|logs| panic!("service did not start:\n{logs}"))
    }

    fn try_spawn_on(
        front: Option<std::net::TcpListener>,
        args: &[&str],
        mut env: Vec<(String, String)>,
        dir: tempfile::TempDir,
    ) -> Result<Server, String> {
        if !env.iter().any(|(k, _)| k == "PORT") {
            env.push(("PORT".into(), "0".into()));
        }
        let mut command = Command::new(BIN);
        command.args(args).env_clear().envs(env);
        Self::try_start(front, command, dir)
    }

    /// Runs `command` (the service's binary as a shell line runs it, or another server that
    /// logs `listening on URL` once bound, such as the emulator) in `dir`, and reads its
    /// address from that line. `front`, if any, forwards to it and is [`Server::base`].
    pub fn spawn_command(
        front: Option<std::net::TcpListener>,
        command: Command,
        dir: tempfile::TempDir,
    ) -> Server {
        let shown = format!("{command:?}");
        Self::try_start(front, command, dir)
            .unwrap_or_else(|logs| panic!("{shown} did not start:\n{logs}"))
    }

    fn try_start(
        front: Option<std::net::TcpListener>,
        mut command: Command,
        dir: tempfile::TempDir,
    ) -> Result<Server, String> {
        let mut child = command
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
            let mut admin = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("admin endpoints") {
                    admin = url_after(&line, " on ");
                } else if let Some(url) = url_after(&line, "listening on ") {
                    let _ = tx.send((url, admin.take()));
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
        let Ok((url, admin)) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(logs.lock().unwrap().clone());
        };
        let (scheme, address) = url.split_once("://").unwrap();
        let address: std::net::SocketAddr = address.parse().unwrap();
        let base = match &front {
            Some(front) => format!("{scheme}://127.0.0.1:{}", port_of(front)),
            None => url.clone(),
        };
        Ok(Server {
            base,
            port: address.port(),
            admin,
            dir,
            run: Run::Process(Process {
                logs,
                child,
                _front: front.map(|front| forward(front, address)),
            }),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `path` at the port the service itself listens on, not through the forwarder in front
    /// of a process.
    pub fn direct_url(&self, path: &str) -> String {
        let scheme = self
            .base
            .split_once("://")
            .map_or("http", |(scheme, _)| scheme);
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.admin.as_deref().expect("ADMIN_PORT is set")
        )
    }

    fn process(&self) -> &Process {
        match &self.run {
            Run::Process(process) => process,
            Run::InProcess { .. } => {
                panic!("an in-process service has no log or pid: use Server::start_process")
            }
        }
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        // Log lines are written synchronously before the response; a short pause lets the
        // reader thread catch up with the pipe.
        std::thread::sleep(Duration::from_millis(100));
        self.process().logs.lock().unwrap().clone()
    }

    /// Parsed JSON log lines.
    pub fn json_logs(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.process().child.id()
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
        let Run::Process(process) = &mut self.run else {
            panic!("an in-process service has no exit status: use Server::start_process")
        };
        let until = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < until {
            if let Some(status) = process.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Run::Process(process) = &mut self.run {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

fn scheme_of(env: &[(String, String)]) -> &'static str {
    if env
        .iter()
        .any(|(k, v)| k == "TLS_CERT_FILE" && !v.is_empty())
    {
        "https"
    } else {
        "http"
    }
}

/// The `scheme://address` after `marker` in a log line (JSON or text).
fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.rfind(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        .unwrap_or(rest.len());
    let url = &rest[..end];
    url.contains("://").then(|| url.to_owned())
}

/// Forwards every connection to `front` to `to`, on a thread of its own, until dropped.
struct Forwarder {
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn forward(front: std::net::TcpListener, to: std::net::SocketAddr) -> Forwarder {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    front.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let front = tokio::net::TcpListener::from_std(front).unwrap();
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    accepted = front.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        tokio::spawn(async move {
                            if let Ok(mut service) = tokio::net::TcpStream::connect(to).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut service).await;
                            }
                        });
                    }
                }
            }
        });
    });
    Forwarder { _stop: stop }
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
