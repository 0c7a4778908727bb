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
use crate::error::StartupError;
use crate::flows::FlowRegistry;
use crate::google::Upstream;
use crate::google::iam_credentials::IamCredentialsClient;
use crate::google::sts::StsClient;
use crate::grant::ClientCredentials;
use crate::http::{AppState, StateParts, admin_router, router};
use crate::issuer::{IdTokenIssuer, IssuerSettings};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::engine::RulesPolicy;
use crate::policy::{CertificateFactsPolicy, ClientPolicy};
use crate::server::ServerSettings;
use crate::signer::Signer;
use crate::tasks::Background;
use crate::tls::TlsServer;
use crate::x509::Trust;

/// Builds the application from a validated configuration: one metrics registry, one owner of
/// background work, and each part from its settings. Fails with every problem found (unreadable
/// key file, flow that refuses its settings...): each part is tried, except one that needs a
/// part that failed. Must run inside a Tokio runtime: the IAM signer checks its identity in the
/// background.
pub fn build(config: &Config, registry: &FlowRegistry) -> Result<App, Vec<StartupError>> {
    build_with_metrics(config, registry, Arc::new(Metrics::new()))
}

/// [`build`] with `metrics` as the application's one registry: everything that counts gets a
/// handle to it, so two applications in one process (tests, embedders) count apart.
pub(crate) fn build_with_metrics(
    config: &Config,
    registry: &FlowRegistry,
    metrics: Arc<Metrics>,
) -> Result<App, Vec<StartupError>> {
    let background = Background::new();
    // Every part that can be built is tried, so that every problem is reported at once; a
    // part that needs one that failed is skipped.
    let mut problems = Vec::new();
    let trust = part(build_trust(config, &metrics), &mut problems);
    // The listener's own files do not depend on the trust material (only its client verifier
    // does): they are checked even when that failed.
    let trusted = trust.clone().flatten();
    let tls = part(build_tls(config, trusted.as_ref(), &metrics), &mut problems);
    let flows = trust
        .clone()
        .and_then(|trust| part(build_flows(config, registry, trust), &mut problems));
    let upstream = Upstream::new(
        config.google.timeout,
        config.google.max_connections,
        metrics.clone(),
    );
    let upstream = part(upstream.map_err(startup), &mut problems);
    let trace_project = build_trace_project(config);
    let mut warnings = Vec::new();
    let signer = upstream.as_ref().and_then(|upstream| {
        let signer = build_signer(config, upstream, &trace_project, &background, &mut warnings);
        part(signer, &mut problems)
    });
    for w in &warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
    let issuer = signer.map(|signer| build_issuer(config, signer, &metrics));
    let policy = part(
        build_policy(config, registry, &background, &metrics),
        &mut problems,
    );
    let (Some(trust), Some(tls), Some(flows), Some(upstream), Some(issuer), Some(policy)) =
        (trust, tls, flows, upstream, issuer, policy)
    else {
        return Err(problems);
    };
    if let (None, Some(trust)) = (&tls, &trust) {
        // With TLS here, the TLS reload re-reads the trust material with its own files.
        trust.watch(&background);
    }
    if let Some(trust) = &trust {
        trust.watch_expiry(&background, crate::clock::Clock::system());
        // CRLs from TLS_CLIENT_CRL_URLS and distribution points, refreshed before nextUpdate.
        trust.watch_crl_urls(&background);
    }
    let revocation = trust
        .as_ref()
        .map(|t| t.revocation_report())
        .unwrap_or_default();
    let access = build_access(config, &upstream, &metrics);
    let limits = build_limits(config, &background, &metrics);
    let aws = crate::aws::AwsExchange::new(config.aws.clone(), upstream.clone());
    let grant = ClientCredentials::new(flows, policy, issuer, access)
        .with_limits(limits.clone())
        .with_aws(aws)
        .with_azure(crate::azure::AzureExchange::new(
            config.azure.clone(),
            upstream.clone(),
        ));
    let (state, draining) = build_state(
        config,
        grant,
        limits,
        metrics.clone(),
        trace_project,
        tls.as_ref(),
        trust,
    );
    let admin = build_admin(config, &state);
    Ok(App {
        router: build_router(state),
        tls,
        admin,
        draining,
        server: config.server.clone(),
        warnings,
        revocation,
        background,
        metrics,
    })
}

/// The part `built`, or `None` with its problems added to `problems`.
fn part<T>(built: Result<T, Vec<StartupError>>, problems: &mut Vec<StartupError>) -> Option<T> {
    built.map_err(|found| problems.extend(found)).ok()
}

