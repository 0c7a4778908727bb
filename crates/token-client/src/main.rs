//! `token-client`: see the library's documentation and `token-client --help`.

use std::process::ExitCode;

use clap::Parser as _;
use token_client::settings::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("token-client could not start its runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(token_client::run(cli))
}

/// clap's message and exit code.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}
