//! The only code that reads the process environment and configuration files. Both become a
//! plain map of setting name to text, so tests can pass a map instead.

use std::collections::BTreeMap;
use std::path::Path;

use super::SETTINGS;

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

/// The known settings present in the process environment.
pub fn process_env() -> Values {
    SETTINGS
        .iter()
        .filter_map(|s| {
            std::env::var(s.name)
                .ok()
                .map(|v| (s.name.to_owned(), (v, Origin::Env)))
        })
        .collect()
}

/// Reads a TOML file of settings. Keys are the environment names, in any case; values are
/// strings, numbers, booleans or arrays of strings (joined with commas). Unknown keys are errors.
pub fn read_file(path: &Path) -> Result<Values, Vec<String>> {
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
        if !SETTINGS.iter().any(|s| s.name == name) {
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
