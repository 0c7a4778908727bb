//! Settings of the listeners and connections: the declarations (name, typed default, bound,
//! help) and [`ServerSettings`], which they fill. Read through `config::reader`; reads no
//! environment.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::reader::{Reader, Setting};
use crate::config::source::Values;

/// `PORT`.
pub const PORT: Setting = Setting::port(
    "PORT",
    Some(8080),
    "TCP port to listen on (Cloud Run sets it)",
);
/// `BIND_ADDRESS`: the default depends on `K_SERVICE`.
pub const BIND_ADDRESS: Setting = Setting::ip(
    "BIND_ADDRESS",
    "127.0.0.1; 0.0.0.0 when K_SERVICE is set",
    "IP address to listen on",
);
/// `ADMIN_PORT`.
pub const ADMIN_PORT: Setting = Setting::port(
    "ADMIN_PORT",
    None,
    "Serve /metrics, /healthz and /readyz on this plain-HTTP port instead of the main one",
);
/// `ADMIN_BIND_ADDRESS`.
pub const ADMIN_BIND_ADDRESS: Setting = Setting::ip(
    "ADMIN_BIND_ADDRESS",
    "BIND_ADDRESS",
    "IP address of the admin port",
);
/// `MAX_CONNECTIONS`.
pub const MAX_CONNECTIONS: Setting = Setting::count(
    "MAX_CONNECTIONS",
    4096,
    1..=1_000_000,
    "Client connections open at once; more are closed at once",
);
/// `HEADER_READ_TIMEOUT`.
pub const HEADER_READ_TIMEOUT: Setting = Setting::seconds(
    "HEADER_READ_TIMEOUT",
    10,
    1..=600,
    "Seconds from accept to the first complete request (TLS handshake, protocol detection, headers, body), and from a later request's headers to its body; slower clients are disconnected or get 408",
);
/// `IDLE_TIMEOUT`.
pub const IDLE_TIMEOUT: Setting = Setting::seconds(
    "IDLE_TIMEOUT",
    75,
    1..=3600,
    "Seconds a connection may stay without requests; then it is closed (HTTP/2: GOAWAY, and the socket 2 s later whatever the client does)",
);
/// `SHUTDOWN_GRACE_PERIOD`.
pub const SHUTDOWN_GRACE_PERIOD: Setting = Setting::seconds(
    "SHUTDOWN_GRACE_PERIOD",
    8,
    0..=3600,
    "Seconds accepted requests may take to finish after SIGTERM (Cloud Run allows 10)",
);

/// Where the service listens.
pub const LISTEN: &[Setting] = &[PORT, BIND_ADDRESS];
/// The admin listener.
pub const ADMIN: &[Setting] = &[ADMIN_PORT, ADMIN_BIND_ADDRESS];
/// The connection limit.
pub const CONNECTION_LIMIT: &[Setting] = &[MAX_CONNECTIONS];
/// Connection timing.
pub const TIMEOUTS: &[Setting] = &[HEADER_READ_TIMEOUT, IDLE_TIMEOUT, SHUTDOWN_GRACE_PERIOD];

/// Connection limits and shutdown timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `MAX_CONNECTIONS`: connections open at once; more are closed at once.
    pub max_connections: usize,
    /// `HEADER_READ_TIMEOUT`: time from accept to the first complete request (TLS handshake,
    /// protocol detection, head and body), and from a later request's head to its body.
    pub header_read_timeout: Duration,
    /// `IDLE_TIMEOUT`: a connection without requests is closed after this.
    pub idle_timeout: Duration,
    /// `SHUTDOWN_GRACE_PERIOD`: how long accepted requests may take to finish after SIGTERM.
    pub grace_period: Duration,
    /// HTTP/2 streams a client may open at once on one connection (derived from
    /// `MAX_CONCURRENT_REQUESTS`, at most 100), so that one connection cannot take every
    /// request permit.
    pub max_streams_per_connection: u32,
}

impl Default for ServerSettings {
    /// The declared defaults.
    fn default() -> Self {
        let limits = crate::limits::LimitSettings::default();
        Self::read(
            &mut Reader::new(&Values::new()),
            limits.max_concurrent_requests,
        )
    }
}

impl ServerSettings {
    /// Reads the connection settings; the stream limit follows `MAX_CONCURRENT_REQUESTS`.
    pub fn read(r: &mut Reader<'_>, max_concurrent_requests: usize) -> Self {
        let max_connections = r.count(&MAX_CONNECTIONS).unwrap_or_default();
        Self {
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            header_read_timeout: r.seconds(&HEADER_READ_TIMEOUT),
            idle_timeout: r.seconds(&IDLE_TIMEOUT),
            grace_period: r.seconds(&SHUTDOWN_GRACE_PERIOD),
            max_streams_per_connection: super::streams_per_connection(max_concurrent_requests),
        }
    }
}

/// The main listener's address and port. On Cloud Run (`K_SERVICE` set) the service must
/// listen on every interface; elsewhere loopback is the safe default.
pub fn read_listen(r: &mut Reader<'_>, on_cloud_run: bool) -> (IpAddr, u16) {
    // `None` only after a recorded error, which stops startup.
    let port = r.port(&PORT).unwrap_or_default();
    let default: IpAddr = if on_cloud_run {
        [0, 0, 0, 0].into()
    } else {
        [127, 0, 0, 1].into()
    };
    (r.ip(&BIND_ADDRESS, default), port)
}

/// The admin listener, when `ADMIN_PORT` is set.
pub fn read_admin(r: &mut Reader<'_>, bind_address: IpAddr) -> Option<SocketAddr> {
    let port = r.port(&ADMIN_PORT)?;
    let address = r.ip(&ADMIN_BIND_ADDRESS, bind_address);
    Some(SocketAddr::new(address, port))
}
