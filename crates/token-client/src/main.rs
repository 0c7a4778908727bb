//! `token-client`: see the library's documentation and `token-client --help`.

use clap::Parser as _;

fn main() {
    let cli = token_client::settings::Cli::parse();
    eprintln!("token-client: {:?} is not implemented yet", cli.command);
}
