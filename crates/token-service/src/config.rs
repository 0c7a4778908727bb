//! Configuration: every setting has one environment name (the reference's names where it had
//! one), an optional TOML file may hold the same settings, and the environment wins. Loading
//! validates everything before any port is bound and reports every problem at once, each as
//! one line naming the variable and what would be valid.

pub mod source;

use std::net::IpAddr;
use std::path::PathBuf;

use http::HeaderName;

use crate::flows::FlowSettings;
use crate::flows::xlb_mtls::{LbSecret, XlbSettings};
use crate::http::IssuerSource;
use crate::telemetry::LogFormat;
use source::{Origin, Values};

/// One documented setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable name.
    pub name: &'static str,
    /// Default, as text ("" when unset by default).
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
    /// Whether its value must never be shown.
    pub secret: bool,
}

const fn s(name: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        default,
        help,
        secret: false,
    }
}

/// Every setting, in the order `--help` and `check-config` show them.
pub const SETTINGS: &[Setting] = &[
    s("PORT", "8080", "TCP port to listen on (Cloud Run sets it)"),
    s(
        "BIND_ADDRESS",
        "127.0.0.1; 0.0.0.0 when K_SERVICE is set",
        "IP address to listen on",
    ),
    s(
        "AUTH_FLOWS",
        "xlb-mtls-client-credentials",
        "Comma-separated list of enabled flows, tried in order; a flow claims only requests with its credentials in a trusted form, so the order never decides who is refused",
    ),
    s(
        "TOKEN_ISSUER",
        "https:// + Host header",
        "Issuer URL (iss); http:// only for local development",
    ),
    s(
        "TOKEN_AUDIENCE",
        "the workload identity pool provider URL",
        "Audience (aud) of ID tokens",
    ),
    s(
        "WORKLOAD_IDENTITY_PROJECT_NUMBER",
        "",
        "Project number of the workload identity pool (also spelled WORKLOAD_IDENITY_*)",
    ),
    s("WORKLOAD_IDENTITY_POOL_ID", "", "Workload identity pool ID"),
    s(
        "WORKLOAD_IDENTITY_PROVIDER_ID",
        "",
        "Workload identity pool provider ID",
    ),
    s(
        "WORKLOAD_IDENITY_PROJECT_NUMBER",
        "",
        "Reference spelling of WORKLOAD_IDENTITY_PROJECT_NUMBER",
    ),
    s(
        "WORKLOAD_IDENITY_POOL_ID",
        "",
        "Reference spelling of WORKLOAD_IDENTITY_POOL_ID",
    ),
    s(
        "WORKLOAD_IDENITY_PROVIDER_ID",
        "",
        "Reference spelling of WORKLOAD_IDENTITY_PROVIDER_ID",
    ),
    s(
        "TOKEN_VALIDITY",
        "5",
        "ID token lifetime in minutes, 1 to 60",
    ),
    s(
        "SIGNER",
        "local; iam when K_SERVICE is set",
        "Signer: local (keys in SIGNING_KEY_FILE) or iam (keyless, IAM Credentials signJwt)",
    ),
    s(
        "SERVICE_ACCOUNT",
        "the metadata server's default account",
        "Service account whose signJwt signs ID tokens (SIGNER=iam)",
    ),
    s(
        "GOOGLE_APPLICATION_CREDENTIALS",
        "",
        "Application-default credentials file for development outside Google Cloud (service_account or authorized_user)",
    ),
    s(
        "GCE_METADATA_HOST",
        "metadata.google.internal",
        "Metadata server host[:port]",
    ),
    s(
        "IAM_CREDENTIALS_ENDPOINT",
        "https://iamcredentials.googleapis.com",
        "IAM Credentials API base URL",
    ),
    s(
        "STS_ENDPOINT",
        "https://sts.googleapis.com",
        "Security Token Service base URL",
    ),
    s(
        "UPSTREAM_TIMEOUT",
        "10",
        "Seconds one token request may spend on Google API calls, retries included (1 to 120)",
    ),
    s(
        "UPSTREAM_MAX_CONNECTIONS",
        "256",
        "Calls in flight at once to each Google API, one connection each (1 to 65536); more wait for a free one within UPSTREAM_TIMEOUT",
    ),
    s(
        "ACCESS_TOKEN_CACHE",
        "on",
        "Cache access tokens per client, scope and service account: on or off",
    ),
    s(
        "SIGNING_KEY_FILE",
        "generated into DATA_DIR",
        "PEM file of PKCS#8 keys (RSA >= 2048 bits, EC P-256); the first signs, all are published. Refused when group/others can write it or its folder, or another user (not root) owns it; world-readable warns",
    ),
    s(
        "DATA_DIR",
        "./.token-service",
        "Directory for the generated development key (mode 0600, written atomically); refused when group/others can write it without the sticky bit or another user owns it",
    ),
    s(
        "JWKS_URI",
        "issuer + /.well-known/jwks.json",
        "jwks_uri published in discovery",
    ),
    s(
        "MTLS_HEADER_CLIENT_ID",
        "X-Client-Cert-Spiffe",
        "Header that identifies the client: the SPIFFE, DNS-SAN, URI-SAN or SHA-256 header",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_PRESENT",
        "X-Client-Cert-Present",
        "Load balancer header: certificate presented",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_CHAIN_VERIFIED",
        "X-Client-Cert-Chain-Verified",
        "Load balancer header: chain verified",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_ERROR",
        "X-Client-Cert-Error",
        "Load balancer header: verification error",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_SHA256_FINGERPRINT",
        "X-Client-Cert-Hash",
        "Load balancer header: SHA-256 fingerprint",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_SPIFFE_ID",
        "X-Client-Cert-Spiffe",
        "Load balancer header: SPIFFE ID",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_URI_SANS",
        "X-Client-Cert-URI-SANs",
        "Load balancer header: URI SANs (base64)",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_DNSNAME_SANS",
        "X-Client-Cert-DNSName-SANs",
        "Load balancer header: DNS SANs (base64)",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_SERIAL_NUMBER",
        "X-Client-Cert-Serial-Number",
        "Load balancer header: serial number",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_VALID_NOT_BEFORE",
        "X-Client-Cert-Valid-Not-Before",
        "Load balancer header: start of validity (RFC 3339)",
    ),
    s(
        "MTLS_HEADER_CLIENT_CERT_VALID_NOT_AFTER",
        "X-Client-Cert-Valid-Not-After",
        "Load balancer header: end of validity (RFC 3339)",
    ),
    s(
        "MTLS_LB_SECRET_HEADER",
        "X-Token-Service-LB-Secret",
        "Header carrying MTLS_LB_SECRET",
    ),
    Setting {
        name: "MTLS_LB_SECRET",
        default: "",
        help: "Secret the load balancer adds as a custom header; the xlb flow ignores requests without it. Required on a TLS listener; blank is an error; shorter than 16 bytes warns",
        secret: true,
    },
    s(
        "LOG_FORMAT",
        "json",
        "json (Cloud Logging) or text; both escape control characters in every value",
    ),
    s("LOG_LEVEL", "info", "error, warn, info, debug or trace"),
    s("GOOGLE_CLOUD_PROJECT", "", "Project for trace IDs in logs"),
    s(
        "K_SERVICE",
        "",
        "Set by Cloud Run; changes the BIND_ADDRESS and SIGNER defaults",
    ),
    s(
        "TLS_CERT_FILE",
        "",
        "PEM server certificate chain; with TLS_KEY_FILE the listener speaks TLS",
    ),
    s("TLS_KEY_FILE", "", "PEM server private key"),
    s(
        "TLS_CLIENT_CA_FILE",
        "",
        "PEM bundle of the CAs that issue client certificates (mtls and forwarded-cert flows)",
    ),
    s("TLS_CLIENT_CRL_FILE", "", "PEM or DER CRLs of those CAs"),
    s(
        "TLS_CLIENT_CRL_EXPIRED",
        "warn",
        "A CRL past its nextUpdate: warn (it still revokes what it lists; warning log, metric, /readyz detail) or deny (certificates of that CA are refused until a fresh CRL loads)",
    ),
    s(
        "TLS_CLIENT_CRL_REQUIRED",
        "false",
        "true: every CA of a client chain must have a CRL in TLS_CLIENT_CRL_FILE, else its certificates are refused",
    ),
    s(
        "TLS_RELOAD_INTERVAL",
        "5",
        "Seconds between checks of the TLS and CA files for changes",
    ),
    s(
        "MTLS_CLIENT_ID_ATTRIBUTE",
        "spiffe",
        "Client ID of certificate-verifying flows: spiffe, dns_san, uri_san or sha256",
    ),
    s(
        "FORWARDED_CERT_FORMAT",
        "rfc9440",
        "Header format of forwarded certificates: rfc9440, xfcc, nginx, haproxy or traefik",
    ),
    s(
        "FORWARDED_CERT_HEADER",
        "per format: Client-Cert, X-Forwarded-Client-Cert, X-SSL-Client-Cert, X-SSL-Client-DER, X-Forwarded-Tls-Client-Cert",
        "Header carrying the forwarded client certificate",
    ),
    s(
        "FORWARDED_CERT_CHAIN_HEADER",
        "per format: Client-Cert-Chain, X-SSL-Client-Chain-DER",
        "Header carrying the forwarded intermediates",
    ),
    s(
        "TRUSTED_PROXIES",
        "",
        "Comma-separated CIDRs of the proxies allowed to forward certificates, e.g. 10.0.0.0/8,127.0.0.1/32; a range wider than an IPv4 /8 or a public IPv6 /16 warns",
    ),
    s(
        "ADMIN_PORT",
        "",
        "Serve /metrics, /healthz and /readyz on this plain-HTTP port instead of the main one",
    ),
    s(
        "ADMIN_BIND_ADDRESS",
        "BIND_ADDRESS",
        "IP address of the admin port",
    ),
    s(
        "RATE_LIMIT_PER_CLIENT",
        "10",
        "Token requests per second per client ID (token bucket); 0 turns the limit off",
    ),
    s(
        "RATE_LIMIT_PER_CLIENT_BURST",
        "50",
        "Token requests a client may send at once before RATE_LIMIT_PER_CLIENT applies",
    ),
    s(
        "RATE_LIMIT_GLOBAL",
        "0",
        "Token requests per second for all clients together; 0 turns the limit off",
    ),
    s(
        "RATE_LIMIT_GLOBAL_BURST",
        "RATE_LIMIT_GLOBAL",
        "Token requests that may arrive at once before RATE_LIMIT_GLOBAL applies",
    ),
    s(
        "RATE_LIMIT_AUTH_FAILURES",
        "10",
        "Failed authentications per second per caller address (token bucket, checked before verifying); beyond it 429. Behind TRUSTED_PROXIES the address they report in X-Forwarded-For, behind Google's LB its client entry (on requests with MTLS_LB_SECRET, or on a plain-HTTP listener when no secret is set); 0 or off turns the limit off",
    ),
    s(
        "RATE_LIMIT_AUTH_FAILURES_BURST",
        "50",
        "Failed authentications a caller address may have at once before RATE_LIMIT_AUTH_FAILURES applies",
    ),
    s(
        "MAX_CONCURRENT_REQUESTS",
        "2048",
        "Requests answered at once; more get 503 with Retry-After. A request takes a slot only once its body is in; HTTP/2 allows an eighth of it (at most 100) streams per connection",
    ),
    s(
        "MAX_CONNECTIONS",
        "4096",
        "Client connections open at once; more are closed at once",
    ),
    s(
        "REQUEST_TIMEOUT",
        "30",
        "Seconds to receive and answer one request; slower ones get 408",
    ),
    s(
        "HEADER_READ_TIMEOUT",
        "10",
        "Seconds from accept to the first complete request (TLS handshake, protocol detection, headers, body), and from a later request's headers to its body; slower clients are disconnected or get 408",
    ),
    s(
        "IDLE_TIMEOUT",
        "75",
        "Seconds a connection may stay without requests; then it is closed (HTTP/2: GOAWAY, and the socket 2 s later whatever the client does)",
    ),
    s(
        "SHUTDOWN_GRACE_PERIOD",
        "8",
        "Seconds accepted requests may take to finish after SIGTERM (Cloud Run allows 10)",
    ),
    s(
        "POLICY_FILE",
        "",
        "TOML client policy (rules, deny lists); unset: every verified certificate is admitted",
    ),
    s(
        "POLICY_RELOAD_INTERVAL",
        "5",
        "Seconds between checks of the policy and deny-list files for changes",
    ),
];

