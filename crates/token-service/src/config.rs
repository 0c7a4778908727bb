//! Configuration: every setting has one environment name (the reference's names where it had
//! one), an optional TOML file may hold the same settings, and the environment wins. Loading
//! validates everything before any port is bound and reports every problem at once, each as
//! one line naming the variable and what would be valid.
//!
//! Each module declares its settings (name, typed default, bound, help) next to the type they
//! fill and reads them through [`reader`]; a flow's settings come with its
//! [`FlowSpec`](crate::flows::FlowSpec). This module only assembles the table ([`table`]: what
//! `--help`, `check-config`, `--config` files and the README test use) and holds the checks
//! that span modules. It reads no environment: [`source`] does.

pub mod reader;
mod setting;
pub mod source;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::error::StartupError;
use crate::flows::{FlowRegistry, FlowSettings, forwarded_cert, xlb_mtls};
pub use crate::google::GoogleConfig;
use crate::http::IssuerSource;
pub use crate::issuer::WorkloadIdentityPool;
pub use crate::policy::PolicySettings;
pub use crate::signer::SignerConfig;
use crate::telemetry::LogFormat;
pub use reader::Setting;
use reader::{Reader, origin_text};
use source::Values;

/// `K_SERVICE`: set by Cloud Run.
pub const K_SERVICE: Setting = Setting::text(
    "K_SERVICE",
    None,
    "Set by Cloud Run; changes the BIND_ADDRESS and SIGNER defaults",
);

/// Every setting of the service with the flows of `registry`, in help order: the modules'
/// tables, the flows' after the issuer's. A name declared twice is listed once.
pub fn table(registry: &FlowRegistry) -> Vec<Setting> {
    use crate::{aws, azure, google, issuer, limits, policy, server, signer, telemetry, tls, x509};
    let flows: Vec<Setting> = registry
        .specs()
        .iter()
        .flat_map(|s| s.settings.iter().copied())
        .collect();
    let groups: [&[Setting]; 20] = [
        server::settings::LISTEN,
        &[crate::flows::AUTH_FLOWS],
        issuer::settings::TOKENS,
        signer::settings::CHOICE,
        google::settings::SETTINGS,
        aws::settings::SETTINGS,
        azure::settings::SETTINGS,
        signer::settings::LOCAL,
        issuer::settings::PUBLICATION,
        &flows,
        telemetry::settings::SETTINGS,
        &[K_SERVICE],
        tls::settings::LISTENER,
        x509::settings::TRUST,
        x509::crl_fetch::settings::FETCH,
        x509::ocsp::settings::SETTINGS,
        tls::settings::RELOAD,
        x509::settings::CLIENT_ID,
        server::settings::ADMIN,
        limits::settings::RATE_LIMITS,
    ];
    let tail: [&[Setting]; 4] = [
        server::settings::CONNECTION_LIMIT,
        limits::settings::REQUEST,
        server::settings::TIMEOUTS,
        policy::settings::SETTINGS,
    ];
    let mut all: Vec<Setting> = Vec::new();
    for setting in groups.iter().chain(tail.iter()).flat_map(|g| g.iter()) {
        if !all.iter().any(|s| s.name == setting.name) {
            all.push(*setting);
        }
    }
    all
}

/// Prefixes of the service's settings: an unknown environment variable that starts with one
/// of them is most likely a misspelt setting and gets a warning naming the closest one. Names
/// other software sets too (`K_*` from Cloud Run, `GOOGLE_*`, `GCE_*`, `DATA_`, `SERVICE_`) are
/// left out on purpose.
pub const PREFIXES: &[&str] = &[
    "TOKEN_",
    "MTLS_",
    "TLS_",
    "FORWARDED_",
    "POLICY_",
    "RATE_LIMIT_",
    "UPSTREAM_",
    "SIGNING_",
    "WORKLOAD_IDENTITY_",
    "WORKLOAD_IDENITY_",
    "AUTH_FLOW",
    "ACCESS_TOKEN_",
    "ADMIN_",
    "SHUTDOWN_",
    "MAX_",
    "JWKS_",
    "HEADER_",
    "IDLE_",
    "LOG_",
    "IAM_",
    "STS_",
    "TRUSTED_PROX",
];

