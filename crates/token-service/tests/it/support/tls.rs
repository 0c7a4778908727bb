//! Helpers of the TLS suite: a test PKI made with rcgen, a service started with TLS and the
//! `mtls-client-credentials` flow, clients (reqwest, raw tokio-rustls, curl), independent
//! computations of certificate facts from the DER, and log inspection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::support::{self as common, Server};

pub const GRANT: &str = "grant_type=client_credentials";
pub const FLOW: &str = "mtls-client-credentials";

pub const EXPIRED: &str = "The client certificate has expired";
pub const NOT_YET_VALID: &str = "The client certificate is not valid yet";
pub const UNKNOWN_ISSUER: &str =
    "The client certificate was not issued by a CA in TLS_CLIENT_CA_FILE (unknown issuer)";
pub const REVOKED: &str = "The client certificate has been revoked";
pub const NO_CLIENT_AUTH: &str = "The client certificate is not valid for client authentication (no clientAuth extended key usage)";

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Token Service TLS tests");
    dn.push(DnType::CommonName, common_name);
    dn
}

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// A certificate authority that can issue certificates and CRLs.
pub struct Ca {
    pub pem: String,
    pub der: Vec<u8>,
    /// PEM of the CA certificates between this CA and its root, this CA first (empty for a root).
    pub chain_pem: String,
    /// The serial of this CA's certificate (what a CRL of its issuer lists).
    pub serial: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    crl_number: std::sync::atomic::AtomicU64,
}

/// A fresh serial for a CA certificate.
fn ca_serial() -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0x5000_0000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        .to_be_bytes()
        .to_vec()
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now() - time::Duration::hours(1);
    params.not_after = now() + time::Duration::days(30);
    params
}

/// What to put in a leaf certificate.
#[derive(Clone)]
pub struct Spec {
    pub name: String,
    pub serial: Vec<u8>,
    pub spiffe: Option<String>,
    pub dns: Option<String>,
    pub uri: Option<String>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Spec {
    /// A client certificate valid now, with a SPIFFE ID, a DNS SAN and an https URI SAN derived
    /// from `name`, clientAuth only.
    pub fn client(name: &str, serial: &[u8]) -> Spec {
        Spec {
            name: name.to_owned(),
            serial: serial.to_vec(),
            spiffe: Some(format!("spiffe://example.org/ns/prod/sa/{name}")),
            dns: Some(format!("{name}.example.org")),
            uri: Some(format!("https://{name}.example.org/id")),
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            not_before: now() - time::Duration::hours(1),
            not_after: now() + time::Duration::days(1),
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&self.name);
        params.serial_number = Some(SerialNumber::from_slice(&self.serial));
        // The DNS SAN first, then the non-SPIFFE URI, then the SPIFFE ID: the SPIFFE ID must be
        // found by scheme, not by position.
        if let Some(dns) = &self.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.clone().try_into().unwrap()));
        }
        if let Some(uri) = &self.uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.clone().try_into().unwrap()));
        }
        if let Some(spiffe) = &self.spiffe {
            params
                .subject_alt_names
                .push(SanType::URI(spiffe.clone().try_into().unwrap()));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = self.eku.clone();
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params
    }
}

/// A leaf certificate with its key.
#[derive(Clone)]
pub struct Leaf {
    pub spec: Spec,
    pub der: Vec<u8>,
    pub pem: String,
    pub key_pem: String,
    pub key_der: Vec<u8>,
    /// The leaf and the intermediates the client sends, PEM, leaf first.
    pub chain_pem: String,
    /// The same, DER.
    pub chain_der: Vec<Vec<u8>>,
}

impl Leaf {
    fn new(spec: Spec, cert: &rcgen::Certificate, key: &KeyPair, intermediates: &[&Ca]) -> Leaf {
        let mut chain_pem = cert.pem();
        let mut chain_der = vec![cert.der().to_vec()];
        for ca in intermediates {
            chain_pem.push_str(&ca.pem);
            chain_der.push(ca.der.clone());
        }
        Leaf {
            spec,
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            chain_pem,
            chain_der,
        }
    }

    /// A self-signed (non-CA) certificate.
    pub fn self_signed(spec: Spec) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = spec.params().self_signed(&key).unwrap();
        Leaf::new(spec, &cert, &key, &[])
    }

    /// The SPIFFE ID, "" when absent.
    pub fn spiffe(&self) -> &str {
        self.spec.spiffe.as_deref().unwrap_or_default()
    }
}

