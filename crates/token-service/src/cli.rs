//! Command line: `serve`, `demo`, `check-config`, `pki`, `policy`, `doctor` and `keys`, with the built-in flows
//! ([`main`]) or an embedder's ([`main_with`]). Settings come from the environment and an
//! optional `--config` TOML file; `--help` lists every setting of the flows' registry too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::config::source::{self, Origin, Values};
use crate::config::{self, Config, Setting};
use crate::error::StartupError;
use crate::flows::FlowRegistry;
use crate::pki::DevPki;

mod doctor;
mod keys;
mod policy;

/// Token Service: verified client certificate in, signed OIDC ID token out.
#[derive(Debug, Parser)]
#[command(name = "token-service", version, about)]
pub struct Cli {
    /// TOML file with settings (same names as the environment variables; the environment wins).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve,
    /// Run the service with development defaults and real mutual TLS: creates (once, under
    /// DATA_DIR/pki) a development CA, a server certificate for localhost/127.0.0.1 and a client
    /// certificate, serves https://127.0.0.1:8443 with the mtls-client-credentials flow and a
    /// generated signing key, and prints the curl line that gets a token. Any setting can still
    /// be overridden.
    Demo,
    /// Development PKI (the CA that `demo` creates).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Validate the configuration and print the effective settings (secrets redacted).
    CheckConfig,
    /// Client policy offline: validate a policy file, or explain its decision for a certificate.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Check the issuer's discovery document, JWK Set and a sample token against the rules of
    /// Google Cloud, AWS and Microsoft Entra; exit status 1 when a rule fails, 2 when the
    /// check cannot run.
    Doctor(doctor::DoctorArgs),
    /// The local signing keys of SIGNING_KEY_FILE: generate a key, show which signs and which
    /// are published, check the rules of the key states, activate a next key, prune retired
    /// ones (README "Rotating a local signing key").
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

fn settings_help(table: &[Setting]) -> String {
    let mut text = String::from(
        "Settings (environment variables; also accepted as keys of the --config file):\n",
    );
    for s in table {
        let default = s.default_text();
        let default = if default.is_empty() {
            String::new()
        } else {
            format!(" [default: {default}]")
        };
        text.push_str(&format!("  {:<42} {}{default}\n", s.name, s.help));
    }
    text
}

/// `pki` subcommands.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Issue a client certificate from the development CA: DATA_DIR/pki/NAME.pem and NAME.key.
    Client {
        /// File name and common name.
        #[arg(long)]
        name: String,
        /// SPIFFE ID (URI SAN), e.g. spiffe://token-service.local/ns/demo/sa/device-2.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// DNS SAN (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

/// Parses the command line and runs it with the built-in flows.
pub fn main() -> ExitCode {
    main_with(FlowRegistry::builtin())
}

/// Parses the command line and runs it with the flows of `registry`: the complete server
/// (TLS, limits, drain), `check-config`, `demo`, `pki` and `policy`. The flows' settings are
/// listed in `--help` and `check-config` and accepted in `--config` files and from the
/// environment. An embedder's `main` is `cli::main_with(FlowRegistry::builtin().with(spec))`.
pub fn main_with(registry: FlowRegistry) -> ExitCode {
    let table = config::table(&registry);
    let command = Cli::command().after_help(settings_help(&table));
    let matches = command.get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Pki(pki) = &cli.command {
        return run_pki(&cli, pki, &table);
    }
    if let Command::Policy(command) = &cli.command {
        return match settings(&cli, &table) {
            Ok(values) => policy::run(command, &values, &registry),
            Err(code) => code,
        };
    }
    if let Command::Keys(command) = &cli.command {
        return match settings(&cli, &table) {
            Ok(values) => keys::run(command, &values),
            Err(code) => code,
        };
    }
    if let Command::Doctor(args) = &cli.command {
        return match settings(&cli, &table) {
            Ok(values) => doctor::run(args, &values),
            Err(code) => code,
        };
    }
    let config = match load(&cli, &registry, &table, None) {
        Ok(config) => config,
        Err(errors) => return refuse(&errors),
    };
    match cli.command {
        Command::CheckConfig => check_config(&config, &registry),
        Command::Demo => demo(&cli, &config, &registry, &table),
        _ => serve(&config, &registry),
    }
}

/// Prints every problem, one line each, and exits with 2.
fn refuse(errors: &[StartupError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    ExitCode::from(2)
}

/// `check-config`: the resolved settings, the warnings `serve` would log, and what the files
/// hold (keys, certificates, CAs, policy) loaded as `serve` would, without binding a port.
fn check_config(config: &Config, registry: &FlowRegistry) -> ExitCode {
    print!("{}", config.describe());
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(settings) = &config.policy {
        match crate::policy::rules::Policy::load_for(&settings.file, &registry.names()) {
            Ok(policy) => println!("client policy: {}", policy.summary()),
            Err(e) => {
                eprintln!("error: POLICY_FILE: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // A development key would be generated into DATA_DIR: generate it in a scratch folder.
    // A key already in DATA_DIR is checked where it is (reading writes nothing); the
    // folder's permissions are checked either way.
    let mut checked = config.clone();
    let scratch = std::env::temp_dir().join(format!("token-service-check-{}", std::process::id()));
    let mut refused = None;
    if let config::SignerConfig::Local {
        key_file: None,
        data_dir,
    } = &mut checked.signer
        && !data_dir
            .join(crate::signer::local::GENERATED_KEY_FILE)
            .exists()
    {
        refused = crate::signer::local::files::check_data_dir(data_dir).err();
        *data_dir = scratch.clone();
    }
    let built = match refused {
        Some(e) => Err(vec![e]),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                vec![crate::error::StartupError::other(format!(
                    "cannot start the async runtime: {e}"
                ))]
            })
            .and_then(|runtime| runtime.block_on(async { crate::app::build(&checked, registry) })),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    match built {
        Ok(app) => {
            for w in &app.warnings {
                eprintln!("warning: {w}");
            }
            for line in &app.revocation {
                println!("{line}");
            }
            for line in keys::describe(config) {
                println!("{line}");
            }
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(errors) => refuse(&errors),
    }
}

/// `serve`: logs, runtime, the app, the listener, until SIGTERM and the drain.
fn serve(config: &Config, registry: &FlowRegistry) -> ExitCode {
    run(config, async {
        let app = build_app(config, registry)?;
        let listener = crate::app::bind(config).await?;
        crate::app::serve(listener, app).await
    })
}

/// `demo`: like `serve`, but binds first, so that on `PORT=0` its issuer and the curl line it
/// prints name the port the kernel picked (its settings are loaded again with that port).
fn demo(cli: &Cli, config: &Config, registry: &FlowRegistry, table: &[Setting]) -> ExitCode {
    run(config, async {
        let listener = crate::app::bind(config).await?;
        let port = listener.local_addr()?.port();
        let config = if port == config.port {
            config.clone()
        } else {
            load(cli, registry, table, Some(port)).map_err(joined)?
        };
        print_demo_hint(&config);
        let app = build_app(&config, registry)?;
        crate::app::serve(listener, app).await
    })
}

fn build_app(config: &Config, registry: &FlowRegistry) -> anyhow::Result<crate::app::App> {
    crate::app::build(config, registry).map_err(joined)
}

/// Every startup problem found, carried through `anyhow` so that [`run`] prints and logs one
/// line each, as `check-config` does.
#[derive(Debug)]
struct Problems(Vec<StartupError>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

impl std::error::Error for Problems {}

/// Startup problems as one error that [`run`] reports line by line.
fn joined(errors: Vec<StartupError>) -> anyhow::Error {
    anyhow::Error::new(Problems(errors))
}

/// Logs, the runtime and `work` on it; a failure is logged and printed, and exits with 2.
fn run(config: &Config, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    crate::telemetry::init(config.log_format, &config.log_level);
    for w in &config.warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = crate::app::async_workers(config) {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let lines: Vec<String> = match e.downcast_ref::<Problems>() {
                Some(problems) => problems.0.iter().map(ToString::to_string).collect(),
                None => vec![format!("{e:#}")],
            };
            for line in &lines {
                tracing::error!(event = "startup_failed", "{line}");
                eprintln!("error: {line}");
            }
            ExitCode::from(2)
        }
    }
}

/// The settings of `cli` (with `demo`'s defaults for `demo`), `PORT` replaced by `bound_port`
/// when `demo` bound port 0.
fn load(
    cli: &Cli,
    registry: &FlowRegistry,
    table: &[Setting],
    bound_port: Option<u16>,
) -> Result<Config, Vec<StartupError>> {
    let mut values: Values = match &cli.config {
        Some(path) => source::read_file(path, table)?,
        None => Values::new(),
    };
    values.extend(source::process_env(table));
    if let Some(port) = bound_port {
        let origin = values
            .get("PORT")
            .map_or(Origin::Command, |(_, origin)| *origin);
        values.insert("PORT".into(), (port.to_string(), origin));
    }
    if let Command::Demo = cli.command {
        demo_defaults(&mut values).map_err(|e| vec![StartupError::from(e)])?;
    }
    config::load(values, registry)
}

fn data_dir(values: &Values) -> PathBuf {
    // Through the declaration, so the default exists once (signer/settings.rs).
    let mut reader = crate::config::reader::Reader::new(values);
    reader
        .path(&crate::signer::settings::DATA_DIR)
        .unwrap_or_default()
}

fn demo_defaults(values: &mut Values) -> Result<(), crate::pki::PkiError> {
    let pki = DevPki::new(&data_dir(values));
    let (server, _client) = pki.ensure()?;
    let port = values
        .get("PORT")
        .map(|(v, _)| v.trim().to_owned())
        .unwrap_or_else(|| "8443".into());
    let mut default = |name: &str, value: String| {
        values
            .entry(name.to_owned())
            .or_insert((value, Origin::Command));
    };
    default("PORT", port.clone());
    default("TOKEN_ISSUER", format!("https://127.0.0.1:{port}"));
    default("TOKEN_AUDIENCE", "token-service-demo".into());
    default("LOG_FORMAT", "text".into());
    default("AUTH_FLOWS", crate::flows::mtls::NAME.into());
    default("TLS_CERT_FILE", server.cert.display().to_string());
    default("TLS_KEY_FILE", server.key.display().to_string());
    default("TLS_CLIENT_CA_FILE", pki.ca_cert().display().to_string());
    Ok(())
}

fn curl_line(pki: &DevPki, client: &str, port: u16) -> String {
    let dir = pki.dir.display();
    format!(
        "curl --cert {dir}/{client}.pem --key {dir}/{client}.key --cacert {dir}/ca.pem -d grant_type=client_credentials https://127.0.0.1:{port}/token"
    )
}

fn print_demo_hint(config: &Config) {
    let pki = DevPki::new(&data_dir(&config.values));
    println!(
        "Development PKI in {}. Get a token with:\n\n  {}\n",
        pki.dir.display(),
        curl_line(&pki, "client", config.port)
    );
}

/// The settings from `--config` and the environment, for the offline subcommands.
fn settings(cli: &Cli, table: &[Setting]) -> Result<Values, ExitCode> {
    let mut values: Values = match &cli.config {
        Some(path) => match source::read_file(path, table) {
            Ok(v) => v,
            Err(errors) => return Err(refuse(&errors)),
        },
        None => Values::new(),
    };
    values.extend(source::process_env(table));
    Ok(values)
}

fn run_pki(cli: &Cli, command: &PkiCommand, table: &[Setting]) -> ExitCode {
    let PkiCommand::Client {
        name,
        spiffe_id,
        dns,
        days,
    } = command;
    let values = match settings(cli, table) {
        Ok(values) => values,
        Err(code) => return code,
    };
    let pki = DevPki::new(&data_dir(&values));
    let issued = pki
        .ensure()
        .and_then(|_| pki.issue_client(name, spiffe_id.as_deref(), dns, *days));
    match issued {
        Ok(issued) => {
            println!(
                "Issued {} and {}. With `token-service demo` running:\n\n  {}\n",
                issued.cert.display(),
                issued.key.display(),
                curl_line(&pki, name, 8443)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