/// Variables of the device-side client (`token-client`): not ours, never warned about.
pub const CLIENT_PREFIX: &str = "TOKEN_CLIENT_";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind_address: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Enabled flows, in order.
    pub flows: Vec<String>,
    /// The enabled flows' settings, read, and the shared parts they are built with.
    pub flow_settings: FlowSettings,
    /// Issuer source.
    pub issuer: IssuerSource,
    /// `aud` of ID tokens.
    pub audience: String,
    /// The pool, when configured.
    pub pool: Option<WorkloadIdentityPool>,
    /// Token lifetime in seconds.
    pub validity_seconds: i64,
    /// The audiences a client may ask for besides `audience`, and their lifetimes.
    pub audiences: crate::issuer::AudienceSettings,
    /// `JWKS_URI`.
    pub jwks_uri: Option<String>,
    /// `TOKEN_MIN_LIFETIME`, in seconds.
    pub min_lifetime_seconds: i64,
    /// `TOKEN_CERTIFICATE_BOUND`.
    pub certificate_bound: bool,
    /// `JWKS_MAX_AGE`, in seconds.
    pub jwks_max_age: u64,
    /// `TLS_RELOAD_INTERVAL`: also how often `SIGNING_KEY_FILE` is checked for changes.
    pub key_reload_interval: std::time::Duration,
    /// Signer.
    pub signer: SignerConfig,
    /// Google APIs.
    pub google: GoogleConfig,
    /// AWS STS and the audience of the tokens presented to it.
    pub aws: crate::aws::AwsConfig,
    /// Microsoft Entra and the audience of the tokens presented to it.
    pub azure: crate::azure::AzureConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Project for trace IDs.
    pub trace_project: Option<String>,
    /// TLS listener, when `TLS_CERT_FILE` and `TLS_KEY_FILE` are set.
    pub tls: Option<crate::tls::TlsSettings>,
    /// Client trust material, when `TLS_CLIENT_CA_FILE` is set.
    pub trust: Option<crate::x509::TrustSettings>,
    /// The OCSP check of verified client certificates.
    pub ocsp: crate::x509::ocsp::OcspSettings,
    /// Client policy, when `POLICY_FILE` is set.
    pub policy: Option<PolicySettings>,
    /// Connection limits and shutdown timing.
    pub server: crate::server::ServerSettings,
    /// Rate, concurrency and request-time limits.
    pub limits: crate::limits::LimitSettings,
    /// The admin listener, when `ADMIN_PORT` is set.
    pub admin: Option<SocketAddr>,
    /// Things worth a warning at startup.
    pub warnings: Vec<String>,
    /// The raw values, for `check-config`.
    pub values: Values,
    /// The settings table this configuration was read with.
    pub table: Vec<Setting>,
    /// What each setting resolved to (defaults included), for `check-config`.
    pub resolved: BTreeMap<&'static str, String>,
}

/// Validates the values and builds the configuration with the flows of `registry`, or
/// returns every problem found.
pub fn load(values: Values, registry: &FlowRegistry) -> Result<Config, Vec<StartupError>> {
    let table = table(registry);
    let mut r = Reader::new(&values);
    let on_cloud_run = r.text(&K_SERVICE).is_some();
    let (bind_address, port) = crate::server::settings::read_listen(&mut r, on_cloud_run);
    let flows = read_flows(&mut r, registry);
    let xlb = xlb_mtls::XlbSettings::read(&mut r);
    let tls = crate::tls::TlsSettings::read(&mut r);
    let reload = r.seconds(&crate::tls::settings::RELOAD_INTERVAL);
    let trust = crate::x509::TrustSettings::read(&mut r, reload);
    let ocsp = crate::x509::ocsp::OcspSettings::read(&mut r, trust.is_some());
    crate::x509::settings::read_client_id(&mut r);
    let forwarded = forwarded_cert::ForwardedSettings::read(&mut r);
    let flow_settings = read_flow_settings(
        &mut r,
        registry,
        &flows,
        &Present {
            tls: tls.is_some(),
            trust: trust.is_some(),
        },
    );
    check_lb_secret(&mut r, &flows, &xlb, tls.is_some(), bind_address);
    let tokens = crate::issuer::settings::TokenSettings::read(&mut r);
    let signer = SignerConfig::read(&mut r, on_cloud_run);
    let google = GoogleConfig::read(&mut r);
    let aws = crate::aws::AwsConfig::read(&mut r);
    let azure = crate::azure::AzureConfig::read(&mut r);
    let logs = crate::telemetry::LogSettings::read(&mut r);
    let mut limits = crate::limits::LimitSettings::read(&mut r);
    let server = crate::server::ServerSettings::read(&mut r, limits.max_concurrent_requests);
    check_request_timeout(&mut r, &limits, &google);
    limits.caller = caller_key(&flows, &xlb, &forwarded, tls.is_some());
    let admin = crate::server::settings::read_admin(&mut r, bind_address);
    let policy = PolicySettings::read(&mut r);
    warn_unknown(&mut r, &values, &table);
    let (errors, warnings, resolved) = r.finish();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        bind_address,
        port,
        flows,
        flow_settings,
        tls,
        trust,
        ocsp,
        issuer: tokens.issuer,
        audience: tokens.audience,
        pool: tokens.pool,
        validity_seconds: tokens.validity_seconds,
        audiences: tokens.audiences,
        jwks_uri: tokens.jwks_uri,
        min_lifetime_seconds: tokens.min_lifetime_seconds,
        certificate_bound: tokens.certificate_bound,
        jwks_max_age: tokens.jwks_max_age,
        key_reload_interval: reload,
        signer,
        google,
        aws,
        azure,
        log_format: logs.format,
        log_level: logs.level,
        trace_project: logs.trace_project,
        policy,
        server,
        limits,
        admin,
        warnings,
        values,
        table,
        resolved,
    })
}

