//! A small closed-loop HTTP/1.1 load generator for what oha cannot do: a new TCP connection and a
//! full TLS handshake for every request with session resumption disabled (oha always resumes).
//! It also does keep-alive and plain HTTP, and an open-loop mode (`--rate`) whose latencies are
//! measured from each request's scheduled start (no coordinated omission).
//!
//! ```text
//! loadgen --url https://127.0.0.1:8443/token -c 32 -z 10 [--new-conn] [--rate R]
//!         [--cert client.pem --key client.key] [--cacert ca.pem]
//!         [--body 'grant_type=client_credentials'] [-H 'name: value']... [--threads N]
//!         [--json out.json]
//! ```
//!
//! Prints (and with `--json` writes) one JSON object: requests, ok (2xx), non2xx, errors,
//! seconds, rps (2xx per second), latency percentiles in ms, status counts, a sample error.
//! Run: `cargo run --release -p token-service --example loadgen -- --help`
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a measuring tool: a broken option or socket ends the run with its message"
)]

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use token_service::clock::Instant;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HELP: &str =
    "loadgen --url URL [-c CONNECTIONS=32] [-z SECONDS=10] [--new-conn] [--rate REQ_PER_S]
        [--cert PEM --key PEM] [--cacert PEM] [--method POST] [--body BODY]
        [-H 'name: value']... [--threads N (default: cores)] [--json FILE]
A new connection per request never resumes a TLS session (full handshake each time).";

#[derive(Clone)]
struct Options {
    host: String,
    port: u16,
    tls: bool,
    path: String,
    connections: usize,
    seconds: f64,
    new_conn: bool,
    rate: Option<f64>,
    cert: Option<String>,
    key: Option<String>,
    cacert: Option<String>,
    method: String,
    body: String,
    headers: Vec<String>,
    threads: usize,
    json: Option<String>,
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let mut o = Options {
        host: String::new(),
        port: 0,
        tls: false,
        path: String::new(),
        connections: 32,
        seconds: 10.0,
        new_conn: false,
        rate: None,
        cert: None,
        key: None,
        cacert: None,
        method: "POST".into(),
        body: "grant_type=client_credentials".into(),
        headers: Vec::new(),
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        json: None,
    };
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs a value\n{HELP}"))
        };
        match a.as_str() {
            "--url" => url = Some(value()),
            "-c" | "--connections" => o.connections = value().parse().expect("-c"),
            "-z" | "--seconds" => o.seconds = value().trim_end_matches('s').parse().expect("-z"),
            "--new-conn" => o.new_conn = true,
            "--rate" => o.rate = Some(value().parse().expect("--rate")),
            "--cert" => o.cert = Some(value()),
            "--key" => o.key = Some(value()),
            "--cacert" => o.cacert = Some(value()),
            "-m" | "--method" => o.method = value(),
            "-d" | "--body" => o.body = value(),
            "-H" | "--header" => o.headers.push(value()),
            "--threads" => o.threads = value().parse().expect("--threads"),
            "--json" => o.json = Some(value()),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}\n{HELP}"),
        }
    }
    let url = url.unwrap_or_else(|| panic!("--url is required\n{HELP}"));
    let (scheme, rest) = url.split_once("://").expect("URL with scheme");
    o.tls = match scheme {
        "https" => true,
        "http" => false,
        _ => panic!("scheme must be http or https"),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority.rsplit_once(':').expect("URL with a port");
    o.host = host.to_owned();
    o.port = port.parse().expect("port");
    o.path = path.to_owned();
    o
}

