//! Settings of the rate, concurrency and request-time limits: the declarations and
//! [`LimitSettings`], which they fill. Read through `config::reader`; reads no environment.
//! How the caller address is found ([`super::CallerKey`]) depends on the flows and is filled
//! in by `config`.

use std::num::NonZeroU32;
use std::time::Duration;

use super::{CallerKey, Rate};
use crate::config::reader::{Reader, Setting};
use crate::config::source::Values;

const RATES: std::ops::RangeInclusive<u64> = 0..=1_000_000;
const BURSTS: std::ops::RangeInclusive<u64> = 1..=1_000_000;

/// `RATE_LIMIT_PER_CLIENT`.
pub const PER_CLIENT: Setting = Setting::count(
    "RATE_LIMIT_PER_CLIENT",
    10,
    RATES,
    "Token requests per second per client ID (token bucket); 0 turns the limit off",
);
/// `RATE_LIMIT_PER_CLIENT_BURST`.
pub const PER_CLIENT_BURST: Setting = Setting::count(
    "RATE_LIMIT_PER_CLIENT_BURST",
    50,
    BURSTS,
    "Token requests a client may send at once before RATE_LIMIT_PER_CLIENT applies",
);
/// `RATE_LIMIT_GLOBAL`.
pub const GLOBAL: Setting = Setting::count(
    "RATE_LIMIT_GLOBAL",
    0,
    RATES,
    "Token requests per second for all clients together; 0 turns the limit off",
);
/// `RATE_LIMIT_GLOBAL_BURST`: follows `RATE_LIMIT_GLOBAL` when unset.
pub const GLOBAL_BURST: Setting = Setting::count_following(
    "RATE_LIMIT_GLOBAL_BURST",
    BURSTS,
    "RATE_LIMIT_GLOBAL",
    "Token requests that may arrive at once before RATE_LIMIT_GLOBAL applies",
);
/// `RATE_LIMIT_AUTH_FAILURES`.
pub const AUTH_FAILURES: Setting = Setting::count(
    "RATE_LIMIT_AUTH_FAILURES",
    10,
    RATES,
    "Failed authentications per second per caller address (token bucket, checked before verifying); beyond it 429. Behind TRUSTED_PROXIES the address they report in X-Forwarded-For, behind Google's LB its client entry (on requests with MTLS_LB_SECRET, or on a plain-HTTP listener when no secret is set); 0 or off turns the limit off",
);
/// `RATE_LIMIT_AUTH_FAILURES_BURST`.
pub const AUTH_FAILURES_BURST: Setting = Setting::count(
    "RATE_LIMIT_AUTH_FAILURES_BURST",
    50,
    BURSTS,
    "Failed authentications a caller address may have at once before RATE_LIMIT_AUTH_FAILURES applies",
);
/// `MAX_CONCURRENT_REQUESTS`.
pub const MAX_CONCURRENT_REQUESTS: Setting = Setting::count(
    "MAX_CONCURRENT_REQUESTS",
    2048,
    1..=1_000_000,
    "Requests answered at once; more get 503 with Retry-After. A request takes a slot only once its body is in; HTTP/2 allows an eighth of it (at most 100) streams per connection",
);
/// `REQUEST_TIMEOUT`.
pub const REQUEST_TIMEOUT: Setting = Setting::seconds(
    "REQUEST_TIMEOUT",
    30,
    1..=3600,
    "Seconds to receive and answer one request; slower ones get 408",
);

/// The rate limits, in help order.
pub const RATE_LIMITS: &[Setting] = &[
    PER_CLIENT,
    PER_CLIENT_BURST,
    GLOBAL,
    GLOBAL_BURST,
    AUTH_FAILURES,
    AUTH_FAILURES_BURST,
    MAX_CONCURRENT_REQUESTS,
];
/// The request time limit.
pub const REQUEST: &[Setting] = &[REQUEST_TIMEOUT];

/// Limit settings.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `RATE_LIMIT_GLOBAL` / `_BURST`: all token requests together; `None` = off.
    pub global: Option<Rate>,
    /// `RATE_LIMIT_PER_CLIENT` / `_BURST`: per client ID; `None` = off.
    pub per_client: Option<Rate>,
    /// `RATE_LIMIT_AUTH_FAILURES` / `_BURST`: failed authentications per caller address;
    /// `None` = off.
    pub auth_failures: Option<Rate>,
    /// How the caller address of the failed-authentication limit is found.
    pub caller: CallerKey,
    /// `MAX_CONCURRENT_REQUESTS`.
    pub max_concurrent_requests: usize,
    /// `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
}

impl Default for LimitSettings {
    /// No rate limits; the declared concurrency and time limits.
    fn default() -> Self {
        let read = Self::read(&mut Reader::new(&Values::new()));
        Self {
            global: None,
            per_client: None,
            auth_failures: None,
            ..read
        }
    }
}

impl LimitSettings {
    /// Reads the limits; `caller` is left for `config` to fill in.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let per_client = rate(r, &PER_CLIENT, &PER_CLIENT_BURST);
        let global = rate(r, &GLOBAL, &GLOBAL_BURST);
        let auth_failures = if r
            .get(AUTH_FAILURES.name)
            .is_some_and(|v| v.eq_ignore_ascii_case("off"))
        {
            r.resolve(&AUTH_FAILURES, "off");
            None
        } else {
            rate(r, &AUTH_FAILURES, &AUTH_FAILURES_BURST)
        };
        let max_concurrent = r.count(&MAX_CONCURRENT_REQUESTS).unwrap_or_default();
        Self {
            global,
            per_client,
            auth_failures,
            caller: CallerKey::default(),
            max_concurrent_requests: usize::try_from(max_concurrent).unwrap_or(usize::MAX),
            request_timeout: r.seconds(&REQUEST_TIMEOUT),
        }
    }
}

/// A token bucket from a rate and its burst; `None` when the rate is 0 (off). A burst
/// declared without a default follows the rate.
fn rate(r: &mut Reader<'_>, rate: &Setting, burst: &Setting) -> Option<Rate> {
    let per_second = r.count(rate).unwrap_or(0);
    let burst = match r.count(burst) {
        Some(b) => b,
        None => {
            r.resolve(burst, per_second);
            per_second
        }
    };
    let per_second = NonZeroU32::new(u32::try_from(per_second).unwrap_or(u32::MAX))?;
    let burst = NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX))?;
    Some(Rate { per_second, burst })
}
