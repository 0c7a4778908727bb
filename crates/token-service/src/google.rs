//! Clients for the Google APIs Token Service calls: the metadata server, OAuth token endpoint
//! (application-default credentials), IAM Credentials (`signJwt`, `generateAccessToken`) and
//! STS. Concrete clients over one `reqwest` client, base URLs overridable (the emulator in
//! `crates/gcp-emulator` stands in for Google in tests). Transient failures are retried with
//! jittered backoff inside a deadline. Uses nothing of ours but `model`-free plain data.

pub mod credentials;
pub mod iam_credentials;
pub mod metadata;
pub(crate) mod settings;
pub mod sts;
pub use settings::GoogleConfig;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;

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

/// How a failed upstream call looks to our client (the one mapping of upstream errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Upstream 400: `invalid_request`.
    Invalid,
    /// Upstream 401, 403 (and 404 for a service account): `access_denied`.
    Denied,
    /// Upstream 429, 503, unreachable or too slow: `temporarily_unavailable`, retry after N s.
    Unavailable(u64),
    /// Anything else: `server_error`.
    Server,
}

impl UpstreamError {
    /// Classifies the failure for our client.
    pub fn outcome(&self) -> Outcome {
        match self.status() {
            _ if self.is_unavailable() => Outcome::Unavailable(self.retry_after()),
            Some(400) => Outcome::Invalid,
            Some(401 | 403) => Outcome::Denied,
            _ => Outcome::Server,
        }
    }
}

/// Shared HTTP client, per-request deadline and the bound on calls in flight.
#[derive(Debug, Clone)]
pub struct Upstream {
    http: reqwest::Client,
    /// Overall budget of one token request for Google API calls (`UPSTREAM_TIMEOUT`).
    pub timeout: Duration,
    /// Per API, one permit per call in flight (`UPSTREAM_MAX_CONNECTIONS`): over HTTP/1.1 each
    /// call holds a connection, and without a bound a burst of clients opens as many connections
    /// (and buffers) to Google as there are clients. Per API, so that one API that hangs cannot
    /// take the connections the others need.
    slots: Arc<Mutex<HashMap<&'static str, Arc<Semaphore>>>>,
    max_connections: usize,
}

impl Upstream {
    /// Builds the client.
    pub fn new(timeout: Duration, max_connections: usize) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3).min(timeout))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(max_connections)
            .user_agent(concat!("token-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            timeout,
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

    /// The deadline of the current token request (see [`with_request_deadline`]), or
    /// `timeout` from now outside of one.
    pub fn deadline(&self) -> Instant {
        REQUEST_DEADLINE
            .try_with(|d| *d)
            .unwrap_or_else(|_| Instant::now() + self.timeout)
    }

    /// The least time worth starting a retry with; with less left, the last answer stands.
    const MIN_ATTEMPT: Duration = Duration::from_millis(200);

    /// Runs `attempt` until it succeeds, fails for good, or the deadline leaves no room for
    /// another try. Each attempt gets the remaining time as its own timeout.
    pub async fn retry<T, F, Fut>(
        &self,
        api: &'static str,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut backoff = Duration::from_millis(50);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
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
            if Instant::now() + pause + Self::MIN_ATTEMPT >= deadline {
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
        let queued = std::time::Instant::now();
        let end = queued + timeout;
        let slots = self.slots(api);
        let Ok(Ok(_slot)) = tokio::time::timeout(timeout, slots.acquire()).await else {
            crate::metrics::metrics().upstream(api, "no_connection", queued.elapsed());
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
        let started = std::time::Instant::now();
        let remaining = end.saturating_duration_since(started);
        let response = request.timeout(remaining).send().await.map_err(|e| {
            crate::metrics::metrics().upstream(api, "unreachable", started.elapsed());
            UpstreamError::Unreachable {
                api,
                message: describe_transport(&e),
            }
        })?;
        let status = response.status();
        crate::metrics::metrics().upstream(api, status.as_str(), started.elapsed());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .text()
            .await
            .map_err(|e| UpstreamError::Unreachable {
                api,
                message: describe_transport(&e),
            })?;
        if status.is_success() {
            return Ok(body);
        }
        Err(UpstreamError::Status {
            api,
            status: status.as_u16(),
            message: error_message(&body),
            retry_after,
        })
    }
}

tokio::task_local! {
    static REQUEST_DEADLINE: Instant;
}

/// Runs `request` with one deadline, `timeout` from now, shared by every Google API call it
/// makes (signJwt, STS, generateAccessToken), so a client never waits longer than that in all.
pub async fn with_request_deadline<F: Future>(timeout: Duration, request: F) -> F::Output {
    REQUEST_DEADLINE
        .scope(Instant::now() + timeout, request)
        .await
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
        let upstream = Upstream::new(Duration::from_secs(10), 1).unwrap();
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
        assert_eq!(error.outcome(), Outcome::Unavailable(error.retry_after()));
        assert!(
            error.to_string().contains("UPSTREAM_MAX_CONNECTIONS (1)"),
            "{error}"
        );
        holder.abort();
        silent.abort();
    }
}