/// The client policy file and how often to look for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// `POLICY_FILE`.
    pub file: PathBuf,
    /// `POLICY_RELOAD_INTERVAL`.
    pub reload_interval: std::time::Duration,
}

/// Names of the known flows, given by the caller so that registered custom flows count.
pub struct KnownFlows<'a>(pub &'a [&'a str]);

/// The signer to build.
#[derive(Debug, Clone)]
pub enum SignerConfig {
    /// IAM Credentials signJwt.
    Iam {
        /// `SERVICE_ACCOUNT`, when set.
        service_account: Option<String>,
    },
    /// Local keys.
    Local {
        /// `SIGNING_KEY_FILE`.
        key_file: Option<PathBuf>,
        /// `DATA_DIR`.
        data_dir: PathBuf,
    },
}

/// A workload identity pool provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentityPool {
    /// Project number.
    pub project_number: String,
    /// Pool ID.
    pub pool_id: String,
    /// Provider ID.
    pub provider_id: String,
}

impl WorkloadIdentityPool {
    /// The provider's resource name without scheme: `iam.googleapis.com/projects/...`.
    pub fn resource(&self) -> String {
        format!(
            "iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            self.project_number, self.pool_id, self.provider_id
        )
    }
}

/// How Token Service reaches Google.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// API base URLs.
    pub endpoints: crate::google::Endpoints,
    /// `UPSTREAM_TIMEOUT`.
    pub timeout: std::time::Duration,
    /// `UPSTREAM_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub application_credentials: Option<PathBuf>,
    /// `ACCESS_TOKEN_CACHE`.
    pub cache: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind_address: IpAddr,
    /// Listen port.
    pub port: u16,
    /// Enabled flows, in order.
    pub flows: Vec<String>,
    /// Settings of the built-in flows.
    pub flow_settings: FlowSettings,
    /// Issuer source.
    pub issuer: IssuerSource,
    /// `aud` of ID tokens.
    pub audience: String,
    /// The pool, when configured.
    pub pool: Option<WorkloadIdentityPool>,
    /// Token lifetime in seconds.
    pub validity_seconds: i64,
    /// `JWKS_URI`.
    pub jwks_uri: Option<String>,
    /// Signer.
    pub signer: SignerConfig,
    /// Google APIs.
    pub google: GoogleConfig,
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
    /// Client policy, when `POLICY_FILE` is set.
    pub policy: Option<PolicySettings>,
    /// Connection limits and shutdown timing.
    pub server: crate::server::ServerSettings,
    /// Rate, concurrency and request-time limits.
    pub limits: crate::limits::LimitSettings,
    /// The admin listener, when `ADMIN_PORT` is set.
    pub admin: Option<std::net::SocketAddr>,
    /// Things worth a warning at startup.
    pub warnings: Vec<String>,
    /// The raw values, for `check-config`.
    pub values: Values,
}

