//! `token-client executable`: the command of an executable-sourced credential configuration
//! (AIP-4117), following what Google's Python, Go, Node and Java libraries accept:
//!
//! - only the response JSON on stdout, nothing ever on stderr (Python, Node and Java merge
//!   stderr into stdout before parsing);
//! - exit 0 also on failure, with `{"version":1,"success":false,"code","message"}` (Go and
//!   Java discard the output of a non-zero exit); `code` is a string;
//! - on success `token_type` `urn:ietf:params:oauth:token-type:id_token` and an integer
//!   `expiration_time` always (required whenever `output_file` is configured);
//! - `GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE`: a cached success that is still valid is printed
//!   again without asking the broker; a new success is written there atomically, mode 0600.
//!   Failures are not cached.
//!
//! `GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE` is not read: it is the pool's `//iam.googleapis.com/…`
//! name, which the token's `https://iam.googleapis.com/…` audience never equals. Scope and
//! service account settings are not sent: the library does the STS exchange and the
//! impersonation itself.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::broker::{Broker, Query, unix_now};
use crate::files::write_atomic;
use crate::settings::{BrokerArgs, ExecutableArgs};

/// The token type of the response.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// A cached response is reused only with at least this many seconds left, so that the
/// library's STS exchange still gets a valid token.
pub const REUSE_MARGIN_SECONDS: u64 = 30;

/// Runs `executable`: prints one response, always exits 0.
pub async fn run(args: &BrokerArgs, executable: &ExecutableArgs) -> ExitCode {
    let output_file = executable
        .output_file
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty());
    if let Some(cached) = output_file.and_then(cached_response) {
        println!("{cached}");
        return ExitCode::SUCCESS;
    }
    let settings = match args.resolve() {
        Ok(settings) => settings,
        Err(e) => {
            print_failure("invalid_configuration", &e.to_string());
            return ExitCode::SUCCESS;
        }
    };
    match Broker::new(settings).fetch(&Query::id_token()).await {
        Ok(tokens) => {
            let response = success(&tokens.id_token, tokens.id_token_expires_at);
            if let Some(path) = output_file {
                // The cache only saves broker requests: a token that could not be cached is
                // still a valid answer, and nothing may go to stderr.
                let _ = write_atomic(path, response.to_string().as_bytes(), 0o600);
            }
            println!("{response}");
        }
        Err(e) => print_failure(e.code(), &e.to_string()),
    }
    ExitCode::SUCCESS
}

/// The success response.
pub fn success(id_token: &str, expires_at: u64) -> Value {
    json!({
        "version": 1,
        "success": true,
        "token_type": ID_TOKEN_TYPE,
        "id_token": id_token,
        "expiration_time": expires_at,
    })
}

/// The failure response.
pub fn failure(code: &str, message: &str) -> Value {
    json!({"version": 1, "success": false, "code": code, "message": message})
}

/// Prints the failure response on stdout.
pub fn print_failure(code: &str, message: &str) {
    println!("{}", failure(code, message));
}

/// The cached response in `path` when it is a success of ours that is valid for at least
/// [`REUSE_MARGIN_SECONDS`] more; anything else (missing, unreadable, a failure, expired,
/// not ours) means asking the broker.
pub fn cached_response(path: &Path) -> Option<Value> {
    let bytes = std::fs::read(path).ok()?;
    let cached: Value = serde_json::from_slice(&bytes).ok()?;
    let valid = cached["version"] == 1
        && cached["success"] == true
        && cached["token_type"] == ID_TOKEN_TYPE
        && cached["id_token"].as_str().is_some_and(|t| !t.is_empty());
    let expires_at = cached["expiration_time"].as_u64()?;
    (valid && expires_at >= unix_now().saturating_add(REUSE_MARGIN_SECONDS)).then_some(cached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_successes_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let later = unix_now() + 300;
        assert!(cached_response(&path).is_none());
        for (body, reused) in [
            (success("t", later), true),
            (success("t", unix_now() + 5), false),
            (failure("x", "y"), false),
            (
                json!({"version": 1, "success": true, "id_token": "t"}),
                false,
            ),
        ] {
            std::fs::write(&path, body.to_string()).unwrap();
            assert_eq!(cached_response(&path).is_some(), reused, "{body}");
        }
        std::fs::write(&path, "{half").unwrap();
        assert!(cached_response(&path).is_none());
    }
}