impl Ca {
    pub fn root(name: &str) -> Ca {
        Ca::root_with_key_usages(name, None)
    }

    /// A root whose keyUsage extension lists `key_usages` (`Some(vec![])`: no keyUsage
    /// extension; `None`: keyCertSign, cRLSign, digitalSignature).
    pub fn root_with_key_usages(name: &str, key_usages: Option<Vec<KeyUsagePurpose>>) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(name);
        let serial = ca_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        if let Some(key_usages) = key_usages {
            params.key_usages = key_usages;
        }
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            chain_pem: String::new(),
            serial,
            issuer: Issuer::new(params, key),
            crl_number: 1.into(),
        }
    }

    pub fn intermediate(&self, name: &str) -> Ca {
        self.intermediate_with_key_usages(name, None)
    }

    /// An intermediate whose keyUsage extension lists `key_usages` (as for
    /// [`Ca::root_with_key_usages`]).
    pub fn intermediate_with_key_usages(
        &self,
        name: &str,
        key_usages: Option<Vec<KeyUsagePurpose>>,
    ) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(name);
        let serial = ca_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        if let Some(key_usages) = key_usages {
            params.key_usages = key_usages;
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            chain_pem: format!("{}{}", cert.pem(), self.chain_pem),
            serial,
            issuer: Issuer::new(params, key),
            crl_number: 1.into(),
        }
    }

    /// Issues a leaf; when this CA is an intermediate, the client sends it along.
    pub fn issue(&self, spec: Spec) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = spec.params().signed_by(&key, &self.issuer).unwrap();
        let intermediates: Vec<&Ca> = if self.chain_pem.is_empty() {
            vec![]
        } else {
            vec![self]
        };
        Leaf::new(spec, &cert, &key, &intermediates)
    }

    /// A server certificate for 127.0.0.1 and localhost (serverAuth).
    pub fn issue_server(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name = dn("localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now() - time::Duration::hours(1);
        params.not_after = now() + time::Duration::days(1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let spec = Spec {
            spiffe: None,
            dns: Some("localhost".into()),
            uri: None,
            eku: params.extended_key_usages.clone(),
            ..Spec::client("localhost", &[1])
        };
        Leaf::new(spec, &cert, &key, &[])
    }

    /// A PEM CRL of this CA revoking `revoked` (possibly none), with an increasing CRL number.
    pub fn crl_pem(&self, revoked: &[&Leaf]) -> String {
        let serials: Vec<&[u8]> = revoked.iter().map(|l| l.spec.serial.as_slice()).collect();
        self.crl_pem_of(&serials, now() + time::Duration::days(1))
    }

    /// A PEM CRL of this CA revoking the CA certificates `revoked` (which it issued).
    pub fn crl_pem_revoking_cas(&self, revoked: &[&Ca]) -> String {
        let serials: Vec<&[u8]> = revoked.iter().map(|c| c.serial.as_slice()).collect();
        self.crl_pem_of(&serials, now() + time::Duration::days(1))
    }

    /// A PEM CRL of this CA revoking `revoked` that was due for an update an hour ago.
    pub fn expired_crl_pem(&self, revoked: &[&Leaf]) -> String {
        let serials: Vec<&[u8]> = revoked.iter().map(|l| l.spec.serial.as_slice()).collect();
        self.crl_pem_of(&serials, now() - time::Duration::hours(1))
    }

    /// A PEM CRL of this CA revoking these serials, with an increasing CRL number.
    pub fn crl_pem_of(&self, serials: &[&[u8]], next_update: OffsetDateTime) -> String {
        let number = self
            .crl_number
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        CertificateRevocationListParams {
            this_update: now() - time::Duration::hours(2),
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now() - time::Duration::minutes(5),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// The test PKI: a root with an intermediate, another unrelated CA, a server certificate and
/// one client certificate per case, each with an explicit serial.
pub struct Pki {
    pub root: Ca,
    pub intermediate: Ca,
    pub server: Leaf,
    /// SPIFFE ID + DNS SAN + https URI SAN, clientAuth, issued by the root.
    pub valid: Leaf,
    /// Issued by the intermediate; the client sends leaf + intermediate. Its serial has the high
    /// bit set, so the DER integer carries a leading 00 byte.
    pub via_intermediate: Leaf,
    pub expired: Leaf,
    pub not_yet_valid: Leaf,
    pub other_ca: Leaf,
    pub revoked: Leaf,
    pub server_auth_only: Leaf,
    pub self_signed: Leaf,
    pub no_spiffe: Leaf,
    pub no_dns: Leaf,
}

impl Pki {
    pub fn new() -> Pki {
        let root = Ca::root("Test Root CA");
        let intermediate = root.intermediate("Test Intermediate CA");
        let other = Ca::root("Other CA");
        let server = root.issue_server();
        let valid = root.issue(Spec::client("valid", &[0x10, 0x01]));
        let via_intermediate =
            intermediate.issue(Spec::client("via-intermediate", &[0x80, 0x02, 0xab]));
        let expired = root.issue(Spec {
            not_before: now() - time::Duration::days(10),
            not_after: now() - time::Duration::days(1),
            ..Spec::client("expired", &[0x20, 0x01])
        });
        let not_yet_valid = root.issue(Spec {
            not_before: now() + time::Duration::days(1),
            not_after: now() + time::Duration::days(10),
            ..Spec::client("not-yet-valid", &[0x20, 0x02])
        });
        let other_ca = other.issue(Spec::client("other-ca", &[0x20, 0x03]));
        let revoked = root.issue(Spec::client("revoked", &[0x20, 0x04]));
        let server_auth_only = root.issue(Spec {
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            ..Spec::client("server-auth-only", &[0x20, 0x05])
        });
        let self_signed = Leaf::self_signed(Spec::client("self-signed", &[0x20, 0x06]));
        let no_spiffe = root.issue(Spec {
            spiffe: None,
            ..Spec::client("no-spiffe", &[0x20, 0x07])
        });
        let no_dns = root.issue(Spec {
            dns: None,
            ..Spec::client("no-dns", &[0x20, 0x08])
        });
        Pki {
            root,
            intermediate,
            server,
            valid,
            via_intermediate,
            expired,
            not_yet_valid,
            other_ca,
            revoked,
            server_auth_only,
            self_signed,
            no_spiffe,
            no_dns,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Independent facts from the DER
// ---------------------------------------------------------------------------------------------

/// One DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        n => {
            let count = usize::from(n & 0x7f);
            let len = input[2..2 + count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + count)
        }
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The contents octets of the serialNumber INTEGER of a DER certificate.
pub fn der_serial(cert: &[u8]) -> Vec<u8> {
    let (tag, certificate, _) = tlv(cert);
    assert_eq!(tag, 0x30, "Certificate is a SEQUENCE");
    let (tag, tbs, _) = tlv(certificate);
    assert_eq!(tag, 0x30, "TBSCertificate is a SEQUENCE");
    let (mut tag, mut contents, rest) = tlv(tbs);
    if tag == 0xa0 {
        // [0] EXPLICIT version
        (tag, contents, _) = tlv(rest);
    }
    assert_eq!(tag, 0x02, "serialNumber is an INTEGER");
    contents.to_vec()
}

/// Colon-separated lowercase hex.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// base64 (standard alphabet, no padding) of the SHA-256 of `der`.
pub fn sha256_b64(der: &[u8]) -> String {
    STANDARD_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

// ---------------------------------------------------------------------------------------------
// Files and the service
// ---------------------------------------------------------------------------------------------

/// Writes like Kubernetes does: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The JSON log lines `server` printed so far (other lines are skipped).
pub fn log_lines(server: &Server) -> Vec<Value> {
    server
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The labels of the log lines of `server` with this event.
pub fn events(server: &Server, event: &str) -> Vec<Value> {
    log_lines(server)
        .into_iter()
        .map(|l| l["logging.googleapis.com/labels"].clone())
        .filter(|labels| labels["event"] == event)
        .collect()
}

/// The service with TLS and `mtls-client-credentials`.
pub struct TlsService {
    pub server: Server,
    /// `https://127.0.0.1:PORT`, also TOKEN_ISSUER.
    pub base: String,
    pub ca_file: PathBuf,
    pub crl_file: PathBuf,
    /// Keeps the TLS files.
    pub files: tempfile::TempDir,
}

impl TlsService {
    /// Starts the service in-process trusting `ca_pem` for clients, with an optional CRL file
    /// and extra settings (which win).
    pub fn start(pki: &Pki, ca_pem: &str, crl_pem: Option<&str>, extra: &[(&str, &str)]) -> Self {
        Self::start_with(Server::start, pki, ca_pem, crl_pem, extra)
    }

    /// [`TlsService::start`] with the real binary, for tests of its log or its /proc counters.
    pub fn start_process(
        pki: &Pki,
        ca_pem: &str,
        crl_pem: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_with(Server::start_process, pki, ca_pem, crl_pem, extra)
    }

    fn start_with(
        start: fn(&[(&str, &str)]) -> Server,
        pki: &Pki,
        ca_pem: &str,
        crl_pem: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Self {
        let files = tempfile::tempdir().unwrap();
        let path = |name: &str| files.path().join(name);
        std::fs::write(path("server.pem"), &pki.server.chain_pem).unwrap();
        std::fs::write(path("server.key"), &pki.server.key_pem).unwrap();
        std::fs::write(path("client-ca.pem"), ca_pem).unwrap();
        if let Some(crl) = crl_pem {
            std::fs::write(path("client.crl"), crl).unwrap();
        }
        let (cert, key, ca, crl) = (
            path("server.pem").display().to_string(),
            path("server.key").display().to_string(),
            path("client-ca.pem").display().to_string(),
            path("client.crl").display().to_string(),
        );
        let mut env: Vec<(&str, &str)> = vec![
            ("AUTH_FLOWS", FLOW),
            ("TLS_CERT_FILE", &cert),
            ("TLS_KEY_FILE", &key),
            ("TLS_CLIENT_CA_FILE", &ca),
        ];
        if crl_pem.is_some() {
            env.push(("TLS_CLIENT_CRL_FILE", &crl));
        }
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k, v));
        }
        let server = start(&env);
        TlsService {
            base: server.base.clone(),
            server,
            ca_file: path("client-ca.pem"),
            crl_file: path("client.crl"),
            files,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// CPU time the server process used so far (user + system), from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.server.pid())).unwrap();
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(100.0);
        ticks as f64 / hz
    }

    /// Resident memory of the server process (VmRSS), in MiB, from /proc.
    pub fn rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.server.pid())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib / 1024.0
    }

    /// Runs the service with these files and settings expecting it to refuse to start: waits
    /// (at most 20 s) for its exit; returns the exit status and everything it printed.
    pub fn start_expecting_failure(
        pki: &Pki,
        ca_pem: &str,
        crl_pem: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (std::process::ExitStatus, String) {
        let files = tempfile::tempdir().unwrap();
        let path = |name: &str| files.path().join(name);
        std::fs::write(path("server.pem"), &pki.server.chain_pem).unwrap();
        std::fs::write(path("server.key"), &pki.server.key_pem).unwrap();
        std::fs::write(path("client-ca.pem"), ca_pem).unwrap();
        std::fs::write(path("signing.pem"), common::ec_key_pem()).unwrap();
        let mut command = std::process::Command::new(common::BIN);
        command
            .arg("serve")
            .env_clear()
            .env("PORT", "0")
            .env("TOKEN_ISSUER", "https://token-service.test")
            .env("TOKEN_AUDIENCE", common::AUDIENCE)
            .env("SIGNING_KEY_FILE", path("signing.pem"))
            .env("AUTH_FLOWS", FLOW)
            .env("TLS_CERT_FILE", path("server.pem"))
            .env("TLS_KEY_FILE", path("server.key"))
            .env("TLS_CLIENT_CA_FILE", path("client-ca.pem"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(crl) = crl_pem {
            std::fs::write(path("client.crl"), crl).unwrap();
            command.env("TLS_CLIENT_CRL_FILE", path("client.crl"));
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "the service kept running:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = child.wait_with_output().unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (status, printed)
    }

    /// The labels of the log lines with this event.
    pub fn events(&self, event: &str) -> Vec<Value> {
        events(&self.server, event)
    }

    /// Waits until more than `before` log lines carry `event`; returns the newest one's labels.
    pub async fn wait_for_event(&self, event: &str, before: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let events = self.events(event);
            if events.len() > before {
                return events.last().unwrap().clone();
            }
            assert!(
                Instant::now() < deadline,
                "no new '{event}' log line; logs:\n{}",
                self.server.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// A reqwest client that trusts only `root_pem` and presents `identity` (chain + key), if any.
pub fn https_client(root_pem: &str, identity: Option<&Leaf>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()]);
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.chain_pem, leaf.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// POSTs the client-credentials grant; returns the status and the JSON body.
pub async fn post_token(client: &reqwest::Client, service: &TlsService) -> (u16, Value) {
    let response = client
        .post(service.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(GRANT)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// Asserts a 403 unauthorized_client without a token, with exactly `description`.
pub fn assert_refused(status: u16, body: &Value, description: &str) {
    assert_eq!(status, 403, "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    assert_eq!(body["error"], "unauthorized_client", "{body}");
    assert_eq!(body["error_description"], description, "{body}");
}

/// The id_token of a 200 answer.
pub fn id_token(status: u16, body: &Value) -> String {
    assert_eq!(status, 200, "{body}");
    body["id_token"].as_str().unwrap().to_owned()
}

/// Always presents one certified key, whatever the server asks for.
#[derive(Debug)]
pub struct FixedClientCert(pub Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

pub fn private_key(pkcs8_der: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_der.to_vec()))
}

/// A rustls client configuration trusting `root_der` and presenting `chain` signed with `key`
/// (which need not be the leaf's key), over one TLS version, ALPN http/1.1.
pub fn rustls_config(
    root_der: &[u8],
    chain: &[Vec<u8>],
    key_pkcs8: &[u8],
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(root_der.to_vec())).unwrap();
    let signer =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&private_key(key_pkcs8)).unwrap();
    let certified = CertifiedKey::new(
        chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect(),
        signer,
    );
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_cert_resolver(Arc::new(FixedClientCert(Arc::new(certified))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub type RawTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Opens a TLS connection to the service with `config`.
pub async fn connect(service: &TlsService, config: Arc<ClientConfig>) -> std::io::Result<RawTls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", service.server.port)).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends one HTTP/1.1 request on `stream` (kept alive) and reads one response: status and body.
pub async fn http1<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(form) = form {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        while buf.len() < header_end + len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(eof());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[header_end..header_end + len]).into_owned();
        return Ok((status, body));
    }
    assert_eq!(
        header("transfer-encoding").as_deref(),
        Some("chunked"),
        "{head}"
    );
    while find(&buf[header_end..], b"0\r\n\r\n").is_none() {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut rest = &buf[header_end..];
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Output of one curl run.
pub struct Curl {
    pub success: bool,
    pub code: Option<i32>,
    pub body: String,
    pub http_code: String,
    pub http_version: String,
    pub stderr: String,
}

/// Runs the system curl against `/token` with the client certificate of `leaf` (files in
/// `dir`) and the extra arguments.
pub fn curl_token(service: &TlsService, root_pem: &str, leaf: &Leaf, extra: &[&str]) -> Curl {
    let dir = service.files.path();
    let (cert, key, ca) = (
        dir.join("curl-client.pem"),
        dir.join("curl-client.key"),
        dir.join("curl-root.pem"),
    );
    std::fs::write(&cert, &leaf.chain_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&ca, root_pem).unwrap();
    let output = std::process::Command::new("curl")
        .arg("-s")
        .arg("-v")
        .arg("--max-time")
        .arg("10")
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--cacert")
        .arg(&ca)
        .args(["-d", GRANT])
        .args(["--write-out", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(service.url("/token"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, trailer) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (http_code, http_version) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Curl {
        success: output.status.success(),
        code: output.status.code(),
        body: body.to_owned(),
        http_code: http_code.to_owned(),
        http_version: http_version.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile chains
// ---------------------------------------------------------------------------------------------

/// What an outsider can make without any trusted CA: a leaf issued by the first of `cas`
/// self-issued CA certificates that all carry the same name (each with its own key), sent in
/// that order after the leaf. Returns the chain (DER, leaf first) and the leaf's key.
pub fn self_issued_ca_chain(cas: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let authorities: Vec<(rcgen::Certificate, Issuer<'static, KeyPair>)> = (0..cas)
        .map(|_| {
            let key = KeyPair::generate().unwrap();
            let params = ca_params("Attacker CA");
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        })
        .collect();
    let key = KeyPair::generate().unwrap();
    let leaf = Spec::client("attacker", &[0x66, 0x01])
        .params()
        .signed_by(&key, &authorities[0].1)
        .unwrap();
    let mut chain = vec![leaf.der().to_vec()];
    chain.extend(authorities.iter().map(|(c, _)| c.der().to_vec()));
    (chain, key.serialize_der())
}