/// The request must outlast its upstream calls, so that their errors reach the client.
fn check_request_timeout(
    r: &mut Reader<'_>,
    limits: &crate::limits::LimitSettings,
    google: &GoogleConfig,
) {
    if limits.request_timeout <= google.timeout {
        r.fail("REQUEST_TIMEOUT", format!(
            "{} s is not valid with UPSTREAM_TIMEOUT {} s; it must be longer, so that upstream errors reach the client",
            limits.request_timeout.as_secs(),
            google.timeout.as_secs()
        ));
    }
}

/// How the failed-authentication limit finds the caller: behind `TRUSTED_PROXIES` from
/// `X-Forwarded-For`, behind Google's load balancer from its entry.
fn caller_key(
    flows: &[String],
    xlb: &xlb_mtls::XlbSettings,
    forwarded: &forwarded_cert::ForwardedSettings,
    tls: bool,
) -> crate::limits::CallerKey {
    crate::limits::CallerKey {
        trusted_proxies: forwarded.trusted_proxies.clone(),
        // Without a secret, X-Forwarded-For is trusted only on a plain-HTTP listener, which
        // only the load balancer reaches (a TLS listener without MTLS_LB_SECRET is refused
        // anyway).
        google_lb: flows.iter().any(|f| f == xlb_mtls::NAME) && (xlb.lb_secret.is_some() || !tls),
        lb_secret: xlb.lb_secret.clone(),
    }
}

