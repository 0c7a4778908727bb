//! Test harness: a test PKI (rcgen), the REAL `token-service` binary with TLS and the
//! `mtls-client-credentials` flow, the Google API emulator as its STS/IAM, and runs of the
//! `token-client` binary.
//!
//! Google's STS (the emulator) fetches the issuer's discovery document; it cannot trust the
//! test CA, so the issuer is a plain-HTTP loopback front ([`Relay::start_http_to_tls`]) that
//! relays GETs to the broker over TLS. token-client reaches the broker through a TCP relay
//! that a test can cut ([`Relay::stop`]): a broker outage without killing the broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use gcp_emulator::{
    AwsConfig, AwsOidcProvider, AwsRole, Config as EmulatorConfig, Emulator, Provider, TrustClaim,
    TrustCondition, TrustOperator,
};

pub mod http;
pub mod libraries;
pub mod pki;
pub mod process;
pub mod relay;

pub use http::{Answer, FLAVOR, get, start_serve};
pub use pki::{Ca, Leaf};
pub use process::Process;
pub use relay::Relay;

pub const CLIENT: &str = env!("CARGO_BIN_EXE_token-client");
pub const PROJECT_NUMBER: &str = "123456789012";
pub const POOL: &str = "devices";
pub const PROVIDER: &str = "token-service";
/// The pool provider as Google's libraries name it (the `audience` of a configuration).
pub const POOL_AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/devices/providers/token-service";
/// An account the pool's principals may impersonate.
pub const TARGET_SA: &str = "storage-reader@demo-project.iam.gserviceaccount.com";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Audiences the broker serves besides its default (`TOKEN_AUDIENCES`): AWS's and Entra's.
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";
pub const ENTRA_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The AWS role the emulated account lets [`DEVICE`] assume (`sub` and `aud` conditions).
pub const AWS_ROLE: &str = "arn:aws:iam::123456789012:role/devices";
/// Further audiences the broker lists, for the bound on the audiences `serve` keeps.
pub const LISTED_AUDIENCES: [&str; 8] = [
    "https://listed-1.example.com",
    "https://listed-2.example.com",
    "https://listed-3.example.com",
    "https://listed-4.example.com",
    "https://listed-5.example.com",
    "https://listed-6.example.com",
    "https://listed-7.example.com",
    "https://listed-8.example.com",
];
/// An audience the broker does not list.
pub const UNLISTED_AUDIENCE: &str = "https://other.example.com";
/// The SPIFFE ID of the device certificate [`Fixture::device`].
pub const DEVICE: &str = "spiffe://example.org/ns/prod/sa/device-1";
/// The broker's refusal of a certificate from another CA.
pub const UNKNOWN_ISSUER: &str =
    "The client certificate was not issued by a CA in TLS_CLIENT_CA_FILE (unknown issuer)";

/// The `token-service` binary in this test binary's target folder.
pub fn broker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("token-service")).clone()
}

/// The `gcp-emulator` binary in this test binary's target folder.
pub fn emulator_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("gcp-emulator")).clone()
}

/// The binary of the workspace package `name` (named as the package), built or brought up to
/// date (a stale broker would test old behaviour): `cargo test -p token-client` does not
/// build other packages' binaries.
fn workspace_bin(name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", name, "--bin", name])
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p {name} failed");
    target_dir().join("debug").join(name)
}

/// The workspace's root folder.
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo().join("target"),
    }
}

/// A test setting the test's environment may override (interpreter paths).
pub fn env_setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The broker's lifetimes, where a test needs other than its defaults (5-minute ID tokens,
/// one-hour impersonated access tokens).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifetimes {
    /// `TOKEN_VALIDITY`: the ID token's lifetime in minutes.
    pub token_validity_minutes: Option<u32>,
    /// `ACCESS_TOKEN_LIFETIME`: the impersonated access token's lifetime in seconds.
    pub access_token_lifetime_seconds: Option<u32>,
}

/// Everything a test needs: PKI files, the emulator, the broker, its discovery front and the
/// relay token-client talks to.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: Ca,
    /// The device's certificate and key files (issued by the root).
    pub device: Leaf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub emulator: Emulator,
    /// The broker process; its `url` is `https://127.0.0.1:PORT`.
    pub broker: Process,
    /// What token-client talks to: a TCP relay to the broker (cut it with [`Relay::stop`]).
    pub relay: Relay,
    /// The plain-HTTP discovery front: the broker's issuer.
    front: Relay,
}

