//! Microsoft Entra: the ID token for `AZURE_AUDIENCE` is presented to Entra's v2 token
//! endpoint (`{AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token`, client credentials with a
//! `jwt-bearer` client assertion: workload identity federation) for an access token of the
//! app the request names. Calls go through the shared [`Upstream`] client (its connection
//! bound, metrics and retries of 429/5xx) within the request's [`Deadline`]; the JSON answer
//! is read after its size is capped. Entra's AADSTS codes map to the service's [`Failure`]
//! here ([`refusal`]), the code in the client's sentence.
//! Uses `google` (the shared HTTP client), `error`, `clock` and `model`; no HTTP edge.

pub mod params;
pub(crate) mod settings;
pub use params::AzureRequest;
pub use settings::AzureConfig;

use serde::Deserialize;

use crate::clock::Deadline;
use crate::error::{Failure, Kind};
use crate::google::{Upstream, UpstreamError};
use crate::model::{AccessToken, truncate};

const API: &str = "Microsoft Entra";
/// The largest Entra answer read: its answers are a few KiB.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// `client_assertion_type` of a federated credential.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The Entra exchange: the audience its ID tokens carry and the token endpoint's client.
#[derive(Debug, Clone)]
pub struct AzureExchange {
    config: AzureConfig,
    upstream: Upstream,
}

/// One token request at Entra.
#[derive(Debug, Clone, Copy)]
pub struct EntraCall<'a> {
    /// What the client asked for: the app, its tenant, the scope.
    pub asked: AzureRequest<'a>,
    /// `client_assertion`: the ID token. Never logged.
    pub assertion: &'a str,
}

/// Entra's answer to a successful request.
#[derive(Deserialize)]
struct Granted {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Entra's error JSON.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

impl AzureExchange {
    /// The exchange at `config.authority_host` over `upstream`.
    pub fn new(config: AzureConfig, upstream: Upstream) -> Self {
        Self { config, upstream }
    }

    /// `AZURE_AUDIENCE`: `aud` of the ID tokens presented to Entra.
    pub fn audience(&self) -> &str {
        &self.config.audience
    }

    /// Asks Entra for an access token by `deadline`; returns it or the failure Entra's answer
    /// means to the client.
    pub async fn access_token(
        &self,
        call: EntraCall<'_>,
        deadline: Deadline,
    ) -> Result<AccessToken, Failure> {
        let asked = call.asked;
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.config.authority_host, asked.tenant_id
        );
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", asked.client_id),
            ("scope", asked.scope),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", call.assertion),
        ];
        let refused =
            |e: UpstreamError| Failure::new(kind_of(&e), format!("{}: {e}", context(&asked)));
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
        let granted = answer.map_err(|e| refusal(&e, &asked))?;
        Ok(AccessToken {
            token: granted.access_token,
            expires_in: granted.expires_in.unwrap_or(3599),
            scope: asked.scope.to_owned(),
        })
    }
}

/// What an upstream error means to the client: Entra throttling, failing or unreachable is 503
/// with `Retry-After` (an outage, not the client's fault); else by its status.
fn kind_of(e: &UpstreamError) -> Kind {
    match e.status() {
        Some(500..=599) => Kind::Unavailable {
            retry_after: e.retry_after(),
        },
        _ => e.kind(),
    }
}

fn context(asked: &AzureRequest<'_>) -> String {
    format!(
        "Microsoft Entra refused the token request for app '{}' in tenant '{}'",
        truncate(asked.client_id, 80),
        truncate(asked.tenant_id, 120)
    )
}

/// An error Entra answered with: the HTTP status, its OAuth `error`, its first AADSTS code and
/// its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    /// HTTP status.
    pub status: u16,
    /// `error`, e.g. `invalid_client`.
    pub error: String,
    /// The AADSTS code (`error_codes[0]`, or read from the description), e.g. 700213.
    pub code: Option<u64>,
    /// `error_description`, shortened (it starts with `AADSTSnnn:`).
    pub description: String,
    /// `Retry-After`, when Entra sent one.
    pub retry_after: Option<u64>,
}

