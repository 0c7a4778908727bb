//! Command line and settings: every setting is a flag and an environment variable, and
//! `token-client --help` lists them all. The broker settings are global (they may come before
//! or after the subcommand) and are checked by [`BrokerArgs::resolve`], which names the
//! setting to fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default seconds one request to the broker may take.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// Default loopback address of `token-client serve` (metadata server and URL source).
pub const DEFAULT_SERVE_ADDRESS: &str = "127.0.0.1:8954";
/// Google's Security Token Service endpoint.
pub const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// Google's IAM Credentials API base URL.
pub const DEFAULT_IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";

/// The settings of the subcommands, for the top-level `--help` (each is a flag too; see
/// `token-client help SUBCOMMAND`).
const SUBCOMMAND_SETTINGS: &str = "\
Settings of the subcommands (flags too; `token-client help SUBCOMMAND`):
  token          TOKEN_CLIENT_OUTPUT, TOKEN_CLIENT_TOKEN_AUDIENCE
  executable     GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE (set by Google's libraries)
  google-config  TOKEN_CLIENT_SOURCE, TOKEN_CLIENT_CONFIG_FILE, TOKEN_CLIENT_AUDIENCE,
                 TOKEN_CLIENT_STS_URL, TOKEN_CLIENT_IAM_CREDENTIALS_ENDPOINT,
                 TOKEN_CLIENT_EXECUTABLE_TIMEOUT_MILLIS, TOKEN_CLIENT_EXECUTABLE_OUTPUT_FILE,
                 TOKEN_CLIENT_TOKEN_FILE, TOKEN_CLIENT_LISTEN (both shared with serve)
  serve          TOKEN_CLIENT_LISTEN, TOKEN_CLIENT_ALLOW_NON_LOOPBACK, TOKEN_CLIENT_TOKEN_FILE,
                 TOKEN_CLIENT_AUDIENCE_TOKEN_FILE, TOKEN_CLIENT_NO_METADATA,
                 TOKEN_CLIENT_PROJECT_ID, TOKEN_CLIENT_NUMERIC_PROJECT_ID,
                 TOKEN_CLIENT_AWS_AUTHORIZATION_TOKEN_FILE (and credential-process's three)
  credential-process
                 TOKEN_CLIENT_AWS_ROLE_ARN, TOKEN_CLIENT_AWS_ROLE_SESSION_NAME,
                 TOKEN_CLIENT_AWS_DURATION_SECONDS (all three shared with serve)";

/// Device-side client of Token Service: authenticates with the device's certificate (mTLS)
/// and hands the broker's tokens to Google's client libraries.
#[derive(Debug, Parser)]
#[command(name = "token-client", version, about, long_about = None, after_help = SUBCOMMAND_SETTINGS)]
pub struct Cli {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the broker and what to ask it for.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Token Service base URL (https), e.g. https://token.example.com; requests go to /token
    /// under it.
    #[arg(long, env = "TOKEN_CLIENT_BROKER", value_name = "URL", global = true)]
    pub broker: Option<String>,
    /// PEM file of the device's certificate (and the intermediates to send); re-read when it
    /// changes.
    #[arg(long, env = "TOKEN_CLIENT_CERT", value_name = "FILE", global = true)]
    pub cert: Option<PathBuf>,
    /// PEM file of the certificate's private key; re-read when it changes.
    #[arg(long, env = "TOKEN_CLIENT_KEY", value_name = "FILE", global = true)]
    pub key: Option<PathBuf>,
    /// PEM file of the CA certificates that issue the broker's server certificate; unset: the
    /// system's trusted roots.
    #[arg(long, env = "TOKEN_CLIENT_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// OAuth scopes of the access token to ask for (space-separated); unset: ID token only.
    #[arg(long, env = "TOKEN_CLIENT_SCOPE", value_name = "SCOPES", global = true)]
    pub scope: Option<String>,
    /// Service account to impersonate: asked of the broker with the scope (`token`), and the
    /// impersonation URL of `google-config`.
    #[arg(
        long,
        env = "TOKEN_CLIENT_SERVICE_ACCOUNT",
        value_name = "EMAIL",
        global = true
    )]
    pub service_account: Option<String>,
    /// Seconds one request to the broker may take (1 to 120).
    #[arg(
        long,
        env = "TOKEN_CLIENT_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = DEFAULT_TIMEOUT_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..=120),
        global = true
    )]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One request to the broker; prints the ID token, the access token or both as JSON.
    Token(TokenArgs),
    /// The command of an executable-sourced Google credential configuration: prints the
    /// executable response JSON on stdout (never anything on stderr), exit 0 even on failure.
    Executable(ExecutableArgs),
    /// Writes a Google external_account credential configuration for the executable, file
    /// or URL source and prints the environment to set.
    GoogleConfig(GoogleConfigArgs),
    /// The device's agent: metadata server, /token (URL source) and token files, kept fresh.
    Serve(crate::serve::ServeArgs),
    /// The command of an AWS config file's `credential_process`: prints the AWS credentials
    /// of --aws-role-arn (the broker's AssumeRoleWithWebIdentity) as credential_process JSON;
    /// on failure exit non-zero with one line on stderr.
    CredentialProcess(crate::aws::CredentialProcessArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to print.
    #[arg(long, env = "TOKEN_CLIENT_OUTPUT", value_enum, default_value_t = Output::IdToken)]
    pub output: Output,
    /// The ID token's audience (`aud`), e.g. sts.amazonaws.com or api://AzureADTokenExchange;
    /// the broker must list it in TOKEN_AUDIENCES (and its policy allow it). Unset: the
    /// broker's default audience. Not with a scope. (Not TOKEN_CLIENT_AUDIENCE: that is
    /// google-config's pool provider.)
    #[arg(long, env = "TOKEN_CLIENT_TOKEN_AUDIENCE", value_name = "AUDIENCE")]
    pub audience: Option<String>,
}

