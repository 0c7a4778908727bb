//! AWS: the ID token for `AWS_AUDIENCE` is exchanged at AWS STS (`AssumeRoleWithWebIdentity`,
//! form API, unsigned: STS authenticates the web-identity token itself) for temporary
//! credentials of the role the request names. Calls go through the shared [`Upstream`] client
//! (its connection bound, metrics and retries of 429/5xx) within the request's [`Deadline`];
//! the XML answer is read with a bounded reader after its size is capped. STS's error codes
//! map to the service's [`Failure`] here ([`refusal`]), the code in the client's sentence.
//! Uses `google` (the shared HTTP client), `error`, `clock` and `model`; no HTTP edge.

pub mod params;
pub(crate) mod settings;
mod xml;
pub use params::AwsRequest;
pub use settings::AwsConfig;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::clock::Deadline;
use crate::error::{Failure, Kind};
use crate::google::{Upstream, UpstreamError};
use crate::model::{AwsCredentials, truncate};

const API: &str = "AWS STS";
/// The largest STS answer read: its answers are a few KiB.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
const RESULT: &str = "AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult";

/// The AWS exchange: the audience its ID tokens carry and the STS client.
#[derive(Debug, Clone)]
pub struct AwsExchange {
    config: AwsConfig,
    upstream: Upstream,
}

/// One `AssumeRoleWithWebIdentity` call.
#[derive(Debug, Clone, Copy)]
pub struct AssumeRole<'a> {
    /// `RoleArn`.
    pub role_arn: &'a str,
    /// `RoleSessionName`.
    pub session_name: &'a str,
    /// `DurationSeconds`, when the client chose one.
    pub duration_seconds: Option<u32>,
    /// `WebIdentityToken`: the ID token. Never logged.
    pub web_identity_token: &'a str,
}

impl AwsExchange {
    /// The exchange at `config.sts_endpoint` over `upstream`.
    pub fn new(config: AwsConfig, upstream: Upstream) -> Self {
        Self { config, upstream }
    }

    /// `AWS_AUDIENCE`: `aud` of the ID tokens presented to STS.
    pub fn audience(&self) -> &str {
        &self.config.audience
    }

    /// Calls `AssumeRoleWithWebIdentity` by `deadline`; returns the role's credentials or the
    /// failure STS's answer means to the client.
    pub async fn assume_role(
        &self,
        call: AssumeRole<'_>,
        deadline: Deadline,
    ) -> Result<AwsCredentials, Failure> {
        let url = format!("{}/", self.config.sts_endpoint);
        let duration = call.duration_seconds.map(|d| d.to_string());
        let mut form = vec![
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", call.role_arn),
            ("RoleSessionName", call.session_name),
            ("WebIdentityToken", call.web_identity_token),
        ];
        if let Some(d) = &duration {
            form.push(("DurationSeconds", d));
        }
        let refused = |e: UpstreamError| {
            Failure::new(
                e.kind(),
                format!(
                    "{} for role '{}': {e}",
                    context(),
                    truncate(call.role_arn, 200)
                ),
            )
        };
        let answer = self
            .upstream
            .retry(API, deadline, |timeout| {
                let request = self.upstream.http().post(&url).form(&form);
                async move {
                    let answer = self
                        .upstream
                        .send_raw(API, request, timeout, MAX_ANSWER_BYTES)
                        .await?;
                    classify(answer.status.as_u16(), answer.retry_after, &answer.body)
                }
            })
            .await
            .map_err(refused)?;
        answer.map_err(|e| refusal(&e, call.role_arn))
    }
}

fn context() -> &'static str {
    "AWS STS refused AssumeRoleWithWebIdentity"
}

/// An error STS answered with: the HTTP status, its `Code` and `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsError {
    /// HTTP status.
    pub status: u16,
    /// `ErrorResponse/Error/Code`, e.g. `InvalidIdentityToken`.
    pub code: String,
    /// `ErrorResponse/Error/Message`, shortened.
    pub message: String,
    /// `Retry-After`, when STS sent one.
    pub retry_after: Option<u64>,
}

