//! AWS STS `AssumeRoleWithWebIdentity` (`Version=2011-06-15`) on `/`: the
//! query API (`GET /?Action=…`) and the form API (`POST /`, as the SDKs send
//! it, unsigned). Parameters are validated as STS does (`ValidationError`
//! listing each constraint), the web-identity token as IAM does: the issuer
//! must be a registered OIDC provider, its key is fetched through discovery
//! and `jwks_uri` by `kid`, the algorithm must be RS256/384/512 or
//! ES256/384/512, `aud` must be in the provider's client-ID list, the time claims
//! hold within the skew, and the role's trust policy (provider, `sub`/`aud`
//! conditions) must allow it. Answers are the XML STS sends; the error codes
//! and statuses are STS's (`InvalidIdentityToken` 400, `ExpiredTokenException`
//! 400, `IDPRejectedClaim` 403, `AccessDenied` 403, `IDPCommunicationError`
//! 400, `ValidationError` 400, `Throttling` 400 by fault injection).

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cloud_config::{AwsOidcProvider, AwsRole, TrustClaim, TrustOperator};
use crate::keys::{random_hex, random_token};
use crate::state::{AppState, AwsSession, now_unix};
use crate::webid::{Jws, KeyError, algorithm, fetch_key, glob_match, signature_valid};

pub(crate) const ENDPOINT: &str = "aws.sts";
const VERSION: &str = "2011-06-15";
const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const ALGORITHMS: [&str; 6] = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"];
const NOT_AUTHORIZED: &str = "Not authorized to perform sts:AssumeRoleWithWebIdentity";
/// Codes a fault's message may start with (`"IDPCommunicationError: …"`) to choose the code.
const FAULT_CODES: [&str; 9] = [
    "Throttling",
    "IDPCommunicationError",
    "InvalidIdentityToken",
    "ExpiredTokenException",
    "IDPRejectedClaim",
    "AccessDenied",
    "RegionDisabledException",
    "InternalFailure",
    "ServiceUnavailable",
];

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/", get(get_root).post(post_root))
}

/// An STS error: `ErrorResponse/Error{Type,Code,Message}/RequestId`.
#[derive(Debug, Clone)]
pub(crate) struct AwsError {
    status: u16,
    code: String,
    message: String,
}

impl AwsError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        AwsError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
    fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidIdentityToken", message)
    }
    fn access_denied() -> Self {
        Self::new(403, "AccessDenied", NOT_AUTHORIZED)
    }
    fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationError", message)
    }

    fn from_fault(status: u16, message: String) -> Self {
        if let Some((code, rest)) = message.split_once(": ")
            && FAULT_CODES.contains(&code)
        {
            return Self::new(status, code, rest);
        }
        let code = match status {
            400 | 429 => "Throttling",
            403 => "AccessDenied",
            503 => "ServiceUnavailable",
            _ => "InternalFailure",
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status, code = %self.code, message = %self.message, "request refused (AWS error)");
        let kind = if self.status >= 500 {
            "Receiver"
        } else {
            "Sender"
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let body = format!(
            "<ErrorResponse xmlns=\"{NAMESPACE}\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    \
             <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
            xml(&self.code),
            xml(&self.message)
        );
        xml_response(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            &request_id,
            body,
        )
    }
}

