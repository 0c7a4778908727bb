//! Why the service cannot issue tokens now. Every readiness condition (the signer's keys or
//! Google identity, the TLS material in force, shutdown) answers `Result<(), NotReady>`; each
//! module keeps its own typed reasons and converts them into a [`NotReady`] with `From`.
//! `/readyz` turns one into its 503 through `From<NotReady> for Failure`, so the status and
//! code come from the one table in `http/error.rs`.
//!
//! Uses `error`, nothing else of ours.

use std::sync::Arc;

use crate::error::Failure;

/// Seconds a probe or client is told to wait before asking again.
pub const RETRY_AFTER: u64 = 5;

/// A readiness condition that is not met: the module's own reason, shown after "Not ready: "
/// by `/readyz`. Its text is a phrase that says what is wrong and, where the operator can,
/// what to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct NotReady(Arc<dyn std::error::Error + Send + Sync>);

impl NotReady {
    /// Not ready because of `reason` (a module's typed error).
    pub fn new(reason: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(reason))
    }
}

impl From<NotReady> for Failure {
    /// `/readyz`'s answer: 503 `temporarily_unavailable`, "Not ready: REASON".
    fn from(not_ready: NotReady) -> Self {
        Failure::unavailable(format!("Not ready: {not_ready}"), RETRY_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[derive(Debug, thiserror::Error)]
    #[error("the widget is not warm yet")]
    struct Cold;

    #[test]
    fn a_reason_becomes_a_503_that_names_it() {
        let failure = Failure::from(NotReady::new(Cold));
        assert_eq!(failure.message(), "Not ready: the widget is not warm yet");
        assert_eq!(failure.kind(), Kind::Unavailable { retry_after: 5 });
    }
}