/// One Entra answer: the access token, an error the client is told about (`Ok(Err)`), or an
/// upstream error (transport, a body we cannot use, or a 429/5xx/`temporarily_unavailable`,
/// which the retry loop retries).
fn classify(
    status: u16,
    retry_after: Option<u64>,
    body: &str,
) -> Result<Result<Granted, EntraError>, UpstreamError> {
    let malformed = |message: String| UpstreamError::Malformed { api: API, message };
    if (200..300).contains(&status) {
        let granted: Granted = serde_json::from_str(body)
            .map_err(|e| malformed(format!("the answer is not a token response: {e}")))?;
        if granted.access_token.is_empty() {
            return Err(malformed("the answer has an empty access_token".into()));
        }
        return Ok(Ok(granted));
    }
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_else(|_| ErrorBody {
        error_description: body.trim().to_owned(),
        ..ErrorBody::default()
    });
    let code = parsed.error_codes.first().copied().or_else(|| {
        parsed
            .error_description
            .strip_prefix("AADSTS")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
    });
    let error = EntraError {
        status,
        error: if parsed.error.is_empty() {
            format!("HTTP{status}")
        } else {
            parsed.error
        },
        code,
        description: truncate(parsed.error_description.trim(), 512),
        retry_after,
    };
    if matches!(status, 429 | 500 | 502 | 503 | 504) || error.error == "temporarily_unavailable" {
        return Err(UpstreamError::Status {
            api: API,
            status: if status < 500 && status != 429 {
                503
            } else {
                status
            },
            message: format!("{}: {}", error.error, error.description),
            retry_after,
        });
    }
    Ok(Err(error))
}

/// The failure an Entra error means to the client, Entra's code and description in its
/// sentence with what to check: the assertion or the federated credential refused (403
/// `access_denied`), a parameter Entra refused (400), anything else by its status.
pub fn refusal(e: &EntraError, asked: &AzureRequest<'_>) -> Failure {
    let (kind, hint) = match (e.code, e.error.as_str()) {
        (Some(700_211), _) => (
            Kind::AccessDenied,
            "no federated credential of the app has this service's issuer: set its issuer to TOKEN_ISSUER exactly",
        ),
        (Some(700_213), _) => (
            Kind::AccessDenied,
            "no federated credential of the app has this token's subject: set its subject to the token's sub exactly (case matters), or map the client to it with the policy's per-audience sub template",
        ),
        (Some(700_212), _) => (
            Kind::AccessDenied,
            "no federated credential of the app has this token's audience: set its audience to AZURE_AUDIENCE (api://AzureADTokenExchange by default)",
        ),
        (Some(70_021), _) => (
            Kind::AccessDenied,
            "no federated credential of the app matches this token: check its issuer (TOKEN_ISSUER), subject (the token's sub) and audience (AZURE_AUDIENCE)",
        ),
        (Some(700_024), _) => (
            Kind::AccessDenied,
            "Entra read this service's token as outside its validity: check this service's clock",
        ),
        (Some(50_027), _) => (
            Kind::AccessDenied,
            "Entra could not validate this service's token: check that its discovery document and JWKS are reachable from Entra and its keys are RS256",
        ),
        (Some(90_002), _) => (
            Kind::InvalidRequest,
            "check 'azure_tenant_id': Entra knows no such tenant",
        ),
        (Some(700_016), _) => (
            Kind::InvalidRequest,
            "check 'azure_client_id' and 'azure_tenant_id': the app is not registered in that tenant",
        ),
        (Some(70_011 | 1_002_012), _) | (_, "invalid_scope") => (
            Kind::InvalidRequest,
            "check 'scope': client credentials want one resource's '/.default', e.g. https://graph.microsoft.com/.default",
        ),
        (_, "invalid_request") => (Kind::InvalidRequest, "see Entra's message"),
        _ => {
            let kind = UpstreamError::Status {
                api: API,
                status: e.status,
                message: String::new(),
                retry_after: e.retry_after,
            }
            .kind();
            (kind, "see Entra's message")
        }
    };
    let code = e
        .code
        .map_or_else(|| e.error.clone(), |c| format!("AADSTS{c}"));
    Failure::new(
        kind,
        format!(
            "{}: {code} ({}): {}; {hint}",
            context(asked),
            e.error,
            e.description
        ),
    )
}

#[cfg(test)]
mod tests;
