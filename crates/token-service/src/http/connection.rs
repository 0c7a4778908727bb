//! What the server knows of one connection, shared with the request guard: when it was
//! accepted, whether a complete request has arrived on it yet, and whether one is being
//! answered. The server closes connections on these facts (no complete request within
//! `HEADER_READ_TIMEOUT` of accept; no request for `IDLE_TIMEOUT`); the guard reports them and
//! takes its deadline for a request body from them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::Instant;

/// One connection's bookkeeping; the server puts an `Arc` of it into every request's
/// extensions.
#[derive(Debug)]
pub struct Connection {
    accepted: Instant,
    header_read_timeout: Duration,
    /// Complete requests admitted so far.
    admitted: AtomicU64,
    /// Admitted requests being answered now.
    working: AtomicUsize,
    /// Milliseconds after `accepted` of the last admission or answer.
    last_ms: AtomicU64,
    /// Milliseconds after `accepted` when bytes arrived while no admitted request was being
    /// answered, until the next admission; `u64::MAX` when none are pending.
    pending_ms: AtomicU64,
    /// Wakes the server's connection loop when a request starts to arrive.
    started: tokio::sync::Notify,
}

impl Connection {
    /// A connection accepted at `accepted`.
    pub fn new(accepted: Instant, header_read_timeout: Duration) -> Self {
        Self {
            accepted,
            header_read_timeout,
            admitted: AtomicU64::new(0),
            working: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            pending_ms: AtomicU64::new(NONE),
            started: tokio::sync::Notify::new(),
        }
    }

    /// Records that bytes arrived from the client: while no admitted request is being answered,
    /// they start a request that must be complete within `HEADER_READ_TIMEOUT`.
    pub fn bytes_arrived(&self) {
        if self.working() == 0 && self.pending_ms.load(Ordering::Relaxed) == NONE {
            let marked = self.pending_ms.compare_exchange(
                NONE,
                self.elapsed_ms(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if marked.is_ok() {
                self.started.notify_one();
            }
        }
    }

    /// Resolves when bytes of a new request have begun to arrive (see [`Self::bytes_arrived`]).
    pub async fn request_started(&self) {
        self.started.notified().await;
    }

    /// Since when bytes of a request that is not complete yet have been arriving.
    pub fn pending_since(&self) -> Option<Instant> {
        match self.pending_ms.load(Ordering::Relaxed) {
            NONE => None,
            ms => Some(self.accepted + Duration::from_millis(ms)),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(
            crate::clock::monotonic()
                .saturating_duration_since(self.accepted)
                .as_millis(),
        )
        .unwrap_or(NONE - 1)
        .min(NONE - 1)
    }

    /// `HEADER_READ_TIMEOUT`.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// The instant by which the body of a request whose head has just arrived must be complete:
    /// the first request of a connection must be complete within `HEADER_READ_TIMEOUT` of
    /// accept (TLS handshake and protocol detection included), a later one within
    /// `HEADER_READ_TIMEOUT` of its head.
    pub fn body_deadline(&self) -> Instant {
        if self.has_admitted() {
            crate::clock::monotonic() + self.header_read_timeout
        } else {
            self.accepted + self.header_read_timeout
        }
    }

    /// Whether a complete request has arrived on this connection.
    pub fn has_admitted(&self) -> bool {
        self.admitted.load(Ordering::Relaxed) > 0
    }

    /// Records a complete request; the connection counts as busy while the returned value
    /// lives.
    pub fn admit(self: &Arc<Self>) -> Working {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        self.working.fetch_add(1, Ordering::Relaxed);
        self.pending_ms.store(NONE, Ordering::Relaxed);
        self.touch();
        Working(self.clone())
    }

    /// Admitted requests being answered now.
    pub fn working(&self) -> usize {
        self.working.load(Ordering::Relaxed)
    }

    /// How long no admitted request has been answered or admitted; `None` while one is being
    /// answered. Requests whose body never arrives do not count as activity.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.working() > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(
            crate::clock::monotonic()
                .saturating_duration_since(self.accepted)
                .saturating_sub(last),
        )
    }

    fn touch(&self) {
        self.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }
}

/// No bytes pending.
const NONE: u64 = u64::MAX;

/// An admitted request being answered; see [`Connection::admit`].
#[derive(Debug)]
pub struct Working(Arc<Connection>);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.touch();
        self.0.working.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admitted_requests_count_as_activity() {
        let accepted = crate::clock::monotonic();
        let conn = Arc::new(Connection::new(accepted, Duration::from_secs(10)));
        assert!(!conn.has_admitted());
        assert!(conn.idle_for().is_some());
        let first = conn.body_deadline();
        assert!(first <= accepted + Duration::from_secs(10));
        let working = conn.admit();
        assert!(conn.has_admitted());
        assert_eq!(conn.idle_for(), None);
        drop(working);
        assert!(conn.idle_for().is_some_and(|d| d < Duration::from_secs(1)));
        assert!(conn.body_deadline() >= first);
        assert_eq!(conn.pending_since(), None);
        conn.bytes_arrived();
        let pending = conn.pending_since();
        assert!(pending.is_some());
        conn.bytes_arrived();
        assert_eq!(conn.pending_since(), pending, "the first byte counts");
        drop(conn.admit());
        assert_eq!(conn.pending_since(), None);
    }
}
