//! Token Service against the in-workspace Google API emulator: the emulator's configuration
//! (one workload identity pool trusting the service as its OIDC provider) and the settings that
//! point the service at it.

use std::net::TcpListener;
use std::time::Duration;

use gcp_emulator::{Config as EmulatorConfig, Emulator, Provider};

use super::{Server, client};

pub const PROJECT_NUMBER: &str = "123456789012";
pub const POOL: &str = "devices";
pub const PROVIDER: &str = "token-service";
/// The service's own account (signJwt).
pub const SELF_SA: &str = "token-service@demo-project.iam.gserviceaccount.com";
/// An account the pool's principals may impersonate.
pub const TARGET_SA: &str = "storage-reader@demo-project.iam.gserviceaccount.com";
/// Another account the emulator knows.
pub const OTHER_SA: &str = "admin@demo-project.iam.gserviceaccount.com";

/// Every identity of the pool, as an IAM principal set.
pub fn pool_principals() -> String {
    format!(
        "principalSet://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/{POOL}/*"
    )
}

/// The pool's provider trusts the service on `port` as its issuer; the pool may impersonate
/// [`TARGET_SA`].
pub fn emulator_config(port: u16) -> EmulatorConfig {
    EmulatorConfig {
        project_number: PROJECT_NUMBER.into(),
        service_account: SELF_SA.into(),
        extra_service_accounts: vec![TARGET_SA.into(), OTHER_SA.into()],
        providers: vec![Provider {
            project_number: PROJECT_NUMBER.into(),
            pool_id: POOL.into(),
            provider_id: PROVIDER.into(),
            issuer_uri: format!("http://127.0.0.1:{port}"),
            allowed_audiences: vec![],
        }],
        impersonation: vec![(TARGET_SA.into(), pool_principals())],
        ..EmulatorConfig::default()
    }
}

pub async fn start_emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Settings for keyless signing (SIGNER=iam) and the pool, all endpoints at the emulator.
pub fn google_env(emulator: &Emulator) -> Vec<(&'static str, String)> {
    let base = emulator.base_url();
    vec![
        ("SIGNER", "iam".into()),
        ("SIGNING_KEY_FILE", String::new()),
        ("TOKEN_AUDIENCE", String::new()),
        (
            "GCE_METADATA_HOST",
            base.trim_start_matches("http://").into(),
        ),
        ("IAM_CREDENTIALS_ENDPOINT", base.clone()),
        ("STS_ENDPOINT", base.clone()),
        (
            "JWKS_URI",
            format!("{base}/service_accounts/v1/metadata/jwk/{SELF_SA}"),
        ),
        ("WORKLOAD_IDENTITY_PROJECT_NUMBER", PROJECT_NUMBER.into()),
        ("WORKLOAD_IDENTITY_POOL_ID", POOL.into()),
        ("WORKLOAD_IDENTITY_PROVIDER_ID", PROVIDER.into()),
    ]
}

/// [`google_env`] plus `extra` (which wins; an empty value unsets).
pub fn google_settings(emulator: &Emulator, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = google_env(emulator)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Starts the service in-process on `listener` with [`google_env`] plus `extra` (which wins;
/// an empty value unsets), without waiting for it to be ready.
pub fn start_service_unready(
    listener: TcpListener,
    emulator: &Emulator,
    extra: &[(&str, &str)],
) -> Server {
    Server::start_on(listener, &borrowed(&google_settings(emulator, extra)))
}

/// [`start_service_unready`], then waits until `/readyz` answers 200.
pub async fn start_service(
    listener: TcpListener,
    emulator: &Emulator,
    extra: &[(&str, &str)],
) -> Server {
    let server = start_service_unready(listener, emulator, extra);
    wait_ready(&server).await;
    server
}

/// [`start_service`] with the real binary, for tests that read its log.
pub async fn start_service_process(
    front: TcpListener,
    emulator: &Emulator,
    extra: &[(&str, &str)],
) -> Server {
    let server = Server::start_process_on(front, &borrowed(&google_settings(emulator, extra)));
    wait_ready(&server).await;
    server
}

pub async fn wait_ready(server: &Server) {
    for _ in 0..100 {
        if let Ok(r) = client().get(server.url("/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} not ready", server.base);
}
