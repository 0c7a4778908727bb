//! `POST /token`: the OAuth token endpoint for the client-credentials grant, and the one log
//! line of every token request ([`log_line`]): the handler writes it from the grant's
//! [`Exchange`], or from the refusal of a request that never reached the grant (a malformed
//! body here, the guard's limits in `http.rs`). Nothing else logs a token request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use super::error::{Format, HttpError};
use super::{AppState, MAX_BODY_BYTES, form, request_issuer};
use crate::clock::{Deadline, Stopwatch};
use crate::error::Failure;
use crate::grant::Exchange;
use crate::model::{IssuedTokens, PolicyDecision, TokenRequest};

/// TLS peer certificates (DER, leaf first) that a TLS listener puts into request extensions.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<Vec<u8>>>);

/// Handles a token request.
pub async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (format, token_request, iss) = match parse(&state, request).await {
        Ok(parsed) => parsed,
        Err((format, e)) => {
            log_line(&Line::refused("bad_request", &e));
            return e.into_response_as(format);
        }
    };
    let deadline = Deadline::after(state.upstream_timeout);
    let watch = Stopwatch::start();
    let exchange = state.grant.exchange(&token_request, &iss, deadline).await;
    let line = Line::of(&exchange);
    state
        .metrics
        .token_request(line.flow_or("none"), line.outcome, watch.elapsed());
    log_line(&line);
    match exchange.result {
        Ok(issued) => success(format, issued),
        Err(failure) => HttpError::from(failure).into_response_as(format),
    }
}

/// The request as the grant sees it, its answer format and its issuer; or the refusal of a
/// malformed request, in the format it asked for when that much could be read.
async fn parse(
    state: &AppState,
    request: Request,
) -> Result<(Format, TokenRequest, String), (Format, HttpError)> {
    let oauth = |e: HttpError| (Format::OAuth, e);
    let (parts, body) = request.into_parts();
    check_content_type(&parts.headers).map_err(oauth)?;
    if declared_too_large(&parts.headers) {
        return Err(oauth(too_large()));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| oauth(unreadable(&e)))?;
    let mut params =
        form::parse_form(&bytes).map_err(|e| oauth(HttpError::bad_request(e.to_string())))?;
    let format = match params.remove("format").as_deref() {
        None | Some("") => Format::OAuth,
        Some("external_credential") => Format::ExternalCredential,
        Some("aws_credential_process") => Format::AwsCredentialProcess,
        Some(other) => {
            return Err(oauth(HttpError::bad_request(format!(
                "Unknown format '{}'; the formats are 'external_credential' and 'aws_credential_process'",
                crate::model::truncate(other, 64)
            ))));
        }
    };
    check_format(format, &params).map_err(|e| (format, e))?;
    let iss = request_issuer(&state.issuer, &parts.headers, &parts.uri)
        .map_err(|e| (format, HttpError::from(e)))?;
    let token_request = TokenRequest {
        grant_type: params.remove("grant_type").unwrap_or_default(),
        scope: params.remove("scope"),
        service_account: params.remove("service_account"),
        audience: params.remove("audience"),
        params,
        remote_addr: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        peer_certificates: parts
            .extensions
            .get::<PeerCertificates>()
            .map(|p| p.0.clone()),
        headers: parts.headers,
    };
    Ok((format, token_request, iss))
}

/// A format that fits the request: `aws_credential_process` answers with AWS credentials only
/// (it needs `aws_role_arn`), `external_credential` with an ID token only (it refuses it and
/// `azure_client_id`).
fn check_format(
    format: Format,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<(), HttpError> {
    let aws = params
        .get(crate::aws::params::ROLE_ARN)
        .is_some_and(|a| !a.trim().is_empty());
    match (format, aws) {
        (Format::AwsCredentialProcess, false) => Err(HttpError::bad_request(
            "The format 'aws_credential_process' needs the parameter 'aws_role_arn': name the AWS role whose credentials to return",
        )),
        (Format::ExternalCredential, true) => Err(HttpError::bad_request(
            "The format 'external_credential' answers with an ID token only: use format 'aws_credential_process' (or none) with 'aws_role_arn'",
        )),
        (Format::ExternalCredential, false)
            if params
                .get(crate::azure::params::CLIENT_ID)
                .is_some_and(|a| !a.trim().is_empty()) =>
        {
            Err(HttpError::bad_request(
                "The format 'external_credential' answers with an ID token only: leave 'format' out with 'azure_client_id' to get Entra's access token",
            ))
        }
        _ => Ok(()),
    }
}

/// What the one log line of a token request says.
struct Line<'a> {
    event: &'static str,
    outcome: &'static str,
    reason: Option<String>,
    flow: Option<&'a str>,
    client_id: Option<&'a str>,
    /// The issued token's `aud`, or the audience a refused request named.
    audience: Option<&'a str>,
    jti: Option<&'a str>,
    access_token: bool,
    /// The AWS role the request named.
    aws_role_arn: Option<&'a str>,
    /// The Entra app (`azure_client_id`) the request named.
    azure_client_id: Option<&'a str>,
    /// The Entra tenant (`azure_tenant_id`) the request named.
    azure_tenant_id: Option<&'a str>,
    /// The policy's decision behind issued tokens (a refusal carries it in its labels).
    decision: Option<&'a PolicyDecision>,
    /// The OCSP outcome that let the certificate in (`TLS_CLIENT_OCSP`).
    ocsp: Option<&'a str>,
    labels: &'a [(String, String)],
}

