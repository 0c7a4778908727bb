//! The only code that reads the process environment and configuration files. Both become a
//! plain map of setting name to text, so tests can pass a map instead.

use std::collections::BTreeMap;
use std::path::Path;

use super::Setting;
use crate::error::StartupError;

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The process environment.
    Env,
    /// The `--config` file.
    File,
    /// A default of the command (e.g. `demo`).
    Command,
}

/// Setting values by name, with their origin.
pub type Values = BTreeMap<String, (String, Origin)>;

/// The settings of `table` present in the process environment, and the variables that look
/// like ours but are not in it ([`super::looks_like_ours`]), so that loading can warn about
/// them. Nothing else is read.
#[expect(
    clippy::disallowed_methods,
    reason = "source.rs is the one reader of the environment"
)]
pub fn process_env(table: &[Setting]) -> Values {
    let mut values: Values = table
        .iter()
        .filter_map(|s| {
            std::env::var(s.name)
                .ok()
                .map(|v| (s.name.to_owned(), (v, Origin::Env)))
        })
        .collect();
    for (name, value) in std::env::vars_os() {
        if let (Some(name), Some(value)) = (name.to_str(), value.to_str())
            && !values.contains_key(name)
            && super::looks_like_ours(name)
        {
            values.insert(name.to_owned(), (value.to_owned(), Origin::Env));
        }
    }
    values
}

/// Reads a TOML file of settings. Keys are the environment names, in any case; values are
/// strings, numbers, booleans or arrays of strings (joined with commas). Keys not in `known`
/// are errors.
pub fn read_file(path: &Path, known: &[Setting]) -> Result<Values, Vec<StartupError>> {
    read_toml(path, known).map_err(|errors| errors.into_iter().map(StartupError::other).collect())
}

/// The messages are the whole contract: each names `--config` and the file already.
fn read_toml(path: &Path, known: &[Setting]) -> Result<Values, Vec<String>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("--config: cannot read '{shown}': {e}")])?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| vec![syntax_error(&shown.to_string(), &text, &e)])?;
    let mut values = Values::new();
    let mut errors = Vec::new();
    for (key, value) in table {
        let name = key.to_ascii_uppercase();
        if !known.iter().any(|s| s.name == name) {
            errors.push(format!(
                "--config '{shown}': unknown setting '{key}'; `token-service --help` lists the settings"
            ));
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => {
                let parts: Option<Vec<String>> = items
                    .into_iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect();
                match parts {
                    Some(p) => p.join(","),
                    None => {
                        errors.push(format!(
                            "--config '{shown}': {key} must be a list of strings"
                        ));
                        continue;
                    }
                }
            }
            _ => {
                errors.push(format!(
                    "--config '{shown}': {key} must be a string, number, boolean or list of strings"
                ));
                continue;
            }
        };
        values.insert(name, (text, Origin::File));
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// A TOML syntax error as one line: the position and what the parser expected, never the
/// offending line itself (toml's own rendering quotes it, and it may hold `MTLS_LB_SECRET`).
fn syntax_error(shown: &str, text: &str, e: &toml::de::Error) -> String {
    let what = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("--config '{shown}': TOML syntax error at line {line}, column {column}: {what}")
        }
        None => format!("--config '{shown}': TOML syntax error: {what}"),
    }
}

/// Whether `TOKIO_WORKER_THREADS` is set: tokio's own variable, which always wins over the
/// service's choice of async workers, so the service only asks whether it is there.
#[expect(
    clippy::disallowed_methods,
    reason = "source.rs is the one reader of the environment"
)]
pub fn tokio_worker_threads_set() -> bool {
    std::env::var_os("TOKIO_WORKER_THREADS").is_some()
}
