//! `token-client google-config`: writes the `external_account` credential configuration
//! (AIP-4117) that makes Google's libraries use the broker's ID token through one of three
//! sources, and prints the environment to set (`export` lines, for `eval`).
//!
//! - executable: the library runs this binary (absolute path) with its broker settings as
//!   flags; no shell, and Java splits the command on single spaces, so no argument may
//!   contain whitespace or quotes;
//! - file: the library reads the token file that `token-client serve --token-file` keeps
//!   fresh (the bare ID token, `format.type` `text`);
//! - url: the library GETs `http://ADDRESS/token` of `token-client serve` and reads the
//!   `id_token` field of its JSON.
//!
//! With a service account the configuration carries the impersonation URL; the library then
//! impersonates it itself (the broker's `service_accounts` rules do not apply there).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::executable::ID_TOKEN_TYPE;
use crate::files::{WriteError, write_atomic};
use crate::settings::{BrokerArgs, GoogleConfigArgs, SettingsError, Source, absolute};

/// Why no configuration was written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(
        "The audience '{0}' is not a workload identity pool provider: give //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER"
    )]
    Audience(String),
    #[error(
        "The {what} '{value}' contains whitespace or a quote, which Google's libraries cannot pass to a command (Java splits it on spaces); use a path or value without them"
    )]
    Unquotable { what: &'static str, value: String },
    #[error("The {source_name} source needs {flag} (or {env})")]
    Needs {
        source_name: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error(
        "--executable-timeout-millis {millis} leaves no time for a broker request of up to --timeout {seconds} s; raise the first or lower the second"
    )]
    Timeouts { millis: u64, seconds: u64 },
    #[error("The path of this program could not be found ({0}); run it by its absolute path")]
    CurrentExe(String),
    #[error("The credential configuration {0}")]
    Write(#[from] WriteError),
}

/// Runs `google-config`: exit 0 with the `export` lines on stdout, or 2 with the reason.
pub fn run(args: &BrokerArgs, config: &GoogleConfigArgs) -> ExitCode {
    match write(args, config) {
        Ok((path, lines)) => {
            eprintln!(
                "token-client: wrote {}; set this environment for the application:",
                path.display()
            );
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("token-client: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes the configuration; returns its absolute path and the `export` lines.
pub fn write(
    args: &BrokerArgs,
    config: &GoogleConfigArgs,
) -> Result<(PathBuf, Vec<String>), ConfigError> {
    let document = configuration(args, config)?;
    let path = absolute(&config.config_file, "--config-file")?;
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    write_atomic(&path, text.as_bytes(), 0o644)?;
    let mut lines = vec![format!(
        "export GOOGLE_APPLICATION_CREDENTIALS={}",
        shell_quote(&path.display().to_string())
    )];
    if config.source == Source::Executable {
        lines.push("export GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1".into());
    }
    Ok((path, lines))
}

/// The credential configuration document.
pub fn configuration(args: &BrokerArgs, config: &GoogleConfigArgs) -> Result<Value, ConfigError> {
    let mut document = Map::new();
    document.insert("type".into(), "external_account".into());
    document.insert("audience".into(), audience(&config.audience)?.into());
    document.insert("subject_token_type".into(), ID_TOKEN_TYPE.into());
    document.insert("token_url".into(), config.sts_url.trim().into());
    if let Some(account) = args.service_account() {
        let base = config.iam_credentials_endpoint.trim().trim_end_matches('/');
        document.insert(
            "service_account_impersonation_url".into(),
            format!("{base}/v1/projects/-/serviceAccounts/{account}:generateAccessToken").into(),
        );
    }
    let source = match config.source {
        Source::Executable => executable_source(args, config)?,
        Source::File => file_source(config)?,
        Source::Url => url_source(config),
    };
    document.insert("credential_source".into(), source);
    Ok(Value::Object(document))
}

/// The pool provider's `//iam.googleapis.com/…` name (an `https://` form is accepted).
fn audience(given: &str) -> Result<String, ConfigError> {
    let given = given.trim();
    let name = given
        .strip_prefix("https:")
        .unwrap_or(given)
        .trim_end_matches('/');
    let Some(rest) = name.strip_prefix("//iam.googleapis.com/projects/") else {
        return Err(ConfigError::Audience(given.to_owned()));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let shaped = matches!(
        parts.as_slice(),
        [number, "locations", "global", "workloadIdentityPools", pool, "providers", provider]
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
                && !pool.is_empty() && !provider.is_empty()
    );
    if shaped {
        Ok(name.to_owned())
    } else {
        Err(ConfigError::Audience(given.to_owned()))
    }
}

fn executable_source(args: &BrokerArgs, config: &GoogleConfigArgs) -> Result<Value, ConfigError> {
    let settings = args.resolve()?;
    if config.executable_timeout_millis <= settings.timeout.as_secs() * 1000 {
        return Err(ConfigError::Timeouts {
            millis: config.executable_timeout_millis,
            seconds: settings.timeout.as_secs(),
        });
    }
    let program = std::env::current_exe().map_err(|e| ConfigError::CurrentExe(e.to_string()))?;
    let mut words = vec![
        word("program path", &program.display().to_string())?,
        "--broker".into(),
        word("broker URL", &settings.broker)?,
        "--cert".into(),
        path_word("--cert", &settings.cert)?,
        "--key".into(),
        path_word("--key", &settings.key)?,
    ];
    if let Some(ca) = &settings.ca {
        words.extend(["--ca".into(), path_word("--ca", ca)?]);
    }
    words.extend([
        "--timeout".into(),
        settings.timeout.as_secs().to_string(),
        "executable".into(),
    ]);
    let mut executable = json!({
        "command": words.join(" "),
        "timeout_millis": config.executable_timeout_millis,
    });
    if let Some(output) = &config.executable_output_file {
        executable["output_file"] = path_word("--executable-output-file", output)?.into();
    }
    Ok(json!({ "executable": executable }))
}

fn file_source(config: &GoogleConfigArgs) -> Result<Value, ConfigError> {
    let (file, others) = config.token_files.split_first().ok_or(ConfigError::Needs {
        source_name: "file",
        flag: "--token-file",
        env: "TOKEN_CLIENT_TOKEN_FILE",
    })?;
    let file = absolute(file, "--token-file")?;
    if !others.is_empty() {
        eprintln!(
            "token-client: {} token files are set; the configuration reads the first, {}",
            others.len() + 1,
            file.display()
        );
    }
    Ok(json!({ "file": file.display().to_string(), "format": {"type": "text"} }))
}

fn url_source(config: &GoogleConfigArgs) -> Value {
    let address = config.listen.trim().trim_start_matches("http://");
    let address = address.trim_end_matches('/');
    json!({
        "url": format!("http://{address}/token"),
        "format": {"type": "json", "subject_token_field_name": "id_token"},
    })
}

/// One word of the command: no whitespace, no quotes, no backslash (shlex would read them).
fn word(what: &'static str, value: &str) -> Result<String, ConfigError> {
    let unsafe_char = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\');
    if value.is_empty() || value.chars().any(unsafe_char) {
        return Err(ConfigError::Unquotable {
            what,
            value: value.to_owned(),
        });
    }
    Ok(value.to_owned())
}

/// An absolute path as one word of the command (symlinks kept, so rotation is seen).
fn path_word(setting: &'static str, path: &Path) -> Result<String, ConfigError> {
    word(setting, &absolute(path, setting)?.display().to_string())
}

/// `value` in single quotes for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_pool_provider_names() {
        let good =
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/r";
        assert_eq!(audience(good).unwrap(), good);
        assert_eq!(audience(&format!("https:{good}")).unwrap(), good);
        for bad in [
            "https://example.com",
            "//iam.googleapis.com/projects/x/locations/global/workloadIdentityPools/p/providers/r",
            "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p",
        ] {
            assert!(audience(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_words_refuse_spaces_and_quotes() {
        assert!(word("x", "/a/b").is_ok());
        for bad in ["/a b", "/a\"b", "/a'b", "", "/a\\b"] {
            assert!(word("x", bad).is_err(), "{bad}");
        }
        assert_eq!(shell_quote("/a'b"), r"'/a'\''b'");
    }
}
