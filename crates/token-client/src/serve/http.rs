//! The HTTP side of `serve`: one HTTP/1.1 listener (hyper), the host check, `/`, `/token`,
//! `/status`, `/aws/credentials` ([`super::aws`]) and the metadata paths ([`super::metadata`]).
//!
//! Every response carries `Metadata-Flavor: Google` (Node's gcp-metadata throws without it)
//! and says what it is: `application/json` for JSON, `application/text` for text, as GCE.
//! Requests are refused with 403 when their `Host` is a DNS name other than `localhost`,
//! `metadata` or `metadata.google.internal` (a web page could otherwise read the tokens with
//! DNS rebinding) and, on the metadata paths, without `Metadata-Flavor: Google` or with
//! `X-Forwarded-For` (as GCE).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;

use super::App;
use super::slot::Unavailable;
use crate::broker::unix_now;

pub type Answer = Response<Full<Bytes>>;

/// Accepts connections until `stop` resolves; returns its value.
pub async fn serve<S>(listener: tokio::net::TcpListener, app: Arc<App>, stop: S) -> S::Output
where
    S: Future,
{
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            signal = &mut stop => return signal,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(&app, &request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(app: &App, request: &Request<Incoming>) -> Answer {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Only GET is served\n");
    }
    if !host_allowed(request) {
        return text(
            StatusCode::FORBIDDEN,
            "The Host header names a host other than this machine's loopback; use 127.0.0.1, localhost or metadata.google.internal\n",
        );
    }
    let path = request.uri().path();
    match path {
        "/" => text(StatusCode::OK, "computeMetadata/\n"),
        "/token" => url_source(app).await,
        "/status" => status(app),
        super::aws::PATH => super::aws::answer(app, request).await,
        _ if path == "/computeMetadata" || path.starts_with("/computeMetadata/") => {
            super::metadata::answer(app, request).await
        }
        _ => not_found(),
    }
}

/// A `Host` that is an IP address, `localhost`, `metadata` or `metadata.google.internal`
/// (absent: allowed, HTTP/1.0).
fn host_allowed(request: &Request<Incoming>) -> bool {
    let Some(host) = request.headers().get(HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || matches!(
            name.as_str(),
            "localhost" | "metadata" | "metadata.google.internal"
        )
}

/// `GET /token`: `{"id_token", "expires_at"}` for URL-sourced credentials.
async fn url_source(app: &App) -> Answer {
    match app.id.get().await {
        Ok(current) => json_answer(
            StatusCode::OK,
            &json!({"id_token": current.token, "expires_at": current.expires_at}),
        ),
        Err(e) => unavailable(&e),
    }
}

/// `GET /status`: every slot's state, no token.
fn status(app: &App) -> Answer {
    let access: Vec<_> = app.access_slots().iter().map(|s| s.status()).collect();
    let body = json!({
        "broker": app.broker.settings().broker,
        "started_at": app.started_at,
        "now": unix_now(),
        "metadata_server": app.metadata.as_ref().map(|m| json!({
            "service_account": m.email,
            "scopes": m.scopes,
            "project_id": m.project_id,
            "numeric_project_id": m.numeric_project_id,
        })),
        "token_files": app.token_files,
        "audience_token_files": app.audiences.files().iter().map(|(a, f)| json!({"audience": a, "file": f})).collect::<Vec<_>>(),
        "id_token": app.id.status(),
        "audience_id_tokens": app.audiences.status(),
        "access_tokens": access,
        "aws_credentials": app.aws.as_ref().map(|a| json!({
            "role_arn": a.slot.query.aws.as_ref().map(|r| r.role_arn.clone()),
            "authorization_token_file": a.file,
            "state": a.slot.status(),
        })),
    });
    json_answer(StatusCode::OK, &body)
}

/// The answer for a slot without a usable token: 403 for a broker refusal, else 503; the
/// body says why (the keeper logs it, once, not every answer).
pub fn unavailable(e: &Unavailable) -> Answer {
    let status = match e {
        Unavailable::Refused { .. } => StatusCode::FORBIDDEN,
        Unavailable::NoToken { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, &format!("{e}\n"))
}

pub fn not_found() -> Answer {
    text(StatusCode::NOT_FOUND, "Not found\n")
}

/// A text answer (`application/text`, as GCE's metadata server).
pub fn text(status: StatusCode, body: &str) -> Answer {
    answer(status, "application/text", Bytes::from(body.to_owned()))
}

/// A JSON answer.
pub fn json_answer(status: StatusCode, body: &serde_json::Value) -> Answer {
    answer(status, "application/json", Bytes::from(body.to_string()))
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("metadata-flavor", HeaderValue::from_static("Google"));
    headers.insert("server", HeaderValue::from_static("token-client"));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    response
}