/// One STS answer: credentials, an error the client is told about (`Ok(Err)`), or an
/// upstream error (transport, a body we cannot use, or a 429/5xx, which the retry loop
/// retries).
fn classify(
    status: u16,
    retry_after: Option<u64>,
    body: &str,
) -> Result<Result<AwsCredentials, StsError>, UpstreamError> {
    let malformed = |message: String| UpstreamError::Malformed { api: API, message };
    let doc = xml::parse(body).map_err(|e| malformed(e.to_string()));
    if (200..300).contains(&status) {
        return credentials(&doc?).map(Ok).map_err(malformed);
    }
    let (code, message) = match &doc {
        Ok(doc) => (
            doc.get("ErrorResponse/Error/Code").unwrap_or("").to_owned(),
            doc.get("ErrorResponse/Error/Message")
                .unwrap_or("no error message")
                .to_owned(),
        ),
        Err(_) => (String::new(), body.trim().to_owned()),
    };
    let error = StsError {
        status,
        code: if code.is_empty() {
            format!("HTTP{status}")
        } else {
            code
        },
        message: truncate(&message, 512),
        retry_after,
    };
    if matches!(status, 429 | 500 | 502 | 503 | 504) {
        return Err(UpstreamError::Status {
            api: API,
            status,
            message: format!("{}: {}", error.code, error.message),
            retry_after,
        });
    }
    Ok(Err(error))
}

/// The credentials of a successful answer; the expiration as RFC 3339.
fn credentials(doc: &xml::Document) -> Result<AwsCredentials, String> {
    if doc.root() != Some("AssumeRoleWithWebIdentityResponse") {
        return Err("the answer is not an AssumeRoleWithWebIdentityResponse".into());
    }
    let field = |name: &str| {
        doc.get(&format!("{RESULT}/Credentials/{name}"))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("the answer has no Credentials/{name}"))
    };
    let expiration = field("Expiration")?;
    let expiration = OffsetDateTime::parse(&expiration, &Rfc3339)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| "Credentials/Expiration is not an RFC 3339 date".to_owned())?;
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("SessionToken")?,
        expiration,
    })
}

/// The failure an STS error means to the client, STS's code and message in its sentence with
/// what to check: the token or the role's trust refused (403 `access_denied`), a parameter
/// STS refused (400), STS or its view of the issuer unavailable or throttled (503 with
/// `Retry-After`), anything else by its status.
pub fn refusal(e: &StsError, role_arn: &str) -> Failure {
    let (kind, hint) = match e.code.as_str() {
        "AccessDenied" => (
            Kind::AccessDenied,
            "the role's trust policy does not admit this token: check its Federated principal (this service's issuer) and its :aud and :sub conditions",
        ),
        "InvalidIdentityToken" => (
            Kind::AccessDenied,
            "AWS could not validate this service's token: check that the IAM OIDC provider's URL is this service's issuer and its audiences hold AWS_AUDIENCE",
        ),
        "IDPRejectedClaim" => (
            Kind::AccessDenied,
            "AWS rejected a claim of this service's token: check the role's trust policy conditions",
        ),
        "ExpiredToken" | "ExpiredTokenException" => (
            Kind::AccessDenied,
            "AWS read this service's token as expired: check this service's clock",
        ),
        "IDPCommunicationError" => (
            Kind::Unavailable {
                retry_after: retry_after(e),
            },
            "AWS could not fetch this service's discovery document or JWKS; retry later",
        ),
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => (
            Kind::Unavailable {
                retry_after: retry_after(e),
            },
            "AWS STS is throttling; retry later",
        ),
        "ValidationError" | "InvalidParameterValue" | "MissingParameter" => (
            Kind::InvalidRequest,
            "check 'aws_duration_seconds' against the role's MaxSessionDuration, and the other parameters",
        ),
        _ => {
            let kind = UpstreamError::Status {
                api: API,
                status: e.status,
                message: String::new(),
                retry_after: e.retry_after,
            }
            .kind();
            (kind, "see AWS's message")
        }
    };
    Failure::new(
        kind,
        format!(
            "{} for role '{}': {}: {}; {hint}",
            context(),
            truncate(role_arn, 200),
            e.code,
            e.message
        ),
    )
}

fn retry_after(e: &StsError) -> u64 {
    e.retry_after.map_or(2, |s| s.clamp(1, 60))
}

#[cfg(test)]
mod tests;
