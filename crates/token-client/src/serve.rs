//! `token-client serve`: the long-running agent of a device. On one loopback listener it
//! answers
//!
//! - the GCE metadata server's paths (`/computeMetadata/v1/…`, see [`metadata`]), so that
//!   unmodified applications get the broker's access token of the service account with
//!   `GCE_METADATA_HOST` and `GCE_METADATA_IP` pointed at it;
//! - `GET /token`: `{"id_token": …}` for URL-sourced credential configurations;
//! - `GET /status`: the state of every token it keeps (never a token);
//! - `GET /aws/credentials` with `--aws-role-arn`: the AWS container credential provider's
//!   endpoint (see [`aws`]);
//!
//! and it keeps every `--token-file` fresh with the ID token (written atomically, mode 0600)
//! for file-sourced configurations, and every `--audience-token-file` with an ID token for
//! its audience (AWS's and Entra's SDKs read such files; see [`audiences`]). Tokens are refreshed ahead of expiry by keepers (see
//! [`slot`]); while the broker cannot be reached the last good token is served until it
//! expires, then callers get a 503 that says why, never an empty or expired token.

pub mod audiences;
pub mod aws;
pub mod http;
pub mod metadata;
pub mod slot;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Args;

use crate::broker::{Broker, Query, unix_now};
use crate::files::write_atomic;
use crate::settings::{BrokerArgs, DEFAULT_SERVE_ADDRESS, SettingsError, absolute};
use audiences::{AudienceError, Audiences};
use slot::{Current, Kind, Slot};

/// Scopes of the metadata server's access token when none is set.
pub const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Distinct scope sets the metadata server keeps tokens for (each is a broker request).
const MAX_SCOPE_SETS: usize = 8;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (metadata server, /token, /status); loopback unless
    /// --allow-non-loopback.
    #[arg(long, env = "TOKEN_CLIENT_LISTEN", value_name = "HOST:PORT", default_value = DEFAULT_SERVE_ADDRESS)]
    pub listen: String,
    /// Allow a non-loopback listen address: every host that reaches it gets the device's
    /// tokens.
    #[arg(long, env = "TOKEN_CLIENT_ALLOW_NON_LOOPBACK")]
    pub allow_non_loopback: bool,
    /// File to keep fresh with the ID token (atomic writes, mode 0600); repeat the flag for
    /// several (the variable takes a comma-separated list).
    #[arg(
        long = "token-file",
        env = "TOKEN_CLIENT_TOKEN_FILE",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub token_files: Vec<PathBuf>,
    /// AUDIENCE=FILE: a file to keep fresh with an ID token for AUDIENCE (atomic writes, mode
    /// 0600), e.g. sts.amazonaws.com=/run/token-client/aws.jwt for AWS_WEB_IDENTITY_TOKEN_FILE;
    /// the broker must list the audience in TOKEN_AUDIENCES. Repeat the flag for several (the
    /// variable takes a comma-separated list).
    #[arg(
        long = "audience-token-file",
        env = "TOKEN_CLIENT_AUDIENCE_TOKEN_FILE",
        value_name = "AUDIENCE=FILE",
        value_delimiter = ','
    )]
    pub audience_token_files: Vec<String>,
    /// Serve no metadata server (only /token, /status and token files); without it a service
    /// account is required.
    #[arg(long, env = "TOKEN_CLIENT_NO_METADATA")]
    pub no_metadata: bool,
    /// Project ID the metadata server reports; unset: the one in the service account's
    /// email (NAME@PROJECT.iam.gserviceaccount.com).
    #[arg(long, env = "TOKEN_CLIENT_PROJECT_ID", value_name = "ID")]
    pub project_id: Option<String>,
    /// Project number the metadata server reports; unset: 404 on numeric-project-id.
    #[arg(long, env = "TOKEN_CLIENT_NUMERIC_PROJECT_ID", value_name = "NUMBER")]
    pub numeric_project_id: Option<String>,
    /// The AWS role of GET /aws/credentials (the AWS container credential provider's
    /// endpoint, for AWS_CONTAINER_CREDENTIALS_FULL_URI).
    #[command(flatten)]
    pub aws: crate::aws::AwsRoleArgs,
    /// With --aws-role-arn: the file of the token GET /aws/credentials requires in its
    /// Authorization header (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE); serve writes a random
    /// one into it (mode 0600) when it does not exist.
    #[arg(
        long,
        env = "TOKEN_CLIENT_AWS_AUTHORIZATION_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub aws_authorization_token_file: Option<PathBuf>,
}

