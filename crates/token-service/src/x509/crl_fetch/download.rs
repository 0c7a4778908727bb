//! Downloads one CRL over http or https with the limits of [`FetchSettings`]: the whole download
//! within `TLS_CLIENT_CRL_FETCH_TIMEOUT`, the body within `TLS_CLIENT_CRL_MAX_BYTES` (announced
//! or not: the body is read in chunks and dropped once over), redirects only to the same scheme,
//! host and port (at most [`MAX_REDIRECTS`]), no cookies, no proxy from the environment (a CRL
//! URL is the CA's to choose; an operator's proxy variables are not a reason to send it
//! elsewhere). What is downloaded is checked by the caller before it is used.

use std::time::Duration;

use super::settings::FetchSettings;

/// Most redirects followed within one host.
pub const MAX_REDIRECTS: usize = 3;

/// Why a download failed: a sentence for the log line and `check-config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// No connection, TLS failure, reset.
    #[error("cannot fetch: {0}")]
    Transport(String),
    /// The timeout passed.
    #[error("no complete answer within {0:?} (TLS_CLIENT_CRL_FETCH_TIMEOUT)")]
    Timeout(Duration),
    /// A redirect to elsewhere.
    #[error("redirected to another host or scheme ({0}), which is not followed")]
    Redirect(String),
    /// Not 200.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// Over the size cap.
    #[error("the CRL is larger than {0} bytes (TLS_CLIENT_CRL_MAX_BYTES)")]
    TooLarge(u64),
}

/// The HTTP client of CRL downloads.
#[derive(Debug, Clone)]
pub struct Downloader {
    http: reqwest::Client,
    timeout: Duration,
    max_bytes: u64,
}

impl Downloader {
    /// A client with the limits of `settings`.
    pub fn new(settings: &FetchSettings) -> Result<Self, String> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().cloned();
            let same = first.as_ref().is_some_and(|from| {
                from.scheme() == attempt.url().scheme()
                    && from.host_str() == attempt.url().host_str()
                    && from.port_or_known_default() == attempt.url().port_or_known_default()
            });
            if !same {
                let to = attempt.url().to_string();
                attempt.error(RedirectRefused(to))
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(RedirectRefused("too many redirects".to_owned()))
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(redirects)
            .no_proxy()
            .pool_max_idle_per_host(1)
            .user_agent(concat!("token-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            timeout: settings.timeout,
            max_bytes: settings.max_bytes,
        })
    }

    /// The body of `url`, when it answers 200 within the limits.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, DownloadError> {
        let work = async {
            let mut response = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| classify(e, self.timeout))?;
            if response.status() != reqwest::StatusCode::OK {
                return Err(DownloadError::Status(response.status().as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > self.max_bytes)
            {
                return Err(DownloadError::TooLarge(self.max_bytes));
            }
            let mut body: Vec<u8> = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| classify(e, self.timeout))?
            {
                if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > self.max_bytes {
                    return Err(DownloadError::TooLarge(self.max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        // reqwest's own timeout covers the same; this one also bounds a body that trickles.
        let at = crate::clock::monotonic() + self.timeout;
        crate::clock::timeout_at(at, work)
            .await
            .unwrap_or(Err(DownloadError::Timeout(self.timeout)))
    }
}

/// The redirect policy's refusal, recognised in [`classify`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefused(String);

/// A reqwest error as a [`DownloadError`].
fn classify(e: reqwest::Error, timeout: Duration) -> DownloadError {
    if e.is_timeout() {
        return DownloadError::Timeout(timeout);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<RedirectRefused>() {
            return DownloadError::Redirect(refused.0.clone());
        }
        source = s.source();
    }
    DownloadError::Transport(e.without_url().to_string())
}