struct Reader<'a> {
    values: &'a Values,
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|(v, _)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, message: String) {
        self.errors.push(message);
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    /// Whole seconds (an `s` suffix is allowed) within `range`.
    fn seconds(&mut self, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        self.number(name, default, range, "whole seconds", true)
    }

    /// A whole number within `range`.
    fn count(&mut self, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        self.number(name, default, range, "a whole number", false)
    }

    fn number(
        &mut self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        what: &str,
        seconds: bool,
    ) -> u64 {
        let Some(v) = self.get(name).map(str::to_owned) else {
            return default;
        };
        let digits = if seconds { v.trim_end_matches('s') } else { &v };
        match digits.parse::<u64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                self.fail(format!(
                    "{name}: '{v}' is not valid; expected {what} from {} to {}",
                    range.start(),
                    range.end()
                ));
                default
            }
        }
    }

    fn header(&mut self, name: &str, default: &'static str) -> HeaderName {
        let fallback = HeaderName::from_static(default);
        let Some(v) = self.get(name).map(str::to_owned) else {
            return fallback;
        };
        HeaderName::from_bytes(v.as_bytes()).unwrap_or_else(|_| {
            self.fail(format!(
                "{name}: '{v}' is not a valid HTTP header name (letters, digits and '-')"
            ));
            fallback
        })
    }

    fn url(&mut self, name: &str) -> Option<String> {
        let v = self.get(name)?.trim_end_matches('/').to_owned();
        match v.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("https" | "http"))
                    && uri.host().is_some_and(|h| !h.is_empty())
                    && uri.query().is_none()
                    && !v.contains('#') =>
            {
                Some(v)
            }
            _ => {
                self.fail(format!("{name}: '{v}' is not valid; expected an https:// URL without query or fragment, e.g. https://tokens.example.com"));
                None
            }
        }
    }

    /// A pool setting under either spelling; both set to different values is an error.
    fn pool_part(&mut self, part: &str) -> Option<String> {
        let right = format!("WORKLOAD_IDENTITY_{part}");
        let typo = format!("WORKLOAD_IDENITY_{part}");
        match (
            self.get(&right).map(str::to_owned),
            self.get(&typo).map(str::to_owned),
        ) {
            (Some(a), Some(b)) if a != b => {
                self.fail(format!("{right} ('{a}') and {typo} ('{b}') are both set, to different values; set only one of them"));
                None
            }
            (a, b) => a.or(b),
        }
    }
}