fn tls_config(o: &Options) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &o.cacert {
        for c in CertificateDer::pem_file_iter(ca).expect("--cacert") {
            roots.add(c.expect("--cacert")).expect("--cacert");
        }
    }
    let builder = ClientConfig::builder_with_provider(token_service::testing::x509::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .expect("--cert")
                .map(|c| c.expect("--cert"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("--key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("--cert/--key")
        }
        _ => builder.with_no_client_auth(),
    };
    // Every new connection is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn request_bytes(o: &Options) -> Vec<u8> {
    let mut r = format!(
        "{} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: loadgen\r\nAccept: */*\r\n",
        o.method, o.path, o.host, o.port
    );
    if !o.body.is_empty() {
        r.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            o.body.len()
        ));
    }
    for h in &o.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if o.new_conn {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.push_str(&o.body);
    r.into_bytes()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request and reads one response; returns the status and whether the server keeps
/// the connection open.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<(u16, bool)> {
    s.write_all(request).await?;
    s.flush().await?;
    buf.clear();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::other("response head is not UTF-8"))?
        .to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other("no status code"))?;
    let keep = !head.contains("\r\nconnection: close");
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None if head.contains("transfer-encoding: chunked") => {
            while find(&buf[head_end..], b"0\r\n\r\n").is_none() {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None => {}
    }
    Ok((status, keep))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

struct Shared {
    o: Options,
    request: Vec<u8>,
    connector: Option<TlsConnector>,
    server_name: ServerName<'static>,
    start: Instant,
    deadline: Instant,
    next: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    async fn connect(&self) -> io::Result<Conn> {
        let tcp = TcpStream::connect((self.o.host.as_str(), self.o.port)).await?;
        tcp.set_nodelay(true)?;
        match &self.connector {
            None => Ok(Conn::Plain(tcp)),
            Some(c) => Ok(Conn::Tls(Box::new(
                c.connect(self.server_name.clone(), tcp).await?,
            ))),
        }
    }

    async fn one(&self, conn: &mut Option<Conn>, buf: &mut Vec<u8>) -> io::Result<u16> {
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let result = match conn.as_mut() {
            Some(Conn::Plain(s)) => exchange(s, &self.request, buf).await,
            Some(Conn::Tls(s)) => exchange(s.as_mut(), &self.request, buf).await,
            None => unreachable!(),
        };
        match result {
            Ok((status, keep)) => {
                if !keep || self.o.new_conn {
                    *conn = None;
                }
                Ok(status)
            }
            Err(e) => {
                *conn = None;
                Err(e)
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    error_sample: Option<String>,
}

async fn worker(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let begin = match shared.o.rate {
            Some(rate) => {
                let k = shared.next.fetch_add(1, Ordering::Relaxed);
                let at = shared.start + Duration::from_secs_f64(k as f64 / rate);
                if at >= shared.deadline {
                    break;
                }
                token_service::clock::sleep_until(at).await;
                at
            }
            None => token_service::clock::monotonic(),
        };
        if begin >= shared.deadline || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let result = shared.one(&mut conn, &mut buf).await;
        let done = token_service::clock::monotonic();
        if done > shared.deadline {
            // Like oha -z: what is in flight at the deadline is not counted.
            break;
        }
        match result {
            Ok(status) => {
                *tally.statuses.entry(status).or_default() += 1;
                let us = done
                    .saturating_duration_since(begin)
                    .as_micros()
                    .min(u32::MAX as u128) as u32;
                tally.latencies_us.push(us);
            }
            Err(e) => {
                tally.errors += 1;
                if tally.error_sample.is_none() {
                    tally.error_sample = Some(e.to_string());
                }
                if tally.errors > 1000 && tally.statuses.is_empty() {
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    tally
}

fn main() {
    let o = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(o));
}

async fn run(o: Options) {
    let connector = o.tls.then(|| TlsConnector::from(tls_config(&o)));
    let server_name = ServerName::try_from(o.host.clone()).expect("host name");
    let start = token_service::clock::monotonic();
    let shared = Arc::new(Shared {
        request: request_bytes(&o),
        connector,
        server_name,
        start,
        deadline: start + Duration::from_secs_f64(o.seconds),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        o: o.clone(),
    });
    let tasks: Vec<_> = (0..o.connections)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        all.latencies_us.extend(t.latencies_us);
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.errors += t.errors;
        if all.error_sample.is_none() {
            all.error_sample = t.error_sample;
        }
    }
    let seconds = o.seconds;
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((all.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all.latencies_us[i]) / 1000.0
    };
    let ok: u64 = all
        .statuses
        .iter()
        .filter(|(k, _)| (200..300).contains(*k))
        .map(|(_, v)| v)
        .sum();
    let total: u64 = all.statuses.values().sum();
    let summary = serde_json::json!({
        "requests": total,
        "ok": ok,
        "non2xx": total - ok,
        "errors": all.errors,
        "seconds": seconds,
        "rps": ok as f64 / seconds,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "statuses": all.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "error_sample": all.error_sample,
        "new_conn": o.new_conn,
        "rate": o.rate,
        "connections": o.connections,
    });
    println!("{summary}");
    if let Some(path) = &o.json {
        std::fs::write(path, summary.to_string()).expect("--json");
    }
}
