//! The only code that reads wall-clock time. Tests pass a fixed clock so that expiry and
//! validity-window decisions are reproducible.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// The monotonic clock's reading now: the one call of `Instant::now` in the service, so that
/// every deadline and duration is measured the same way (clippy's `disallowed-methods` keeps
/// it here).
#[expect(
    clippy::disallowed_methods,
    reason = "clock.rs is the one reader of the clocks"
)]
pub fn monotonic() -> std::time::Instant {
    std::time::Instant::now()
}

/// When a request's work must be done by: set once by the HTTP handler from `UPSTREAM_TIMEOUT`
/// and passed as an argument through grant, signer and access backend to every upstream call,
/// so that a client never waits longer than that in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(std::time::Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: std::time::Duration) -> Self {
        Self(monotonic() + timeout)
    }

    /// A deadline at `instant`.
    pub fn at(instant: std::time::Instant) -> Self {
        Self(instant)
    }

    /// The instant itself, for `tokio::time::timeout_at`.
    pub fn instant(self) -> std::time::Instant {
        self.0
    }

    /// Time left (zero once past).
    pub fn remaining(self) -> std::time::Duration {
        self.0.saturating_duration_since(monotonic())
    }

    /// Whether the deadline has passed.
    pub fn is_past(self) -> bool {
        self.remaining().is_zero()
    }
}

/// Measures how long something took, on the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Self {
        Self(monotonic())
    }

    /// Time since the start.
    pub fn elapsed(self) -> std::time::Duration {
        monotonic().saturating_duration_since(self.0)
    }
}
