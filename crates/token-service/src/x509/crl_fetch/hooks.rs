//! Where fetched CRLs meet the trust material: the distribution points a verified chain names
//! (asked for on the blocking thread that verified it), their first fetch on behalf of a
//! request, the refresher task, and the rebuild of the material with what was fetched.

use std::sync::Arc;
use std::time::Duration;

use super::CrlFetcher;
use super::cdp::Point;
use crate::tasks::Background;
use crate::x509::{Trust, TrustMaterial};

/// Longest pause of the refresher between looks at what is due.
const MAX_PAUSE: i64 = 60;

impl Trust {
    /// The distribution points of `chain` (normalised, leaf first) to fetch before its verdict
    /// is final: none unless `TLS_CLIENT_CRL_FOLLOW_CDP=true`, none already known, none of a
    /// certificate whose issuer is not trusted. Parses and checks signatures: call it where
    /// the chain is verified, off the async workers.
    pub(crate) fn crl_points(&self, material: &TrustMaterial, chain: &[Vec<u8>]) -> Vec<Point> {
        match &self.fetcher {
            Some(fetcher) => fetcher.points(chain, &material.bundle),
            None => Vec::new(),
        }
    }

    /// Fetches each of `points` once (the first request that names it does; others wait for
    /// that fetch, at most `TLS_CLIENT_CRL_FETCH_TIMEOUT`) and rebuilds the trust material when
    /// a CRL was taken in. A URL tried before is not fetched again here: the refresher retries
    /// it with backoff. The caller verifies again when the material's version changed.
    pub(crate) async fn fetch_points(self: &Arc<Self>, points: Vec<Point>) {
        let Some(fetcher) = self.fetcher.clone() else {
            return;
        };
        let fetches = points.into_iter().map(|point| {
            let (trust, fetcher) = (self.clone(), fetcher.clone());
            async move {
                let Some(gate) = fetcher.claim(&point) else {
                    return;
                };
                let wait = crate::clock::monotonic() + fetcher.settings.timeout;
                let Ok(_held) = crate::clock::timeout_at(wait, gate.lock_owned()).await else {
                    return;
                };
                if fetcher.attempted(&point.url) {
                    return;
                }
                let bundle = trust.current().bundle.clone();
                if fetcher.refresh(&point.url, &bundle).await {
                    trust.rebuild_in_background().await;
                }
            }
        });
        futures_util::future::join_all(fetches).await;
    }

    /// Starts the refresher (a task of `background`): fetches the configured URLs at once, then
    /// every URL whenever it is due, and rebuilds the material after each round that took a
    /// CRL in. Nothing to do without fetched CRLs.
    pub fn watch_crl_urls(self: &Arc<Self>, background: &Background) {
        let Some(fetcher) = self.fetcher.clone() else {
            return;
        };
        let trust = self.clone();
        background.spawn(async move {
            loop {
                let pause = trust.refresh_round(&fetcher).await;
                let pause =
                    Duration::from_secs(u64::try_from(pause.clamp(1, MAX_PAUSE)).unwrap_or(1));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = fetcher.wake.notified() => {}
                }
            }
        });
    }

    /// Fetches what is due now; returns the seconds until the next URL is due.
    async fn refresh_round(self: &Arc<Self>, fetcher: &Arc<CrlFetcher>) -> i64 {
        let (due, _) = fetcher.due(fetcher.clock.now());
        for (url, gate) in due {
            let _held = gate.lock_owned().await;
            let bundle = self.current().bundle.clone();
            if fetcher.refresh(&url, &bundle).await {
                self.rebuild_in_background().await;
            }
        }
        fetcher.due(fetcher.clock.now()).1
    }

    /// [`Trust::rebuild`] on a blocking thread (it parses whole CRLs), logged.
    async fn rebuild_in_background(self: &Arc<Self>) {
        let trust = self.clone();
        let _ = tokio::task::spawn_blocking(move || trust.reload_logged()).await;
    }

    /// For `check-config`: the revocation sources, one line each, and each CRL in force.
    pub fn revocation_report(&self) -> Vec<String> {
        let settings = &self.settings;
        let mut lines = vec![format!(
            "revocation: CRL file: {}",
            settings
                .crl_file
                .as_ref()
                .map_or_else(|| "none".to_owned(), |p| format!("'{}'", p.display()))
        )];
        let fetch = &settings.fetch;
        let urls = if fetch.urls.is_empty() {
            "none".to_owned()
        } else {
            fetch.urls.join(", ")
        };
        lines.push(format!("revocation: CRL URLs: {urls}"));
        lines.push(format!(
            "revocation: follow CRL distribution points: {}",
            if fetch.follow_cdp { "on" } else { "off" }
        ));
        if fetch.enabled() {
            lines.push(format!(
                "revocation: CRL cache folder: '{}'; limits: {} URLs, {} bytes per CRL, {} s per fetch",
                fetch.cache_dir.display(),
                fetch.max_urls,
                fetch.max_bytes,
                fetch.timeout.as_secs()
            ));
        }
        let material = self.current();
        for info in &material.crl_info {
            lines.push(format!(
                "revocation: CRL of '{}' from {}: thisUpdate {}, nextUpdate {}, CRL number {}",
                info.issuer,
                info.source,
                rfc3339(Some(info.this_update)),
                rfc3339(info.next_update),
                info.number
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), ToString::to_string)
            ));
        }
        if let Some(fetcher) = &self.fetcher {
            for (url, e) in fetcher.entries().iter() {
                let state = match (&e.crl, &e.last_error) {
                    (_, Some(why)) => format!("last fetch failed: {why}"),
                    (Some(_), None) => "in force".to_owned(),
                    (None, None) => "not fetched yet".to_owned(),
                };
                let origin = e.origin.name();
                lines.push(format!("revocation: URL {url} ({origin}): {state}"));
            }
        }
        lines
    }
}

/// Seconds since the epoch as RFC 3339, `none` without a time.
fn rfc3339(t: Option<i64>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "none".to_owned())
}
