//! The shared client-credentials path every flow reuses: pick the flow, authenticate the
//! client, apply the client policy, issue the ID token, then (when asked and configured) obtain
//! an access token. Knows nothing of HTTP; errors come out as [`GrantError`], which the HTTP edge
//! maps to OAuth JSON once.

use std::sync::Arc;

use crate::access::AccessTokenBackend;
use crate::clock::Deadline;
use crate::error::{Failure, Kind};
use crate::flows::{EnabledFlow, FlowError};
use crate::issuer::{FlowSummary, IdTokenIssuer};
use crate::limits::Limits;
use crate::model::{IssuedTokens, TokenRequest};
use crate::policy::{ClientPolicy, Requested};

/// Why a token request failed, in OAuth terms.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    /// 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `unsupported_grant_type`.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// 403 `unauthorized_client`.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// 403 `access_denied`.
    #[error("{0}")]
    AccessDenied(String),
    /// 500 `server_error`.
    #[error("{0}")]
    Server(String),
    /// 429 `temporarily_unavailable`: a rate limit; retry after `retry_after` seconds.
    #[error("{message}")]
    RateLimited {
        /// What was exceeded.
        message: String,
        /// Seconds until a request would be admitted.
        retry_after: u64,
    },
    /// 503 `temporarily_unavailable`.
    #[error("{message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// Seconds the client should wait.
        retry_after: u64,
    },
}

impl GrantError {
    /// The OAuth error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::AccessDenied(_) => "access_denied",
            Self::Server(_) => "server_error",
            Self::RateLimited { .. } | Self::Unavailable { .. } => "temporarily_unavailable",
        }
    }
}

impl From<FlowError> for GrantError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::InvalidRequest(m) => Self::InvalidRequest(m),
            FlowError::Unauthorized(m) => Self::UnauthorizedClient(m),
        }
    }
}

impl From<Failure> for GrantError {
    fn from(e: Failure) -> Self {
        let message = e.message().to_owned();
        match e.kind() {
            Kind::InvalidRequest
            | Kind::RequestTimeout
            | Kind::NotFound
            | Kind::MethodNotAllowed => Self::InvalidRequest(message),
            Kind::UnsupportedGrantType => Self::UnsupportedGrantType(message),
            Kind::UnauthorizedClient => Self::UnauthorizedClient(message),
            Kind::AccessDenied => Self::AccessDenied(message),
            Kind::RateLimited { retry_after } => Self::RateLimited {
                message,
                retry_after,
            },
            Kind::Unavailable { retry_after } => Self::Unavailable {
                message,
                retry_after,
            },
            Kind::Server => Self::Server(message),
        }
    }
}

/// The client-credentials grant over the enabled flows.
pub struct ClientCredentials {
    flows: Vec<EnabledFlow>,
    policy: Arc<dyn ClientPolicy>,
    issuer: IdTokenIssuer,
    access: Option<Arc<dyn AccessTokenBackend>>,
    limits: Option<Arc<Limits>>,
}

impl ClientCredentials {
    /// Wires the grant.
    pub fn new(
        flows: Vec<EnabledFlow>,
        policy: Arc<dyn ClientPolicy>,
        issuer: IdTokenIssuer,
        access: Option<Arc<dyn AccessTokenBackend>>,
    ) -> Self {
        Self {
            flows,
            policy,
            issuer,
            access,
            limits: None,
        }
    }

    /// Applies the per-client rate limit of `limits` after authentication.
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The ID-token issuer.
    pub fn issuer(&self) -> &IdTokenIssuer {
        &self.issuer
    }

    /// Distinct grant types and authentication methods of the enabled flows, for discovery.
    pub fn summary(&self) -> FlowSummary {
        let mut summary = FlowSummary::default();
        for flow in &self.flows {
            push_distinct(&mut summary.grant_types, flow.flow.grant_type());
            push_distinct(&mut summary.auth_methods, flow.auth_method);
        }
        summary
    }