impl TokenArgs {
    /// The audience, when one is set and not blank.
    pub fn audience(&self) -> Option<&str> {
        self.audience
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The ID token alone, one line.
    IdToken,
    /// The access token alone, one line (needs a scope).
    AccessToken,
    /// The tokens and their expiry (unix seconds) as one JSON object.
    Json,
}

#[derive(Debug, Args)]
pub struct ExecutableArgs {
    /// Cache file of the executable response (Google's libraries set it from the
    /// configuration's output_file): a valid one is reused, a new one written atomically, mode
    /// 0600.
    #[arg(long, env = "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", value_name = "FILE")]
    pub output_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// The library runs `token-client executable` (needs GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1).
    Executable,
    /// The library reads a token file that `token-client serve --token-file` keeps fresh.
    File,
    /// The library asks `token-client serve` at http://ADDRESS/token.
    Url,
}

#[derive(Debug, Args)]
pub struct GoogleConfigArgs {
    /// Credential source the configuration uses.
    #[arg(long, env = "TOKEN_CLIENT_SOURCE", value_enum)]
    pub source: Source,
    /// Where to write the credential configuration (JSON).
    #[arg(long, env = "TOKEN_CLIENT_CONFIG_FILE", value_name = "FILE")]
    pub config_file: PathBuf,
    /// The workload identity pool provider:
    /// //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER.
    #[arg(long, env = "TOKEN_CLIENT_AUDIENCE", value_name = "PROVIDER")]
    pub audience: String,
    /// Google STS token endpoint (override for an emulator).
    #[arg(long, env = "TOKEN_CLIENT_STS_URL", value_name = "URL", default_value = DEFAULT_STS_URL)]
    pub sts_url: String,
    /// IAM Credentials API base URL (override for an emulator); used with a service account.
    #[arg(
        long,
        env = "TOKEN_CLIENT_IAM_CREDENTIALS_ENDPOINT",
        value_name = "URL",
        default_value = DEFAULT_IAM_CREDENTIALS_ENDPOINT
    )]
    pub iam_credentials_endpoint: String,
    /// Executable source: milliseconds the library lets the command run (5000 to 120000).
    #[arg(
        long,
        env = "TOKEN_CLIENT_EXECUTABLE_TIMEOUT_MILLIS",
        value_name = "MILLIS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(5_000..=120_000)
    )]
    pub executable_timeout_millis: u64,
    /// Executable source: the cache file of the response (output_file); unset: no cache.
    #[arg(long, env = "TOKEN_CLIENT_EXECUTABLE_OUTPUT_FILE", value_name = "FILE")]
    pub executable_output_file: Option<PathBuf>,
    /// File source: the token file `token-client serve --token-file` keeps fresh (the same
    /// variable as serve's; of a comma-separated list the first is used).
    #[arg(
        long = "token-file",
        env = "TOKEN_CLIENT_TOKEN_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub token_files: Vec<PathBuf>,
    /// URL source: the address `token-client serve` listens on (the same setting as serve's
    /// --listen).
    #[arg(
        long,
        env = "TOKEN_CLIENT_LISTEN",
        value_name = "HOST:PORT",
        default_value = DEFAULT_SERVE_ADDRESS
    )]
    pub listen: String,
}

