//! Settings of the Google API clients: the declarations and [`GoogleConfig`], which they fill.
//! Read through `config::reader`; reads no environment.

use std::path::PathBuf;
use std::time::Duration;

use super::Endpoints;
use crate::config::reader::{Reader, Setting};

/// `GOOGLE_APPLICATION_CREDENTIALS`.
pub const APPLICATION_CREDENTIALS: Setting = Setting::path(
    "GOOGLE_APPLICATION_CREDENTIALS",
    None,
    "Application-default credentials file for development outside Google Cloud (service_account or authorized_user)",
);
/// `GCE_METADATA_HOST`.
pub const METADATA_HOST: Setting = Setting::text(
    "GCE_METADATA_HOST",
    Some("metadata.google.internal"),
    "Metadata server host[:port]",
);
/// `IAM_CREDENTIALS_ENDPOINT`.
pub const IAM_CREDENTIALS_ENDPOINT: Setting = Setting::url(
    "IAM_CREDENTIALS_ENDPOINT",
    Some("https://iamcredentials.googleapis.com"),
    "IAM Credentials API base URL",
);
/// `STS_ENDPOINT`.
pub const STS_ENDPOINT: Setting = Setting::url(
    "STS_ENDPOINT",
    Some("https://sts.googleapis.com"),
    "Security Token Service base URL",
);
/// `UPSTREAM_TIMEOUT`.
pub const UPSTREAM_TIMEOUT: Setting = Setting::seconds(
    "UPSTREAM_TIMEOUT",
    10,
    1..=120,
    "Seconds one token request may spend on Google API calls, retries included (1 to 120)",
);
/// `UPSTREAM_MAX_CONNECTIONS`.
pub const UPSTREAM_MAX_CONNECTIONS: Setting = Setting::count(
    "UPSTREAM_MAX_CONNECTIONS",
    256,
    1..=65_536,
    "Calls in flight at once to each Google API, one connection each (1 to 65536); more wait for a free one within UPSTREAM_TIMEOUT",
);
/// `ACCESS_TOKEN_CACHE`.
pub const ACCESS_TOKEN_CACHE: Setting = Setting::flag(
    "ACCESS_TOKEN_CACHE",
    true,
    "Cache access tokens per client, scope and service account: on or off",
);

/// `ACCESS_TOKEN_LIFETIME`.
pub const ACCESS_TOKEN_LIFETIME: Setting = Setting::seconds(
    "ACCESS_TOKEN_LIFETIME",
    3600,
    300..=43_200,
    "Seconds an impersonated access token (scope + service_account) lives, 300 to 43200; above 3600 needs the organization policy constraints/iam.allowServiceAccountCredentialLifetimeExtension",
);

/// Every setting of the Google clients, in help order.
pub const SETTINGS: &[Setting] = &[
    APPLICATION_CREDENTIALS,
    METADATA_HOST,
    IAM_CREDENTIALS_ENDPOINT,
    STS_ENDPOINT,
    UPSTREAM_TIMEOUT,
    UPSTREAM_MAX_CONNECTIONS,
    ACCESS_TOKEN_CACHE,
    ACCESS_TOKEN_LIFETIME,
];

/// How Token Service reaches Google.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// API base URLs.
    pub endpoints: Endpoints,
    /// `UPSTREAM_TIMEOUT`.
    pub timeout: Duration,
    /// `UPSTREAM_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    pub application_credentials: Option<PathBuf>,
    /// `ACCESS_TOKEN_CACHE`.
    pub cache: bool,
    /// `ACCESS_TOKEN_LIFETIME`, in seconds.
    pub access_token_lifetime: i64,
}

impl GoogleConfig {
    /// Reads the endpoints and the limits of the calls.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let metadata_host = r.text(&METADATA_HOST).unwrap_or_default();
        if metadata_host.parse::<http::uri::Authority>().is_err() || metadata_host.contains('@') {
            r.fail(
                METADATA_HOST.name,
                format!(
                    "'{metadata_host}' is not valid; expected host[:port], e.g. 127.0.0.1:9090"
                ),
            );
        }
        let iam_credentials = r.url(&IAM_CREDENTIALS_ENDPOINT).unwrap_or_default();
        let sts = r.url(&STS_ENDPOINT).unwrap_or_default();
        let timeout = r.seconds(&UPSTREAM_TIMEOUT);
        let max_connections = r.count(&UPSTREAM_MAX_CONNECTIONS).unwrap_or_default();
        let cache = r.flag(&ACCESS_TOKEN_CACHE);
        let access_token_lifetime =
            i64::try_from(r.seconds(&ACCESS_TOKEN_LIFETIME).as_secs()).unwrap_or(3600);
        Self {
            endpoints: Endpoints {
                metadata: format!("http://{metadata_host}"),
                iam_credentials,
                sts,
            },
            timeout,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            application_credentials: r.path(&APPLICATION_CREDENTIALS),
            cache,
            access_token_lifetime,
        }
    }
}
