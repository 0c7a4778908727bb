//! Connections: one accept loop for plain HTTP and TLS, with the connection-level protections
//! (how many connections, how long a client may take to send its headers, how long a
//! keep-alive connection may idle) and graceful shutdown: on the signal, stop accepting, let
//! every accepted request finish within the grace period, then return. Uses `tls` for the
//! handshake material and `http` for the request extensions; knows nothing of tokens.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::http::PeerCertificates;
use crate::tls::TlsServer;

/// Largest request head (request line and headers) a client may send; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 128 * 1024;

/// Connection limits and shutdown timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `MAX_CONNECTIONS`: connections open at once; more are closed at once.
    pub max_connections: usize,
    /// `HEADER_READ_TIMEOUT`: time to receive a request's headers (slow-client protection).
    pub header_read_timeout: Duration,
    /// `IDLE_TIMEOUT`: a keep-alive connection without requests is closed after this.
    pub idle_timeout: Duration,
    /// `SHUTDOWN_GRACE_PERIOD`: how long accepted requests may take to finish after SIGTERM.
    pub grace_period: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            grace_period: Duration::from_secs(8),
        }
    }
}

/// Activity of one connection, for the idle timeout.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    http2: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(last))
    }
}

/// Counts a request in flight on its connection for as long as it lives.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` resolves,
/// then drains: no new connections, keep-alive connections close after their current request,
/// and this returns once every connection is done or the grace period is over.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<TlsServer>>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
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
            crate::metrics::metrics().connection_rejected();
            tracing::warn!(event = "connection_refused", peer = %peer, "closed a connection from {peer}: MAX_CONNECTIONS ({}) are open", settings.max_connections);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, builder, tls, stopping) = (
            router.clone(),
            builder.clone(),
            tls.clone(),
            stopping.clone(),
        );
        let idle_timeout = settings.idle_timeout;
        let handshake_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            let open = crate::metrics::metrics().connections_open();
            open.inc();
            match tls {
                None => {
                    connection(tcp, None, peer, router, &builder, idle_timeout, stopping).await;
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let certs = stream.get_ref().1.peer_certificates().map(|c| {
                                PeerCertificates(Arc::new(c.iter().map(|c| c.to_vec()).collect()))
                            });
                            connection(
                                stream,
                                certs,
                                peer,
                                router,
                                &builder,
                                idle_timeout,
                                stopping,
                            )
                            .await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(event = "tls_handshake_failed", peer = %peer, "TLS handshake with {peer} failed: {e}");
                        }
                        Err(_) => {
                            tracing::debug!(event = "tls_handshake_timeout", peer = %peer, "TLS handshake with {peer} timed out");
                        }
                    }
                }
            }
            open.dec();
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
    Ok(())
}

/// Serves one connection until the client closes it, it idles out, or shutdown drains it.
async fn connection<S>(
    stream: S,
    certs: Option<PeerCertificates>,
    peer: SocketAddr,
    router: Router,
    builder: &Builder<TokioExecutor>,
    idle_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        started: Instant::now(),
        in_flight: AtomicUsize::new(0),
        last_ms: AtomicU64::new(0),
        http2: std::sync::atomic::AtomicBool::new(false),
    });
    let tracked = activity.clone();
    let draining = stopping.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            tracked.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(tracked.clone());
            let http1 = request.version() < http::Version::HTTP_2;
            if !http1 {
                tracked.http2.store(true, Ordering::Relaxed);
            }
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(certs) = &certs {
                request.extensions_mut().insert(certs.clone());
            }
            let response = router.clone().oneshot(request.map(axum::body::Body::new));
            let draining = draining.clone();
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
                drop(guard);
                response
            }
        });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Draining: an HTTP/2 connection gets GOAWAY at once (its in-flight streams finish); an
    // HTTP/1.1 connection answers its request in flight with `Connection: close`, and an idle
    // one lingers briefly, so that a request its client is sending right now is still
    // answered rather than cut off.
    let mut drain_since = stopping.borrow().then(Instant::now);
    let mut closing = false;
    let tick = (idle_timeout / 4).max(Duration::from_millis(100));
    loop {
        let pause = if drain_since.is_some() {
            DRAIN_TICK
        } else {
            tick
        };
        tokio::select! {
            _ = conn.as_mut() => break,
            changed = stopping.changed(), if drain_since.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    drain_since = Some(Instant::now());
                }
            }
            () = tokio::time::sleep(pause), if !closing => {
                let close = match drain_since {
                    Some(since) => {
                        activity.http2.load(Ordering::Relaxed)
                            || (activity.in_flight.load(Ordering::Relaxed) == 0
                                && since.elapsed() >= DRAIN_LINGER)
                    }
                    None => activity.idle_for().is_some_and(|idle| idle >= idle_timeout),
                };
                if close {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// How often a draining connection is checked for a request in flight.
const DRAIN_TICK: Duration = Duration::from_millis(5);

/// How long an idle connection stays open once draining began.
const DRAIN_LINGER: Duration = Duration::from_millis(250);
