//! Settings of the CRLs fetched over HTTP: the declarations and [`FetchSettings`], which they
//! fill. Read through `config::reader` (from [`crate::x509::TrustSettings::read`]); reads no
//! environment.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::reader::{Reader, Setting};

/// `TLS_CLIENT_CRL_URLS`.
pub const CRL_URLS: Setting = Setting::list(
    "TLS_CLIENT_CRL_URLS",
    "",
    "Comma-separated http/https URLs of CRLs of CAs in TLS_CLIENT_CA_FILE: fetched at startup, refreshed before their nextUpdate, cached in TLS_CLIENT_CRL_CACHE_DIR; a CRL no CA of the bundle signed is refused",
);
/// `TLS_CLIENT_CRL_FOLLOW_CDP`.
pub const CRL_FOLLOW_CDP: Setting = Setting::choice(
    "TLS_CLIENT_CRL_FOLLOW_CDP",
    Some("false"),
    &["true", "false"],
    "true: also fetch the CRLs named by the CRL distribution points of presented certificates whose issuer is trusted (first use waits for one fetch, at most TLS_CLIENT_CRL_FETCH_TIMEOUT)",
);
/// `TLS_CLIENT_CRL_CACHE_DIR`.
pub const CRL_CACHE_DIR: Setting = Setting::path(
    "TLS_CLIENT_CRL_CACHE_DIR",
    None,
    "Folder where fetched CRLs are kept (written atomically), read at startup before any fetch so a restart while the CRL server is down still has them",
)
.noted("crls under DATA_DIR");
/// `TLS_CLIENT_CRL_MAX_BYTES`.
pub const CRL_MAX_BYTES: Setting = Setting::count(
    "TLS_CLIENT_CRL_MAX_BYTES",
    8 * 1024 * 1024,
    1024..=256 * 1024 * 1024,
    "Largest CRL download accepted, in bytes; a larger one is refused and the CRL in force kept",
);
/// `TLS_CLIENT_CRL_MAX_URLS`.
pub const CRL_MAX_URLS: Setting = Setting::count(
    "TLS_CLIENT_CRL_MAX_URLS",
    16,
    1..=1024,
    "Most distinct CRL URLs fetched, TLS_CLIENT_CRL_URLS and discovered distribution points together; further distribution points are not fetched",
);
/// `TLS_CLIENT_CRL_FETCH_TIMEOUT`.
pub const CRL_FETCH_TIMEOUT: Setting = Setting::seconds(
    "TLS_CLIENT_CRL_FETCH_TIMEOUT",
    5,
    1..=120,
    "Seconds one CRL download may take in all (connect, redirects on the same host, body)",
);

/// The settings of fetched CRLs.
pub const FETCH: &[Setting] = &[
    CRL_URLS,
    CRL_FOLLOW_CDP,
    CRL_CACHE_DIR,
    CRL_MAX_BYTES,
    CRL_MAX_URLS,
    CRL_FETCH_TIMEOUT,
];

/// Where CRLs are fetched from, and the limits on fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// `TLS_CLIENT_CRL_URLS`, validated.
    pub urls: Vec<String>,
    /// `TLS_CLIENT_CRL_FOLLOW_CDP`.
    pub follow_cdp: bool,
    /// `TLS_CLIENT_CRL_CACHE_DIR` (default `DATA_DIR/crls`).
    pub cache_dir: PathBuf,
    /// `TLS_CLIENT_CRL_MAX_BYTES`.
    pub max_bytes: u64,
    /// `TLS_CLIENT_CRL_MAX_URLS`.
    pub max_urls: usize,
    /// `TLS_CLIENT_CRL_FETCH_TIMEOUT`.
    pub timeout: Duration,
}

impl Default for FetchSettings {
    /// Nothing fetched, the declared limits.
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            follow_cdp: false,
            cache_dir: PathBuf::from("./.token-service/crls"),
            max_bytes: 8 * 1024 * 1024,
            max_urls: 16,
            timeout: Duration::from_secs(5),
        }
    }
}

impl FetchSettings {
    /// Whether any CRL is fetched at all.
    pub fn enabled(&self) -> bool {
        self.follow_cdp || !self.urls.is_empty()
    }

    /// Reads the settings; `data_dir` is `DATA_DIR`, the default parent of the cache folder.
    pub fn read(r: &mut Reader<'_>, data_dir: Option<PathBuf>) -> Self {
        let mut urls: Vec<String> = Vec::new();
        for url in r.list(&CRL_URLS) {
            match check_url(&url) {
                Ok(()) if !urls.contains(&url) => urls.push(url),
                Ok(()) => {}
                Err(why) => r.fail(
                    CRL_URLS.name,
                    format!("'{url}' is not valid: {why}; expected http:// or https:// URLs, e.g. http://crl.example.com/ca.crl"),
                ),
            }
        }
        let follow_cdp = r.choice(&CRL_FOLLOW_CDP) == Some("true");
        let cache_dir = match r.path(&CRL_CACHE_DIR) {
            Some(dir) => dir,
            None => {
                let dir = data_dir
                    .unwrap_or_else(|| PathBuf::from("./.token-service"))
                    .join("crls");
                r.resolve(&CRL_CACHE_DIR, dir.display());
                dir
            }
        };
        let max_bytes = r.count(&CRL_MAX_BYTES).unwrap_or(8 * 1024 * 1024);
        let max_urls = r.count(&CRL_MAX_URLS).unwrap_or(16);
        if usize::try_from(max_urls).unwrap_or(usize::MAX) < urls.len() {
            r.fail(
                CRL_MAX_URLS.name,
                format!("{max_urls} is fewer than the {} URLs of TLS_CLIENT_CRL_URLS; raise it or list fewer URLs", urls.len()),
            );
        }
        Self {
            urls,
            follow_cdp,
            cache_dir,
            max_bytes,
            max_urls: usize::try_from(max_urls).unwrap_or(usize::MAX),
            timeout: r.seconds(&CRL_FETCH_TIMEOUT),
        }
    }
}

/// Whether `url` may be fetched: http or https, with a host, no user information.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "it cannot be parsed as a URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("only http and https are fetched");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("it has no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("it carries user information");
    }
    Ok(())
}
