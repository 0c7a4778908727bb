//! Clients for the Google APIs Token Service calls: the metadata server, OAuth token endpoint
//! (application-default credentials), IAM Credentials (`signJwt`, `generateAccessToken`) and
//! STS. Concrete clients over one `reqwest` client, base URLs overridable (the emulator in
//! `crates/gcp-emulator` stands in for Google in tests). Transient failures are retried with
//! jittered backoff inside the caller's deadline. Failures are classified once, here
//! ([`UpstreamError::kind`]), into the service's [`Failure`]. Uses `clock`, `error` and
//! `metrics` only: no settings, no flows, no HTTP edge.

pub mod credentials;
pub mod iam_credentials;
pub mod metadata;
pub(crate) mod settings;
pub mod sts;
pub use settings::GoogleConfig;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::clock::{Deadline, Stopwatch};
use crate::error::{Failure, Kind, StartupError};
use crate::metrics::Metrics;

/// Base URLs of the Google APIs.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Metadata server, e.g. `http://metadata.google.internal`.
    pub metadata: String,
    /// IAM Credentials API, e.g. `https://iamcredentials.googleapis.com`.
    pub iam_credentials: String,
    /// Security Token Service, e.g. `https://sts.googleapis.com`.
    pub sts: String,
}

/// A failed call to a Google API. Messages never contain tokens.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    /// The API answered with an error status.
    #[error("{api} answered HTTP {status}: {message}")]
    Status {
        /// Which API.
        api: &'static str,
        /// HTTP status.
        status: u16,
        /// The API's own error message.
        message: String,
        /// The API's `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    /// The API could not be reached or did not answer in time.
    #[error("{api} could not be reached: {message}")]
    Unreachable {
        /// Which API.
        api: &'static str,
        /// What happened.
        message: String,
    },
    /// The API answered 2xx with a body we cannot use.
    #[error("{api} answered with an unexpected body: {message}")]
    Malformed {
        /// Which API.
        api: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl UpstreamError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            Self::Unreachable { .. } => true,
            Self::Malformed { .. } => false,
        }
    }

    /// Whether the failure means "try again later" to our client (429, 503, unreachable).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 429 | 503),
            Self::Unreachable { .. } => true,
            Self::Malformed { .. } => false,
        }
    }

    /// Seconds a client should wait before retrying.
    pub fn retry_after(&self) -> u64 {
        match self {
            Self::Status {
                retry_after: Some(s),
                ..
            } => (*s).clamp(1, 60),
            _ => 2,
        }
    }

    /// The upstream's own message (or what went wrong).
    pub fn message(&self) -> &str {
        match self {
            Self::Status { message, .. }
            | Self::Unreachable { message, .. }
            | Self::Malformed { message, .. } => message,
        }
    }

    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl UpstreamError {
    /// The one classification of upstream failures, as our client sees them: 429, 503,
    /// unreachable or too slow is "try again later"; a 400 is the request's fault; 401 and 403
    /// deny access; anything else (500, 502, 504 once retries are exhausted, a body we cannot
    /// use) is a server error.
    pub fn kind(&self) -> Kind {
        match self.status() {
            _ if self.is_unavailable() => Kind::Unavailable {
                retry_after: self.retry_after(),
            },
            Some(400) => Kind::InvalidRequest,
            Some(401 | 403) => Kind::AccessDenied,
            _ => Kind::Server,
        }
    }

    /// The failure with `context` (what we were doing, as a sentence) before the API's answer.
    pub fn in_context(self, context: &str) -> Failure {
        Failure::new(self.kind(), format!("{context}: {self}"))
    }
}

impl From<UpstreamError> for Failure {
    /// The client reads which API answered what, in the API's own words (never a token).
    fn from(e: UpstreamError) -> Self {
        Failure::new(e.kind(), e.to_string())
    }
}

