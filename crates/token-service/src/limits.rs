//! Protection against overload and abuse: token-bucket rate limits (global and per client),
//! a cap on requests answered at once, and a deadline per request. Connection-level limits
//! (count, header and idle timeouts, shutdown grace) are applied by `server`. Uses `metrics`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Semaphore;

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

/// Limit settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// `RATE_LIMIT_GLOBAL` / `_BURST`: all token requests together; `None` = off.
    pub global: Option<Rate>,
    /// `RATE_LIMIT_PER_CLIENT` / `_BURST`: per client ID; `None` = off.
    pub per_client: Option<Rate>,
    /// `MAX_CONCURRENT_REQUESTS`.
    pub max_concurrent_requests: usize,
    /// `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            global: None,
            per_client: None,
            max_concurrent_requests: 2048,
            request_timeout: Duration::from_secs(30),
        }
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>;
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, NoOpMiddleware>;

/// The limits in force.
pub struct Limits {
    settings: LimitSettings,
    global: Option<Direct>,
    per_client: Option<Keyed>,
    in_flight: Arc<Semaphore>,
    clock: DefaultClock,
}

/// A request refused by a rate limit; retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Seconds until a request would be admitted (at least 1).
    pub retry_after: u64,
}

impl Limits {
    /// Builds the limiters.
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            global: settings.global.map(|r| RateLimiter::direct(r.quota())),
            per_client: settings.per_client.map(|r| RateLimiter::keyed(r.quota())),
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            clock: DefaultClock::default(),
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
            crate::metrics::metrics().rate_limited("global");
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
                crate::metrics::metrics().rate_limited("client");
                self.refusal(not_until.wait_time_from(self.clock.now()))
            })
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
    }

    /// Runs [`Self::forget_idle_clients`] every minute. Must run inside a Tokio runtime.
    pub fn start_housekeeping(self: &Arc<Self>) {
        if self.per_client.is_none() {
            return;
        }
        let limits = Arc::downgrade(self);
        tokio::spawn(async move {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: u32) -> Option<Rate> {
        Some(Rate {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    #[test]
    fn per_client_buckets_are_independent_and_say_when_to_retry() {
        let limits = Limits::new(LimitSettings {
            per_client: rate(1, 3),
            ..LimitSettings::default()
        });
        for _ in 0..3 {
            assert_eq!(limits.check_client("a"), Ok(()));
        }
        let refused = limits.check_client("a");
        assert_eq!(refused, Err(RateLimited { retry_after: 1 }));
        assert_eq!(limits.check_client("b"), Ok(()));
        assert_eq!(limits.check_global(), Ok(()), "the global limit is off");
    }

    #[test]
    fn global_bucket_counts_every_request() {
        let limits = Limits::new(LimitSettings {
            global: rate(1, 2),
            ..LimitSettings::default()
        });
        assert_eq!(limits.check_global(), Ok(()));
        assert_eq!(limits.check_global(), Ok(()));
        assert!(limits.check_global().is_err());
        assert_eq!(
            limits.check_client("a"),
            Ok(()),
            "the per-client limit is off"
        );
    }

    #[test]
    fn concurrency_permits_run_out_and_come_back() {
        let limits = Limits::new(LimitSettings {
            max_concurrent_requests: 2,
            ..LimitSettings::default()
        });
        let a = limits.admit();
        let b = limits.admit();
        assert!(a.is_some() && b.is_some());
        assert!(limits.admit().is_none());
        drop(a);
        assert!(limits.admit().is_some());
    }
}
