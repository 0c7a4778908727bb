//! token-client: the device side of Token Service. It authenticates to the broker with the
//! device's certificate (mTLS) and offers the broker's tokens in the forms Google's client
//! libraries accept.
//!
//! - [`settings`]: the command line; every setting is a flag and an environment variable.
//! - [`broker`]: [`broker::Broker`], the `/token` client that follows certificate rotation.
//! - [`files`]: atomic writes of token and cache files.
//! - [`executable`], [`google_config`], [`token`], [`aws`] (`credential-process`): the
//!   subcommands.

pub mod aws;
pub mod broker;
pub mod executable;
pub mod files;
pub mod google_config;
pub mod serve;
pub mod settings;
pub mod token;

use std::process::ExitCode;

use settings::{Cli, Command};

/// Runs a parsed command line; returns the process's exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Token(args) => token::run(&cli.broker, &args).await,
        Command::Executable(args) => executable::run(&cli.broker, &args).await,
        Command::GoogleConfig(args) => google_config::run(&cli.broker, &args),
        Command::Serve(args) => serve::run(&cli.broker, &args).await,
        Command::CredentialProcess(args) => aws::run(&cli.broker, &args).await,
    }
}