/// Validates the values and builds the configuration, or returns every problem found.
pub fn load(values: Values, known: KnownFlows<'_>) -> Result<Config, Vec<String>> {
    let mut r = Reader {
        values: &values,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut warnings = Vec::new();
    let on_cloud_run = r.get("K_SERVICE").is_some();

    let port = match r.get("PORT").map(str::parse::<u16>) {
        None => 8080,
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            let v = r.get("PORT").unwrap_or_default().to_owned();
            r.fail(format!(
                "PORT: '{v}' is not valid; expected a port number from 0 to 65535"
            ));
            8080
        }
    };
    let default_bind: IpAddr = if on_cloud_run {
        [0, 0, 0, 0].into()
    } else {
        [127, 0, 0, 1].into()
    };
    let bind_address = match r
        .get("BIND_ADDRESS")
        .map(|v| (v.to_owned(), v.parse::<IpAddr>()))
    {
        None => default_bind,
        Some((_, Ok(ip))) => ip,
        Some((v, Err(_))) => {
            r.fail(format!("BIND_ADDRESS: '{v}' is not valid; expected an IP address such as 0.0.0.0 or 127.0.0.1"));
            default_bind
        }
    };

    let flows = read_flows(&mut r, &known);

    let xlb = read_xlb(&mut r);
    let (tls, trust, client_id) = read_tls(&mut r, &flows);
    let forwarded = read_forwarded(&mut r, &flows, trust.is_some());
    let xlb_name = crate::flows::xlb_mtls::NAME;
    if flows.iter().any(|f| f == xlb_name) {
        if let Err(e) = xlb.validate() {
            r.fail(e);
        }
        if xlb.lb_secret.is_none() && !r.values.contains_key("MTLS_LB_SECRET") {
            if tls.is_some() {
                // Google's load balancer is not the only one who can reach a TLS listener:
                // every client can, and send the headers itself.
                r.fail(format!("MTLS_LB_SECRET: required when the flow {xlb_name} runs on a TLS listener (TLS_CERT_FILE is set): without it any client that reaches the port can send X-Client-Cert-* headers and be any client; set MTLS_LB_SECRET to the value the load balancer adds in MTLS_LB_SECRET_HEADER, or remove {xlb_name} from AUTH_FLOWS"));
            } else if !bind_address.is_loopback() {
                r.warn(format!("the flow {xlb_name} trusts the X-Client-Cert-* headers of every request to {bind_address} and MTLS_LB_SECRET is not set: anyone who can reach this address directly can claim to be any client; make sure only the load balancer can (Cloud Run: ingress internal-and-cloud-load-balancing), or set MTLS_LB_SECRET"));
            } else if flows
                .iter()
                .any(|f| f == crate::flows::forwarded_cert::NAME)
            {
                // On loopback behind a proxy: nginx and HAProxy pass a client's own
                // X-Client-Cert-* headers through unless told to drop each one.
                r.warn(format!("the flow {xlb_name} trusts the X-Client-Cert-* headers of every request and MTLS_LB_SECRET is not set, while {} is enabled: a proxy in front passes client-sent X-Client-Cert-* headers through unless it drops them, so any client could claim to be any client; set MTLS_LB_SECRET, or remove {xlb_name} from AUTH_FLOWS", crate::flows::forwarded_cert::NAME));
            }
        }
    }

    let issuer = match r.url("TOKEN_ISSUER") {
        Some(iss) => {
            if iss.starts_with("http://") {
                warnings.push(format!("TOKEN_ISSUER '{iss}' uses http://: fine for local development, but cloud verifiers require https"));
            }
            IssuerSource::Fixed(iss)
        }
        None => {
            warnings.push("TOKEN_ISSUER is not set: the issuer is derived per request as https:// + the Host header; set TOKEN_ISSUER to pin it".into());
            IssuerSource::FromHost
        }
    };

    let (audience, pool) = read_audience(&mut r);

    let validity_seconds = match r.get("TOKEN_VALIDITY") {
        None => 300,
        Some(v) => match v.parse::<i64>() {
            Ok(m) if (1..=60).contains(&m) => m * 60,
            _ => {
                let v = v.to_owned();
                r.fail(format!(
                    "TOKEN_VALIDITY: '{v}' is not valid; expected whole minutes from 1 to 60"
                ));
                300
            }
        },
    };
    let jwks_uri = r.url("JWKS_URI");
    let signer = read_signer(&mut r, on_cloud_run);
    let google = read_google(&mut r);

    let log_format = match r.get("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            r.fail(format!(
                "LOG_FORMAT: '{other}' is not valid; expected json or text"
            ));
            LogFormat::Json
        }
    };
    let log_level = match r.get("LOG_LEVEL").map(str::to_ascii_lowercase) {
        None => "info".to_owned(),
        Some(l) if ["error", "warn", "info", "debug", "trace"].contains(&l.as_str()) => l,
        Some(other) => {
            r.fail(format!(
                "LOG_LEVEL: '{other}' is not valid; expected error, warn, info, debug or trace"
            ));
            "info".to_owned()
        }
    };
    let trace_project = r.get("GOOGLE_CLOUD_PROJECT").map(str::to_owned);
    let policy_interval = r.seconds("POLICY_RELOAD_INTERVAL", 5, 1..=3600);
    let (server, mut limits) = read_limits(&mut r, google.timeout);
    limits.caller = crate::limits::CallerKey {
        trusted_proxies: forwarded.trusted_proxies.clone(),
        // Without a secret, X-Forwarded-For is trusted only on a plain-HTTP listener, which
        // only the load balancer reaches (a TLS listener without MTLS_LB_SECRET is refused
        // above anyway).
        google_lb: flows.iter().any(|f| f == crate::flows::xlb_mtls::NAME)
            && (xlb.lb_secret.is_some() || tls.is_none()),
        lb_secret: xlb.lb_secret.clone(),
    };
    let admin = read_admin(&mut r, bind_address);
    let policy = r.get("POLICY_FILE").map(|file| PolicySettings {
        file: PathBuf::from(file),
        reload_interval: std::time::Duration::from_secs(policy_interval),
    });

    if !r.errors.is_empty() {
        return Err(r.errors);
    }
    warnings.append(&mut r.warnings);
    Ok(Config {
        bind_address,
        port,
        flows,
        flow_settings: FlowSettings {
            xlb,
            client_id,
            forwarded,
            trust: None,
        },
        tls,
        trust,
        issuer,
        audience,
        pool,
        validity_seconds,
        jwks_uri,
        signer,
        google,
        log_format,
        log_level,
        trace_project,
        policy,
        server,
        limits,
        admin,
        warnings,
        values,
    })
}

