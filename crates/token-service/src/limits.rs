//! Protection against overload and abuse: token-bucket rate limits (global, per client, and
//! failed authentications per caller address), a cap on requests answered at once, and a
//! deadline per request. Connection-level limits
//! (count, header and idle timeouts, shutdown grace) are applied by `server`. Uses `metrics`
//! (a handle it is given) and `clock`; knows nothing of HTTP responses: callers turn a
//! [`RateLimited`] into their failure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{Instant, monotonic};
use crate::metrics::Metrics;

use http::HeaderMap;
use ipnet::IpNet;

use crate::flows::xlb_mtls::LbSecret;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Semaphore;

pub(crate) mod settings;
pub use settings::LimitSettings;

/// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests that may arrive at once.
    pub burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, NoOpMiddleware>;

/// The limits in force.
pub struct Limits {
    settings: LimitSettings,
    global: Option<Direct>,
    per_client: Option<Keyed>,
    auth_failures: Option<AuthFailures>,
    in_flight: Arc<Semaphore>,
    clock: DefaultClock,
    metrics: Arc<Metrics>,
}

/// A request refused by a rate limit; retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Seconds until a request would be admitted (at least 1).
    pub retry_after: u64,
}

impl Limits {
    /// Builds the limiters; refusals are counted in `metrics`.
    pub fn new(settings: LimitSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            global: settings.global.map(|r| RateLimiter::direct(r.quota())),
            per_client: settings.per_client.map(|r| RateLimiter::keyed(r.quota())),
            auth_failures: settings.auth_failures.map(AuthFailures::new),
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            clock: DefaultClock::default(),
            metrics,
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Takes one token from the global bucket.
    pub fn check_global(&self) -> Result<(), RateLimited> {
        let Some(limiter) = &self.global else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            self.metrics.rate_limited("global");
            self.refusal(not_until.wait_time_from(self.clock.now()))
        })
    }

    /// Takes one token from the bucket of `client_id`.
    pub fn check_client(&self, client_id: &str) -> Result<(), RateLimited> {
        let Some(limiter) = &self.per_client else {
            return Ok(());
        };
        limiter
            .check_key(&client_id.to_owned())
            .map_err(|not_until| {
                self.metrics.rate_limited("client");
                self.refusal(not_until.wait_time_from(self.clock.now()))
            })
    }

    /// The address that identifies the caller of a request for the failed-authentication
    /// limit (see [`CallerKey`]); `None` when that limit is off or the peer is unknown.
    pub fn caller_of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        self.auth_failures.as_ref()?;
        self.settings.caller.caller(peer?.ip(), headers)
    }

    /// Refuses a caller whose failed-authentication bucket is empty, before any verification
    /// work is done for it. Takes nothing from the bucket.
    pub fn check_auth_failures(&self, caller: IpAddr) -> Result<(), RateLimited> {
        let Some(limiter) = &self.auth_failures else {
            return Ok(());
        };
        limiter.check(caller).map_err(|wait| {
            self.metrics.rate_limited("auth_failures");
            self.refusal(wait)
        })
    }

    /// Takes one token from the caller's failed-authentication bucket.
    pub fn auth_failed(&self, caller: IpAddr) {
        if let Some(limiter) = &self.auth_failures {
            limiter.consume(caller);
        }
    }

    fn refusal(&self, wait: Duration) -> RateLimited {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        RateLimited {
            retry_after: seconds.max(1),
        }
    }

    /// A permit to answer one request, if fewer than `MAX_CONCURRENT_REQUESTS` are being
    /// answered; dropped when the request is done.
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Forgets per-client buckets that are full again, so the map stays as small as the set
    /// of recently active clients. Call periodically.
    pub fn forget_idle_clients(&self) {
        if let Some(limiter) = &self.per_client {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.auth_failures {
            limiter.forget_full();
        }
    }

    /// Runs [`Self::forget_idle_clients`] every minute. Must run inside a Tokio runtime.
    pub fn start_housekeeping(self: &Arc<Self>, background: &crate::tasks::Background) {
        if self.per_client.is_none() && self.auth_failures.is_none() {
            return;
        }
        let limits = Arc::downgrade(self);
        background.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                match limits.upgrade() {
                    Some(limits) => limits.forget_idle_clients(),
                    None => return,
                }
            }
        });
    }
}

/// How the caller of a request is identified for the failed-authentication limit.
///
/// - A direct peer: its address (IPv6 by its /64, which one host usually holds whole).
/// - A peer in `TRUSTED_PROXIES`: the rightmost `X-Forwarded-For` entry that is not a trusted
///   proxy, i.e. the address the outermost trusted proxy saw; the proxy's own address when the
///   proxy sends no `X-Forwarded-For`.
/// - Behind Google's load balancer (the xlb flow is enabled): the client entry the load balancer
///   appends to `X-Forwarded-For` (`<client>,<load balancer>`, so the second-to-last entry),
///   but only for a request that proves it came through the load balancer: it carries the
///   `MTLS_LB_SECRET` header (compared in constant time), or no secret is configured and the
///   listener is plain HTTP (Cloud Run with ingress `internal-and-cloud-load-balancing`, where
///   only the load balancer reaches the service). Any other request is keyed on its peer, so a
///   client that reaches the port directly cannot name someone else's address in the header.
///
/// Entries are decoded one at a time from the right: bytes a client put left of what the
/// proxies appended (even non-ASCII ones) never change the key.
#[derive(Debug, Clone, Default)]
pub struct CallerKey {
    /// `TRUSTED_PROXIES`.
    pub trusted_proxies: Vec<IpNet>,
    /// Whether requests may come through Google's load balancer (xlb flow enabled, and
    /// `lb_secret` set or the listener plain HTTP).
    pub google_lb: bool,
    /// `MTLS_LB_SECRET`: a request without it is not keyed on `X-Forwarded-For` by
    /// `google_lb`.
    pub lb_secret: Option<LbSecret>,
}

