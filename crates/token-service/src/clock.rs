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