fn read_limits(
    r: &mut Reader<'_>,
    upstream_timeout: std::time::Duration,
) -> (crate::server::ServerSettings, crate::limits::LimitSettings) {
    use std::num::NonZeroU32;
    use std::time::Duration;
    let rate = |r: &mut Reader<'_>,
                name: &str,
                burst_name: &str,
                default: u64,
                default_burst: Option<u64>| {
        let per_second = r.count(name, default, 0..=1_000_000);
        let burst = r.count(
            burst_name,
            default_burst.unwrap_or(per_second),
            1..=1_000_000,
        );
        let per_second = NonZeroU32::new(u32::try_from(per_second).unwrap_or(u32::MAX))?;
        let burst = NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX))?;
        Some(crate::limits::Rate { per_second, burst })
    };
    let per_client = rate(
        r,
        "RATE_LIMIT_PER_CLIENT",
        "RATE_LIMIT_PER_CLIENT_BURST",
        10,
        Some(50),
    );
    let global = rate(r, "RATE_LIMIT_GLOBAL", "RATE_LIMIT_GLOBAL_BURST", 0, None);
    let auth_failures = if r
        .get("RATE_LIMIT_AUTH_FAILURES")
        .is_some_and(|v| v.eq_ignore_ascii_case("off"))
    {
        None
    } else {
        rate(
            r,
            "RATE_LIMIT_AUTH_FAILURES",
            "RATE_LIMIT_AUTH_FAILURES_BURST",
            10,
            Some(50),
        )
    };
    let request_timeout = Duration::from_secs(r.seconds("REQUEST_TIMEOUT", 30, 1..=3600));
    if request_timeout <= upstream_timeout {
        r.fail(format!(
            "REQUEST_TIMEOUT: {} s is not valid with UPSTREAM_TIMEOUT {} s; it must be longer, so that upstream errors reach the client",
            request_timeout.as_secs(),
            upstream_timeout.as_secs()
        ));
    }
    let limits = crate::limits::LimitSettings {
        global,
        per_client,
        auth_failures,
        caller: crate::limits::CallerKey::default(),
        max_concurrent_requests: usize::try_from(r.count(
            "MAX_CONCURRENT_REQUESTS",
            2048,
            1..=1_000_000,
        ))
        .unwrap_or(2048),
        request_timeout,
    };
    let server = crate::server::ServerSettings {
        max_connections: usize::try_from(r.count("MAX_CONNECTIONS", 4096, 1..=1_000_000))
            .unwrap_or(4096),
        header_read_timeout: Duration::from_secs(r.seconds("HEADER_READ_TIMEOUT", 10, 1..=600)),
        idle_timeout: Duration::from_secs(r.seconds("IDLE_TIMEOUT", 75, 1..=3600)),
        grace_period: Duration::from_secs(r.seconds("SHUTDOWN_GRACE_PERIOD", 8, 0..=3600)),
        max_streams_per_connection: crate::server::streams_per_connection(
            limits.max_concurrent_requests,
        ),
    };
    (server, limits)
}

fn read_admin(r: &mut Reader<'_>, bind_address: IpAddr) -> Option<std::net::SocketAddr> {
    let port = r.get("ADMIN_PORT").map(str::to_owned)?;
    let Ok(port) = port.parse::<u16>() else {
        r.fail(format!(
            "ADMIN_PORT: '{port}' is not valid; expected a port number from 0 to 65535"
        ));
        return None;
    };
    let address = match r.get("ADMIN_BIND_ADDRESS").map(str::to_owned) {
        None => bind_address,
        Some(v) => match v.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                r.fail(format!("ADMIN_BIND_ADDRESS: '{v}' is not valid; expected an IP address such as 0.0.0.0 or 127.0.0.1"));
                bind_address
            }
        },
    };
    Some(std::net::SocketAddr::new(address, port))
}

