//! CRLs fetched over HTTP: from `TLS_CLIENT_CRL_URLS`, and (with `TLS_CLIENT_CRL_FOLLOW_CDP=true`)
//! from the CRL distribution points of presented certificates whose issuer is trusted.
//!
//! Every download is checked before it is used: a CRL of a configured URL must be signed by a
//! CA of `TLS_CLIENT_CA_FILE` (with cRLSign, as a file CRL), one of a distribution point by the
//! CA that issued the certificate naming the point (whose own signatures lead to the bundle,
//! see [`cdp`]), and neither may be older (CRL number, then thisUpdate) than the CRL from that
//! URL in force; a refused download changes nothing. A CRL taken in is written to the cache
//! folder ([`cache`]) and the trust material is rebuilt with it (the file CRLs and the fetched
//! ones together, the newer CRL of one CA winning, see [`merge`]) and swapped in atomically.
//!
//! Who fetches: a request whose verified chain names a distribution point not seen yet waits
//! for one download of it (single flight per URL: concurrent requests wait for the same one,
//! each at most `TLS_CLIENT_CRL_FETCH_TIMEOUT`); a failed first download is a missing CRL
//! (`TLS_CLIENT_CRL_REQUIRED` decides) and is never retried by requests, only by the refresher
//! ([`hooks`]), a Background task that refreshes every URL before its CRL's nextUpdate and
//! retries failures with backoff ([`schedule`]). At most `TLS_CLIENT_CRL_MAX_URLS` URLs are
//! ever known; distribution points beyond that are not fetched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::clock::Clock;
use crate::metrics::Metrics;

pub mod cache;
pub mod cdp;
pub mod download;
mod hooks;
pub mod merge;
pub mod schedule;
pub(crate) mod settings;

pub use settings::FetchSettings;

use super::revocation::{CrlInfo, SignerProblem, may_sign_crls};
use cdp::Point;
use download::Downloader;

/// Longest issuer path followed from a certificate to a CA of the bundle.
pub const MAX_DEPTH: usize = super::MAX_INTERMEDIATES;

/// Where a URL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `TLS_CLIENT_CRL_URLS`.
    Configured,
    /// A CRL distribution point of a presented certificate.
    Cdp,
}

impl Origin {
    /// Its name in the cache and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Configured => "TLS_CLIENT_CRL_URLS",
            Self::Cdp => "distribution point",
        }
    }

    /// From [`Origin::name`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "TLS_CLIENT_CRL_URLS" => Some(Self::Configured),
            "distribution point" => Some(Self::Cdp),
            _ => None,
        }
    }
}

/// A checked CRL from a URL, for the trust material.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its URL.
    pub url: String,
    /// The CRL.
    pub der: CertificateRevocationListDer<'static>,
}

/// Held while a URL is fetched, so it is fetched once at a time.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// What is known of one URL.
struct Entry {
    origin: Origin,
    /// For a distribution point: the certificates vouching for the CRL there (see [`Point`]).
    issuers: Vec<Vec<u8>>,
    /// The CRL in force from this URL.
    crl: Option<Vec<u8>>,
    /// Failed fetches in a row.
    failures: u32,
    /// When it is fetched next (seconds since the epoch).
    due: i64,
    /// Whether a fetch was tried since it became known (or it came from the cache).
    attempted: bool,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
    /// Held while it is fetched, so it is fetched once at a time.
    gate: Gate,
}

impl Entry {
    fn new(origin: Origin, issuers: Vec<Vec<u8>>, due: i64) -> Self {
        Self {
            origin,
            issuers,
            crl: None,
            failures: 0,
            due,
            attempted: false,
            last_error: None,
            gate: Arc::default(),
        }
    }
}

/// The URLs, their CRLs and the means to fetch them.
pub struct CrlFetcher {
    settings: FetchSettings,
    downloader: Downloader,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Wakes the refresher when a URL becomes known.
    wake: tokio::sync::Notify,
    clock: Clock,
    metrics: Arc<Metrics>,
    limit_warned: AtomicBool,
}