impl CallerKey {
    /// The caller's key for a request from `peer`.
    pub fn caller(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        let key = if trusted(&peer) {
            let mut key = peer;
            for entry in forwarded_entries(headers) {
                match entry {
                    Some(ip) if trusted(&ip) => key = ip,
                    Some(ip) => {
                        key = ip;
                        break;
                    }
                    None => break,
                }
            }
            key
        } else if self.google_lb
            && self
                .lb_secret
                .as_ref()
                .is_none_or(|secret| secret.matches(headers))
        {
            forwarded_entries(headers).nth(1).flatten().unwrap_or(peer)
        } else {
            peer
        };
        Some(bucket_of(key))
    }
}

/// The `X-Forwarded-For` entries, rightmost (added last, by the nearest hop) first, each
/// parsed on its own (`None` when it is not an address). Lazy: entries left of the ones a
/// proxy appended are the client's to choose and are never looked at unless reached, and a
/// byte a header value may carry but a `&str` may not (obs-text) spoils only its own entry.
fn forwarded_entries(headers: &HeaderMap) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|b| *b == b','))
        .map(|entry| {
            std::str::from_utf8(entry.trim_ascii())
                .ok()
                .and_then(parse_forwarded)
        })
}

/// An `X-Forwarded-For` entry: an IP address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(item: &str) -> Option<IpAddr> {
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    item.parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

/// The bucket an address counts against: itself for IPv4, its /64 for IPv6.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Callers tracked at most, so memory stays bounded whatever number of addresses an attacker
/// has. Beyond it, new callers are not tracked (and so not limited per caller) until tracked
/// buckets are full again and forgotten: a shared overflow bucket would let whoever fills the
/// table with failures lock every new caller out, valid clients included.
const MAX_CALLERS: usize = 65_536;

/// Shards of the caller map, so concurrent requests rarely wait on each other.
const SHARDS: usize = 16;

/// Token buckets of failed authentications per caller (GCRA: each caller's state is the time
/// its bucket is full again). Checking costs nothing while no caller has failed recently.
struct AuthFailures {
    /// Time one failure adds, in nanoseconds.
    interval: u64,
    /// How far ahead of now a bucket's full-again time may be while one more failure fits.
    tolerance: u64,
    start: Instant,
    shards: Vec<Mutex<HashMap<IpAddr, u64>>>,
    callers: AtomicUsize,
}

impl AuthFailures {
    fn new(rate: Rate) -> Self {
        let interval = 1_000_000_000 / u64::from(rate.per_second.get());
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(rate.burst.get()) - 1),
            start: monotonic(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            callers: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(monotonic().saturating_duration_since(self.start).as_nanos())
            .unwrap_or(u64::MAX)
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, u64>> {
        // The low bytes of the network part: the shard only spreads lock contention.
        let index = match ip {
            IpAddr::V4(v4) => usize::from(v4.octets()[3]) ^ usize::from(v4.octets()[2]),
            IpAddr::V6(v6) => usize::from(v6.octets()[7]) ^ usize::from(v6.octets()[6]),
        };
        &self.shards[index % SHARDS]
    }

    /// `Err(wait)` when one more failure would not fit the caller's bucket.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.callers.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let now = self.now();
        let full_at = {
            let map = lock(self.shard(ip));
            match map.get(&ip) {
                Some(t) => *t,
                None => return Ok(()),
            }
        };
        let limit = now.saturating_add(self.tolerance);
        if full_at > limit {
            Err(Duration::from_nanos(full_at - limit))
        } else {
            Ok(())
        }
    }

    /// Counts one failure of `ip`.
    fn consume(&self, ip: IpAddr) {
        let now = self.now();
        let mut map = lock(self.shard(ip));
        if self.callers.load(Ordering::Relaxed) >= MAX_CALLERS && !map.contains_key(&ip) {
            return;
        }
        let len = map.len();
        let entry = map.entry(ip).or_insert(now);
        *entry = (*entry).max(now).saturating_add(self.interval);
        if map.len() > len {
            self.callers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets callers whose bucket is full again.
    fn forget_full(&self) {
        let now = self.now();
        for shard in &self.shards {
            let mut map = lock(shard);
            let before = map.len();
            map.retain(|_, full_at| *full_at > now);
            map.shrink_to_fit();
            self.callers
                .fetch_sub(before - map.len(), Ordering::Relaxed);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