/// `AUTH_FLOWS`: known names, none twice, at least one.
fn read_flows(r: &mut Reader<'_>, registry: &FlowRegistry) -> Vec<String> {
    let names = r.list(&crate::flows::AUTH_FLOWS);
    let known = registry.names();
    let listing = known.join(", ");
    if names.is_empty() {
        r.fail(
            "AUTH_FLOWS",
            format!("the list is empty; enable one or more of: {listing}"),
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for name in &names {
        if !known.contains(&name.as_str()) {
            r.fail(
                "AUTH_FLOWS",
                format!("unknown flow '{name}'; known flows: {listing}"),
            );
        } else if seen.contains(&name.as_str()) {
            r.fail("AUTH_FLOWS", format!("flow '{name}' is listed twice"));
        }
        seen.push(name);
    }
    names
}

/// Which shared parts the settings provide.
struct Present {
    tls: bool,
    trust: bool,
}

/// Reads the enabled flows' settings through their specs and checks what they need.
fn read_flow_settings(
    r: &mut Reader<'_>,
    registry: &FlowRegistry,
    enabled: &[String],
    present: &Present,
) -> FlowSettings {
    let mut settings = FlowSettings::default();
    for name in enabled {
        let Some(spec) = registry.spec(name) else {
            continue;
        };
        if spec.needs.tls_listener && !present.tls {
            r.fail("TLS_CERT_FILE", format!("required by the flow {name}, which needs Token Service to terminate TLS; set TLS_CERT_FILE and TLS_KEY_FILE"));
        }
        if spec.needs.client_cas && !present.trust {
            let e = crate::flows::needs_client_cas(name);
            r.fail("TLS_CLIENT_CA_FILE", e.problem);
        }
        let build = spec.read(r);
        settings.prepared.push((name.clone(), build));
    }
    settings
}

/// The xlb flow trusts headers: on a TLS listener it needs the load balancer's secret, and
/// elsewhere its absence is worth a warning when others could send the headers.
fn check_lb_secret(
    r: &mut Reader<'_>,
    flows: &[String],
    xlb: &xlb_mtls::XlbSettings,
    tls: bool,
    bind_address: IpAddr,
) {
    let xlb_name = xlb_mtls::NAME;
    if !flows.iter().any(|f| f == xlb_name)
        || xlb.lb_secret.is_some()
        || r.is_present(xlb_mtls::settings::LB_SECRET.name)
    {
        return;
    }
    if tls {
        // Google's load balancer is not the only one who can reach a TLS listener: every
        // client can, and send the headers itself.
        r.fail("MTLS_LB_SECRET", format!("required when the flow {xlb_name} runs on a TLS listener (TLS_CERT_FILE is set): without it any client that reaches the port can send X-Client-Cert-* headers and be any client; set MTLS_LB_SECRET to the value the load balancer adds in MTLS_LB_SECRET_HEADER, or remove {xlb_name} from AUTH_FLOWS"));
    } else if !bind_address.is_loopback() {
        r.warn(format!("the flow {xlb_name} trusts the X-Client-Cert-* headers of every request to {bind_address} and MTLS_LB_SECRET is not set: anyone who can reach this address directly can claim to be any client; make sure only the load balancer can (Cloud Run: ingress internal-and-cloud-load-balancing), or set MTLS_LB_SECRET"));
    } else if flows.iter().any(|f| f == forwarded_cert::NAME) {
        // On loopback behind a proxy: nginx and HAProxy pass a client's own X-Client-Cert-*
        // headers through unless told to drop each one.
        r.warn(format!("the flow {xlb_name} trusts the X-Client-Cert-* headers of every request and MTLS_LB_SECRET is not set, while {} is enabled: a proxy in front passes client-sent X-Client-Cert-* headers through unless it drops them, so any client could claim to be any client; set MTLS_LB_SECRET, or remove {xlb_name} from AUTH_FLOWS", forwarded_cert::NAME));
    }
}

/// A warning for every value whose name looks like one of ours but is not a setting.
fn warn_unknown(r: &mut Reader<'_>, values: &Values, table: &[Setting]) {
    for name in values.keys() {
        if table.iter().any(|s| s.name == name) || !looks_like_ours(name) {
            continue;
        }
        let closest = closest(name, table.iter().map(|s| s.name));
        let hint = closest
            .map(|c| format!("; did you mean {c}?"))
            .unwrap_or_default();
        r.warn(format!("{name} is not a setting of Token Service and is ignored{hint} (`token-service --help` lists the settings)"));
    }
}

/// Whether an environment name starts like one of our settings (and is not the client's).
pub fn looks_like_ours(name: &str) -> bool {
    !name.starts_with(CLIENT_PREFIX) && PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The known name closest to `name` by edit distance, if any is reasonably close (at most a
/// third of the name's length away).
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = name.len() / 3 + 1;
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (setting names are ASCII).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let delete = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

impl Config {
    /// The value the service uses for a setting, as `check-config` shows it.
    pub fn resolved(&self, name: &str) -> Option<&str> {
        self.resolved.get(name).map(String::as_str)
    }

    /// The effective settings, one per line, secrets redacted: what the service will use,
    /// defaults resolved; settings that are unset and off are left out.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for setting in &self.table {
            let given = self.values.get(setting.name);
            let origin = given.map_or("default", |(_, o)| origin_text(*o));
            let value = match (given, self.resolved.get(setting.name)) {
                (Some(_), _) if setting.secret => "<redacted>".to_owned(),
                (_, Some(resolved)) if !setting.secret => resolved.clone(),
                (Some((v, _)), _) => v.clone(),
                (None, _) => continue,
            };
            out.push_str(&format!("{:<42} {value}   ({origin})\n", setting.name));
        }
        out.push_str(&format!("{:<42} {}\n", "effective audience", self.audience));
        out.push_str(&format!(
            "{:<42} {}\n",
            "effective flows",
            self.flows.join(", ")
        ));
        out
    }
}

#[cfg(test)]
mod tests;