impl CrlFetcher {
    /// The configured URLs (due at once) and the cached CRLs that still pass the checks
    /// against `bundle` (DER); `Err` when the HTTP client cannot be built.
    pub fn new(
        settings: FetchSettings,
        bundle: &[Vec<u8>],
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let downloader = Downloader::new(&settings)?;
        let now = clock.now();
        let mut entries = BTreeMap::new();
        for url in &settings.urls {
            entries.insert(url.clone(), Entry::new(Origin::Configured, Vec::new(), now));
        }
        let fetcher = Self {
            settings,
            downloader,
            entries: Mutex::new(entries),
            wake: tokio::sync::Notify::new(),
            clock,
            metrics,
            limit_warned: AtomicBool::new(false),
        };
        fetcher.read_cache(bundle);
        Ok(fetcher)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes in the cached CRLs of URLs still wanted (configured ones, and distribution points
    /// while they are followed), each checked as a download is.
    fn read_cache(&self, bundle: &[Vec<u8>]) {
        let dir = &self.settings.cache_dir;
        let (cached, skipped) = cache::load(dir, self.settings.max_urls, self.settings.max_bytes);
        for why in skipped {
            tracing::warn!(
                event = "client_crl_cache_skipped",
                "TLS_CLIENT_CRL_CACHE_DIR: skipped {why}"
            );
        }
        let now = self.clock.now();
        let mut entries = self.entries();
        for c in cached {
            let wanted = match c.origin {
                Origin::Configured => entries.contains_key(&c.url),
                Origin::Cdp => {
                    self.settings.follow_cdp
                        && entries.len() < self.settings.max_urls
                        && cdp::still_trusted(&c.issuers, bundle)
                }
            };
            if !wanted {
                continue;
            }
            let checked = check(c.origin, &c.issuers, &c.der, bundle)
                .and_then(|info| usable_by_verifier(&c.der, bundle).map(|()| info));
            match checked {
                Ok(info) => {
                    let entry = entries
                        .entry(c.url.clone())
                        .or_insert_with(|| Entry::new(c.origin, c.issuers.clone(), now));
                    // Fetched again at once all the same: the copy may be old.
                    entry.due = now;
                    entry.crl = Some(c.der);
                    entry.attempted = true;
                    tracing::info!(event = "client_crl_cached", url = %c.url, issuer = %info.issuer, "read the CRL of '{}' from {} out of TLS_CLIENT_CRL_CACHE_DIR", info.issuer, c.url);
                }
                Err(why) => {
                    tracing::warn!(event = "client_crl_cache_skipped", url = %c.url, "TLS_CLIENT_CRL_CACHE_DIR: skipped the cached CRL of {}: {why}", c.url);
                }
            }
        }
    }

    /// The CRLs in force from URLs.
    pub fn snapshot(&self) -> Vec<Fetched> {
        self.entries()
            .iter()
            .filter_map(|(url, e)| {
                Some(Fetched {
                    url: url.clone(),
                    der: CertificateRevocationListDer::from(e.crl.clone()?),
                })
            })
            .collect()
    }

    /// The distribution points of `chain` to fetch now (see [`cdp::unknown_points`]), within
    /// the limit on URLs; none unless they are followed.
    pub fn points(&self, chain: &[Vec<u8>], bundle: &[Vec<u8>]) -> Vec<Point> {
        if !self.settings.follow_cdp {
            return Vec::new();
        }
        let (known, room): (Vec<String>, usize) = {
            let entries = self.entries();
            let room = self.settings.max_urls.saturating_sub(entries.len());
            (entries.keys().cloned().collect(), room)
        };
        let points =
            cdp::unknown_points(chain, bundle, |u| known.iter().any(|k| k == u), room.max(1));
        if room == 0 && !points.is_empty() {
            if !self.limit_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(event = "client_crl_url_limit", url = %points[0].url, "not fetching the CRL distribution point {}: TLS_CLIENT_CRL_MAX_URLS={} URLs are known already; raise it if these CAs are yours", points[0].url, self.settings.max_urls);
            }
            return Vec::new();
        }
        points
    }

    /// Makes `point` known (unless the limit is reached) and returns the gate of its URL.
    fn claim(&self, point: &Point) -> Option<Gate> {
        let mut entries = self.entries();
        if !entries.contains_key(&point.url) && entries.len() >= self.settings.max_urls {
            return None;
        }
        // If the request gives up before fetching, the refresher takes over after a while.
        let due =
            self.clock.now() + 2 * i64::try_from(self.settings.timeout.as_secs()).unwrap_or(60);
        let entry = entries
            .entry(point.url.clone())
            .or_insert_with(|| Entry::new(Origin::Cdp, point.issuers.clone(), due));
        self.wake.notify_one();
        Some(entry.gate.clone())
    }

    fn attempted(&self, url: &str) -> bool {
        self.entries().get(url).is_none_or(|e| e.attempted)
    }

    /// The URLs due for a fetch at `now` and the gates to hold while fetching them; the time
    /// until the next one is due after them (seconds).
    fn due(&self, now: i64) -> (Vec<(String, Gate)>, i64) {
        let entries = self.entries();
        let due = entries
            .iter()
            .filter(|(_, e)| e.due <= now)
            .map(|(url, e)| (url.clone(), e.gate.clone()))
            .collect();
        let next = entries
            .values()
            .filter(|e| e.due > now)
            .map(|e| e.due - now)
            .min()
            .unwrap_or(60);
        (due, next)
    }

    /// Fetches `url` once (the caller holds its gate) and takes the CRL in when it passes the
    /// checks against `bundle`; returns whether the CRL in force changed. Logs the outcome.
    async fn refresh(&self, url: &str, bundle: &[Vec<u8>]) -> bool {
        let Some((origin, issuers, current)) = self
            .entries()
            .get(url)
            .map(|e| (e.origin, e.issuers.clone(), e.crl.clone()))
        else {
            return false;
        };
        let checked = match self.downloader.get(url).await {
            // Parsing and checking a CRL of thousands of entries is work for a blocking thread.
            Ok(body) => {
                let (issuers, current, bundle) =
                    (issuers.clone(), current.clone(), bundle.to_vec());
                tokio::task::spawn_blocking(move || {
                    checked_download(origin, &issuers, &body, &bundle, current.as_deref())
                })
                .await
                .unwrap_or_else(|_| Err("the check of the download did not finish".to_owned()))
            }
            Err(e) => Err(e.to_string()),
        };
        let now = self.clock.now();
        match checked {
            Ok((der, info)) => {
                let Some(cached) =
                    self.taken(url, origin, issuers, der, &info, now, current.as_ref())
                else {
                    return false;
                };
                // fsync of up to TLS_CLIENT_CRL_MAX_BYTES: off the async workers too.
                let dir = self.settings.cache_dir.clone();
                let stored = tokio::task::spawn_blocking(move || cache::store(&dir, &cached))
                    .await
                    .unwrap_or_else(|_| Err("the write did not finish".to_owned()));
                if let Err(e) = stored {
                    tracing::warn!(
                        event = "client_crl_cache_failed",
                        url,
                        "cannot keep the CRL of {url} on disk: {e}; a restart while its server is down will not have it"
                    );
                }
                true
            }
            Err(why) => {
                self.failed(url, &why, now);
                false
            }
        }
    }

    /// Records a CRL that passed the checks; what to write to the cache when it differs from
    /// the one in force.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one fetched CRL, named"
    )]
    fn taken(
        &self,
        url: &str,
        origin: Origin,
        issuers: Vec<Vec<u8>>,
        der: Vec<u8>,
        info: &CrlInfo,
        now: i64,
        current: Option<&Vec<u8>>,
    ) -> Option<cache::Cached> {
        let changed = current != Some(&der);
        let stale = info.expired(now);
        if let Some(e) = self.entries().get_mut(url) {
            e.attempted = true;
            e.failures = if stale { e.failures + 1 } else { 0 };
            e.due = if stale {
                schedule::retry_at(now, e.failures)
            } else {
                schedule::refresh_at(now, info.next_update)
            };
            e.last_error = stale.then(|| "the CRL served is past its nextUpdate".to_owned());
            e.crl = Some(der.clone());
        }
        self.metrics.reload("client_crl_url", true);
        let number = info
            .number
            .as_ref()
            .map_or_else(|| "none".to_owned(), ToString::to_string);
        tracing::info!(event = "client_crl_fetched", url, issuer = %info.issuer, crl_number = %number, next_update = info.next_update.unwrap_or_default(), changed, "fetched the CRL of '{}' from {url} (CRL number {number})", info.issuer);
        changed.then(|| cache::Cached {
            url: url.to_owned(),
            origin,
            der,
            issuers,
        })
    }

    /// Records a failed fetch: retried later with backoff; the CRL in force (if any) stays.
    fn failed(&self, url: &str, why: &str, now: i64) {
        let mut kept = false;
        if let Some(e) = self.entries().get_mut(url) {
            e.attempted = true;
            e.failures += 1;
            e.due = schedule::retry_at(now, e.failures);
            e.last_error = Some(why.to_owned());
            kept = e.crl.is_some();
        }
        self.metrics.reload("client_crl_url", false);
        let effect = if kept {
            "the CRL in force from it stays"
        } else {
            "no CRL from it is in force (TLS_CLIENT_CRL_REQUIRED decides what that means)"
        };
        tracing::warn!(event = "client_crl_fetch_failed", url, reason = %why, "cannot fetch the CRL at {url}: {why}; {effect}; retrying with backoff");
    }
}