/// A setting that is missing or invalid; the message names the flag and the variable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{flag} is not set: pass {flag} {example} or set {env}")]
    Missing {
        flag: &'static str,
        env: &'static str,
        example: &'static str,
    },
    #[error(
        "TOKEN_CLIENT_BROKER '{0}' is not an https URL: give the broker's base URL, e.g. https://token.example.com"
    )]
    BrokerUrl(String),
    #[error("The current directory could not be read ({0}); give {1} as an absolute path")]
    Directory(String, &'static str),
}

/// Validated broker settings, the input of [`crate::broker::Broker::new`].
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The `/token` endpoint.
    pub token_url: reqwest::Url,
    /// The base URL as given (for messages and for the executable command line).
    pub broker: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
}

impl BrokerArgs {
    /// The validated settings to reach the broker.
    pub fn resolve(&self) -> Result<BrokerSettings, SettingsError> {
        let broker = self.broker.clone().ok_or(SettingsError::Missing {
            flag: "--broker",
            env: "TOKEN_CLIENT_BROKER",
            example: "https://token.example.com",
        })?;
        let cert = self.cert.clone().ok_or(SettingsError::Missing {
            flag: "--cert",
            env: "TOKEN_CLIENT_CERT",
            example: "/etc/device/cert.pem",
        })?;
        let key = self.key.clone().ok_or(SettingsError::Missing {
            flag: "--key",
            env: "TOKEN_CLIENT_KEY",
            example: "/etc/device/key.pem",
        })?;
        Ok(BrokerSettings {
            token_url: token_url(&broker)?,
            broker,
            cert,
            key,
            ca: self.ca.clone(),
            timeout: Duration::from_secs(self.timeout),
        })
    }

    /// The scope, when one is set and not blank.
    pub fn scope(&self) -> Option<&str> {
        self.scope
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The service account, when one is set and not blank.
    pub fn service_account(&self) -> Option<&str> {
        self.service_account
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

/// The `/token` endpoint of a broker base URL (one that already ends in `/token` is kept).
fn token_url(broker: &str) -> Result<reqwest::Url, SettingsError> {
    let bad = || SettingsError::BrokerUrl(broker.to_owned());
    let mut url = reqwest::Url::parse(broker.trim()).map_err(|_| bad())?;
    if url.scheme() != "https"
        || url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(bad());
    }
    let path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/token") {
        url.set_path(&format!("{path}/token"));
    }
    Ok(url)
}

/// `path` made absolute against the current directory, without resolving symlinks (a
/// Kubernetes secret's `..data` link must stay in the path so that rotation is seen).
pub fn absolute(path: &Path, setting: &'static str) -> Result<PathBuf, SettingsError> {
    std::path::absolute(path).map_err(|e| SettingsError::Directory(e.to_string(), setting))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_get_the_token_path() {
        let url = |s: &str| token_url(s).map(|u| u.to_string());
        assert_eq!(
            url("https://t.example.com").unwrap(),
            "https://t.example.com/token"
        );
        assert_eq!(
            url("https://t.example.com:8443/").unwrap(),
            "https://t.example.com:8443/token"
        );
        assert_eq!(
            url("https://t.example.com/base/token").unwrap(),
            "https://t.example.com/base/token"
        );
        for bad in ["http://t.example.com", "t.example.com", "https://t/?a=b"] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn top_level_help_lists_every_setting() {
        use clap::CommandFactory as _;
        let mut command = Cli::command();
        let help = command.render_long_help().to_string();
        for env in [
            "TOKEN_CLIENT_BROKER",
            "TOKEN_CLIENT_CERT",
            "TOKEN_CLIENT_KEY",
            "TOKEN_CLIENT_CA",
            "TOKEN_CLIENT_SCOPE",
            "TOKEN_CLIENT_SERVICE_ACCOUNT",
            "TOKEN_CLIENT_TIMEOUT",
        ] {
            assert!(help.contains(env), "{env} missing from --help:\n{help}");
        }
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            for arg in sub.get_arguments() {
                if arg.get_id() == "help" || arg.is_global_set() {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let env = env.unwrap_or_else(|| panic!("--{} has no variable", arg.get_id()));
                assert!(help.contains(&env), "{env} missing from --help:\n{help}");
            }
        }
    }
}