/// The built application: its routes, its listeners' settings and what it owns while it runs.
/// Serve it with [`serve`] or [`serve_until`].
pub struct App {
    /// The routes (for router-level tests; serving goes through [`serve_until`]).
    pub router: Router,
    /// Warnings found while loading the files (logged by `build`, printed by `check-config`).
    pub warnings: Vec<String>,
    /// The revocation sources and the CRLs in force at build, one line each (`check-config`).
    pub revocation: Vec<String>,
    /// The TLS server configuration, when `TLS_CERT_FILE` is set.
    pub(crate) tls: Option<Arc<TlsServer>>,
    /// The admin listener's address and routes, when `ADMIN_PORT` is set.
    pub(crate) admin: Option<(SocketAddr, Router)>,
    /// Set when shutdown begins, so `/readyz` turns 503.
    pub(crate) draining: Arc<AtomicBool>,
    /// Connection limits and shutdown timing.
    pub(crate) server: ServerSettings,
    /// The file watchers and housekeeping tasks, stopped when serving ends.
    pub(crate) background: Arc<Background>,
    /// This application's metrics (what `/metrics` renders).
    pub(crate) metrics: Arc<Metrics>,
}

/// One part's startup problem as the list [`build`] collects.
fn startup(e: StartupError) -> Vec<StartupError> {
    vec![e]
}

