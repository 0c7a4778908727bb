//! Fetches what the clouds fetch, the way they do: the discovery document under the issuer,
//! the JWK Set at its `jwks_uri`, over TLS verified with the system's roots (and `--ca`, when
//! given; an invalid certificate is a failure of the rule, never skipped), and a sample token
//! from the service's `/token` over mutual TLS.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::DoctorError;
use super::rules::{Fetched, Observed, TokenOrigin};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the doctor was given to reach the service.
#[derive(Debug)]
pub struct Access<'a> {
    /// CA certificates trusted besides the system's roots.
    pub ca: Option<&'a Path>,
    /// Client certificate and key for `/token`.
    pub identity: Option<(&'a Path, &'a Path)>,
    /// A sample token in a file instead.
    pub token_file: Option<&'a Path>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, DoctorError> {
    std::fs::read(path).map_err(|source| DoctorError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The HTTP client: system roots plus `--ca`, the client certificate when given.
fn client(access: &Access<'_>) -> Result<reqwest::Client, DoctorError> {
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("token-service-doctor/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = access.ca {
        let certs =
            reqwest::Certificate::from_pem_bundle(&read("CA file", ca)?).map_err(|source| {
                DoctorError::Pem {
                    path: ca.to_owned(),
                    source,
                }
            })?;
        if certs.is_empty() {
            return Err(DoctorError::NoCertificate(ca.to_owned()));
        }
        builder = builder.tls_certs_merge(certs);
    }
    if let Some((cert, key)) = access.identity {
        let mut pem = read("client key", key)?;
        pem.push(b'\n');
        pem.extend(read("client certificate", cert)?);
        let identity =
            reqwest::Identity::from_pem(&pem).map_err(|source| DoctorError::Identity {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            })?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(DoctorError::Client)
}

/// An error with its causes, as one line (e.g. the TLS verifier's reason).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `Date` as Unix seconds.
fn date(response: &reqwest::Response) -> Option<i64> {
    parse_date(response.headers().get(http::header::DATE)?.to_str().ok()?)
}

/// An HTTP date (`Thu, 03 Dec 2026 17:58:27 GMT`) as Unix seconds.
pub fn parse_date(value: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(parsed.unix_timestamp())
}

/// GETs `url` as JSON; the server's `Date` and `Cache-Control` too.
async fn get_json(http: &reqwest::Client, url: &str) -> (Fetched, Option<i64>, Option<String>) {
    let response = match http.get(url).send().await {
        Ok(r) => r,
        Err(e) => return (Err(format!("GET {url}: {}", chain(&e))), None, None),
    };
    let date = date(&response);
    let cache_control = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return (Err(format!("GET {url} answered {status}")), date, None);
    }
    let body = match response.json::<Value>().await {
        Ok(v) => Ok(v),
        Err(e) => Err(format!("GET {url} did not answer JSON: {}", chain(&e))),
    };
    (body, date, cache_control)
}

/// The discovery document's URL for `issuer`: the path without a trailing `/`, then
/// `/.well-known/openid-configuration` (OpenID Connect Discovery §4; a query is left out).
pub fn discovery_url(issuer: &str) -> String {
    let base = issuer.split(['?', '#']).next().unwrap_or(issuer);
    format!(
        "{}/.well-known/openid-configuration",
        base.trim_end_matches('/')
    )
}

/// POSTs the client-credentials grant to `url` over mutual TLS; the ID token.
async fn request_token(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = http
        .post(url)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .map_err(|e| format!("POST {url}: {}", chain(&e)))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("POST {url} answered {status} without JSON: {}", chain(&e)))?;
    match body.get("id_token").and_then(Value::as_str) {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => Err(format!(
            "POST {url} answered {status}: {}",
            body.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("no id_token")
        )),
    }
}

/// Fetches everything the rules look at.
pub async fn observe(issuer: &str, access: &Access<'_>) -> Result<Observed, DoctorError> {
    let http = client(access)?;
    let (discovery, server_date, _) = get_json(&http, &discovery_url(issuer)).await;
    let jwks_uri = discovery
        .as_ref()
        .ok()
        .and_then(|d| d.get("jwks_uri"))
        .and_then(Value::as_str);
    let (jwks, jwks_cache_control) = match jwks_uri {
        Some(uri) => {
            let (set, _, cache_control) = get_json(&http, uri).await;
            (Some(set), cache_control)
        }
        None => (None, None),
    };
    let token = if let Some(file) = access.token_file {
        let text = read("token file", file)?;
        Some((
            TokenOrigin::File,
            Ok(String::from_utf8_lossy(&text).trim().to_owned()),
        ))
    } else if access.identity.is_some() {
        let url = discovery
            .as_ref()
            .ok()
            .and_then(|d| d.get("token_endpoint"))
            .and_then(Value::as_str)
            .map_or_else(
                || format!("{}/token", issuer.trim_end_matches('/')),
                str::to_owned,
            );
        Some((TokenOrigin::Requested, request_token(&http, &url).await))
    } else {
        None
    };
    Ok(Observed {
        issuer: issuer.to_owned(),
        discovery,
        server_date,
        jwks,
        jwks_cache_control,
        token,
    })
}
