use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::config::source::{Origin, Values};

/// A validated configuration of `pairs` (as environment variables), for the built-in flows.
fn config(pairs: &[(&str, &str)]) -> Config {
    let values: Values = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ((*v).to_owned(), Origin::Env)))
        .collect();
    let registry = FlowRegistry::builtin();
    crate::config::load(values, &registry).unwrap()
}

/// A fresh P-256 signing key in `dir`, mode 0600.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    file.open(&path).unwrap().write_all(pem.as_bytes()).unwrap();
    path
}

fn signing_key_lines(metrics: &Metrics) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("token_service_signing_key_info{"))
        .map(str::to_owned)
        .collect()
}

/// Each application built in one process has its own registry: the second one's signing
/// key does not replace the first one's (with one process-wide registry it would).
#[tokio::test]
async fn two_apps_in_one_process_publish_their_own_signing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FlowRegistry::builtin();
    let apps: Vec<App> = ["a.pem", "b.pem"]
        .into_iter()
        .map(|name| {
            let key = key_file(dir.path(), name);
            let config = config(&[
                ("SIGNING_KEY_FILE", key.to_str().unwrap()),
                ("TOKEN_ISSUER", "https://issuer.example"),
                ("TOKEN_AUDIENCE", "https://audience.example"),
            ]);
            build_with_metrics(&config, &registry, Arc::new(Metrics::new())).unwrap()
        })
        .collect();
    let (a, b) = (
        signing_key_lines(&apps[0].metrics),
        signing_key_lines(&apps[1].metrics),
    );
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_ne!(a, b, "the second app replaced the first app's signing key");
}

/// Independent parts are all tried: a broken client CA, TLS listener, signing key and policy
/// are reported together, in that order, not only the first of them.
#[tokio::test]
async fn every_broken_part_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let config = config(&[
        ("AUTH_FLOWS", "mtls-client-credentials"),
        ("TLS_CLIENT_CA_FILE", &missing("ca.pem")),
        ("TLS_CERT_FILE", &missing("tls.pem")),
        ("TLS_KEY_FILE", &missing("tls.key")),
        ("SIGNING_KEY_FILE", &missing("signing.pem")),
        ("POLICY_FILE", &missing("policy.yaml")),
        ("TOKEN_ISSUER", "https://issuer.example"),
        ("TOKEN_AUDIENCE", "https://audience.example"),
    ]);
    let Err(errors) = build(&config, &FlowRegistry::builtin()) else {
        panic!("a configuration with unreadable files was built");
    };
    let settings: Vec<&str> = errors.iter().filter_map(|e| e.setting.as_deref()).collect();
    assert_eq!(
        settings,
        [
            "TLS_CLIENT_CA_FILE",
            "TLS_CERT_FILE",
            "SIGNING_KEY_FILE",
            "POLICY_FILE"
        ],
        "{errors:?}"
    );
}

/// What a test subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Served with `serve_until` on a listener bound to port 0, the application logs the port it
/// got (the harness that spawns the binary with `PORT=0` reads it there), answers, and once
/// shut down leaves nothing running: no background task or thread (policy watcher, limits
/// housekeeping) and no connection task, even one whose request outlived the grace period.
#[tokio::test]
async fn served_until_shutdown_logs_its_port_and_leaves_nothing_running() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key.pem");
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy/single-client.toml");
    let config = config(&[
        ("SIGNING_KEY_FILE", key.to_str().unwrap()),
        ("TOKEN_ISSUER", "https://issuer.example"),
        ("TOKEN_AUDIENCE", "https://audience.example"),
        ("POLICY_FILE", policy.to_str().unwrap()),
        ("SHUTDOWN_GRACE_PERIOD", "1"),
    ]);
    let tasks = tokio::runtime::Handle::current().metrics();
    let alive_before = tasks.num_alive_tasks();
    let app = build(&config, &FlowRegistry::builtin()).unwrap();
    let background = app.background.clone();
    assert!(background.running() >= 2, "policy watcher and housekeeping");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve_until(listener, app, async {
        let _ = stopped.await;
    }));
    let mut probe = tokio::net::TcpStream::connect(address).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A token request whose body never comes: still in flight when the grace period ends.
    let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
    stalled
        .write_all(b"POST /token HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\ngrant")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let logged = log.text();
    assert!(
        logged.contains(&format!("listening on http://127.0.0.1:{}", address.port())),
        "{logged}"
    );
    assert_eq!(background.running(), 0, "background work still running");
    assert_eq!(
        tasks.num_alive_tasks(),
        alive_before,
        "tasks still running after serve_until returned"
    );
    drop(stalled);
}

#[test]
fn a_local_rsa_key_halves_the_async_workers_unless_tokio_worker_threads_is_set() {
    assert_eq!(workers_for(true, false, 2), Some(1));
    assert_eq!(workers_for(true, false, 1), Some(1));
    assert_eq!(workers_for(true, false, 8), Some(4));
    assert_eq!(workers_for(true, true, 8), None);
    assert_eq!(workers_for(false, false, 8), None);
}
