//! `token-service`: see `lib.rs` for the architecture map.

fn main() -> std::process::ExitCode {
    token_service::cli::main_with(token_service::flows::FlowRegistry::builtin())
}
