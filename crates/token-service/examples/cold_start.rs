//! Cold start: from `exec` of the release binary to the first successful (200) OIDC discovery
//! response, measured many times; then the idle resident set (VmRSS) one second later.
//!
//! The service is started with the environment this process has (so the caller chooses the
//! flow, keys, TLS...), plus `PORT`, on plain HTTP unless `TLS_CERT_FILE` is set (then the probe
//! speaks TLS, trusting `--cacert`). The probe connects every 100 µs until the port answers and
//! sends `GET /.well-known/openid-configuration`. With the load-balancer header flow (plain
//! HTTP), it then also times the first `POST /token` (the first signature of a process pays
//! aws-lc's one-time seeding of its random generator).
//! Run: `cargo run --release -p token-service --example cold_start -- [--runs 30] [--binary PATH] [--cacert CA.pem]`
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a measuring tool: it fails by panicking, reads its environment and times the process it starts"
)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn status(reply: &[u8]) -> Option<u16> {
    std::str::from_utf8(reply.get(..12)?)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

const DISCOVERY: &str = "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
const TOKEN: &str = "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\n\
    X-Client-Cert-Present: true\r\nX-Client-Cert-Chain-Verified: true\r\n\
    X-Client-Cert-Spiffe: spiffe://token-service.local/ns/bench/sa/cold\r\n\r\n\
    grant_type=client_credentials";

fn probe(port: u16, tls: Option<&Arc<ClientConfig>>, request: &str) -> Option<u16> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // Without it, the request written after the TLS Finished waits for a delayed ACK.
    tcp.set_nodelay(true).ok()?;
    let mut reply = Vec::new();
    match tls {
        None => {
            let mut s = tcp;
            s.write_all(request.as_bytes()).ok()?;
            s.read_to_end(&mut reply).ok()?;
        }
        Some(config) => {
            let name = ServerName::try_from("127.0.0.1").ok()?;
            let conn = ClientConnection::new(config.clone(), name).ok()?;
            let mut s = StreamOwned::new(conn, tcp);
            s.write_all(request.as_bytes()).ok()?;
            // The server may close without close_notify after `Connection: close`.
            let _ = s.read_to_end(&mut reply);
        }
    }
    status(&reply)
}

fn vm(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(30);
    let binary = arg("--binary").unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/release/token-service"
        )
        .into()
    });
    let tls = std::env::var_os("TLS_CERT_FILE").map(|_| {
        let mut roots = RootCertStore::empty();
        let ca = arg("--cacert").expect("--cacert is needed when TLS_CERT_FILE is set");
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = ClientConfig::builder_with_provider(token_service::testing::x509::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    let xlb = tls.is_none()
        && std::env::var("AUTH_FLOWS").is_ok_and(|f| f.starts_with("xlb-mtls-client-credentials"));
    let mut starts = Vec::new();
    let mut first_tokens = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t0 = Instant::now();
        let mut child = Command::new(&binary)
            .arg("serve")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = loop {
            if let Some(200) = probe(port, tls.as_ref(), DISCOVERY) {
                break t0.elapsed();
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("token-service exited with {exit} before answering");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no answer within 10 s"
            );
            std::thread::sleep(Duration::from_micros(100));
        };
        starts.push(started.as_secs_f64() * 1000.0);
        if xlb {
            assert_eq!(probe(port, None, TOKEN), Some(200), "first token");
            first_tokens.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_secs(1));
        rss.push(vm(child.id(), "VmRSS:").unwrap_or(0) as f64 / 1024.0);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    let mut sorted = starts.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "cold_start_ms_median": median(&mut starts),
            "cold_start_ms_min": sorted.first(),
            "cold_start_ms_p90": sorted.get(sorted.len() * 9 / 10),
            "first_token_ms_median": (!first_tokens.is_empty()).then(|| median(&mut first_tokens)),
            "idle_rss_mib_median": median(&mut rss),
        })
    );
}
