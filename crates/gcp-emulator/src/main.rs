//! `gcp-emulator`: parse flags, start the emulator, print the listening line
//! and serve until SIGTERM or Ctrl-C.

use std::io::Write;

use clap::Parser;
use gcp_emulator::{Cli, Emulator};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let emulator = Emulator::start(cli.config(), cli.addr()).await?;
    if let (Some(path), Some(pem)) = (&cli.https_ca_out, emulator.ca_pem()) {
        std::fs::write(path, pem).map_err(|e| {
            anyhow::anyhow!("cannot write the CA certificate to {}: {e}", path.display())
        })?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "gcp-emulator listening on {}", emulator.base_url())?;
    stdout.flush()?;
    wait_for_signal().await?;
    emulator.shutdown();
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
