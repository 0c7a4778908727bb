//! A local emulator of the Google Cloud APIs a workload-identity token broker
//! talks to: the GCE/Cloud Run metadata server, IAM Service Account
//! Credentials (`signJwt`, `generateAccessToken`), service-account JWKS,
//! the Security Token Service token exchange and the OAuth 2.0 token
//! endpoint. Requests are checked against Google's documented request shapes
//! and answered in each API's own error format, so a client that sends the
//! wrong field or skips a header fails here as it would against Google.
//! On the same port it emulates AWS STS `AssumeRoleWithWebIdentity` and the
//! Microsoft Entra v2 token endpoint, each verifying the web-identity token
//! as that cloud does (discovery and JWKS from the issuer, `kid`, algorithms,
//! audiences, subjects, time claims); optionally over HTTPS with its own CA.
//!
//! [`Emulator::start`] runs it in-process on a tokio runtime; the
//! `gcp-emulator` binary runs it standalone. Call counts and injected faults
//! are available through the [`Emulator`] handle and over HTTP under
//! `/emulator/`.

mod aws_sts;
mod cli;
mod cloud_config;
mod config;
mod entra;
mod errors;
mod faults;
mod iam;
mod jwks;
mod keys;
mod metadata;
mod oauth;
mod state;
mod sts;
mod tls;
mod webid;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::response::IntoResponse;
use serde_json::json;

pub use cli::Cli;
pub use cloud_config::{
    AwsConfig, AwsOidcProvider, AwsRole, CloudConfigError, ENTRA_DEFAULT_AUDIENCE, EntraApp,
    EntraConfig, EntraTenant, FederatedCredential, MAX_FEDERATED_CREDENTIALS, TrustClaim,
    TrustCondition, TrustOperator,
};
pub use config::{Config, Provider};
pub use faults::{ENDPOINTS, Fault};
pub use state::AwsSession;
pub use webid::IssuerFormError;

use errors::GoogleError;
use keys::SigningKey;
use state::{Account, AppState, Shared};

pub(crate) const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub(crate) const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
/// Scopes an authorized-user refresh token was consented for (as `gcloud auth application-default login`).
pub(crate) const AUTHORIZED_USER_SCOPES: [&str; 3] = [
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    CLOUD_PLATFORM_SCOPE,
];