impl Fixture {
    /// The broker with its default lifetimes.
    pub async fn start() -> Fixture {
        Fixture::with(Lifetimes::default()).await
    }

    pub async fn with(lifetimes: Lifetimes) -> Fixture {
        Fixture::build(lifetimes, &pki::ec_key_pem()).await
    }

    /// The broker signing with an RSA key (RS256), as Microsoft Entra requires.
    pub async fn with_rsa_signing_key() -> Fixture {
        Fixture::build(Lifetimes::default(), &pki::rsa_key_pem()).await
    }

    async fn build(lifetimes: Lifetimes, signing_key_pem: &str) -> Fixture {
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
        file("signing.pem", signing_key_pem);
        let front = Relay::bind().await;
        let issuer = format!("http://{}", front.address);
        let emulator = Emulator::start(emulator_config(&issuer), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let broker = start_broker(dir.path(), &issuer, &emulator.base_url(), lifetimes);
        front.start_http_to_tls(&broker.url, &root.pem);
        let relay = Relay::bind().await;
        relay.start_tcp(broker.url.trim_start_matches("https://"));
        Fixture {
            dir,
            root,
            device,
            cert,
            key,
            ca,
            emulator,
            broker,
            relay,
            front,
        }
    }

    /// The broker's base URL as token-client sees it (through the relay).
    pub fn broker_url(&self) -> String {
        format!("https://{}", self.relay.address)
    }

    /// The broker's issuer (`TOKEN_ISSUER`): `http://` its discovery front.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.front.address)
    }

    /// The broker settings as environment variables for `token-client`.
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            ("TOKEN_CLIENT_BROKER".into(), self.broker_url()),
            ("TOKEN_CLIENT_CERT".into(), self.cert.display().to_string()),
            ("TOKEN_CLIENT_KEY".into(), self.key.display().to_string()),
            ("TOKEN_CLIENT_CA".into(), self.ca.display().to_string()),
        ]
    }

    /// A path in the fixture's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// How many tokens the broker issued so far (its `token_issued` log lines).
    pub fn issued(&self) -> usize {
        self.broker.logs().matches("\"token_issued\"").count()
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

/// Runs `token-client` with only `env` and `args`.
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
/// The AWS account trusts it as an IAM OIDC provider for [`AWS_AUDIENCE`] (the emulator's
/// loopback allowance), and [`AWS_ROLE`] trusts [`DEVICE`].
fn emulator_config(issuer: &str) -> EmulatorConfig {
    let mut role = AwsRole::new(AWS_ROLE, issuer);
    role.conditions = vec![
        TrustCondition::new(TrustClaim::Sub, TrustOperator::StringEquals, &[DEVICE]),
        TrustCondition::new(
            TrustClaim::Aud,
            TrustOperator::StringEquals,
            &[AWS_AUDIENCE],
        ),
    ];
    EmulatorConfig {
        aws: AwsConfig {
            oidc_providers: vec![AwsOidcProvider::new(issuer, &[AWS_AUDIENCE])],
            roles: vec![role],
            ..AwsConfig::default()
        },
        allow_loopback_issuers: true,
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
fn start_broker(dir: &Path, issuer: &str, emulator: &str, lifetimes: Lifetimes) -> Process {
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
        .env("WORKLOAD_IDENTITY_PROJECT_NUMBER", PROJECT_NUMBER)
        .env("WORKLOAD_IDENTITY_POOL_ID", POOL)
        .env("WORKLOAD_IDENTITY_PROVIDER_ID", PROVIDER)
        .env("STS_ENDPOINT", emulator)
        .env("IAM_CREDENTIALS_ENDPOINT", emulator)
        .env("AWS_STS_ENDPOINT", emulator)
        .env(
            "TOKEN_AUDIENCES",
            format!(
                "{AWS_AUDIENCE},{ENTRA_AUDIENCE},{}",
                LISTED_AUDIENCES.join(",")
            ),
        )
        .env("RATE_LIMIT_PER_CLIENT", "0")
        .env("RATE_LIMIT_AUTH_FAILURES", "0");
    if let Some(minutes) = lifetimes.token_validity_minutes {
        command.env("TOKEN_VALIDITY", minutes.to_string());
    }
    if let Some(seconds) = lifetimes.access_token_lifetime_seconds {
        command.env("ACCESS_TOKEN_LIFETIME", seconds.to_string());
    }
    Process::start(command, "listening on ")
}