impl<'a> Line<'a> {
    /// The line of a request the grant answered: `token_issued`; the event a refusal names
    /// (see [`named_event`]); `authentication_failed` when a flow took or refused the request;
    /// else `token_request_rejected` (no flow took it, or the caller's failed authentications
    /// are over the limit).
    fn of(exchange: &'a Exchange) -> Self {
        let flow = exchange.flow.as_deref();
        let client_id = exchange.client_id.as_deref();
        match &exchange.result {
            Ok(issued) => Self {
                event: "token_issued",
                outcome: "issued",
                reason: None,
                flow,
                client_id,
                audience: Some(&issued.audience),
                jti: Some(&issued.jti),
                access_token: issued.access_token.is_some(),
                aws_role_arn: exchange.aws_role_arn.as_deref(),
                azure_client_id: exchange.azure.as_ref().map(|(c, _)| c.as_str()),
                azure_tenant_id: exchange.azure.as_ref().map(|(_, t)| t.as_str()),
                decision: issued.decision.as_ref(),
                ocsp: exchange.ocsp.as_deref(),
                labels: &[],
            },
            Err(failure) => Self {
                event: named_event(failure).unwrap_or(if flow.is_some() {
                    "authentication_failed"
                } else {
                    "token_request_rejected"
                }),
                outcome: HttpError::code_of(failure.kind()),
                reason: Some(failure.log_detail()),
                flow,
                client_id,
                audience: exchange.audience.as_deref(),
                jti: None,
                access_token: false,
                aws_role_arn: exchange.aws_role_arn.as_deref(),
                azure_client_id: exchange.azure.as_ref().map(|(c, _)| c.as_str()),
                azure_tenant_id: exchange.azure.as_ref().map(|(_, t)| t.as_str()),
                decision: None,
                ocsp: exchange.ocsp.as_deref(),
                labels: failure.labels(),
            },
        }
    }

    /// The line of a request refused before the grant saw it.
    fn refused(event: &'static str, e: &'a HttpError) -> Self {
        Self {
            event,
            outcome: e.code,
            reason: Some(e.description.clone()),
            flow: None,
            client_id: None,
            audience: None,
            jti: None,
            access_token: false,
            aws_role_arn: None,
            azure_client_id: None,
            azure_tenant_id: None,
            decision: None,
            ocsp: None,
            labels: &[],
        }
    }

    fn flow_or(&self, none: &'a str) -> &'a str {
        self.flow.unwrap_or(none)
    }
}

/// The event a refusal names for its line with the label `event`: what was refused, where
/// operators look for it (`client_certificate_rejected` with the certificate's facts,
/// `client_certificate_unverified` with the load balancer's headers,
/// `forwarded_cert_untrusted_proxy` with the peer).
fn named_event(failure: &Failure) -> Option<&'static str> {
    let (_, event) = failure.labels().iter().find(|(k, _)| k == "event")?;
    NAMED_EVENTS.iter().copied().find(|known| known == event)
}

/// Events a refusal may name (the log's event field stays a closed set).
const NAMED_EVENTS: [&str; 3] = [
    "client_certificate_rejected",
    "client_certificate_unverified",
    "forwarded_cert_untrusted_proxy",
];

/// The one log line of a token request the guard refused (limits, timeouts).
pub(super) fn log_refusal(failure: &Failure) {
    let e = HttpError::from(failure);
    log_line(&Line {
        labels: failure.labels(),
        reason: Some(failure.log_detail()),
        ..Line::refused("token_request_rejected", &e)
    });
}

/// A request refused before the grant (body too large or unreadable), logged and answered.
pub(super) fn refused_input(e: HttpError) -> Response {
    log_line(&Line::refused("bad_request", &e));
    e.into_response()
}

