//! Connections: one accept loop for plain HTTP and TLS, with the connection-level protections
//! (how many connections, how long a client may take to send its headers, how long a
//! keep-alive connection may idle) and graceful shutdown: on the signal, stop accepting, let
//! every accepted request finish within the grace period, then return. Uses `tls` for the
//! handshake material and `http` for the request extensions; knows nothing of tokens.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::clock::{Instant, monotonic};
use crate::http::{Connection as ConnectionInfo, PeerCertificates};
use crate::metrics::Metrics;
use crate::tls::TlsServer;

pub(crate) mod settings;
pub use settings::ServerSettings;
mod stream;
use stream::Counted;

/// Largest request head (request line and headers) a client may send; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 128 * 1024;

/// The most HTTP/2 streams per connection (RFC 9113 §6.5.2 advises no fewer than 100).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// HTTP/2 streams allowed per connection for a `MAX_CONCURRENT_REQUESTS`: an eighth of it, at
/// least 1 and at most [`MAX_STREAMS_PER_CONNECTION`].
pub fn streams_per_connection(max_concurrent_requests: usize) -> u32 {
    u32::try_from(max_concurrent_requests / 8)
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_STREAMS_PER_CONNECTION)
}

/// How long a connection told to close (HTTP/2 GOAWAY) may take to finish before its socket is
/// closed, whatever the client does.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The longest a closing connection is kept for admitted requests still being answered.
const CLOSE_CAP: Duration = Duration::from_secs(30);

/// Requests started on one connection (their head arrived), for the drain.
struct InFlightCount(AtomicUsize);