/// A downloaded `body` as the CRL to take in, with its facts: a CRL that passes [`check`], of
/// the same scope (issuer, issuingDistributionPoint) as `current`, the CRL in force from that
/// URL, and not older than it. Another scope would be another CA's CRL taking the place of this
/// URL's (a configured URL accepts any CA of the bundle), so its own CA's would be gone.
fn checked_download(
    origin: Origin,
    issuers: &[Vec<u8>],
    body: &[u8],
    bundle: &[Vec<u8>],
    current: Option<&[u8]>,
) -> Result<(Vec<u8>, CrlInfo), String> {
    let der = decode(body)?;
    let info = check(origin, issuers, &der, bundle)?;
    usable_by_verifier(&der, bundle)?;
    let old = current.and_then(|current| info_of(current).ok());
    if let Some(old) = &old
        && old.scope != info.scope
    {
        return Err(format!(
            "the CRL served is of '{}' (or of another distribution point), but the CRL in force from this URL is of '{}'; keeping the one in force (if this URL now serves another CA's CRL, delete its file in TLS_CLIENT_CRL_CACHE_DIR and restart)",
            info.issuer, old.issuer
        ));
    }
    if let Some(old) = &old
        && old.newer_than(&info)
    {
        return Err(format!(
            "the CRL served is older than the one in force (CRL number {}, thisUpdate {}); keeping the one in force",
            info.number
                .as_ref()
                .map_or_else(|| "none".to_owned(), ToString::to_string),
            info.this_update
        ));
    }
    Ok((der, info))
}