fn xml_response(status: StatusCode, request_id: &str, body: String) -> Response {
    let mut resp = (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// XML character escaping for element content (quotes need none there).
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET /`: STS's query API when there is an `Action`, else the metadata server's root.
async fn get_root(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    if !form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "Action") {
        return crate::metadata::root(headers).await;
    }
    serve(&state, query.as_bytes(), &[]).await
}

/// `POST /`: STS's form API (parameters in the body, the query string also read).
async fn post_root(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return AwsError::new(
            400,
            "InvalidParameterValue",
            format!(
                "Unsupported Content-Type {content_type:?}: send the parameters as application/x-www-form-urlencoded."
            ),
        )
        .into_response();
    }
    serve(&state, query.unwrap_or_default().as_bytes(), &body).await
}

async fn serve(state: &AppState, query: &[u8], body: &[u8]) -> Response {
    if let Some(fault) = state.faults.enter(ENDPOINT).await {
        return AwsError::from_fault(fault.status, fault.message).into_response();
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(query).chain(form_urlencoded::parse(body)) {
        params.insert(k.into_owned(), v.into_owned());
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    match assume_role(state, &params, &request_id).await {
        Ok(body) => xml_response(StatusCode::OK, &request_id, body),
        Err(e) => e.into_response(),
    }
}

/// The request's parameters once they satisfy STS's constraints.
struct Request<'a> {
    role_arn: &'a str,
    session_name: &'a str,
    token: &'a str,
    duration: Option<u32>,
}

fn session_name_ok(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

/// `ValidationError` as STS words it: "N validation error(s) detected: …; …".
fn validate_params(params: &HashMap<String, String>) -> Result<Request<'_>, AwsError> {
    let mut problems: Vec<String> = Vec::new();
    let mut required = |name: &str, field: &str, min: usize, max: usize, echo: bool| {
        let Some(v) = params.get(name) else {
            problems.push(format!(
                "Value null at '{field}' failed to satisfy constraint: Member must not be null"
            ));
            return "";
        };
        let shown = if echo {
            format!("'{v}' ")
        } else {
            String::new()
        };
        if v.chars().count() < min {
            problems.push(format!("Value {shown}at '{field}' failed to satisfy constraint: Member must have length greater than or equal to {min}"));
        } else if v.chars().count() > max {
            problems.push(format!("Value {shown}at '{field}' failed to satisfy constraint: Member must have length less than or equal to {max}"));
        }
        v.as_str()
    };
    let role_arn = required("RoleArn", "roleArn", 20, 2048, true);
    let session_name = required("RoleSessionName", "roleSessionName", 2, 64, true);
    let token = required("WebIdentityToken", "webIdentityToken", 4, 20_000, false);
    if !session_name_ok(session_name) {
        problems.push(format!("Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"));
    }
    let duration = match params.get("DurationSeconds") {
        None => None,
        Some(raw) => match raw.parse::<u32>() {
            Ok(d) if d < 900 => {
                problems.push(format!("Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"));
                None
            }
            Ok(d) if d > 43_200 => {
                problems.push(format!("Value '{d}' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 43200"));
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                return Err(AwsError::new(
                    400,
                    "InvalidParameterValue",
                    format!(
                        "Value ({raw}) for parameter DurationSeconds is invalid. It must be an integer."
                    ),
                ));
            }
        },
    };
    if !problems.is_empty() {
        let n = problems.len();
        let s = if n == 1 { "" } else { "s" };
        return Err(AwsError::validation(format!(
            "{n} validation error{s} detected: {}",
            problems.join("; ")
        )));
    }
    Ok(Request {
        role_arn,
        session_name,
        token,
        duration,
    })
}

fn check_action(params: &HashMap<String, String>) -> Result<(), AwsError> {
    let action = params.get("Action").map(String::as_str).unwrap_or("");
    if action.is_empty() {
        return Err(AwsError::new(400, "MissingAction", "Missing Action"));
    }
    let version = params.get("Version").map(String::as_str).unwrap_or("");
    if action != "AssumeRoleWithWebIdentity" || version != VERSION {
        return Err(AwsError::new(
            400,
            "InvalidAction",
            format!(
                "Could not find operation {action} for version {version}: the emulator serves AssumeRoleWithWebIdentity, Version {VERSION}."
            ),
        ));
    }
    Ok(())
}

async fn assume_role(
    state: &AppState,
    params: &HashMap<String, String>,
    request_id: &str,
) -> Result<String, AwsError> {
    check_action(params)?;
    let req = validate_params(params)?;
    let aws = &state.config.aws;
    let role = aws
        .roles
        .iter()
        .find(|r| r.arn == req.role_arn)
        .ok_or_else(AwsError::access_denied)?;
    let (provider, jws) = verify_token(state, req.token).await?;
    let (sub, aud) = check_claims(state, provider, &jws)?;
    if !trusts(role, provider, &sub, &aud) {
        return Err(AwsError::access_denied());
    }
    let duration = req.duration.unwrap_or(3600);
    if duration > role.max_session_duration_secs {
        return Err(AwsError::validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        ));
    }
    let session = issue(state, role, req.session_name, &sub, &aud, duration);
    Ok(response_xml(state, provider, role, &session, request_id))
}

/// Parse the token, find its provider, fetch the key by `kid` and check the signature.
async fn verify_token<'s>(
    state: &'s AppState,
    token: &str,
) -> Result<(&'s AwsOidcProvider, Jws), AwsError> {
    let aws = &state.config.aws;
    let jws = Jws::parse(token).ok_or_else(|| {
        AwsError::invalid_token("The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)")
    })?;
    let iss = jws.str_claim("iss").unwrap_or("").to_owned();
    let provider = aws.provider(&iss).ok_or_else(|| {
        AwsError::invalid_token(format!(
            "No OpenIDConnect provider found in your account for {iss}"
        ))
    })?;
    if !ALGORITHMS.contains(&jws.alg.as_str()) {
        return Err(AwsError::invalid_token(format!(
            "The token is signed with {:?}, which is not supported: use one of {}.",
            jws.alg,
            ALGORITHMS.join(", ")
        )));
    }
    let (Some(alg), Some(kid)) = (algorithm(&jws.alg), jws.kid.clone()) else {
        return Err(AwsError::invalid_token(
            "The token header has no kid, so no verification key can be chosen from the provider's JWKS.",
        ));
    };
    let key = fetch_key(
        (&state.http, &state.aws_oidc_cache),
        &iss,
        &kid,
        state.config.allow_loopback_issuers,
        false,
    )
    .await
    .map_err(|e| key_error(&e))?;
    if !signature_valid(token, &key, alg) {
        return Err(AwsError::invalid_token(
            "The signature of the web identity token could not be verified with the provider's key.",
        ));
    }
    Ok((provider, jws))
}

fn key_error(e: &KeyError) -> AwsError {
    tracing::info!(problem = %e, "web identity key lookup failed");
    if e.is_communication() {
        AwsError::new(
            400,
            "IDPCommunicationError",
            format!("Couldn't retrieve verification key from your identity provider: {e}."),
        )
    } else {
        AwsError::invalid_token(format!(
            "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements ({e})."
        ))
    }
}

/// `aud`, `sub` and the time claims; returns `(sub, matched aud)`.
fn check_claims(
    state: &AppState,
    provider: &AwsOidcProvider,
    jws: &Jws,
) -> Result<(String, String), AwsError> {
    let aws = &state.config.aws;
    let Some(aud) = jws
        .audiences()
        .into_iter()
        .find(|a| provider.client_ids.contains(a))
    else {
        return Err(AwsError::invalid_token("Incorrect token audience"));
    };
    let bad_time = |name: &str| {
        AwsError::invalid_token(format!(
            "The {name} claim of the token is not an integer NumericDate."
        ))
    };
    let exp = jws.time_claim("exp").map_err(|()| bad_time("exp"))?;
    let iat = jws.time_claim("iat").map_err(|()| bad_time("iat"))?;
    let nbf = jws.time_claim("nbf").map_err(|()| bad_time("nbf"))?;
    let (Some(exp), Some(iat)) = (exp, iat) else {
        return Err(AwsError::invalid_token(
            "The token must carry the exp and iat claims.",
        ));
    };
    let now = now_unix();
    let skew = aws.clock_skew_secs;
    if exp.saturating_add(skew) <= now {
        return Err(AwsError::new(
            400,
            "ExpiredTokenException",
            format!(
                "Token expired: current date/time {} must be before the expiration date/time {}",
                date(now),
                date(exp)
            ),
        ));
    }
    if let Some(nbf) = nbf.filter(|n| n.saturating_sub(skew) > now) {
        return Err(AwsError::invalid_token(format!(
            "Token is not valid yet: its nbf {} is after the current date/time {}.",
            date(nbf),
            date(now)
        )));
    }
    if iat.saturating_sub(skew) > now {
        return Err(AwsError::invalid_token(format!(
            "Token was issued in the future: its iat {} is after the current date/time {}.",
            date(iat),
            date(now)
        )));
    }
    if exp.saturating_sub(iat) > aws.max_token_lifetime_secs {
        return Err(AwsError::new(
            403,
            "IDPRejectedClaim",
            format!(
                "The token's lifetime (exp - iat = {}s) exceeds the {}s the emulated IAM accepts.",
                exp.saturating_sub(iat),
                aws.max_token_lifetime_secs
            ),
        ));
    }
    let sub = jws.str_claim("sub").unwrap_or("");
    if sub.is_empty() {
        return Err(AwsError::new(
            403,
            "IDPRejectedClaim",
            "The token has no sub claim.",
        ));
    }
    Ok((sub.to_owned(), aud))
}

fn date(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// The role's trust policy: the federated principal and every condition.
fn trusts(role: &AwsRole, provider: &AwsOidcProvider, sub: &str, aud: &str) -> bool {
    if crate::cloud_config::strip_scheme(&role.provider_url) != provider.host_path() {
        return false;
    }
    role.conditions.iter().all(|c| {
        let value = match c.claim {
            TrustClaim::Sub => sub,
            TrustClaim::Aud => aud,
        };
        c.values.iter().any(|pattern| match c.operator {
            TrustOperator::StringEquals => pattern == value,
            TrustOperator::StringLike => glob_match(pattern, value),
        })
    })
}

/// `AROA` + 17 characters, stable per role ARN.
fn role_id(arn: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = String::from("AROA");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    for i in 0..17u8 {
        for b in arn.bytes().chain([i]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        out.push(char::from(ALPHABET[usize::try_from(h % 32).unwrap_or(0)]));
    }
    out
}

fn issue(
    state: &AppState,
    role: &AwsRole,
    session_name: &str,
    sub: &str,
    aud: &str,
    duration: u32,
) -> AwsSession {
    let key_id: String = format!("ASIA{}", random_hex(8).to_ascii_uppercase());
    let session = AwsSession {
        access_key_id: key_id,
        secret_access_key: random_token().chars().take(40).collect(),
        session_token: format!("IQoJb3JpZ2luX2VjE-emu{}{}", random_token(), random_token()),
        expiration: now_unix().saturating_add(i64::from(duration)),
        role_arn: role.arn.clone(),
        session_name: session_name.to_owned(),
        subject: sub.to_owned(),
        audience: aud.to_owned(),
    };
    state.record_aws_session(session.clone());
    session
}

fn response_xml(
    state: &AppState,
    provider: &AwsOidcProvider,
    role: &AwsRole,
    s: &AwsSession,
    request_id: &str,
) -> String {
    let account = &state.config.aws.account_id;
    let assumed_arn = format!(
        "arn:aws:sts::{account}:assumed-role/{}/{}",
        role.name(),
        s.session_name
    );
    format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"{NAMESPACE}\">
  <AssumeRoleWithWebIdentityResult>
    <Audience>{aud}</Audience>
    <AssumedRoleUser>
      <AssumedRoleId>{role_id}:{session}</AssumedRoleId>
      <Arn>{assumed_arn}</Arn>
    </AssumedRoleUser>
    <Provider>{provider}</Provider>
    <Credentials>
      <AccessKeyId>{key}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>{sub}</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{request_id}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
",
        aud = xml(&s.audience),
        role_id = role_id(&role.arn),
        session = xml(&s.session_name),
        assumed_arn = xml(&assumed_arn),
        provider = xml(&provider.arn(account)),
        key = s.access_key_id,
        secret = xml(&s.secret_access_key),
        token = xml(&s.session_token),
        expiration = date(s.expiration),
        sub = xml(&s.subject),
    )
}