/// Writes the one log line of a token request: the only place that logs one. Never logs a
/// token; the `jti` identifies an issued one, `audience` is its `aud` (or the audience a
/// refused request named). When a policy decided, the line says how
/// (`policy_decision`, `policy_rule`, `policy_matched`): from the issued tokens, or from the
/// refusal's labels.
fn log_line(line: &Line<'_>) {
    let flow = line.flow.unwrap_or("");
    let client_id = line.client_id.unwrap_or("");
    if line.event == "token_issued" {
        let decision = line.decision;
        tracing::info!(
            event = line.event,
            outcome = line.outcome,
            flow,
            client_id,
            audience = line.audience.unwrap_or(""),
            jti = line.jti.unwrap_or(""),
            access_token = line.access_token,
            aws_role_arn = line.aws_role_arn,
            azure_client_id = line.azure_client_id,
            azure_tenant_id = line.azure_tenant_id,
            policy_decision = decision.map(|d| d.decision),
            policy_rule = decision.map(|d| d.rule.as_str()),
            policy_matched = decision.map(|d| d.matched.as_str()),
            ocsp = line.ocsp,
            "issued a token to client '{client_id}' through {flow}"
        );
        return;
    }
    let reason = line.reason.as_deref().unwrap_or("");
    let labels: Map<String, Value> = line
        .labels
        .iter()
        .filter(|(k, _)| k != "event")
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let labels = Value::Object(labels);
    if flow.is_empty() {
        tracing::warn!(event = line.event, outcome = line.outcome, audience = line.audience, aws_role_arn = line.aws_role_arn, azure_client_id = line.azure_client_id, azure_tenant_id = line.azure_tenant_id, reason, labels = %labels, "token request rejected: {reason}");
    } else {
        tracing::warn!(event = line.event, outcome = line.outcome, flow, client_id, audience = line.audience, aws_role_arn = line.aws_role_arn, azure_client_id = line.azure_client_id, azure_tenant_id = line.azure_tenant_id, ocsp = line.ocsp, reason, labels = %labels, "{flow} refused the request: {reason}");
    }
}

/// Whether `Content-Length` announces more than [`MAX_BODY_BYTES`].
pub(super) fn declared_too_large(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
}

/// The refusal of a body that could not be read: too large, or broken off.
pub(super) fn unreadable(e: &axum::Error) -> HttpError {
    let too_big =
        std::error::Error::source(e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
    if too_big {
        too_large()
    } else {
        HttpError::bad_request("The request body could not be read")
    }
}

fn check_content_type(headers: &http::HeaderMap) -> Result<(), HttpError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    match media {
        Some(m) if m.eq_ignore_ascii_case("application/x-www-form-urlencoded") => Ok(()),
        _ => Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "The request body must be application/x-www-form-urlencoded",
        )),
    }
}

pub(super) fn too_large() -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request",
        format!("The request body exceeds {} KiB", MAX_BODY_BYTES / 1024),
    )
}

fn success(format: Format, issued: IssuedTokens) -> Response {
    let body = match (format, issued.aws_credentials) {
        (Format::AwsCredentialProcess, Some(aws)) => json!({
            "Version": 1,
            "AccessKeyId": aws.access_key_id,
            "SecretAccessKey": aws.secret_access_key,
            "SessionToken": aws.session_token,
            "Expiration": aws.expiration,
        }),
        (_, Some(aws)) => json!({
            "id_token": issued.id_token,
            "aws_credentials": {
                "access_key_id": aws.access_key_id,
                "secret_access_key": aws.secret_access_key,
                "session_token": aws.session_token,
                "expiration": aws.expiration,
            },
        }),
        (format, None) => tokens_body(
            format,
            issued.id_token,
            issued.id_token_expires_at,
            issued.access_token,
        ),
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// The body of an ID token (and access token) answer.
fn tokens_body(
    format: Format,
    id_token: String,
    expires_at: i64,
    access_token: Option<crate::model::AccessToken>,
) -> Value {
    match format {
        Format::ExternalCredential => json!({
            "success": true,
            "version": 1,
            "id_token": id_token,
            "token_type": "urn:ietf:params:oauth:token-type:id_token",
            "expiration_time": expires_at,
        }),
        Format::OAuth | Format::AwsCredentialProcess => {
            let mut body = Map::new();
            body.insert("id_token".into(), Value::String(id_token));
            if let Some(access) = access_token {
                body.insert("access_token".into(), Value::String(access.token));
                body.insert("token_type".into(), Value::String("Bearer".into()));
                body.insert("expires_in".into(), Value::from(access.expires_in));
                body.insert("scope".into(), Value::String(access.scope));
            }
            Value::Object(body)
        }
    }
}

/// `/token` with any method but POST.
pub async fn method_not_allowed(method: http::Method) -> Response {
    let mut response = HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        format!("{method} is not allowed on /token; use POST with an application/x-www-form-urlencoded body"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Token responses must not be cached (RFC 6749 §5.1).
pub async fn no_store(mut response: Response) -> Response {
    set_no_store(&mut response);
    response
}

/// Marks a response as not cacheable (also the guard's refusals of `/token` requests).
pub(super) fn set_no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
