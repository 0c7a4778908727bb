//! The rule about key rotation that a verifier's view shows: how long the JWK Set may be
//! cached (`Cache-Control: max-age`, `JWKS_MAX_AGE` of the service). A new key must be
//! published that long before it signs; without a `max-age` no rotation can know when every
//! cache has seen it, and without caching every verification fetches the keys again.

use super::rules::{Cloud, Report, Status};

/// The longest `max-age` that keeps a rotation short: a day.
pub const MAX_REASONABLE_AGE: u64 = 86_400;

/// `max-age` of a `Cache-Control` value; `Some(0)` for `no-store` and `no-cache`.
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut found = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return Some(0);
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            found = Some(seconds.trim_matches('"').parse::<u64>().unwrap_or(0));
        }
    }
    found
}

/// The `jwks-cache-max-age` rule.
pub fn check(report: &mut Report, cache_control: Option<&str>) {
    const RULE: &str = "jwks-cache-max-age";
    let fix = "serve the JWK Set with Cache-Control: public, max-age=N (JWKS_MAX_AGE, default 300) and rotate with `token-service keys`, which waits N seconds between publishing a key and signing with it";
    match cache_control.and_then(max_age) {
        None => report.add(
            RULE,
            Cloud::All,
            Status::Warn,
            format!(
                "the JWK Set has no Cache-Control max-age ({}): each verifier caches it as long as it chooses, so no rotation can know when every cache has the new key",
                cache_control.unwrap_or("no header")
            ),
            fix,
        ),
        Some(0) => report.add(
            RULE,
            Cloud::All,
            Status::Warn,
            "the JWK Set may not be cached: every verification fetches it again, and an outage of the issuer fails every exchange".into(),
            fix,
        ),
        Some(age) if age > MAX_REASONABLE_AGE => report.add(
            RULE,
            Cloud::All,
            Status::Warn,
            format!("max-age={age} s: a new key must be published that long before it signs"),
            fix,
        ),
        Some(age) => report.add(
            RULE,
            Cloud::All,
            Status::Pass,
            format!("max-age={age} s: a new key is published at least {age} s before it signs (`token-service keys activate` waits that long)"),
            fix,
        ),
    }
}