fn read_flows(r: &mut Reader<'_>, known: &KnownFlows<'_>) -> Vec<String> {
    // Set but blank is an empty list (an error), not "unset".
    let raw = match r.values.get("AUTH_FLOWS") {
        Some((v, _)) => v.clone(),
        None => crate::flows::xlb_mtls::NAME.to_owned(),
    };
    let names: Vec<String> = raw
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let listing = known.0.join(", ");
    if names.is_empty() {
        r.fail(format!(
            "AUTH_FLOWS: the list is empty; enable one or more of: {listing}"
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for name in &names {
        if !known.0.contains(&name.as_str()) {
            r.fail(format!(
                "AUTH_FLOWS: unknown flow '{name}'; known flows: {listing}"
            ));
        } else if seen.contains(name) {
            r.fail(format!("AUTH_FLOWS: flow '{name}' is listed twice"));
        }
        seen.push(name.clone());
    }
    names
}

/// Shorter load-balancer secrets get a warning: 16 random bytes cannot be guessed, and
/// `openssl rand -base64 32` (the deployment's recipe) makes 44.
pub const MIN_LB_SECRET_BYTES: usize = 16;

fn read_lb_secret(r: &mut Reader<'_>) -> Option<LbSecret> {
    // Present but blank is an error, not "unset": an empty secret mount must not turn the
    // check off. The value is never shown.
    let raw = r.values.get("MTLS_LB_SECRET").map(|(v, _)| v.clone())?;
    let value = raw.trim();
    if value.is_empty() {
        r.fail("MTLS_LB_SECRET: is set but blank (an empty secret mount?); set it to the value the load balancer sends in MTLS_LB_SECRET_HEADER, or unset it".into());
        return None;
    }
    if http::HeaderValue::from_str(value).is_err() {
        r.fail("MTLS_LB_SECRET: holds characters an HTTP header cannot carry (control characters or non-ASCII), so no request could match it; use printable ASCII, e.g. `openssl rand -base64 32`".into());
        return None;
    }
    if value.len() < MIN_LB_SECRET_BYTES {
        r.warn(format!(
            "MTLS_LB_SECRET is only {} bytes long: use at least {MIN_LB_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 32`) so that it cannot be guessed",
            value.len()
        ));
    }
    Some(LbSecret {
        header: r.header("MTLS_LB_SECRET_HEADER", "x-token-service-lb-secret"),
        value: value.to_owned(),
    })
}

fn read_xlb(r: &mut Reader<'_>) -> XlbSettings {
    let d = XlbSettings::default();
    let lb_secret = read_lb_secret(r);
    if lb_secret.is_none()
        && !r.values.contains_key("MTLS_LB_SECRET")
        && r.get("MTLS_LB_SECRET_HEADER").is_some()
    {
        r.fail("MTLS_LB_SECRET_HEADER is set but MTLS_LB_SECRET is not; set the secret value too, or neither".into());
    }
    XlbSettings {
        client_id: r.header("MTLS_HEADER_CLIENT_ID", "x-client-cert-spiffe"),
        present: r.header("MTLS_HEADER_CLIENT_CERT_PRESENT", "x-client-cert-present"),
        chain_verified: r.header(
            "MTLS_HEADER_CLIENT_CERT_CHAIN_VERIFIED",
            "x-client-cert-chain-verified",
        ),
        error: r.header("MTLS_HEADER_CLIENT_CERT_ERROR", "x-client-cert-error"),
        sha256: r.header(
            "MTLS_HEADER_CLIENT_CERT_SHA256_FINGERPRINT",
            "x-client-cert-hash",
        ),
        spiffe: r.header("MTLS_HEADER_CLIENT_CERT_SPIFFE_ID", "x-client-cert-spiffe"),
        uri_sans: r.header("MTLS_HEADER_CLIENT_CERT_URI_SANS", "x-client-cert-uri-sans"),
        dns_sans: r.header(
            "MTLS_HEADER_CLIENT_CERT_DNSNAME_SANS",
            "x-client-cert-dnsname-sans",
        ),
        serial: r.header(
            "MTLS_HEADER_CLIENT_CERT_SERIAL_NUMBER",
            "x-client-cert-serial-number",
        ),
        not_before: r.header(
            "MTLS_HEADER_CLIENT_CERT_VALID_NOT_BEFORE",
            "x-client-cert-valid-not-before",
        ),
        not_after: r.header(
            "MTLS_HEADER_CLIENT_CERT_VALID_NOT_AFTER",
            "x-client-cert-valid-not-after",
        ),
        lb_secret,
        clock: d.clock,
    }
}

fn read_audience(r: &mut Reader<'_>) -> (String, Option<WorkloadIdentityPool>) {
    let parts = [
        ("PROJECT_NUMBER", r.pool_part("PROJECT_NUMBER")),
        ("POOL_ID", r.pool_part("POOL_ID")),
        ("PROVIDER_ID", r.pool_part("PROVIDER_ID")),
    ];
    let missing: Vec<String> = parts
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(p, _)| format!("WORKLOAD_IDENTITY_{p}"))
        .collect();
    let pool = match &parts {
        [(_, Some(n)), (_, Some(p)), (_, Some(v))] => {
            if !n.bytes().all(|b| b.is_ascii_digit()) {
                r.fail(format!("WORKLOAD_IDENTITY_PROJECT_NUMBER: '{n}' is not valid; expected the numeric project number, not the project ID"));
            }
            for (name, id) in [("POOL_ID", p), ("PROVIDER_ID", v)] {
                if !id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    r.fail(format!("WORKLOAD_IDENTITY_{name}: '{id}' is not valid; expected lowercase letters, digits and '-'"));
                }
            }
            Some(WorkloadIdentityPool {
                project_number: n.clone(),
                pool_id: p.clone(),
                provider_id: v.clone(),
            })
        }
        _ => {
            if missing.len() < 3 {
                r.fail(format!(
                    "the workload identity pool settings are incomplete: {} not set",
                    missing.join(", ")
                ));
            }
            None
        }
    };
    let audience = match (r.get("TOKEN_AUDIENCE"), &pool) {
        (Some(aud), _) => aud.to_owned(),
        (None, Some(pool)) => format!("https://{}", pool.resource()),
        (None, None) => {
            if missing.len() == 3 {
                r.fail("TOKEN_AUDIENCE is not set and no workload identity pool is configured: set TOKEN_AUDIENCE, or WORKLOAD_IDENTITY_PROJECT_NUMBER, WORKLOAD_IDENTITY_POOL_ID and WORKLOAD_IDENTITY_PROVIDER_ID (the reference's spelling WORKLOAD_IDENITY_* works too)".into());
            }
            String::new()
        }
    };
    (audience, pool)
}

fn read_signer(r: &mut Reader<'_>, on_cloud_run: bool) -> SignerConfig {
    let data_dir = PathBuf::from(r.get("DATA_DIR").unwrap_or("./.token-service"));
    let key_file = r.get("SIGNING_KEY_FILE").map(PathBuf::from);
    let local = SignerConfig::Local { key_file, data_dir };
    let service_account = r.get("SERVICE_ACCOUNT").map(str::to_owned);
    if let Some(sa) = &service_account
        && (!sa.contains('@') || sa.contains('/') || sa.contains(char::is_whitespace))
    {
        r.fail(format!(
            "SERVICE_ACCOUNT: '{sa}' is not a service account email"
        ));
    }
    match r.get("SIGNER").map(str::to_ascii_lowercase).as_deref() {
        Some("local") => local,
        None if !on_cloud_run => local,
        Some("iam") | None => SignerConfig::Iam { service_account },
        Some(other) => {
            r.fail(format!(
                "SIGNER: '{other}' is not valid; expected local or iam"
            ));
            local
        }
    }
}

fn read_tls(
    r: &mut Reader<'_>,
    flows: &[String],
) -> (
    Option<crate::tls::TlsSettings>,
    Option<crate::x509::TrustSettings>,
    crate::x509::ClientIdAttribute,
) {
    let path = |r: &Reader<'_>, name: &str| r.get(name).map(PathBuf::from);
    let interval = r.seconds("TLS_RELOAD_INTERVAL", 5, 1..=3600);
    let tls = match (path(r, "TLS_CERT_FILE"), path(r, "TLS_KEY_FILE")) {
        (Some(cert_file), Some(key_file)) => Some(crate::tls::TlsSettings {
            cert_file,
            key_file,
            reload_interval: std::time::Duration::from_secs(interval),
        }),
        (None, None) => None,
        (Some(_), None) => {
            r.fail(
                "TLS_KEY_FILE: required with TLS_CERT_FILE; set both, or neither for plain HTTP"
                    .into(),
            );
            None
        }
        (None, Some(_)) => {
            r.fail(
                "TLS_CERT_FILE: required with TLS_KEY_FILE; set both, or neither for plain HTTP"
                    .into(),
            );
            None
        }
    };
    let revocation = read_revocation(r);
    let trust = path(r, "TLS_CLIENT_CA_FILE").map(|ca_file| crate::x509::TrustSettings {
        ca_file,
        crl_file: path(r, "TLS_CLIENT_CRL_FILE"),
        reload_interval: std::time::Duration::from_secs(interval),
        revocation,
    });
    if revocation.required && r.get("TLS_CLIENT_CRL_FILE").is_none() {
        r.fail(
            "TLS_CLIENT_CRL_REQUIRED: true needs TLS_CLIENT_CRL_FILE with a CRL of every client CA; set the file, or TLS_CLIENT_CRL_REQUIRED=false".into(),
        );
    }
    if trust.is_none() && r.get("TLS_CLIENT_CRL_FILE").is_some() {
        r.fail(
            "TLS_CLIENT_CRL_FILE: needs TLS_CLIENT_CA_FILE, the CAs whose CRLs these are".into(),
        );
    }
    let mtls = crate::flows::mtls::NAME;
    if flows.iter().any(|f| f == mtls) {
        if tls.is_none() {
            r.fail(format!("TLS_CERT_FILE: required by the flow {mtls}, which needs Token Service to terminate TLS; set TLS_CERT_FILE and TLS_KEY_FILE"));
        }
        if trust.is_none() {
            r.fail(format!("TLS_CLIENT_CA_FILE: required by the flow {mtls}; set it to a PEM bundle of the client CAs"));
        }
    }
    let client_id = match r.get("MTLS_CLIENT_ID_ATTRIBUTE").map(str::to_owned) {
        None => crate::x509::ClientIdAttribute::Spiffe,
        Some(v) => crate::x509::ClientIdAttribute::parse(&v).unwrap_or_else(|| {
            r.fail(format!("MTLS_CLIENT_ID_ATTRIBUTE: '{v}' is not valid; expected spiffe, dns_san, uri_san or sha256"));
            crate::x509::ClientIdAttribute::Spiffe
        }),
    };
    (tls, trust, client_id)
}

/// `TLS_CLIENT_CRL_EXPIRED` and `TLS_CLIENT_CRL_REQUIRED`.
fn read_revocation(r: &mut Reader<'_>) -> crate::x509::RevocationPolicy {
    let mut policy = crate::x509::RevocationPolicy::default();
    if let Some(v) = r.get("TLS_CLIENT_CRL_EXPIRED").map(str::to_owned) {
        match crate::x509::ExpiredCrl::parse(&v) {
            Some(expired) => policy.expired = expired,
            None => r.fail(format!(
                "TLS_CLIENT_CRL_EXPIRED: '{v}' is not valid; expected warn or deny"
            )),
        }
    }
    match r
        .get("TLS_CLIENT_CRL_REQUIRED")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") => {}
        Some("true") => policy.required = true,
        Some(other) => r.fail(format!(
            "TLS_CLIENT_CRL_REQUIRED: '{other}' is not valid; expected true or false"
        )),
    }
    policy
}

