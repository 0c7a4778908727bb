//! Composition root: the only place that names concrete flows, signers and policies. Builds the
//! application state from a validated configuration, binds the listener and serves until
//! SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::access::AccessTokenBackend;
use crate::access::google::{GoogleAccess, GoogleAccessSettings};
use crate::clock::Clock;
use crate::config::{Config, SignerConfig};
use crate::flows::FlowRegistry;
use crate::google::Upstream;
use crate::google::credentials::{Credentials, TokenSource};
use crate::google::iam_credentials::IamCredentialsClient;
use crate::google::metadata::MetadataClient;
use crate::google::sts::StsClient;
use crate::grant::ClientCredentials;
use crate::http::{AppState, admin_router, router};
use crate::issuer::{IdTokenIssuer, IssuerSettings};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::engine::RulesPolicy;
use crate::policy::{CertificateFactsPolicy, ClientPolicy};
use crate::server::ServerSettings;
use crate::signer::Signer;
use crate::signer::iam::IamSigner;
use crate::signer::local::LocalSigner;
use crate::tasks::Background;
use crate::tls::TlsServer;
use crate::x509::Trust;

/// Builds the router from a validated configuration. Fails with one message per problem
/// (unreadable key file, flow that refuses its settings...). Must run inside a Tokio runtime:
/// the IAM signer checks its identity in the background.
pub fn build(config: &Config, registry: &FlowRegistry) -> Result<App, Vec<String>> {
    let background = Background::new();
    // The one registry of this application: everything that counts gets a handle to it, so two
    // applications in one process (tests, embedders) count apart.
    let metrics = Arc::new(Metrics::new());
    let trust = match &config.trust {
        Some(settings) => {
            let trust = Trust::load(settings.clone()).map_err(|e| vec![e])?;
            tracing::info!(
                event = "client_ca_loaded",
                "client trust material: {}",
                trust.current().summary
            );
            Some(Arc::new(trust))
        }
        None => None,
    };
    let tls = match &config.tls {
        Some(settings) => Some(Arc::new(
            TlsServer::load(settings.clone(), trust.clone(), metrics.clone())
                .map_err(|e| vec![e])?,
        )),
        None => None,
    };
    if let (None, Some(trust)) = (&tls, &trust) {
        trust.watch(&background);
    }
    let mut flow_settings = config.flow_settings.clone();
    let trust_for_readiness = trust.clone();
    flow_settings.trust = trust;
    let flows = registry
        .build(&config.flows, &flow_settings)
        .map_err(|e| vec![e])?;
    let upstream =
        Upstream::new(config.google.timeout, config.google.max_connections).map_err(|e| vec![e])?;
    let trace_project = Arc::new(OnceLock::new());
    if let Some(project) = &config.trace_project {
        let _ = trace_project.set(project.clone());
    }
    let mut warnings = Vec::new();
    let signer =
        build_signer(config, &upstream, &trace_project, &mut warnings).map_err(|e| vec![e])?;
    for w in &warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
    metrics.signing_key(
        signer.key_id().unwrap_or("google-managed"),
        signer.algorithm(),
    );
    tracing::info!(
        event = "signer_ready",
        algorithm = signer.algorithm(),
        kid = signer.key_id().unwrap_or(""),
        "signing ID tokens with {} key {}",
        signer.algorithm(),
        signer.key_id().unwrap_or("managed by Google")
    );
    let issuer = IdTokenIssuer::new(
        IssuerSettings {
            audience: config.audience.clone(),
            validity_seconds: config.validity_seconds,
            jwks_uri: config.jwks_uri.clone(),
        },
        signer,
        Clock::system(),
    );
    let access = config.pool.as_ref().map(|pool| {
        let endpoints = &config.google.endpoints;
        let backend = GoogleAccess::new(
            GoogleAccessSettings {
                audience: format!("//{}", pool.resource()),
                lifetime_seconds: config.validity_seconds,
                cache: config.google.cache,
            },
            StsClient::new(endpoints.sts.clone(), upstream.clone()),
            IamCredentialsClient::new(endpoints.iam_credentials.clone(), upstream.clone()),
            upstream.clone(),
        );
        Arc::new(backend) as Arc<dyn AccessTokenBackend>
    });
    let policy: Arc<dyn ClientPolicy> = match &config.policy {
        Some(settings) => {
            let policy = Arc::new(
                RulesPolicy::load(&settings.file, &registry.names())
                    .map_err(|e| vec![format!("POLICY_FILE: {e}")])?,
            );
            tracing::info!(
                event = "policy_loaded",
                "client policy {}: {}",
                settings.file.display(),
                policy.current().summary()
            );
            policy.watch(settings.reload_interval, &background);
            policy
        }
        None => Arc::new(CertificateFactsPolicy),
    };
    let limits = Arc::new(Limits::new(config.limits.clone()));
    limits.start_housekeeping(&background);
    let grant = ClientCredentials::new(flows, policy, issuer, access).with_limits(limits.clone());
    let mut state = AppState::new(grant, config.issuer.clone(), trace_project);
    state.limits = limits;
    state.metrics_here = config.admin.is_none();
    if let Some(tls) = &tls {
        let tls = tls.clone();
        let clock = Clock::system();
        state
            .readiness_checks
            .push(Box::new(move || tls.readiness(clock.now())));
    }
    if let Some(trust) = trust_for_readiness {
        // An expired CRL is named in /readyz but leaves it 200: every replica shares the file,
        // so a 503 would take them all out of rotation at once.
        let clock = Clock::system();
        state
            .readiness_details
            .push(Box::new(move || trust.readiness_details(clock.now())));
    }
    let draining = state.draining.clone();
    let state = Arc::new(state);
    let admin = config
        .admin
        .map(|address| (address, admin_router(state.clone())));
    let timeout = config.google.timeout;
    let deadline = move |request: axum::extract::Request, next: axum::middleware::Next| {
        crate::google::with_request_deadline(timeout, next.run(request))
    };
    let router = router(state).layer(axum::middleware::from_fn(deadline));
    Ok(App {
        router,
        tls,
        admin,
        draining,
        server: config.server.clone(),
        warnings,
        background,
        metrics,
    })
}