    /// Selects the flow for a request: the first enabled flow with the request's grant type
    /// that can handle it.
    pub fn select(&self, request: &TokenRequest) -> Result<&EnabledFlow, GrantError> {
        let grant = request.grant_type.as_str();
        if grant.is_empty() {
            return Err(GrantError::InvalidRequest(
                "The parameter 'grant_type' is required".into(),
            ));
        }
        let mut candidates = self
            .flows
            .iter()
            .filter(|f| f.flow.grant_type() == grant)
            .peekable();
        if candidates.peek().is_none() {
            return Err(GrantError::UnsupportedGrantType(format!(
                "Grant type '{}' is not supported; supported: {}",
                crate::model::truncate(grant, 64),
                self.summary().grant_types.join(", ")
            )));
        }
        let candidates: Vec<&EnabledFlow> = candidates.collect();
        if let Some(flow) = candidates.iter().find(|f| f.flow.can_handle(request)) {
            return Ok(*flow);
        }
        // Nobody claimed the request: say what each enabled flow missed. A flow that saw its
        // credentials in an untrusted form (load-balancer headers without the secret) makes
        // the answer a 403; otherwise the request simply carried no credentials (400).
        let mut untrusted = false;
        let reasons: Vec<String> = candidates
            .iter()
            .map(|f| {
                let reason = match f.flow.declined(request) {
                    FlowError::Unauthorized(m) => {
                        untrusted = true;
                        m
                    }
                    FlowError::InvalidRequest(m) => m,
                };
                format!("{}: {reason}", f.name)
            })
            .collect();
        let message = format!(
            "No suitable flow found for grant type '{grant}': {}",
            reasons.join("; ")
        );
        Err(if untrusted {
            GrantError::UnauthorizedClient(message)
        } else {
            GrantError::InvalidRequest(message)
        })
    }

    /// Runs the grant for a request whose issuer is `iss`. Logs one line per attempt.
    ///
    /// A caller (peer address, see [`crate::limits::CallerKey`]) whose failed-authentication
    /// bucket is empty is refused with 429 before any flow looks at its request, so refusing
    /// it costs no verification; every refusal before the client is identified (no flow for
    /// the request, a flow's refusal, a malformed certificate header, a client the policy
    /// denies) takes one token from that bucket.
    pub async fn exchange(
        &self,
        request: &TokenRequest,
        iss: &str,
        deadline: Deadline,
    ) -> Result<IssuedTokens, GrantError> {
        let started = std::time::Instant::now();
        let caller = self.limits.as_ref().and_then(|limits| {
            limits
                .caller_of(request.remote_addr, &request.headers)
                .map(|caller| (limits, caller))
        });
        if let Some((limits, caller)) = caller
            && let Err(limited) = limits.check_auth_failures(caller)
        {
            let e = GrantError::RateLimited {
                message: format!(
                    "Too many failed authentications from this address (RATE_LIMIT_AUTH_FAILURES); retry in {} s",
                    limited.retry_after
                ),
                retry_after: limited.retry_after,
            };
            crate::metrics::metrics().token_request("none", e.code(), started.elapsed());
            tracing::warn!(event = "token_request_rejected", outcome = e.code(), caller = %caller, reason = %e, "token request rejected: {e}");
            return Err(e);
        }
        let failed = || {
            if let Some((limits, caller)) = caller {
                limits.auth_failed(caller);
            }
        };
        let flow = match self.select(request) {
            Ok(flow) => flow,
            Err(e) => {
                failed();
                crate::metrics::metrics().token_request("none", e.code(), started.elapsed());
                tracing::warn!(event = "token_request_rejected", outcome = e.code(), reason = %e, "token request rejected: {e}");
                return Err(e);
            }
        };
        let result = self.run(flow, request, iss, deadline).await;
        let outcome = match &result {
            Ok(_) => "issued",
            Err(refusal) => refusal.error.code(),
        };
        crate::metrics::metrics().token_request(&flow.name, outcome, started.elapsed());
        match &result {
            Ok((client_id, tokens)) => tracing::info!(
                event = "token_issued",
                outcome = "issued",
                flow = &*flow.name,
                client_id = %client_id,
                jti = %tokens.jti,
                access_token = tokens.access_token.is_some(),
                "issued a token to client '{client_id}' through {}", flow.name
            ),
            Err(refusal) => {
                if refusal.authentication {
                    failed();
                }
                tracing::warn!(
                    event = "authentication_failed",
                    outcome = refusal.error.code(),
                    flow = &*flow.name,
                    client_id = refusal.client_id.as_deref().unwrap_or(""),
                    reason = %refusal.detail,
                    "{} refused the request: {}", flow.name, refusal.detail
                );
            }
        }
        result
            .map(|(_, tokens)| tokens)
            .map_err(|refusal| refusal.error)
    }

