//! `token-client`: see the library's documentation and `token-client --help`.

use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind;
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

/// clap's message; for `executable` (run by a Google library, which reads only stdout and
/// exit code 0 reliably) the executable failure JSON on stdout instead, and for
/// `credential-process` its first line alone.
fn usage_error(e: &clap::Error) -> ExitCode {
    let help = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    let executable = std::env::args_os().skip(1).any(|a| a == "executable");
    let rendered = e.render().to_string();
    let first_line = rendered
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ");
    if executable && !help {
        token_client::executable::print_failure("invalid_arguments", first_line);
        return ExitCode::SUCCESS;
    }
    // An AWS SDK shows a credential_process's stderr: one line.
    let credential_process = std::env::args_os()
        .skip(1)
        .any(|a| a == "credential-process");
    if credential_process && !help {
        eprintln!("token-client credential-process: {first_line}");
        return ExitCode::from(2);
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}