/// Handle to a running emulator. Cloning is cheap; all clones share state.
#[derive(Clone)]
pub struct Emulator {
    state: AppState,
    addr: SocketAddr,
    ca_pem: Option<String>,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Emulator {
    /// Bind `addr` (port 0 picks a free port), generate the service accounts'
    /// keys and serve on a task spawned on the current tokio runtime.
    pub async fn start(config: Config, addr: SocketAddr) -> anyhow::Result<Emulator> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let tls = if config.https {
            Some(tls::generate(addr.ip())?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!(
            "{scheme}://{}",
            SocketAddr::new(client_ip(addr.ip()), addr.port())
        );

        let accounts = generate_accounts(config.all_service_accounts()).await?;
        let entra_key = Arc::new(tokio::task::spawn_blocking(SigningKey::generate).await??);
        let state: AppState = Arc::new(Shared::new(config, base_url, accounts, entra_key)?);
        let app = router(state.clone());

        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let stop = async move {
            if rx.wait_for(|stop| *stop).await.is_err() {
                // Every handle is gone: keep serving for the runtime's lifetime.
                std::future::pending::<()>().await;
            }
        };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        match tls {
            Some(tls) => {
                tokio::spawn(tls::serve(listener, tls.acceptor, app, stop));
            }
            None => {
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app)
                        .with_graceful_shutdown(stop)
                        .await
                    {
                        tracing::error!(error = %e, "gcp-emulator server stopped");
                    }
                });
            }
        }
        Ok(Emulator {
            state,
            addr,
            ca_pem,
            shutdown: Arc::new(tx),
        })
    }

    /// With `Config::https`: the PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Every AWS session `AssumeRoleWithWebIdentity` handed out, oldest first.
    pub fn aws_sessions(&self) -> Vec<AwsSession> {
        self.state.aws_sessions()
    }

    /// `http://127.0.0.1:PORT` (`https://…` with `Config::https`; an unspecified bind
    /// address is reported as loopback).
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls (served or failed, faults included) that reached `endpoint`.
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.state.faults.calls(endpoint)
    }

    /// The most calls of `endpoint` that were inside an injected latency at once: how many
    /// requests the client had in flight there.
    pub fn peak_concurrency(&self, endpoint: &str) -> u64 {
        self.state.faults.peak_waiting(endpoint)
    }

    /// Apply `fault` to the next calls of `endpoint` (replacing any earlier fault there).
    pub fn inject(&self, endpoint: &str, fault: Fault) {
        self.state.faults.inject(endpoint, fault);
    }

    /// Remove every injected fault.
    pub fn clear_faults(&self) {
        self.state.faults.clear_faults();
    }

    /// Zero the call counts and remove every fault.
    pub fn reset(&self) {
        self.state.faults.reset();
    }

    /// Stop accepting connections (for outage tests); in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// "Create key": a new RSA key for `email` and the Google service-account
    /// key file JSON holding it. The public half is published in the JWKS and
    /// accepted for `jwt-bearer` assertions at `token_uri`.
    pub fn service_account_key_json(&self, email: &str) -> anyhow::Result<String> {
        if self.state.account(email).is_none() {
            anyhow::bail!("service account {email} does not exist in the emulator");
        }
        let key = Arc::new(SigningKey::generate()?);
        let account = self.state.add_key(email, key.clone()).ok_or_else(|| {
            anyhow::anyhow!("service account {email} does not exist in the emulator")
        })?;
        let project_id = account
            .email
            .split_once('@')
            .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
            .unwrap_or(&self.state.config.project_id)
            .to_owned();
        let encoded_email: String =
            form_urlencoded::byte_serialize(account.email.as_bytes()).collect();
        let file = json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key.kid(),
            "private_key": key.pkcs8_pem()?,
            "client_email": account.email,
            "client_id": account.unique_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.state.token_uri(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{encoded_email}"),
            "universe_domain": "googleapis.com",
        });
        Ok(serde_json::to_string_pretty(&file)?)
    }

    /// An application-default-credentials `authorized_user` file whose refresh
    /// token yields access tokens for `principal_email` at `token_uri`.
    pub fn authorized_user_json(&self, principal_email: &str) -> String {
        let client = self.state.new_oauth_client(principal_email);
        json!({
            "type": "authorized_user",
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "refresh_token": client.refresh_token,
            "token_uri": self.state.token_uri(),
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }

    /// The principal an emulator-issued access token belongs to (expired or not).
    pub fn token_principal(&self, access_token: &str) -> Option<String> {
        self.state.token(access_token).map(|t| t.principal)
    }
}

fn client_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// One account per email with a fresh Google-managed key; keys are
/// generated in parallel on the blocking pool.
async fn generate_accounts(emails: Vec<String>) -> anyhow::Result<Vec<Account>> {
    let tasks: Vec<_> = emails
        .into_iter()
        .map(|email| {
            tokio::task::spawn_blocking(move || SigningKey::generate().map(|k| (email, k)))
        })
        .collect();
    let mut accounts = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (email, key) = task.await??;
        accounts.push(Account {
            email,
            unique_id: keys::random_digits(21),
            keys: vec![Arc::new(key)],
        });
    }
    Ok(accounts)
}

fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(metadata::router())
        .merge(iam::router())
        .merge(jwks::router())
        .merge(sts::router())
        .merge(oauth::router())
        .merge(aws_sts::router())
        .merge(entra::router())
        .merge(faults::admin_router())
        .fallback(|uri: axum::http::Uri| async move {
            GoogleError::not_found(format!(
                "The requested URL {} was not found on this server.",
                uri.path()
            ))
            .into_response()
        })
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                GoogleError::new(
                    405,
                    format!("Method {method} is not allowed on {}.", uri.path()),
                )
                .into_response()
            },
        )
        .with_state(state)
}