/// Why `serve` did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(
        "The metadata server needs a service account (its email is what …/default/email returns, and the broker impersonates it): pass --service-account EMAIL or set TOKEN_CLIENT_SERVICE_ACCOUNT, or pass --no-metadata to serve only /token and token files"
    )]
    NoServiceAccount,
    #[error(
        "--audience-token-file '{0}' is not AUDIENCE=FILE: give the audience, '=' and the file, e.g. sts.amazonaws.com=/run/token-client/aws.jwt"
    )]
    AudienceTokenFile(String),
    #[error(transparent)]
    Aws(#[from] aws::AwsEndpointError),
    #[error("--listen '{0}' is not an IP address and port such as 127.0.0.1:8954")]
    Listen(String),
    #[error(
        "--listen {0} is not a loopback address: any host that reaches it would get the device's tokens; use 127.0.0.1 or pass --allow-non-loopback"
    )]
    NotLoopback(SocketAddr),
    #[error("--listen {address} could not be bound ({detail}); is another process using the port?")]
    Bind { address: SocketAddr, detail: String },
}

/// The metadata server's settings.
#[derive(Debug, Clone)]
pub struct MetadataSettings {
    pub email: String,
    /// The default scopes, in order.
    pub scopes: Vec<String>,
    pub project_id: Option<String>,
    pub numeric_project_id: Option<String>,
}

/// What the handlers share.
pub struct App {
    pub broker: Arc<Broker>,
    pub id: Arc<Slot>,
    pub metadata: Option<MetadataSettings>,
    pub token_files: Vec<PathBuf>,
    /// ID tokens for other audiences (metadata `identity?audience=…`, audience token files).
    pub audiences: Audiences,
    /// `GET /aws/credentials`, with `--aws-role-arn`.
    pub aws: Option<aws::AwsEndpoint>,
    access: Mutex<HashMap<String, Arc<Slot>>>,
    pub started_at: u64,
}

impl App {
    /// The access-token slot for `scopes` (the default ones when empty); a new one gets its
    /// keeper. `None` when the metadata server is off or too many scope sets are in use.
    pub fn access(&self, scopes: &[String]) -> Option<Arc<Slot>> {
        let metadata = self.metadata.as_ref()?;
        let scopes = if scopes.is_empty() {
            &metadata.scopes
        } else {
            scopes
        };
        let scope = scopes.join(" ");
        let mut slots = self
            .access
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = slots.get(&scope) {
            return Some(slot.clone());
        }
        if slots.len() >= MAX_SCOPE_SETS {
            return None;
        }
        let query = Query {
            scope: Some(scope.clone()),
            service_account: Some(metadata.email.clone()),
            audience: None,
            aws: None,
        };
        let slot = Slot::new(Kind::AccessToken, query, self.broker.clone());
        tokio::spawn(keep(slot.clone(), Vec::new()));
        slots.insert(scope, slot.clone());
        Some(slot)
    }

    /// A usable ID token for `audience`: the default slot's when it is the broker's default
    /// audience, else the audience's own slot (see [`audiences`]).
    pub async fn identity(&self, audience: &str) -> Result<Current, AudienceError> {
        if self.id.known_audiences().is_empty() {
            // The default audience is known after the first token (at startup, or now).
            let _ = self.id.get().await;
        }
        if self.id.known_audiences().iter().any(|a| a == audience) {
            return Ok(self.id.get().await?);
        }
        self.audiences.get(audience).await
    }

    /// Every access-token slot, for `/status`.
    pub fn access_slots(&self) -> Vec<Arc<Slot>> {
        let slots = self
            .access
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.values().cloned().collect()
    }
}

