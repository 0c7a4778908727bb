//! Settings of the client trust material: the declarations and [`TrustSettings`], which they
//! fill, and the client-ID attribute of the certificate-verifying flows. Read through
//! `config::reader`; reads no environment.

use std::path::PathBuf;
use std::time::Duration;

use super::crl_fetch::FetchSettings;
use super::{ClientIdAttribute, ExpiredCrl, RevocationPolicy};
use crate::config::reader::{Reader, Setting};

/// `TLS_CLIENT_CA_FILE`.
pub const CA_FILE: Setting = Setting::path(
    "TLS_CLIENT_CA_FILE",
    None,
    "PEM bundle of the CAs that issue client certificates (mtls and forwarded-cert flows)",
);
/// `TLS_CLIENT_CRL_FILE`.
pub const CRL_FILE: Setting =
    Setting::path("TLS_CLIENT_CRL_FILE", None, "PEM or DER CRLs of those CAs");
/// `TLS_CLIENT_CRL_EXPIRED`.
pub const CRL_EXPIRED: Setting = Setting::choice(
    "TLS_CLIENT_CRL_EXPIRED",
    Some("warn"),
    &["warn", "deny"],
    "A CRL past its nextUpdate: warn (it still revokes what it lists; warning log, metric, /readyz detail) or deny (certificates of that CA are refused until a fresh CRL loads)",
);
/// `TLS_CLIENT_CRL_REQUIRED`.
pub const CRL_REQUIRED: Setting = Setting::choice(
    "TLS_CLIENT_CRL_REQUIRED",
    Some("false"),
    &["true", "false"],
    "true: every CA of a client chain must have a CRL in force (from TLS_CLIENT_CRL_FILE, TLS_CLIENT_CRL_URLS or a followed distribution point), else its certificates are refused",
);
/// `MTLS_CLIENT_ID_ATTRIBUTE`.
pub const CLIENT_ID_ATTRIBUTE: Setting = Setting::choice(
    "MTLS_CLIENT_ID_ATTRIBUTE",
    Some("spiffe"),
    &["spiffe", "dns_san", "uri_san", "sha256"],
    "Client ID of certificate-verifying flows: spiffe, dns_san, uri_san or sha256",
);

/// The CA bundle and its CRLs.
pub const TRUST: &[Setting] = &[CA_FILE, CRL_FILE, CRL_EXPIRED, CRL_REQUIRED];
/// The client ID of certificate-verifying flows.
pub const CLIENT_ID: &[Setting] = &[CLIENT_ID_ATTRIBUTE];

/// Where the client trust material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustSettings {
    /// PEM bundle of CA certificates (`TLS_CLIENT_CA_FILE`).
    pub ca_file: PathBuf,
    /// PEM or DER CRLs (`TLS_CLIENT_CRL_FILE`).
    pub crl_file: Option<PathBuf>,
    /// How often to look for changes (`TLS_RELOAD_INTERVAL`).
    pub reload_interval: Duration,
    /// `TLS_CLIENT_CRL_EXPIRED` and `TLS_CLIENT_CRL_REQUIRED`.
    pub revocation: RevocationPolicy,
    /// CRLs from URLs and distribution points (`TLS_CLIENT_CRL_URLS`, ...).
    pub fetch: FetchSettings,
}

impl TrustSettings {
    /// The trust material when `TLS_CLIENT_CA_FILE` is set, checked every `reload_interval`.
    pub fn read(r: &mut Reader<'_>, reload_interval: Duration) -> Option<Self> {
        let revocation = read_revocation(r);
        let crl_file = r.path(&CRL_FILE);
        let data_dir = r.path(&crate::signer::settings::DATA_DIR);
        let fetch = FetchSettings::read(r, data_dir);
        let revocation = RevocationPolicy {
            fetched: fetch.enabled(),
            ..revocation
        };
        if revocation.required && crl_file.is_none() && !fetch.enabled() {
            r.fail(
                CRL_REQUIRED.name,
                "true needs CRLs of every client CA: set TLS_CLIENT_CRL_FILE, TLS_CLIENT_CRL_URLS or TLS_CLIENT_CRL_FOLLOW_CDP=true, or TLS_CLIENT_CRL_REQUIRED=false",
            );
        }
        let Some(ca_file) = r.path(&CA_FILE) else {
            if crl_file.is_some() {
                r.fail(
                    CRL_FILE.name,
                    "needs TLS_CLIENT_CA_FILE, the CAs whose CRLs these are",
                );
            }
            if !fetch.urls.is_empty() {
                r.fail(
                    super::crl_fetch::settings::CRL_URLS.name,
                    "needs TLS_CLIENT_CA_FILE, the CAs whose CRLs these are",
                );
            }
            return None;
        };
        Some(Self {
            ca_file,
            crl_file,
            reload_interval,
            revocation,
            fetch,
        })
    }
}

/// `TLS_CLIENT_CRL_EXPIRED` and `TLS_CLIENT_CRL_REQUIRED`.
fn read_revocation(r: &mut Reader<'_>) -> RevocationPolicy {
    let mut policy = RevocationPolicy::default();
    if let Some(expired) = r.choice(&CRL_EXPIRED).and_then(ExpiredCrl::parse) {
        policy.expired = expired;
    }
    policy.required = r.choice(&CRL_REQUIRED) == Some("true");
    policy
}

/// `MTLS_CLIENT_ID_ATTRIBUTE`.
pub fn read_client_id(r: &mut Reader<'_>) -> ClientIdAttribute {
    r.choice(&CLIENT_ID_ATTRIBUTE)
        .and_then(ClientIdAttribute::parse)
        .unwrap_or_default()
}