fn read_forwarded(
    r: &mut Reader<'_>,
    flows: &[String],
    has_trust: bool,
) -> crate::flows::forwarded_cert::ForwardedSettings {
    use crate::flows::forwarded_cert::{ForwardedSettings, NAME, parse::ForwardedFormat};
    let format = match r.get("FORWARDED_CERT_FORMAT").map(str::to_owned) {
        None => ForwardedFormat::Rfc9440,
        Some(v) => ForwardedFormat::parse(&v).unwrap_or_else(|| {
            r.fail(format!("FORWARDED_CERT_FORMAT: '{v}' is not valid; expected rfc9440, xfcc, nginx, haproxy or traefik"));
            ForwardedFormat::Rfc9440
        }),
    };
    let header = r.header("FORWARDED_CERT_HEADER", format.default_header());
    let chain_header = match (
        r.get("FORWARDED_CERT_CHAIN_HEADER").is_some(),
        format.default_chain_header(),
    ) {
        (false, None) => None,
        (true, None) => {
            r.fail(format!(
                "FORWARDED_CERT_CHAIN_HEADER: FORWARDED_CERT_FORMAT={} has no separate chain header (Envoy sends Chain= inside XFCC, Traefik sends the chain in the same header, nginx cannot forward intermediates); unset it, or use rfc9440 or haproxy",
                r.get("FORWARDED_CERT_FORMAT").unwrap_or("rfc9440")
            ));
            None
        }
        (_, default) => Some(r.header(
            "FORWARDED_CERT_CHAIN_HEADER",
            default.unwrap_or("client-cert-chain"),
        )),
    };
    let mut trusted_proxies = Vec::new();
    let listed = r.get("TRUSTED_PROXIES").unwrap_or("").to_owned();
    for item in listed.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item
            .parse::<ipnet::IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            // An IPv4 proxy written in IPv6-mapped form (::ffff:10.0.0.0/104) is matched as the
            // IPv4 address it is, since peers are compared in canonical form.
            Ok(ipnet::IpNet::V6(v6)) if v6.addr().to_ipv4_mapped().is_some() && v6.prefix_len() >= 96 => {
                match v6.addr().to_ipv4_mapped().map(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)) {
                    Some(Ok(v4)) => trusted_proxies.push(ipnet::IpNet::V4(v4.trunc())),
                    _ => trusted_proxies.push(ipnet::IpNet::V6(v6)),
                }
            }
            Ok(net) => trusted_proxies.push(net),
            Err(_) => r.fail(format!("TRUSTED_PROXIES: '{item}' is not valid; expected IP addresses or CIDRs such as 10.0.0.0/8")),
        }
    }
    for net in &trusted_proxies {
        if covers_the_internet(net) {
            r.warn(format!("TRUSTED_PROXIES: '{net}' covers a large part of the Internet (an IPv4 prefix shorter than /8, or an IPv6 prefix shorter than /16 outside fc00::/7 and fe80::/10): every host in it can forward a certificate header and be any client; list only your proxies' addresses"));
        }
    }
    if flows.iter().any(|f| f == NAME) {
        if trusted_proxies.is_empty() {
            r.fail(format!("TRUSTED_PROXIES: required by the flow {NAME}; list the proxies that forward certificates (CIDR)"));
        }
        if !has_trust {
            r.fail(format!("TLS_CLIENT_CA_FILE: required by the flow {NAME}; set it to a PEM bundle of the client CAs"));
        }
    }
    ForwardedSettings {
        format,
        header,
        chain_header,
        trusted_proxies,
    }
}