/// Runs `serve` until SIGTERM or SIGINT (exit 0); 2 for settings, 1 when it cannot listen.
pub async fn run(args: &BrokerArgs, serve: &ServeArgs) -> ExitCode {
    let (app, address) = match prepare(args, serve) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("token-client serve: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) => {
            let e = ServeError::Bind {
                address,
                detail: e.to_string(),
            };
            eprintln!("token-client serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(address);
    let app = Arc::new(app);
    eprintln!(
        "token-client serve: listening on http://{local} (metadata server {}; GET /token; GET /status; {} token file(s){}); broker {}",
        match &app.metadata {
            Some(m) => format!("for {}", m.email),
            None => "off".into(),
        },
        app.token_files.len(),
        match app.audiences.files().len() {
            0 => String::new(),
            n => format!(", {n} audience token file(s)"),
        },
        app.broker.settings().broker,
    );
    tokio::spawn(keep(app.id.clone(), app.token_files.clone()));
    app.audiences.start();
    if let Some(aws) = &app.aws {
        eprintln!(
            "token-client serve: AWS credentials of {} at http://{local}{} (authorization token file {})",
            aws.slot
                .query
                .aws
                .as_ref()
                .map_or("", |a| a.role_arn.as_str()),
            aws::PATH,
            aws.file.display(),
        );
        tokio::spawn(keep(aws.slot.clone(), Vec::new()));
    }
    if app.metadata.is_some() {
        let _ = app.access(&[]);
    }
    let signal = http::serve(listener, app, shutdown_signal()).await;
    eprintln!("token-client serve: {signal} received; stopped");
    ExitCode::SUCCESS
}

/// Checks the settings; the app and the address to listen on.
fn prepare(args: &BrokerArgs, serve: &ServeArgs) -> Result<(App, SocketAddr), ServeError> {
    let settings = args.resolve()?;
    let address: SocketAddr = serve
        .listen
        .trim()
        .parse()
        .map_err(|_| ServeError::Listen(serve.listen.clone()))?;
    if !address.ip().is_loopback() && !serve.allow_non_loopback {
        return Err(ServeError::NotLoopback(address));
    }
    let metadata = if serve.no_metadata {
        None
    } else {
        let email = args.service_account().ok_or(ServeError::NoServiceAccount)?;
        Some(MetadataSettings {
            email: email.to_owned(),
            scopes: args
                .scope()
                .unwrap_or(DEFAULT_SCOPE)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            project_id: serve
                .project_id
                .clone()
                .or_else(|| project_of(email).map(str::to_owned)),
            numeric_project_id: serve.numeric_project_id.clone(),
        })
    };
    let token_files = serve
        .token_files
        .iter()
        .map(|p| absolute(p, "--token-file"))
        .collect::<Result<Vec<_>, _>>()?;
    let audience_files = serve
        .audience_token_files
        .iter()
        .map(|item| audience_file(item))
        .collect::<Result<Vec<_>, _>>()?;
    let broker = Arc::new(Broker::new(settings));
    let aws = match serve.aws.role() {
        Some(role) => {
            let file = serve
                .aws_authorization_token_file
                .as_deref()
                .ok_or(aws::AwsEndpointError::NoTokenFile)?;
            let file = absolute(file, "--aws-authorization-token-file")?;
            Some(aws::AwsEndpoint::new(broker.clone(), role, &file)?)
        }
        None => None,
    };
    let app = App {
        aws,
        audiences: Audiences::new(broker.clone(), &audience_files),
        id: Slot::new(Kind::IdToken, Query::id_token(), broker.clone()),
        broker,
        metadata,
        token_files,
        access: Mutex::new(HashMap::new()),
        started_at: unix_now(),
    };
    Ok((app, address))
}

/// AUDIENCE=FILE (split at the first `=`), the file made absolute.
fn audience_file(item: &str) -> Result<(String, PathBuf), ServeError> {
    let bad = || ServeError::AudienceTokenFile(item.to_owned());
    let (audience, file) = item.split_once('=').ok_or_else(bad)?;
    let (audience, file) = (audience.trim(), file.trim());
    if audience.is_empty() || file.is_empty() {
        return Err(bad());
    }
    let file = absolute(std::path::Path::new(file), "--audience-token-file")?;
    Ok((audience.to_owned(), file))
}

/// PROJECT of NAME@PROJECT.iam.gserviceaccount.com.
fn project_of(email: &str) -> Option<&str> {
    email
        .split_once('@')?
        .1
        .strip_suffix(".iam.gserviceaccount.com")
        .filter(|p| !p.is_empty())
}

/// The keeper of one slot: refreshes it when due, retries with backoff, logs each failure,
/// writes the token files after each new ID token and removes them when it expires.
pub async fn keep(slot: Arc<Slot>, files: Vec<PathBuf>) {
    let mut written = None;
    let mut serving = true;
    loop {
        let attempted = slot.due() && slot.refresh(slot.generation()).await;
        let wait = slot.next_wake();
        let error = slot.last_error().filter(|_| attempted);
        match slot.usable() {
            Some(current) => {
                serving = true;
                if written != Some(current.expires_at) {
                    write_files(&files, &current.token);
                    written = Some(current.expires_at);
                }
                if let Some(error) = error {
                    eprintln!(
                        "token-client serve: refreshing the {} failed: {error}; the current one is served for {} s more; retrying in {} s",
                        slot.what(),
                        current.expires_at.saturating_sub(unix_now()),
                        wait.as_secs().max(1),
                    );
                }
            }
            None => {
                if serving {
                    serving = false;
                    written = None;
                    remove_files(&files);
                    eprintln!(
                        "token-client serve: no valid {}; answering 503 until a refresh succeeds",
                        slot.what(),
                    );
                }
                if let Some(error) = error {
                    eprintln!(
                        "token-client serve: refreshing the {} failed: {error}; retrying in {} s",
                        slot.what(),
                        wait.as_secs().max(1),
                    );
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = slot.refreshed() => {}
        }
    }
}

fn write_files(files: &[PathBuf], token: &str) {
    for file in files {
        if let Err(e) = write_atomic(file, token.as_bytes(), 0o600) {
            eprintln!("token-client serve: the token file {e}");
        }
    }
}

/// Token files of an expired token are removed: a reader gets "no such file", never an
/// expired token.
fn remove_files(files: &[PathBuf]) {
    for file in files {
        match std::fs::remove_file(file) {
            Ok(()) => eprintln!(
                "token-client serve: removed the token file {} (its token expired)",
                file.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "token-client serve: the expired token file {} could not be removed ({e})",
                file.display()
            ),
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C); its name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_comes_from_the_service_account() {
        assert_eq!(
            project_of("reader@demo-project.iam.gserviceaccount.com"),
            Some("demo-project")
        );
        assert_eq!(project_of("someone@example.com"), None);
    }

    #[test]
    fn audience_token_files_are_audience_equals_file() {
        let (audience, file) = audience_file("api://AzureADTokenExchange=/run/t=1.jwt").unwrap();
        assert_eq!(audience, "api://AzureADTokenExchange");
        assert_eq!(file, PathBuf::from("/run/t=1.jwt"));
        for bad in ["sts.amazonaws.com", "=/run/a.jwt", "sts.amazonaws.com="] {
            let e = audience_file(bad).unwrap_err().to_string();
            assert!(e.contains("is not AUDIENCE=FILE"), "{e}");
        }
    }

    #[test]
    fn serve_help_lists_every_setting() {
        use clap::CommandFactory as _;
        let mut cli = crate::settings::Cli::command();
        cli.build();
        let help = cli
            .find_subcommand_mut("serve")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        for env in [
            "TOKEN_CLIENT_LISTEN",
            "TOKEN_CLIENT_ALLOW_NON_LOOPBACK",
            "TOKEN_CLIENT_TOKEN_FILE",
            "TOKEN_CLIENT_AUDIENCE_TOKEN_FILE",
            "TOKEN_CLIENT_NO_METADATA",
            "TOKEN_CLIENT_PROJECT_ID",
            "TOKEN_CLIENT_NUMERIC_PROJECT_ID",
            "TOKEN_CLIENT_SERVICE_ACCOUNT",
            "TOKEN_CLIENT_AWS_ROLE_ARN",
            "TOKEN_CLIENT_AWS_ROLE_SESSION_NAME",
            "TOKEN_CLIENT_AWS_DURATION_SECONDS",
            "TOKEN_CLIENT_AWS_AUTHORIZATION_TOKEN_FILE",
        ] {
            assert!(
                help.contains(env),
                "{env} missing from serve --help:\n{help}"
            );
        }
    }
}