/// Shared HTTP client, the bound on calls in flight and the metrics they count into. The
/// deadline of a call is its caller's: every call takes one.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    /// Overall budget of one token request for Google API calls (`UPSTREAM_TIMEOUT`), named in
    /// timeout messages and used by background work to set its own deadline.
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Per API, one permit per call in flight (`UPSTREAM_MAX_CONNECTIONS`): over HTTP/1.1 each
    /// call holds a connection, and without a bound a burst of clients opens as many connections
    /// (and buffers) to Google as there are clients. Per API, so that one API that hangs cannot
    /// take the connections the others need.
    slots: Arc<Mutex<HashMap<&'static str, Arc<Semaphore>>>>,
    max_connections: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("timeout", &self.timeout)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client; calls are counted into `metrics`.
    pub fn new(
        timeout: Duration,
        max_connections: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartupError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3).min(timeout))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(max_connections)
            .user_agent(concat!("token-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartupError::other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            timeout,
            metrics,
            slots: Arc::default(),
            max_connections,
        })
    }

    /// The permits of `api`.
    fn slots(&self, api: &'static str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .entry(api)
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_connections)))
            .clone()
    }

    /// The HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `UPSTREAM_TIMEOUT`: work outside a request (identity check, project lookup) gives
    /// itself this long, from its own start.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The least time worth starting a retry with; with less left, the last answer stands.
    const MIN_ATTEMPT: Duration = Duration::from_millis(200);

    /// Runs `attempt` until it succeeds, fails for good, or the deadline leaves no room for
    /// another try. Each attempt gets the remaining time as its own timeout.
    pub async fn retry<T, F, Fut>(
        &self,
        api: &'static str,
        deadline: Deadline,
        mut attempt: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut backoff = Duration::from_millis(50);
        loop {
            let remaining = deadline.remaining();
            if remaining.is_zero() {
                return Err(UpstreamError::Unreachable {
                    api,
                    message: format!(
                        "no answer within UPSTREAM_TIMEOUT ({} s)",
                        self.timeout.as_secs()
                    ),
                });
            }
            let error = match attempt(remaining).await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            let pause = jitter(backoff);
            // A retry that would start with almost no time left can only time out, and would
            // replace the upstream's own answer with a bare timeout: give that answer instead.
            if remaining_after(deadline, pause) <= Self::MIN_ATTEMPT {
                return Err(error);
            }
            tracing::warn!(event = "upstream_retry", api, reason = %error, "retrying {api} in {} ms: {error}", pause.as_millis());
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Sends a request and returns the JSON body of a 2xx answer, or the error in the API's own
    /// words (Google JSON errors `{"error": {"message"}}`, OAuth errors `{"error_description"}`,
    /// or plain text).
    pub async fn send_json(
        &self,
        api: &'static str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let text = self.send_text(api, request, timeout).await?;
        serde_json::from_str(&text).map_err(|_| UpstreamError::Malformed {
            api,
            message: "the body is not JSON".into(),
        })
    }

    /// Like [`Self::send_json`], for plain-text answers (metadata server).
    pub async fn send_text(
        &self,
        api: &'static str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<String, UpstreamError> {
        let answer = self.send_raw(api, request, timeout, usize::MAX).await?;
        if answer.status.is_success() {
            return Ok(answer.body);
        }
        Err(UpstreamError::Status {
            api,
            status: answer.status.as_u16(),
            message: error_message(&answer.body),
            retry_after: answer.retry_after,
        })
    }

    /// Sends a request and returns the answer whatever its status, for APIs whose error
    /// bodies the caller reads itself (AWS STS answers XML). A body over `max_bytes` is
    /// refused as malformed without being read further.
    pub async fn send_raw(
        &self,
        api: &'static str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Answer, UpstreamError> {
        let queued = Stopwatch::start();
        let end = Deadline::after(timeout);
        let slots = self.slots(api);
        let Ok(Ok(_slot)) = tokio::time::timeout(timeout, slots.acquire()).await else {
            self.metrics
                .upstream(api, "no_connection", queued.elapsed());
            return Err(UpstreamError::Unreachable {
                api,
                message: format!(
                    "all UPSTREAM_MAX_CONNECTIONS ({}) to this API stayed busy until the deadline",
                    self.max_connections
                ),
            });
        };
        // The wait for a connection counts against the same budget; the latency metric
        // measures the call alone.
        let started = Stopwatch::start();
        let remaining = end.remaining();
        let response = request.timeout(remaining).send().await.map_err(|e| {
            self.metrics.upstream(api, "unreachable", started.elapsed());
            UpstreamError::Unreachable {
                api,
                message: describe_transport(&e),
            }
        })?;
        let status = response.status();
        self.metrics
            .upstream(api, status.as_str(), started.elapsed());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = read_body(api, response, max_bytes).await?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// An API's answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<u64>,
    /// The body, as text.
    pub body: String,
}

/// The body of `response`, refused once it exceeds `max_bytes`.
async fn read_body(
    api: &'static str,
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<String, UpstreamError> {
    let too_large = || UpstreamError::Malformed {
        api,
        message: format!("the body exceeds {max_bytes} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|n| n > u64::try_from(max_bytes).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| UpstreamError::Unreachable {
                api,
                message: describe_transport(&e),
            })?;
        let Some(chunk) = chunk else { break };
        if body.len().saturating_add(chunk.len()) > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// What would be left of `deadline` after waiting `pause`.
fn remaining_after(deadline: Deadline, pause: Duration) -> Duration {
    deadline.remaining().saturating_sub(pause)
}

/// "Full jitter": a random pause between half and all of `max`.
fn jitter(max: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut byte);
    max / 2 + max / 2 * u32::from(byte[0]) / 255
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "the connection broke".into()
    }
}

/// The message of a Google or OAuth error body, shortened.
fn error_message(body: &str) -> String {
    let message = match serde_json::from_str::<Value>(body) {
        Ok(v) => v["error"]["message"]
            .as_str()
            .or_else(|| v["error_description"].as_str())
            .or_else(|| v["error"].as_str())
            .unwrap_or("no error message")
            .to_owned(),
        Err(_) => body.trim().to_owned(),
    };
    crate::model::truncate(&message, 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call counts into the metrics its `Upstream` was given (not a process-wide registry),
    /// and a retry loop whose caller's deadline has passed gives up at once, naming the
    /// setting, without a call.
    #[tokio::test]
    async fn calls_count_into_the_given_metrics_and_a_past_deadline_makes_no_call() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        let metrics = Arc::new(Metrics::new());
        let upstream = Upstream::new(Duration::from_secs(5), 4, metrics.clone()).unwrap();
        let answer = upstream
            .retry(
                "counted api",
                Deadline::after(Duration::from_secs(5)),
                |t| upstream.send_text("counted api", upstream.http().get(&url), t),
            )
            .await
            .unwrap();
        assert_eq!(answer, "ok");
        let text = metrics.render();
        assert!(text.contains("api=\"counted api\""), "{text}");

        let calls = std::sync::atomic::AtomicUsize::new(0);
        let past = Deadline::after(Duration::ZERO);
        let error = upstream
            .retry("late api", past, |_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::future::ready(Ok::<(), UpstreamError>(()))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(
            error.to_string().contains("UPSTREAM_TIMEOUT (5 s)"),
            "{error}"
        );
        assert!(matches!(
            Failure::from(error).kind(),
            Kind::Unavailable { .. }
        ));
        server.abort();
    }

    /// The one classification: what each upstream answer means to our client.
    #[test]
    fn upstream_failures_are_classified_once() {
        let status = |status, retry_after| UpstreamError::Status {
            api: "X",
            status,
            message: "m".into(),
            retry_after,
        };
        assert_eq!(status(400, None).kind(), Kind::InvalidRequest);
        assert_eq!(status(401, None).kind(), Kind::AccessDenied);
        assert_eq!(status(403, None).kind(), Kind::AccessDenied);
        assert_eq!(status(404, None).kind(), Kind::Server);
        for s in [500, 502, 504] {
            assert!(status(s, None).is_transient());
            assert_eq!(status(s, None).kind(), Kind::Server);
        }
        assert_eq!(
            status(503, Some(7)).kind(),
            Kind::Unavailable { retry_after: 7 }
        );
        assert_eq!(
            status(429, None).kind(),
            Kind::Unavailable { retry_after: 2 }
        );
        let failure = Failure::from(status(403, None));
        assert_eq!(failure.message(), "X answered HTTP 403: m");
        assert_eq!(
            status(400, None).in_context("STS refused the token exchange"),
            Failure::invalid_request("STS refused the token exchange: X answered HTTP 400: m")
        );
    }

    /// With every connection to an API held by a call that gets no answer, the next call to that
    /// API waits for a free one only until its own timeout, then fails as unreachable naming the
    /// setting; a call to another API still gets a connection (and times out on its own).
    #[tokio::test]
    async fn a_call_without_a_free_connection_gives_up_at_its_timeout_other_apis_go_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let upstream = Upstream::new(Duration::from_secs(10), 1, Arc::new(Metrics::new())).unwrap();
        let holder = {
            let (upstream, url) = (upstream.clone(), url.clone());
            tokio::spawn(async move {
                upstream
                    .send_text("hung", upstream.http().get(&url), Duration::from_secs(5))
                    .await
            })
        };
        for _ in 0..400 {
            if upstream.slots("hung").available_permits() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            upstream.slots("hung").available_permits(),
            0,
            "the holder never got its connection"
        );
        let call = |api: &'static str| {
            upstream.send_text(api, upstream.http().get(&url), Duration::from_millis(200))
        };
        let other = call("other").await.unwrap_err();
        assert_eq!(other.to_string(), "other could not be reached: timed out");
        let error = call("hung").await.unwrap_err();
        assert_eq!(
            error.kind(),
            Kind::Unavailable {
                retry_after: error.retry_after()
            }
        );
        assert!(
            error.to_string().contains("UPSTREAM_MAX_CONNECTIONS (1)"),
            "{error}"
        );
        holder.abort();
        silent.abort();
    }
}
