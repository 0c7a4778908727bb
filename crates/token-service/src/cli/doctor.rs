//! `doctor`: checks the service's public face against what Google Cloud, AWS and Microsoft
//! Entra demand of a federated issuer. It fetches the discovery document and the JWK Set
//! from the issuer (`TOKEN_ISSUER` of the settings, or `--issuer`) as the clouds do, gets a
//! sample token (from `/token` over mutual TLS with `--cert`/`--key`, or from `--token`),
//! and prints one row per rule and cloud ([`rules`] lists the limits and their sources); the
//! service's own settings add where client revocation comes from and whether the signing keys
//! keep the rotation rules ([`local`]).
//! Exit status: 0 when no rule fails, 1 when one does, 2 when the doctor cannot run.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::clock::Clock;
use crate::config::reader::Reader;
use crate::config::source::Values;

mod fetch;
mod issuer;
mod jwt;
mod local;
mod rotation;
mod rules;
mod token;

#[cfg(test)]
mod tests;

use rules::{Cloud, Finding, Status};

/// `doctor`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The issuer URL as registered with the clouds (default: TOKEN_ISSUER of the settings).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// Client certificate (PEM) to request a sample token from /token over mutual TLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) trusted besides the system's roots for the service's TLS, e.g.
    /// the demo's ca.pem. The clouds trust only public CAs.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A sample token (compact JWT) in a file, instead of requesting one.
    #[arg(long, value_name = "FILE", conflicts_with = "cert")]
    pub token: Option<PathBuf>,
    /// Only this cloud's rules (repeatable; default: all three).
    #[arg(long, value_enum, value_name = "CLOUD")]
    pub cloud: Vec<Cloud>,
    /// Print the findings as a JSON array of {rule, cloud, status, detail, fix}.
    #[arg(long)]
    pub json: bool,
}

/// Why the doctor could not run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// No issuer to check.
    #[error("no issuer to check: set TOKEN_ISSUER (environment or --config) or pass --issuer URL")]
    NoIssuer,
    /// The settings are not valid.
    #[error("the settings are not valid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Settings(Vec<crate::error::StartupError>),
    /// A file could not be read.
    #[error("cannot read the {what} '{}': {source}; pass a readable file", path.display())]
    Read {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file is not PEM.
    #[error("the CA file '{}' is not PEM certificates: {source}; pass the CA certificate in PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: reqwest::Error,
    },
    /// The CA file holds no certificate.
    #[error("the CA file '{}' holds no certificate; pass the CA certificate in PEM", .0.display())]
    NoCertificate(PathBuf),
    /// Certificate and key do not make a client identity.
    #[error("'{}' and '{}' are not a PEM client certificate and its private key: {source}; pass the files `pki client` wrote", cert.display(), key.display())]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: reqwest::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs `doctor` with the settings `values`.
pub fn run(args: &DoctorArgs, values: &Values) -> ExitCode {
    match diagnose(args, values, Clock::system()) {
        Ok(findings) => {
            if args.json {
                println!("{}", serde_json::Value::from(to_json(&findings)));
            } else {
                print!("{}", table(&findings));
            }
            if findings.iter().any(|f| f.status == Status::Fail) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(DoctorError::Settings(errors)) => {
            // One line per problem, as `check-config` prints them.
            for e in errors {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The issuer: `--issuer`, else `TOKEN_ISSUER`.
fn issuer(args: &DoctorArgs, values: &Values) -> Result<String, DoctorError> {
    if let Some(issuer) = &args.issuer {
        return Ok(issuer.clone());
    }
    let mut reader = Reader::new(values);
    let issuer = reader.url(&crate::issuer::settings::ISSUER);
    let (errors, _, _) = reader.finish();
    if !errors.is_empty() {
        return Err(DoctorError::Settings(errors));
    }
    issuer.ok_or(DoctorError::NoIssuer)
}

fn diagnose(args: &DoctorArgs, values: &Values, clock: Clock) -> Result<Vec<Finding>, DoctorError> {
    let issuer = issuer(args, values)?;
    let access = fetch::Access {
        ca: args.ca.as_deref(),
        identity: args.cert.as_deref().zip(args.key.as_deref()),
        token_file: args.token.as_deref(),
    };
    let observed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DoctorError::Runtime)?
        .block_on(fetch::observe(&issuer, &access))?;
    let mut report = rules::Report(rules::evaluate(&observed, clock.now()));
    local::check(&mut report, values, clock.now());
    Ok(select(report.0, &args.cloud))
}

/// The findings about `clouds` (and those about all clouds); every finding when empty.
fn select(findings: Vec<Finding>, clouds: &[Cloud]) -> Vec<Finding> {
    findings
        .into_iter()
        .filter(|f| clouds.is_empty() || f.cloud == Cloud::All || clouds.contains(&f.cloud))
        .collect()
}

fn to_json(findings: &[Finding]) -> Vec<serde_json::Value> {
    findings
        .iter()
        .map(|f| serde_json::to_value(f).unwrap_or_default())
        .collect()
}

fn status_text(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
        Status::Warn => "warn",
        Status::Skip => "skip",
    }
}

/// The findings as a table: rule, cloud, status, what was seen and, unless it passed, how to
/// fix it; then a summary line.
pub fn table(findings: &[Finding]) -> String {
    let width = findings
        .iter()
        .map(|f| f.rule.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut text = format!(
        "{:<width$}  {:<6}  {:<6}  DETAIL / HOW TO FIX\n",
        "RULE", "CLOUD", "STATUS"
    );
    for f in findings {
        let mut line = format!(
            "{:<width$}  {:<6}  {:<6}  {}",
            f.rule,
            f.cloud.name(),
            status_text(f.status),
            f.detail
        );
        if !f.fix.is_empty() {
            line.push_str(" -> fix: ");
            line.push_str(&f.fix);
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    text.push_str(&format!(
        "{} failed, {} warnings, {} passed, {} skipped\n",
        count(Status::Fail),
        count(Status::Warn),
        count(Status::Pass),
        count(Status::Skip)
    ));
    text
}