/// Counts a request in flight on its connection for as long as it lives.
struct InFlight(Arc<InFlightCount>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` resolves,
/// then drains: no new connections, keep-alive connections close after their current request,
/// and this returns once every connection is done or the grace period is over (connections
/// still open then are closed). Connections are counted in `metrics`, the registry of the
/// application being served.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<TlsServer>>,
    settings: ServerSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let (stop, stopping) = watch::channel(false);
    let served = Served {
        router,
        builder: Arc::new(http_builder(&settings)),
        metrics,
        stopping,
    };
    // The connection tasks belong to this server: reaped as they end, closed after the drain.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(event = "accept_failed", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            served.metrics.connection_rejected();
            tracing::warn!(event = "connection_refused", peer = %peer, "closed a connection from {peer}: MAX_CONNECTIONS ({}) are open", settings.max_connections);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let timing = Timing {
            accepted: monotonic(),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
        };
        let served = served.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _open = Open::new(served.metrics.connections_open());
            accepted(tcp, peer, tls, &served, timing).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(settings.grace_period, permits.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!(
            event = "shutdown_grace_expired",
            "connections still open after SHUTDOWN_GRACE_PERIOD ({} s); closing them",
            settings.grace_period.as_secs()
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// The HTTP/1.1 and HTTP/2 connection settings.
fn http_builder(settings: &ServerSettings) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own HTTP/1.1 header timer would start right after each answer and so close
    // keep-alive connections after HEADER_READ_TIMEOUT instead of IDLE_TIMEOUT; the
    // connection loop below times request heads from their first byte instead.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.max_streams_per_connection)
        // Request bodies are at most 16 KiB: windows this size bound what a client can make
        // the server buffer on streams whose body is not read.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW);
    builder
}

/// What every connection of one server shares.
#[derive(Clone)]
struct Served {
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    metrics: Arc<Metrics>,
    /// Turns true when the drain begins.
    stopping: watch::Receiver<bool>,
}

/// Counts a connection in `connections_open` for as long as it lives, aborted or not.
struct Open(Gauge);

impl Open {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one accepted connection, after the TLS handshake when TLS ends here.
async fn accepted(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<TlsServer>>,
    served: &Served,
    timing: Timing,
) {
    let Some(tls) = tls else {
        return connection(tcp, None, peer, served, timing).await;
    };
    // The TLS handshake counts against the time to the first complete request.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    match crate::clock::timeout_at(timing.head_deadline(), acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let certs = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| PeerCertificates(Arc::new(c.iter().map(|c| c.to_vec()).collect())));
            connection(stream, certs, peer, served, timing).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(event = "tls_handshake_failed", peer = %peer, "TLS handshake with {peer} failed: {e}");
        }
        Err(_) => {
            served.metrics.connection_timed_out("header_read");
            tracing::debug!(event = "tls_handshake_timeout", peer = %peer, "TLS handshake with {peer} timed out");
        }
    }
}

/// HTTP/2 flow-control window per stream.
const H2_STREAM_WINDOW: u32 = 64 * 1024;

/// HTTP/2 flow-control window per connection.
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;

/// When a connection was accepted and its time limits.
#[derive(Debug, Clone, Copy)]
struct Timing {
    accepted: Instant,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Timing {
    /// The first complete request must have arrived by then.
    fn head_deadline(&self) -> Instant {
        self.accepted + self.header_read_timeout
    }
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// No complete request within `HEADER_READ_TIMEOUT` of accept.
    NoRequest,
    /// No request for `IDLE_TIMEOUT`.
    Idle,
    /// Shutdown: the connection drains within the server's grace period.
    Drain,
}

/// Serves one connection until the client closes it, it idles out, sends no complete request
/// in time, or shutdown drains it. A connection told to close (GOAWAY on HTTP/2) for lack of
/// requests is dropped [`CLOSE_GRACE`] later even if its client never reads.
async fn connection<S>(
    stream: S,
    certs: Option<PeerCertificates>,
    peer: SocketAddr,
    served: &Served,
    timing: Timing,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(ConnectionInfo::new(
        timing.accepted,
        timing.header_read_timeout,
    ));
    let requests = Requests {
        router: served.router.clone(),
        info: info.clone(),
        in_flight: Arc::new(InFlightCount(AtomicUsize::new(0))),
        http2: Arc::new(AtomicBool::new(false)),
        draining: served.stopping.clone(),
        certs,
        peer,
    };
    let (in_flight, http2) = (requests.in_flight.clone(), requests.http2.clone());
    let service = hyper::service::service_fn(move |request| requests.call(request));
    let stream = Counted {
        inner: stream,
        conn: info.clone(),
    };
    let conn = served
        .builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = served.stopping.clone();
    // Draining: an HTTP/2 connection gets GOAWAY at once (its in-flight streams finish); an
    // HTTP/1.1 connection answers its request in flight with `Connection: close`, and an idle
    // one lingers briefly, so that a request its client is sending right now is still
    // answered rather than cut off.
    let mut life = Lifecycle {
        drain_since: stopping.borrow().then(monotonic),
        closing: None,
        close_check: monotonic(),
    };
    loop {
        let wake = life.wake_at(&info, timing, monotonic(), http2.load(Ordering::Relaxed));
        let sleep = async {
            match wake {
                Some(at) => crate::clock::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            // A new request head started: its deadline may come before the planned wake-up.
            () = info.request_started(), if life.closing.is_none() => {}
            changed = stopping.changed(), if life.drain_since.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    life.drain_since = Some(monotonic());
                }
            }
            () = sleep => {
                let in_flight = in_flight.0.load(Ordering::Relaxed);
                match life.woke(&info, timing, in_flight, http2.load(Ordering::Relaxed)) {
                    Step::Wait => {}
                    Step::Close(reason) => {
                        tracing::debug!(event = "connection_closed", peer = %peer, reason = ?reason, "closed the connection of {peer}");
                        break;
                    }
                    Step::Shutdown(reason) => {
                        match reason {
                            Closing::NoRequest => served.metrics.connection_timed_out("header_read"),
                            Closing::Idle => served.metrics.connection_timed_out("idle"),
                            Closing::Drain => {}
                        }
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Answers the requests of one connection: puts the connection's facts into each request's
/// extensions and counts the requests in flight for the drain.
struct Requests {
    router: Router,
    info: Arc<ConnectionInfo>,
    in_flight: Arc<InFlightCount>,
    http2: Arc<AtomicBool>,
    /// Turns true when the drain begins.
    draining: watch::Receiver<bool>,
    certs: Option<PeerCertificates>,
    peer: SocketAddr,
}

impl Requests {
    fn call(
        &self,
        mut request: hyper::Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Result<axum::response::Response, Infallible>> + Send + use<> {
        self.in_flight.0.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.in_flight.clone());
        let http1 = request.version() < http::Version::HTTP_2;
        if !http1 {
            self.http2.store(true, Ordering::Relaxed);
        }
        // A request without a body is complete; one with a body is counted by the HTTP
        // guard once its body is in.
        let complete = hyper::body::Body::is_end_stream(request.body()).then(|| self.info.admit());
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.info.clone());
        if let Some(certs) = &self.certs {
            request.extensions_mut().insert(certs.clone());
        }
        let response = self
            .router
            .clone()
            .oneshot(request.map(axum::body::Body::new));
        let draining = self.draining.clone();
        async move {
            let mut response = response.await;
            // While draining, an HTTP/1.1 answer says it is the last on its connection,
            // so the client does not send another request that would find the socket
            // closed (hyper closes after the answer but does not say so itself).
            if http1
                && *draining.borrow()
                && let Ok(response) = &mut response
            {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            drop(complete);
            drop(guard);
            response
        }
    }
}

/// Where a connection is in its life: draining since when, closing why and since when, and
/// when to look at a closing one next.
struct Lifecycle {
    drain_since: Option<Instant>,
    closing: Option<(Closing, Instant)>,
    close_check: Instant,
}

/// What to do with a connection at a wake-up.
enum Step {
    /// Nothing yet.
    Wait,
    /// Drop the socket now.
    Close(Closing),
    /// Tell the client to close (GOAWAY, or `Connection: close` after the request in flight).
    Shutdown(Closing),
}

impl Lifecycle {
    /// When to wake next; `None` for a draining connection, which ends with the grace period.
    fn wake_at(
        &self,
        conn: &ConnectionInfo,
        timing: Timing,
        now: Instant,
        http2: bool,
    ) -> Option<Instant> {
        match (self.closing, self.drain_since) {
            (Some((Closing::Drain, _)), _) => None,
            (Some(_), _) => Some(self.close_check),
            (None, Some(_)) => Some(now + DRAIN_TICK),
            (None, None) => Some(next_check(conn, timing, now, http2)),
        }
    }

    /// Decides at a wake-up; `in_flight` counts the requests started on the connection.
    fn woke(
        &mut self,
        conn: &ConnectionInfo,
        timing: Timing,
        in_flight: usize,
        http2: bool,
    ) -> Step {
        let now = monotonic();
        if let Some((reason, since)) = self.closing {
            // Whatever the client does (it may never read the GOAWAY), the socket is
            // closed once no admitted request is being answered.
            if conn.working() == 0 || now.saturating_duration_since(since) >= CLOSE_CAP {
                return Step::Close(reason);
            }
            self.close_check = now + Duration::from_millis(100);
            return Step::Wait;
        }
        let reason = match self.drain_since {
            Some(since) => (http2
                || (in_flight == 0 && now.saturating_duration_since(since) >= DRAIN_LINGER))
                .then_some(Closing::Drain),
            None => close_reason(conn, timing, now, http2),
        };
        let Some(reason) = reason else {
            return Step::Wait;
        };
        self.closing = Some((reason, now));
        self.close_check = now + CLOSE_GRACE;
        Step::Shutdown(reason)
    }
}

/// Whether an open connection must be closed now, and why: no complete request within
/// `HEADER_READ_TIMEOUT` of accept, or (HTTP/1.1) of the first byte of a later request, or no
/// request for `IDLE_TIMEOUT`.
fn close_reason(
    conn: &ConnectionInfo,
    timing: Timing,
    now: Instant,
    http2: bool,
) -> Option<Closing> {
    if !conn.has_admitted() && now >= timing.head_deadline() {
        return Some(Closing::NoRequest);
    }
    if let Some(deadline) = head_deadline(conn, timing, http2)
        && now >= deadline
    {
        return Some(Closing::NoRequest);
    }
    conn.idle_for()
        .is_some_and(|idle| idle >= timing.idle_timeout)
        .then_some(Closing::Idle)
}

/// When a later HTTP/1.1 request that has begun to arrive must be complete. (HTTP/2 clients
/// send frames that are not requests, PING or WINDOW_UPDATE; their streams are timed by the
/// request guard.)
fn head_deadline(conn: &ConnectionInfo, timing: Timing, http2: bool) -> Option<Instant> {
    if http2 || !conn.has_admitted() {
        return None;
    }
    conn.pending_since()
        .map(|since| since + timing.header_read_timeout)
}

/// When to look at an open connection again.
fn next_check(conn: &ConnectionInfo, timing: Timing, now: Instant, http2: bool) -> Instant {
    let mut at = match conn.idle_for() {
        Some(idle) => now + timing.idle_timeout.saturating_sub(idle),
        // Busy: look again once the idle timeout could have passed.
        None => now + timing.idle_timeout,
    };
    if !conn.has_admitted() {
        at = at.min(timing.head_deadline());
    }
    if let Some(deadline) = head_deadline(conn, timing, http2) {
        at = at.min(deadline);
    }
    at
}

/// How often a draining connection is checked for a request in flight.
const DRAIN_TICK: Duration = Duration::from_millis(5);

/// How long an idle connection stays open once draining began.
const DRAIN_LINGER: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests;
