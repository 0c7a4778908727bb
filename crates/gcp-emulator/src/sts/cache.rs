//! The STS's cache of issuers' discovery documents and JWK Sets, per URL, as an HTTP cache
//! keeps them: for the response's `Cache-Control: max-age` (capped at a day); `no-store`,
//! `no-cache` or `max-age=0` are not kept; a response without `max-age` is kept for
//! [`DEFAULT_MAX_AGE`]. A token whose `kid` is missing from a cached set is refused until the
//! entry expires: no refetch on an unknown `kid`.
//!
//! Google documents neither how long its Security Token Service keeps an OIDC provider's keys
//! nor whether an unknown `kid` makes it fetch again (its workload identity federation pages
//! only ask the provider to publish a reachable `jwks_uri`), so the emulator takes the reading
//! that is hardest on a rotation: standard HTTP freshness and nothing more. A rotation that
//! passes here passes at a verifier that also refetches on an unknown `kid`. The cache holds
//! each URL as the first answer fetched after the previous entry expired: behind a load
//! balancer, whichever replica answered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a response without `max-age` is kept.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// The longest time any response is kept.
const MAX_AGE_CAP: Duration = Duration::from_secs(86_400);
/// At most this many URLs are kept (issuers come from the configuration, but a discovery
/// document names its `jwks_uri`): when full, expired entries go first, then the oldest.
const MAX_ENTRIES: usize = 256;

#[derive(Debug)]
struct Entry {
    value: Value,
    fetched: Instant,
    expires: Instant,
}

/// Responses by URL.
#[derive(Debug, Default)]
pub(crate) struct OidcCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl OidcCache {
    /// The cached JSON of `url`, when still fresh.
    fn fresh(&self, url: &str) -> Option<Value> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(url)
            .filter(|e| Instant::now() < e.expires)
            .map(|e| e.value.clone())
    }

    fn store(&self, url: &str, value: Value, keep: Duration) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(url) {
            entries.retain(|_, e| now < e.expires);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.fetched)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            url.to_owned(),
            Entry {
                value,
                fetched: now,
                expires: now + keep,
            },
        );
    }

    /// The JSON at `url`: from the cache while fresh, else fetched (and kept as its
    /// `Cache-Control` allows).
    pub(crate) async fn get(&self, http: &reqwest::Client, url: &str) -> Result<Value, String> {
        if let Some(value) = self.fresh(url) {
            return Ok(value);
        }
        let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let keep = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .map_or(Some(DEFAULT_MAX_AGE), |v| {
                freshness(v.to_str().unwrap_or(""))
            });
        let value = resp
            .json::<Value>()
            .await
            .map_err(|e| format!("response is not JSON: {e}"))?;
        if let Some(keep) = keep.filter(|k| !k.is_zero()) {
            self.store(url, value.clone(), keep.min(MAX_AGE_CAP));
        }
        Ok(value)
    }
}

/// How long a response with this `Cache-Control` may be kept: `None` for `no-store` and
/// `no-cache`, `max-age` when given (an unreadable one counts as 0), else the default.
pub(crate) fn freshness(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return None;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            let seconds = seconds.trim_matches('"').parse::<u64>().unwrap_or(0);
            max_age = Some(Duration::from_secs(seconds));
        }
    }
    Some(max_age.unwrap_or(DEFAULT_MAX_AGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_follows_cache_control() {
        assert_eq!(freshness("public, max-age=2"), Some(Duration::from_secs(2)));
        assert_eq!(freshness("max-age=0"), Some(Duration::ZERO));
        assert_eq!(freshness("no-store"), None);
        assert_eq!(freshness("private, no-cache"), None);
        assert_eq!(freshness("public"), Some(DEFAULT_MAX_AGE));
        assert_eq!(freshness("max-age=oops"), Some(Duration::ZERO));
    }
}
