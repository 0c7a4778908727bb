//! The only code that reads clocks. Tests pass a fixed clock so that expiry and
//! validity-window decisions are reproducible. Its [`Instant`] is the service's one monotonic
//! time type: clippy's `disallowed-types` keeps `std::time::Instant` and
//! `tokio::time::Instant` in this module, so every deadline and duration is measured, and
//! waited for ([`sleep_until`], [`timeout_at`]), on the same clock.
#![expect(
    clippy::disallowed_types,
    reason = "clock.rs is the one module that holds the monotonic clock's own types"
)]

use std::future::Future;
use std::ops::Add;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Source of the current time in whole seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    fixed: Option<i64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { fixed: None }
    }

    /// A clock that always reads `unix_seconds`.
    pub fn fixed(unix_seconds: i64) -> Self {
        Self {
            fixed: Some(unix_seconds),
        }
    }

    /// Seconds since the Unix epoch (negative only if the system clock is before 1970).
    #[expect(
        clippy::disallowed_methods,
        reason = "clock.rs is the one reader of the clocks"
    )]
    pub fn now(&self) -> i64 {
        if let Some(t) = self.fixed {
            return t;
        }
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// The wall clock now, to the nanosecond: for log timestamps and the validity windows of the
/// development certificates (decisions use [`Clock`], which tests can fix).
#[expect(
    clippy::disallowed_methods,
    reason = "clock.rs is the one reader of the clocks"
)]
pub fn utc_now() -> time::OffsetDateTime {
    time::OffsetDateTime::from(SystemTime::now())
}

/// A reading of the monotonic clock (see [`monotonic`]): ordered, moved forward by adding a
/// [`Duration`], and compared with [`Instant::saturating_duration_since`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(std::time::Instant);

impl Instant {
    /// Time from `earlier` to this instant (zero if `earlier` is later).
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_duration_since(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, duration: Duration) -> Instant {
        Instant(self.0 + duration)
    }
}

/// For Tokio's timers (`tokio::time::timeout_at`); [`sleep_until`] and [`timeout_at`] do it
/// for their callers.
impl From<Instant> for tokio::time::Instant {
    fn from(instant: Instant) -> Self {
        tokio::time::Instant::from_std(instant.0)
    }
}

/// The monotonic clock's reading now: the one call of `Instant::now` in the service, so that
/// every deadline and duration is measured the same way (clippy's `disallowed-methods` keeps
/// it here).
#[expect(
    clippy::disallowed_methods,
    reason = "clock.rs is the one reader of the clocks"
)]
pub fn monotonic() -> Instant {
    Instant(std::time::Instant::now())
}

/// Waits until `at` (at once if it has passed).
pub async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

/// Runs `work` until `at`: its output, or `Err` if `at` came first.
pub async fn timeout_at<F: Future>(
    at: Instant,
    work: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(at.into(), work).await
}

/// When a request's work must be done by: set once by the HTTP handler from `UPSTREAM_TIMEOUT`
/// and passed as an argument through grant, signer and access backend to every upstream call,
/// so that a client never waits longer than that in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(monotonic() + timeout)
    }

    /// A deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant itself, for [`timeout_at`].
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left (zero once past).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(monotonic())
    }

    /// Whether the deadline has passed.
    pub fn is_past(self) -> bool {
        self.remaining().is_zero()
    }
}

/// Measures how long something took, on the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Self {
        Self(monotonic())
    }

    /// Time since the start.
    pub fn elapsed(self) -> Duration {
        monotonic().saturating_duration_since(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_add_order_and_subtract_without_going_negative() {
        let start = monotonic();
        let later = start + Duration::from_millis(1500);
        assert!(later > start);
        assert_eq!(start.max(later), later);
        assert_eq!(
            later.saturating_duration_since(start),
            Duration::from_millis(1500)
        );
        assert_eq!(start.saturating_duration_since(later), Duration::ZERO);
        assert!(Deadline::at(start) < Deadline::at(later));
        assert_eq!(Deadline::at(later).instant(), later);
    }

    #[tokio::test]
    async fn waits_end_at_the_instant_given() {
        let at = monotonic() + Duration::from_millis(20);
        assert!(timeout_at(at, std::future::pending::<()>()).await.is_err());
        assert!(monotonic() >= at, "timed out at the instant, not before");
        let later = at + Duration::from_secs(5);
        assert_eq!(timeout_at(later, async { 7 }).await.ok(), Some(7));
        let at = monotonic() + Duration::from_millis(20);
        sleep_until(at).await;
        assert!(monotonic() >= at, "woke at the instant, not before");
    }
}