/// The built application: its routes and, when TLS ends here, the reloadable TLS material.
pub struct App {
    /// The routes.
    pub router: Router,
    /// The TLS server configuration, when `TLS_CERT_FILE` is set.
    pub tls: Option<Arc<TlsServer>>,
    /// The admin listener's address and routes, when `ADMIN_PORT` is set.
    pub admin: Option<(SocketAddr, Router)>,
    /// Set when shutdown begins, so `/readyz` turns 503.
    pub draining: Arc<AtomicBool>,
    /// Connection limits and shutdown timing.
    pub server: ServerSettings,
    /// Warnings found while loading the files (logged by `build`, printed by `check-config`).
    pub warnings: Vec<String>,
    /// The file watchers and housekeeping tasks, stopped when serving ends.
    pub background: Arc<Background>,
    /// This application's metrics (what `/metrics` renders).
    pub metrics: Arc<Metrics>,
}

fn build_signer(
    config: &Config,
    upstream: &Upstream,
    trace_project: &Arc<OnceLock<String>>,
    warnings: &mut Vec<String>,
) -> Result<Arc<dyn Signer>, String> {
    match &config.signer {
        SignerConfig::Local {
            key_file: Some(path),
            ..
        } => {
            let (signer, found) = LocalSigner::from_key_file(path)?;
            warnings.extend(found);
            Ok(Arc::new(signer))
        }
        SignerConfig::Local {
            key_file: None,
            data_dir,
        } => {
            let (signer, path, generated) = LocalSigner::load_or_generate(data_dir)?;
            let verb = if generated {
                "generated"
            } else {
                "reusing the generated"
            };
            tracing::warn!(
                event = "development_key",
                path = %path.display(),
                "{verb} signing key {}: fine for development and a single instance; set SIGNING_KEY_FILE for production",
                path.display()
            );
            Ok(Arc::new(signer))
        }
        SignerConfig::Iam { service_account } => {
            let endpoints = &config.google.endpoints;
            let (credentials, metadata) = match &config.google.application_credentials {
                Some(path) => (Credentials::from_adc_file(path)?, None),
                None => {
                    let metadata =
                        MetadataClient::new(endpoints.metadata.clone(), upstream.clone());
                    (Credentials::Metadata(metadata.clone()), Some(metadata))
                }
            };
            let email = service_account
                .clone()
                .or_else(|| credentials.email().map(str::to_owned));
            if email.is_none() && metadata.is_none() {
                return Err("SERVICE_ACCOUNT: required when GOOGLE_APPLICATION_CREDENTIALS holds user credentials; name the service account to sign as".into());
            }
            tracing::info!(event = "google_credentials", credentials = ?credentials, "Google credentials: {credentials:?}");
            let tokens = Arc::new(TokenSource::new(credentials, upstream.clone()));
            let iam =
                IamCredentialsClient::new(endpoints.iam_credentials.clone(), upstream.clone());
            let signer = Arc::new(IamSigner::new(email, tokens, iam, upstream.clone()));
            signer.start(metadata.clone());
            if trace_project.get().is_none()
                && let Some(metadata) = metadata
            {
                let (trace_project, upstream) = (trace_project.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(project) = metadata.project_id(upstream.deadline()).await {
                        let _ = trace_project.set(project);
                    }
                });
            }
            Ok(signer)
        }
    }
}

