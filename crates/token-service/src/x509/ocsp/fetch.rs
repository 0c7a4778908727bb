//! One exchange with an OCSP responder: the DER request POSTed as `application/ocsp-request`
//! (RFC 6960 appendix A.1, RFC 5019 section 5), the answer read up to [`MAX_RESPONSE`] bytes,
//! redirects refused, the whole exchange within the timeout, and the answer's `max-age`.

use std::time::Duration;

use super::Problem;

/// The largest response read; a responder that sends more is answered as malformed.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// A responder's answer body and its HTTP `Cache-Control: max-age`, if any.
#[derive(Debug)]
pub struct Fetched {
    /// The DER response.
    pub body: Vec<u8>,
    /// Seconds the answer may be reused, per HTTP.
    pub max_age: Option<i64>,
}

/// The HTTP client of OCSP requests: no redirects, bounded connection time.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("token-service/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `request` to `url`; the answer of a 200 whose body fits, else why not.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<Fetched, Problem> {
    let exchange = async {
        let response = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/ocsp-request")
            .header(reqwest::header::ACCEPT, "application/ocsp-response")
            .body(request)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Problem::Unreachable(transport(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Problem::Http(status.as_u16()));
        }
        let max_age = max_age(response.headers());
        let body = read(response).await?;
        Ok(Fetched { body, max_age })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(Problem::Unreachable("timed out".into())))
}

/// The body, refused once it exceeds [`MAX_RESPONSE`].
async fn read(mut response: reqwest::Response) -> Result<Vec<u8>, Problem> {
    let too_large = || Problem::Malformed(format!("the answer exceeds {MAX_RESPONSE} bytes"));
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Problem::Unreachable(transport(&e)))?
    {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `max-age` of `Cache-Control`, if the answer has one.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<i64>().ok())
                .flatten()
        })
        .map(|s| s.max(0))
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "the connection broke".into()
    }
}