/// Whether a trusted-proxy range is so wide that it holds much of the public Internet: an
/// IPv4 prefix shorter than /8 (more than one /8; `10.0.0.0/8` is fine), or an IPv6 prefix
/// shorter than /16 that is not inside the private (fc00::/7) or link-local (fe80::/10) space.
/// IPv4-mapped IPv6 ranges are compared as the IPv4 range they are (`::ffff:0.0.0.0/96` is
/// `0.0.0.0/0`).
fn covers_the_internet(net: &ipnet::IpNet) -> bool {
    match net {
        ipnet::IpNet::V4(v4) => v4.prefix_len() < 8,
        ipnet::IpNet::V6(v6) => {
            if let Some(v4) = v6.addr().to_ipv4_mapped()
                && v6.prefix_len() >= 96
            {
                return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .is_ok_and(|v4| v4.prefix_len() < 8);
            }
            let private = ["fc00::/7", "fe80::/10"]
                .iter()
                .filter_map(|p| p.parse::<ipnet::Ipv6Net>().ok())
                .any(|p| p.contains(v6));
            v6.prefix_len() < 16 && !private
        }
    }
}

fn read_google(r: &mut Reader<'_>) -> GoogleConfig {
    let metadata_host = r
        .get("GCE_METADATA_HOST")
        .unwrap_or("metadata.google.internal")
        .to_owned();
    if metadata_host.parse::<http::uri::Authority>().is_err() || metadata_host.contains('@') {
        r.fail(format!("GCE_METADATA_HOST: '{metadata_host}' is not valid; expected host[:port], e.g. 127.0.0.1:9090"));
    }
    let iam_credentials = r
        .url("IAM_CREDENTIALS_ENDPOINT")
        .unwrap_or_else(|| "https://iamcredentials.googleapis.com".into());
    let sts = r
        .url("STS_ENDPOINT")
        .unwrap_or_else(|| "https://sts.googleapis.com".into());
    let timeout = match r.get("UPSTREAM_TIMEOUT") {
        None => 10,
        Some(v) => match v.trim_end_matches('s').parse::<u64>() {
            Ok(n) if (1..=120).contains(&n) => n,
            _ => {
                let v = v.to_owned();
                r.fail(format!(
                    "UPSTREAM_TIMEOUT: '{v}' is not valid; expected whole seconds from 1 to 120"
                ));
                10
            }
        },
    };
    let max_connections =
        usize::try_from(r.count("UPSTREAM_MAX_CONNECTIONS", 256, 1..=65_536)).unwrap_or(256);
    let cache = match r
        .get("ACCESS_TOKEN_CACHE")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("on" | "true" | "1" | "yes") => true,
        Some("off" | "false" | "0" | "no") => false,
        Some(other) => {
            r.fail(format!(
                "ACCESS_TOKEN_CACHE: '{other}' is not valid; expected on or off"
            ));
            true
        }
    };
    GoogleConfig {
        endpoints: crate::google::Endpoints {
            metadata: format!("http://{metadata_host}"),
            iam_credentials,
            sts,
        },
        timeout: std::time::Duration::from_secs(timeout),
        max_connections,
        application_credentials: r.get("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from),
        cache,
    }
}

impl Config {
    /// The effective settings, one per line, secrets redacted.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for setting in SETTINGS {
            let (value, origin) = match self.values.get(setting.name) {
                Some((_, _)) if setting.secret => {
                    ("<redacted>".to_owned(), self.origin(setting.name))
                }
                Some((v, _)) => (v.clone(), self.origin(setting.name)),
                None if setting.default.is_empty() => continue,
                None => (setting.default.to_owned(), "default"),
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

    fn origin(&self, name: &str) -> &'static str {
        match self.values.get(name).map(|(_, o)| *o) {
            Some(Origin::Env) => "environment",
            Some(Origin::File) => "config file",
            Some(Origin::Command) => "command default",
            None => "default",
        }
    }
}

#[cfg(test)]
mod tests;
