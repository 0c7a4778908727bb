//! Measures the latency Token Service adds on top of the Google APIs for a `scope` +
//! `service_account` request, against the emulator:
//!
//! 1. end to end: `POST /token` with scope and service_account (access-token cache off), so
//!    every request calls signJwt, STS and generateAccessToken;
//! 2. the emulator alone: the same three calls made directly by this client, back to back.
//!
//! The difference of the medians is what Token Service adds (HTTP parsing, flow, claims, its
//! three upstream round trips' client side). Run:
//! `cargo build --release -p token-service && cargo run --release -p token-service --example upstream_latency -- [N]`
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool: any failure ends the run with its message"
)]

use std::process::{Command, Stdio};
use std::time::Duration;

use gcp_emulator::{Config, Emulator, Provider};
use serde_json::Value;
use token_service::clock::{Clock, Stopwatch};

const SA: &str = "storage-reader@demo-project.iam.gserviceaccount.com";
const SELF_SA: &str = "token-service@demo-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let emulator = start_emulator(&issuer).await;
    let emu = emulator.base_url();
    let mut child = start_service(port, &emu, &issuer);
    let http = reqwest::Client::new();
    wait_ready(&http, &issuer).await;
    let direct = Direct {
        id_token: own_id_token(&http, &issuer).await,
        own: own_access_token(&http, &emu).await,
        http: http.clone(),
        emu,
    };
    let (mut end_to_end, mut emulator_only) = measure(n, &http, &issuer, &direct).await;
    report(n, &mut end_to_end, &mut emulator_only);
    let _ = child.kill();
    let _ = child.wait();
}

async fn start_emulator(issuer: &str) -> Emulator {
    Emulator::start(
        Config {
            extra_service_accounts: vec![SA.into()],
            providers: vec![Provider {
                project_number: "123456789012".into(),
                pool_id: "devices".into(),
                provider_id: "ts".into(),
                issuer_uri: issuer.to_owned(),
                allowed_audiences: vec![],
            }],
            impersonation: vec![(SA.into(), "principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/devices/*".into())],
            ..Config::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn start_service(port: u16, emu: &str, issuer: &str) -> std::process::Child {
    let binary = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/release/token-service"
    );
    Command::new(binary)
        .arg("serve")
        .env_clear()
        .envs([
            ("PORT", port.to_string()),
            ("SIGNER", "iam".into()),
            (
                "GCE_METADATA_HOST",
                emu.trim_start_matches("http://").into(),
            ),
            ("IAM_CREDENTIALS_ENDPOINT", emu.to_owned()),
            ("STS_ENDPOINT", emu.to_owned()),
            (
                "JWKS_URI",
                format!("{emu}/service_accounts/v1/metadata/jwk/{SELF_SA}"),
            ),
            ("WORKLOAD_IDENTITY_PROJECT_NUMBER", "123456789012".into()),
            ("WORKLOAD_IDENTITY_POOL_ID", "devices".into()),
            ("WORKLOAD_IDENTITY_PROVIDER_ID", "ts".into()),
            ("TOKEN_ISSUER", issuer.to_owned()),
            ("ACCESS_TOKEN_CACHE", "off".into()),
            ("LOG_LEVEL", "error".into()),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("build the release binary first: cargo build --release -p token-service")
}

async fn wait_ready(http: &reqwest::Client, issuer: &str) {
    for _ in 0..100 {
        if http
            .get(format!("{issuer}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token_request(http: &reqwest::Client, issuer: &str) -> reqwest::RequestBuilder {
    http.post(format!("{issuer}/token"))
        .header("X-Client-Cert-Present", "true")
        .header("X-Client-Cert-Chain-Verified", "true")
        .header("X-Client-Cert-Spiffe", "spiffe://example.org/bench")
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", SCOPE),
            ("service_account", SA),
        ])
}

/// An ID token for the direct STS calls.
async fn own_id_token(http: &reqwest::Client, issuer: &str) -> String {
    let id_token: Value = http
        .post(format!("{issuer}/token"))
        .header("X-Client-Cert-Present", "true")
        .header("X-Client-Cert-Chain-Verified", "true")
        .header("X-Client-Cert-Spiffe", "spiffe://example.org/bench")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    id_token["id_token"].as_str().unwrap().to_owned()
}

async fn own_access_token(http: &reqwest::Client, emu: &str) -> String {
    let own: Value = http
        .get(format!(
            "{emu}/computeMetadata/v1/instance/service-accounts/default/token"
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    own["access_token"].as_str().unwrap().to_owned()
}

/// The three emulator calls of one request, made directly.
struct Direct {
    http: reqwest::Client,
    emu: String,
    own: String,
    id_token: String,
}

impl Direct {
    async fn run(&self) {
        let (http, emu, own, id_token) = (&self.http, &self.emu, &self.own, &self.id_token);
        let now = Clock::system().now();
        let payload =
            serde_json::json!({"iss": "x", "sub": "y", "aud": "z", "iat": now, "exp": now + 300});
        let sign = http
            .post(format!(
                "{emu}/v1/projects/-/serviceAccounts/{SELF_SA}:signJwt"
            ))
            .bearer_auth(own)
            .json(&serde_json::json!({"payload": payload.to_string()}))
            .send()
            .await
            .unwrap();
        assert!(sign.status().is_success(), "{}", sign.text().await.unwrap());
        let sts: Value = http
                .post(format!("{emu}/v1/token"))
                .form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                    ("audience", "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/devices/providers/ts"),
                    ("scope", SCOPE),
                    ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                    ("subject_token", id_token.as_str()),
                    ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let generated = http
            .post(format!(
                "{emu}/v1/projects/-/serviceAccounts/{SA}:generateAccessToken"
            ))
            .bearer_auth(sts["access_token"].as_str().unwrap())
            .json(&serde_json::json!({"scope": [SCOPE], "lifetime": "300s"}))
            .send()
            .await
            .unwrap();
        assert!(generated.status().is_success());
    }
}

/// Interleaved end-to-end and direct timings, after 100 of each to warm up.
async fn measure(
    n: usize,
    http: &reqwest::Client,
    issuer: &str,
    direct: &Direct,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut end_to_end = Vec::with_capacity(n);
    let mut emulator_only = Vec::with_capacity(n);
    for i in 0..(n + 100) {
        let t = Stopwatch::start();
        let r = token_request(http, issuer).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let _ = r.bytes().await;
        let e2e = t.elapsed();
        let t = Stopwatch::start();
        direct.run().await;
        let direct_time = t.elapsed();
        if i >= 100 {
            end_to_end.push(e2e);
            emulator_only.push(direct_time);
        }
    }
    (end_to_end, emulator_only)
}

fn report(n: usize, end_to_end: &mut [Duration], emulator_only: &mut [Duration]) {
    let (a50, a90) = (percentile(end_to_end, 0.5), percentile(end_to_end, 0.9));
    let (b50, b90) = (
        percentile(emulator_only, 0.5),
        percentile(emulator_only, 0.9),
    );
    println!("requests: {n} (scope + service_account, cache off), interleaved");
    println!("end to end through Token Service: p50 {a50:?}  p90 {a90:?}");
    println!("emulator alone (signJwt + STS + generateAccessToken): p50 {b50:?}  p90 {b90:?}");
    println!(
        "added by Token Service at the median: {:?}",
        a50.saturating_sub(b50)
    );
}