    /// The grant for one flow; on failure returns the client ID (if known), the error the client
    /// sees and the reason for the log (which may say more than the client is told).
    async fn run(
        &self,
        flow: &EnabledFlow,
        request: &TokenRequest,
        iss: &str,
        deadline: Deadline,
    ) -> Result<(String, IssuedTokens), Refusal> {
        let plain = |e: GrantError| Refusal::new(None, e);
        let scope = request.scope.as_deref().filter(|s| !s.trim().is_empty());
        let service_account = request
            .service_account
            .as_deref()
            .filter(|s| !s.trim().is_empty());
        if self.access.is_none() && (scope.is_some() || service_account.is_some()) {
            return Err(plain(GrantError::InvalidRequest(
                "Access tokens are not configured on this service: remove 'scope' and 'service_account' to get an ID token"
                    .into(),
            )));
        }
        if service_account.is_some() && scope.is_none() {
            return Err(plain(GrantError::InvalidRequest(
                "The parameter 'scope' is required when 'service_account' is given".into(),
            )));
        }
        let authenticated = flow.flow.authenticate(request).await.map_err(|e| Refusal {
            authentication: true,
            ..plain(e.into())
        })?;
        let id = Some(authenticated.client_id.clone());
        if let Some(limits) = &self.limits
            && let Err(limited) = limits.check_client(&authenticated.client_id)
        {
            let e = GrantError::RateLimited {
                message: format!(
                    "Too many token requests from this client; retry in {} s",
                    limited.retry_after
                ),
                retry_after: limited.retry_after,
            };
            return Err(Refusal::new(id, e));
        }
        let client = self
            .policy
            .authorize(
                &authenticated,
                Requested {
                    scope,
                    service_account,
                },
            )
            .map_err(|e| Refusal {
                client_id: id.clone(),
                detail: e.log_detail(),
                authentication: e.kind() == Kind::UnauthorizedClient,
                error: e.into(),
            })?;
        let with_id = |e: GrantError| Refusal::new(id.clone(), e);
        let id_token = self
            .issuer
            .issue(iss, &client, deadline)
            .await
            .map_err(|e| with_id(e.into()))?;
        let access_token = match (&self.access, scope) {
            (Some(backend), Some(scope)) => Some(
                backend
                    .access_token(&client, &id_token.token, scope, service_account, deadline)
                    .await
                    .map_err(|e| with_id(e.into()))?,
            ),
            _ => None,
        };
        Ok((
            client.client_id,
            IssuedTokens {
                id_token: id_token.token,
                id_token_expires_at: id_token.expires_at,
                jti: id_token.jti,
                access_token,
            },
        ))
    }
}

/// A refused request: the client ID (if known), the error the client sees, the reason for the
/// log (which may say more than the client is told), and whether authentication failed (the
/// client could not be identified, or the policy denies it), which counts against the
/// caller's failed-authentication limit.
struct Refusal {
    client_id: Option<String>,
    error: GrantError,
    detail: String,
    authentication: bool,
}

impl Refusal {
    fn new(client_id: Option<String>, error: GrantError) -> Self {
        Self {
            client_id,
            detail: error.to_string(),
            error,
            authentication: false,
        }
    }
}

fn push_distinct(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|v| v == value) {
        list.push(value.to_owned());
    }
}