/// The client CA bundle and CRLs, when configured.
fn build_trust(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<Trust>>, Vec<StartupError>> {
    let Some(settings) = &config.trust else {
        return Ok(None);
    };
    let ocsp = crate::x509::ocsp::Ocsp::new(&config.ocsp, metrics.clone()).map_err(|e| vec![e])?;
    let trust = Trust::load(settings.clone(), metrics.clone())
        .map_err(|e| vec![e.into()])?
        .with_ocsp(ocsp);
    tracing::info!(
        event = "client_ca_loaded",
        "client trust material: {}",
        trust.current().summary
    );
    Ok(Some(Arc::new(trust)))
}

/// The TLS listener's material, when TLS ends here.
fn build_tls(
    config: &Config,
    trust: Option<&Arc<Trust>>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<TlsServer>>, Vec<StartupError>> {
    let Some(settings) = &config.tls else {
        return Ok(None);
    };
    let tls =
        TlsServer::load(settings.clone(), trust.cloned(), metrics.clone()).map_err(|e| vec![e])?;
    Ok(Some(Arc::new(tls)))
}

/// The enabled flows, in `AUTH_FLOWS` order.
fn build_flows(
    config: &Config,
    registry: &FlowRegistry,
    trust: Option<Arc<Trust>>,
) -> Result<Vec<crate::flows::EnabledFlow>, Vec<StartupError>> {
    let mut flow_settings = config.flow_settings.clone();
    flow_settings.trust = trust;
    registry
        .build(&config.flows, &flow_settings)
        .map_err(startup)
}

/// The Google Cloud project for trace IDs in logs: `GOOGLE_CLOUD_PROJECT` now, or the
/// metadata server's answer later (see [`iam_signer`]).
fn build_trace_project(config: &Config) -> Arc<OnceLock<String>> {
    let trace_project = Arc::new(OnceLock::new());
    if let Some(project) = &config.trace_project {
        let _ = trace_project.set(project.clone());
    }
    trace_project
}

/// The ID token issuer over `signer`, whose key is published in `metrics`.
fn build_issuer(config: &Config, signer: Arc<dyn Signer>, metrics: &Metrics) -> IdTokenIssuer {
    let kid = signer.key_id();
    metrics.signing_key(
        kid.as_deref().unwrap_or("google-managed"),
        signer.algorithm(),
    );
    tracing::info!(
        event = "signer_ready",
        algorithm = signer.algorithm(),
        kid = kid.as_deref().unwrap_or(""),
        "signing ID tokens with {} key {}",
        signer.algorithm(),
        kid.as_deref().unwrap_or("managed by Google")
    );
    IdTokenIssuer::new(
        IssuerSettings {
            audience: config.audience.clone(),
            validity_seconds: config.validity_seconds,
            jwks_uri: config.jwks_uri.clone(),
            min_lifetime_seconds: config.min_lifetime_seconds,
            certificate_bound: config.certificate_bound,
        },
        signer,
        Clock::system(),
    )
    .with_audiences(config.audiences.clone())
    .with_jwks_max_age(config.jwks_max_age)
}

/// The Google access-token backend, when a workload identity pool is configured.
fn build_access(
    config: &Config,
    upstream: &Upstream,
    metrics: &Arc<Metrics>,
) -> Option<Arc<dyn AccessTokenBackend>> {
    let pool = config.pool.as_ref()?;
    let endpoints = &config.google.endpoints;
    let backend = GoogleAccess::new(
        GoogleAccessSettings {
            audience: format!("//{}", pool.resource()),
            lifetime_seconds: config.google.access_token_lifetime,
            cache: config.google.cache,
        },
        StsClient::new(endpoints.sts.clone(), upstream.clone()),
        IamCredentialsClient::new(endpoints.iam_credentials.clone(), upstream.clone()),
        metrics.clone(),
    );
    Some(Arc::new(backend))
}

/// The client policy: the rules of `POLICY_FILE` (watched for changes), or the certificate's
/// facts alone.
fn build_policy(
    config: &Config,
    registry: &FlowRegistry,
    background: &Background,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn ClientPolicy>, Vec<StartupError>> {
    let Some(settings) = &config.policy else {
        return Ok(Arc::new(CertificateFactsPolicy));
    };
    let policy = RulesPolicy::load(&settings.file, &registry.names(), metrics.clone())
        .map_err(|e| vec![e])?;
    let policy = Arc::new(policy);
    tracing::info!(
        event = "policy_loaded",
        "client policy {}: {}",
        settings.file.display(),
        policy.current().summary()
    );
    policy.watch(settings.reload_interval, background);
    Ok(policy)
}

/// The rate, concurrency and time limits, with their housekeeping.
fn build_limits(config: &Config, background: &Background, metrics: &Arc<Metrics>) -> Arc<Limits> {
    let limits = Arc::new(Limits::new(config.limits.clone(), metrics.clone()));
    limits.start_housekeeping(background);
    limits
}

/// The handlers' state, built once, and the flag that turns `/readyz` 503 at shutdown.
fn build_state(
    config: &Config,
    grant: ClientCredentials,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    trace_project: Arc<OnceLock<String>>,
    tls: Option<&Arc<TlsServer>>,
    trust_for_readiness: Option<Arc<Trust>>,
) -> (Arc<AppState>, Arc<AtomicBool>) {
    let mut readiness_checks: Vec<crate::http::ReadinessCheck> = Vec::new();
    if let Some(tls) = tls {
        let tls = tls.clone();
        let clock = Clock::system();
        readiness_checks.push(Box::new(move || tls.readiness(clock.now())));
    }
    let mut readiness_details: Vec<crate::http::ReadinessDetail> = Vec::new();
    if let Some(trust) = trust_for_readiness {
        // An expired CRL is named in /readyz but leaves it 200: every replica shares the file,
        // so a 503 would take them all out of rotation at once.
        let clock = Clock::system();
        readiness_details.push(Box::new(move || trust.readiness_details(clock.now())));
    }
    let state = AppState::new(StateParts {
        grant,
        issuer: config.issuer.clone(),
        trace_project,
        limits,
        metrics,
        upstream_timeout: config.google.timeout,
        metrics_here: config.admin.is_none(),
        readiness_checks,
        readiness_details,
    });
    let draining = state.draining();
    (Arc::new(state), draining)
}

/// The admin listener's address and routes, when `ADMIN_PORT` is set.
fn build_admin(config: &Config, state: &Arc<AppState>) -> Option<(SocketAddr, Router)> {
    config
        .admin
        .map(|address| (address, admin_router(state.clone())))
}

/// The service's routes.
fn build_router(state: Arc<AppState>) -> Router {
    router(state)
}

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
        } => std::fs::read(path).is_ok_and(|pem| crate::signer::local::any_key_is_rsa(&pem)),
        // The development key: generated as RSA-2048 unless DATA_DIR holds another one.
        SignerConfig::Local {
            key_file: None,
            data_dir,
        } => std::fs::read(data_dir.join(crate::signer::local::GENERATED_KEY_FILE))
            .map_or(true, |pem| crate::signer::local::any_key_is_rsa(&pem)),
    };
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    workers_for(
        rsa,
        crate::config::source::tokio_worker_threads_set(),
        cores,
    )
}

fn workers_for(rsa: bool, overridden: bool, cores: usize) -> Option<usize> {
    (rsa && !overridden).then(|| (cores / 2).max(1))
}

/// Binds the configured address.
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

mod signers;
use signers::build_signer;
pub(crate) use signers::key_rules;

#[cfg(test)]
mod tests;