/// Binds the configured address.
/// How many async worker threads to run; `None` keeps tokio's default (one per core, or
/// `TOKIO_WORKER_THREADS` when set, which always wins). A local RSA key has its own signing
/// threads, one per core, which take ~80 % of the CPU a token costs; as many async workers again
/// would put four busy threads on two cores. Half as many (at least one) measured +5–8 %
/// tokens/s and 80 % of the RS256 signing ceiling (BENCHMARKS.md).
pub fn async_workers(config: &Config) -> Option<usize> {
    let rsa = match &config.signer {
        SignerConfig::Iam { .. } => false,
        SignerConfig::Local {
            key_file: Some(path),
            ..
        } => std::fs::read(path).is_ok_and(|pem| crate::signer::local::first_key_is_rsa(&pem)),
        // The development key: generated as RSA-2048 unless DATA_DIR holds another one.
        SignerConfig::Local {
            key_file: None,
            data_dir,
        } => std::fs::read(data_dir.join(crate::signer::local::GENERATED_KEY_FILE))
            .map_or(true, |pem| crate::signer::local::first_key_is_rsa(&pem)),
    };
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    workers_for(
        rsa,
        std::env::var_os("TOKIO_WORKER_THREADS").is_some(),
        cores,
    )
}

fn workers_for(rsa: bool, overridden: bool, cores: usize) -> Option<usize> {
    (rsa && !overridden).then(|| (cores / 2).max(1))
}

pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::new(config.bind_address, config.port);
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (set PORT or BIND_ADDRESS)"))
}

/// Serves the application on `listener` (and the admin port) until SIGTERM or Ctrl-C, then
/// drains within `SHUTDOWN_GRACE_PERIOD`.
pub async fn serve(listener: TcpListener, app: App) -> anyhow::Result<()> {
    serve_until(listener, app, shutdown_signal()).await
}

/// Serves the application on `listener` (and the admin port) until `shutdown` completes, then
/// drains within `SHUTDOWN_GRACE_PERIOD` and stops every background task. For embedders and
/// in-process tests, which hand over a listener bound to port 0.
pub async fn serve_until(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let App {
        router,
        tls,
        admin,
        draining,
        server,
        background,
        metrics,
        ..
    } = app;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(tls) = &tls {
        tls.watch(&background);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let admin_task = match admin {
        Some((admin_address, admin_router)) => {
            let admin_listener = TcpListener::bind(admin_address).await.with_context(|| {
                format!("cannot listen on {admin_address} (set ADMIN_PORT or ADMIN_BIND_ADDRESS)")
            })?;
            let admin_address = admin_listener.local_addr()?;
            tracing::info!(event = "admin_listening", address = %admin_address, "admin endpoints (/metrics, /healthz, /readyz) on http://{admin_address}");
            let settings = server.clone();
            let stopped = wait(stopped.clone());
            Some(tokio::spawn(crate::server::serve(
                admin_listener,
                admin_router,
                None,
                settings,
                metrics.clone(),
                stopped,
            )))
        }
        None => None,
    };
    tracing::info!(event = "listening", address = %address, "listening on {scheme}://{address}");
    let grace = server.grace_period;
    let signal = async move {
        shutdown.await;
        draining.store(true, Ordering::Relaxed);
        tracing::info!(
            event = "shutting_down",
            "shutting down: no new connections; accepted requests may finish within {} s",
            grace.as_secs()
        );
    };
    let served = crate::server::serve(listener, router, tls, server, metrics, signal).await;
    // The admin port outlives the drain, so probes keep getting answers (`/readyz` 503
    // "shutting down", `/healthz` 200) until the last accepted request is answered.
    let _ = stop.send(true);
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    background.shutdown().await;
    served.context("the server stopped")?;
    tracing::info!(event = "stopped", "stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::workers_for;

    #[test]
    fn a_local_rsa_key_halves_the_async_workers_unless_tokio_worker_threads_is_set() {
        assert_eq!(workers_for(true, false, 2), Some(1));
        assert_eq!(workers_for(true, false, 1), Some(1));
        assert_eq!(workers_for(true, false, 8), Some(4));
        assert_eq!(workers_for(true, true, 8), None);
        assert_eq!(workers_for(false, false, 8), None);
    }
}
