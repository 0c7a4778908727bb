//! Physical ceilings of this machine for what one token costs at least:
//!
//! - signatures per second of aws-lc-rs with cached key pairs: RS256 (RSA-2048, PKCS#1 v1.5,
//!   SHA-256) and ES256 (P-256), on 1 and 2 threads, over a JWT-sized signing input;
//! - full TLS 1.3 mutual-auth handshakes per second with rustls, no resumption, in memory (no
//!   sockets): Token Service's own server configuration (`tls::TlsServer`, development PKI with
//!   P-256 keys) against a client that presents a certificate and verifies the server's. One
//!   "handshake" is the work of both sides, as in a load test where client and server share the
//!   machine; the server's share is timed separately.
//!
//! Every figure is the median of `--reps` runs of `--seconds` each. Run:
//! `cargo run --release -p token-service --example sign_ceiling -- [--seconds 2] [--reps 5]`
#![expect(
    clippy::unwrap_used,
    reason = "a measurement tool: any failure ends the run with its message"
)]

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use token_service::clock::Stopwatch;
use token_service::testing::pki::DevPki;
use token_service::testing::tls::{TlsServer, TlsSettings};
use token_service::testing::x509::{Trust, TrustSettings};

/// Signing input of a typical ID token (header + claims, base64url): about 760 bytes.
const INPUT_LEN: usize = 760;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `op` on `threads` threads for `seconds`; returns operations per second (all threads)
/// and the extra figure each operation reports, averaged over all operations.
fn run<F>(threads: usize, seconds: f64, make: impl Fn() -> F + Sync) -> (f64, f64)
where
    F: FnMut() -> f64,
{
    let deadline = Duration::from_secs_f64(seconds);
    let start = Stopwatch::start();
    let results: Vec<(u64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut op = make();
                    let mut n = 0u64;
                    let mut extra = 0.0;
                    let t0 = Stopwatch::start();
                    while t0.elapsed() < deadline {
                        for _ in 0..8 {
                            extra += op();
                            n += 1;
                        }
                    }
                    (n, extra)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let n: u64 = results.iter().map(|r| r.0).sum();
    let extra: f64 = results.iter().map(|r| r.1).sum();
    (n as f64 / wall, extra / (n as f64).max(1.0))
}

struct Handshake {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Handshake {
    fn setup(dir: &std::path::Path) -> Self {
        let pki = DevPki::new(dir);
        let (server, client) = pki.ensure().unwrap();
        let trust = Arc::new(
            Trust::load(
                TrustSettings {
                    ca_file: pki.ca_cert(),
                    crl_file: None,
                    reload_interval: Duration::from_secs(3600),
                    revocation: Default::default(),
                    fetch: Default::default(),
                },
                std::sync::Arc::new(token_service::testing::metrics::Metrics::new()),
            )
            .unwrap(),
        );
        let tls = TlsServer::load(
            TlsSettings {
                cert_file: server.cert,
                key_file: server.key,
                reload_interval: Duration::from_secs(3600),
            },
            Some(trust),
            std::sync::Arc::new(token_service::testing::metrics::Metrics::new()),
        )
        .unwrap();
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki.ca_cert()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let chain: Vec<_> = CertificateDer::pem_file_iter(&client.cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(&client.key).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(token_service::testing::x509::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap();
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            server: tls.config(),
            client: Arc::new(config),
        }
    }

    /// One full handshake in memory (including the server's session tickets, which the service
    /// sends); returns the seconds spent on the server's side.
    fn once(&self, buf: &mut Vec<u8>) -> f64 {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(self.client.clone(), name).unwrap();
        let t = Stopwatch::start();
        let mut server = ServerConnection::new(self.server.clone()).unwrap();
        let mut server_time = t.elapsed();
        loop {
            let mut moved = false;
            while client.wants_write() {
                buf.clear();
                client.write_tls(buf).unwrap();
                let t = Stopwatch::start();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    server.read_tls(&mut rd).unwrap();
                    server.process_new_packets().unwrap();
                }
                server_time += t.elapsed();
                moved = true;
            }
            while server.wants_write() {
                buf.clear();
                let t = Stopwatch::start();
                server.write_tls(buf).unwrap();
                server_time += t.elapsed();
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    client.read_tls(&mut rd).unwrap();
                    client.process_new_packets().unwrap();
                }
                moved = true;
            }
            if !moved {
                break;
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert!(server.peer_certificates().is_some());
        server_time.as_secs_f64()
    }
}

fn main() {
    let seconds = arg("--seconds", 2.0);
    let reps = arg("--reps", 5.0) as usize;
    let input = vec![b'e'; INPUT_LEN];
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hs = Handshake::setup(dir.path());
    println!(
        "# {reps} runs of {seconds} s per cell; median (min-max). {} cores.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("what\tthreads\tmedian_per_s\tmin_per_s\tmax_per_s\tnote");
    for threads in [1usize, 2] {
        let mut cells: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
            ("rs256_sign", vec![], vec![]),
            ("es256_sign", vec![], vec![]),
            ("mtls13_full_handshake", vec![], vec![]),
        ];
        // Interleave the cells, so that drift hits all of them alike.
        for _ in 0..reps {
            let (r, _) = run(threads, seconds, || {
                let mut sig = vec![0; rsa.public_modulus_len()];
                let (rsa, rng, input) = (&rsa, &rng, &input);
                move || {
                    rsa.sign(&RSA_PKCS1_SHA256, rng, input, &mut sig).unwrap();
                    0.0
                }
            });
            cells[0].1.push(r);
            let (e, _) = run(threads, seconds, || {
                let (ec, rng, input) = (&ec, &rng, &input);
                move || {
                    std::hint::black_box(ec.sign(rng, input).unwrap());
                    0.0
                }
            });
            cells[1].1.push(e);
            let (h, server_secs_per_op) = run(threads, seconds, || {
                let mut buf = Vec::with_capacity(16 * 1024);
                let hs = &hs;
                move || hs.once(&mut buf)
            });
            cells[2].1.push(h);
            // Server-side CPU per handshake, in µs.
            cells[2].2.push(server_secs_per_op * 1e6);
        }
        for (what, v, extra) in cells {
            let note = if extra.is_empty() {
                String::new()
            } else {
                format!("server side {:.0} µs per handshake", median(extra))
            };
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(0.0, f64::max);
            println!(
                "{what}\t{threads}\t{:.0}\t{min:.0}\t{max:.0}\t{note}",
                median(v)
            );
        }
    }
}
