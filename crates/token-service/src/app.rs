//! Composition root: the only place that names concrete flows, signers and policies. Builds the
//! application state from a validated configuration, binds the listener and serves until
//! SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::{Config, SignerConfig};
use crate::flows::FlowRegistry;
use crate::grant::ClientCredentials;
use crate::http::{AppState, router};
use crate::issuer::{IdTokenIssuer, IssuerSettings};
use crate::policy::CertificateFactsPolicy;
use crate::signer::Signer;
use crate::signer::local::LocalSigner;

/// Builds the router from a validated configuration. Fails with one message per problem
/// (unreadable key file, flow that refuses its settings...).
pub fn build(config: &Config, registry: &FlowRegistry) -> Result<Router, Vec<String>> {
    let flows = registry
        .build(&config.flows, &config.flow_settings)
        .map_err(|e| vec![e])?;
    let signer = build_signer(&config.signer).map_err(|e| vec![e])?;
    tracing::info!(
        event = "signer_ready",
        algorithm = signer.algorithm(),
        kid = signer.key_id().unwrap_or(""),
        "signing ID tokens with {} key {}",
        signer.algorithm(),
        signer.key_id().unwrap_or("")
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
    let grant = ClientCredentials::new(flows, Arc::new(CertificateFactsPolicy), issuer, None);
    let state = AppState::new(grant, config.issuer.clone(), config.trace_project.clone());
    Ok(router(Arc::new(state)))
}

fn build_signer(config: &SignerConfig) -> Result<Arc<dyn Signer>, String> {
    match config {
        SignerConfig::Local {
            key_file: Some(path),
            ..
        } => Ok(Arc::new(LocalSigner::from_file(path, "SIGNING_KEY_FILE")?)),
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
    }
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::new(config.bind_address, config.port);
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (set PORT or BIND_ADDRESS)"))
}

/// Serves `router` on `listener` until SIGTERM or Ctrl-C.
pub async fn serve(listener: TcpListener, router: Router) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(event = "listening", address = %address, "listening on http://{address}");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("the server stopped")?;
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