/// Refuses a CRL that the chain verifier (rustls-webpki) cannot use although x509-parser reads
/// it (a v1 CRL, no nextUpdate, a delta CRL, an unknown reason code...): taken in, it would make
/// every rebuild of the trust material fail, freezing the material in force (file and bundle
/// reloads, every other fetched CRL) and, read back from the cache, stopping a restart.
fn usable_by_verifier(der: &[u8], bundle: &[Vec<u8>]) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        bundle
            .iter()
            .map(|ca| rustls_pki_types::CertificateDer::from(ca.clone())),
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let built = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
        .with_crls([CertificateRevocationListDer::from(der.to_vec())])
        .build();
    match built {
        Err(rustls::server::VerifierBuilderError::InvalidCrl(e)) => Err(format!(
            "the chain verifier cannot use this CRL ({e:?}); keeping the CRL in force"
        )),
        // No usable root is the bundle's matter, not this CRL's.
        _ => Ok(()),
    }
}

/// One CRL from a download: PEM (the first CRL) or DER.
fn decode(body: &[u8]) -> Result<Vec<u8>, String> {
    if body.trim_ascii_start().starts_with(b"-----") {
        return CertificateRevocationListDer::from_pem_slice(body)
            .map(|der| der.as_ref().to_vec())
            .map_err(|e| format!("not a PEM CRL: {e}"));
    }
    Ok(body.to_vec())
}

/// The facts of a CRL (DER).
fn info_of(der: &[u8]) -> Result<CrlInfo, String> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| format!("not a CRL: {e}"))?;
    Ok(CrlInfo::of(&crl, String::new()))
}

/// Checks a CRL from a URL of `origin`: configured, signed by a CA of `bundle` (which may sign
/// CRLs); a distribution point, signed by the first of `issuers`. Its facts when it passes.
pub fn check(
    origin: Origin,
    issuers: &[Vec<u8>],
    der: &[u8],
    bundle: &[Vec<u8>],
) -> Result<CrlInfo, String> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| format!("not a CRL: {e}"))?;
    let candidates: Vec<&Vec<u8>> = match origin {
        Origin::Configured => bundle.iter().collect(),
        Origin::Cdp => issuers.first().into_iter().collect(),
    };
    let mut named = false;
    for candidate in candidates {
        let Ok((_, ca)) = X509Certificate::from_der(candidate) else {
            continue;
        };
        if ca.subject().as_raw() != crl.issuer().as_raw() {
            continue;
        }
        named = true;
        if crl.verify_signature(ca.public_key()).is_ok() {
            return match may_sign_crls(&ca) {
                Ok(()) => Ok(CrlInfo::of(&crl, String::new())),
                Err(SignerProblem::NoCrlSign | SignerProblem::BadSignature) => Err(format!(
                    "it is signed by '{}', whose keyUsage extension lacks cRLSign (RFC 5280 4.2.1.3)",
                    crl.issuer()
                )),
            };
        }
    }
    Err(if named {
        format!(
            "it claims to be issued by '{}', but its signature does not verify with that CA's key (forged, damaged or signed by another key)",
            crl.issuer()
        )
    } else {
        match origin {
            Origin::Configured => format!(
                "it is issued by '{}', which is not in TLS_CLIENT_CA_FILE",
                crl.issuer()
            ),
            Origin::Cdp => format!(
                "it is issued by '{}', not by the CA that issued the certificate naming this distribution point",
                crl.issuer()
            ),
        }
    })
}

#[cfg(test)]
mod tests;
