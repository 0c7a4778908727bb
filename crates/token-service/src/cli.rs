//! Command line: `serve`, `demo` and `check-config`. Settings come from the environment and an
//! optional `--config` TOML file; `--help` lists every setting.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::config::source::{self, Origin, Values};
use crate::config::{self, Config, KnownFlows, SETTINGS};
use crate::flows::FlowRegistry;

/// Token Service: verified client certificate in, signed OIDC ID token out.
#[derive(Debug, Parser)]
#[command(name = "token-service", version, about)]
pub struct Cli {
    /// TOML file with settings (same names as the environment variables; the environment wins).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve,
    /// Run the service with development defaults: issuer http://127.0.0.1:PORT, audience
    /// `token-service-demo`, a generated signing key. Any setting can still be overridden.
    Demo,
    /// Validate the configuration and print the effective settings (secrets redacted).
    CheckConfig,
}

fn settings_help() -> String {
    let mut text = String::from(
        "Settings (environment variables; also accepted as keys of the --config file):\n",
    );
    for s in SETTINGS {
        let default = if s.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", s.default)
        };
        text.push_str(&format!("  {:<42} {}{default}\n", s.name, s.help));
    }
    text
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let command = Cli::command().after_help(settings_help());
    let matches = command.get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let registry = FlowRegistry::builtin();
    let config = match load(&cli, &registry) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    if let Command::CheckConfig = cli.command {
        print!("{}", config.describe());
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    crate::telemetry::init(config.log_format, &config.log_level);
    for w in &config.warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let router = crate::app::build(&config, &registry)
            .map_err(|errors| anyhow::anyhow!(errors.join("; ")))?;
        let listener = crate::app::bind(&config).await?;
        crate::app::serve(listener, router).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(event = "startup_failed", "{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(cli: &Cli, registry: &FlowRegistry) -> Result<Config, Vec<String>> {
    let mut values: Values = match &cli.config {
        Some(path) => source::read_file(path)?,
        None => Values::new(),
    };
    values.extend(source::process_env());
    if let Command::Demo = cli.command {
        demo_defaults(&mut values);
    }
    config::load(values, KnownFlows(&registry.names()))
}

fn demo_defaults(values: &mut Values) {
    let port = values
        .get("PORT")
        .map(|(v, _)| v.trim().to_owned())
        .unwrap_or_else(|| "8080".into());
    let mut default = |name: &str, value: String| {
        values
            .entry(name.to_owned())
            .or_insert((value, Origin::Command));
    };
    default("TOKEN_ISSUER", format!("http://127.0.0.1:{port}"));
    default("TOKEN_AUDIENCE", "token-service-demo".into());
    default("LOG_FORMAT", "text".into());
}
