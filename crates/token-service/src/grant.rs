//! The client-credentials grant every flow reuses: check the grant type, let the enabled flows
//! authenticate the client (the first that takes the request or refuses it decides), apply the
//! per-client limit and the client policy, issue the ID token (for the audience the request
//! names, when `TOKEN_AUDIENCES` and the policy allow it), then (when asked and configured)
//! obtain an access token, or exchange the ID token for `AWS_AUDIENCE` for the credentials of
//! the AWS role the request names, or present the ID token for `AZURE_AUDIENCE` to Microsoft
//! Entra for an access token of the app the request names. The grant owns the grant types;
//! flows only authenticate.
//!
//! Uses `flows`, `policy`, `issuer`, `access` and `limits`; knows nothing of HTTP and logs
//! nothing: it returns an [`Exchange`] (which flow, which client, the tokens or the
//! [`Failure`], each with the policy's decision once it decided) from which the HTTP handler
//! writes the request's one log line.

use std::sync::Arc;

use crate::access::AccessTokenBackend;
use crate::aws::{AssumeRole, AwsExchange, AwsRequest};
use crate::azure::{AzureExchange, AzureRequest, EntraCall};
use crate::clock::Deadline;
use crate::error::{Failure, Kind};
use crate::flows::{Authentication, EnabledFlow};
use crate::issuer::{FlowSummary, IdTokenIssuer};
use crate::limits::Limits;
use crate::model::{AuthenticatedClient, CLIENT_CREDENTIALS, Client, IssuedTokens};
use crate::model::{TokenRequest, truncate};
use crate::policy::{ClientPolicy, Requested, with_decision};

/// The grant types this service serves, for discovery.
pub const GRANT_TYPES: &[&str] = &[CLIENT_CREDENTIALS];

/// The outcome of one token request, for the HTTP handler's one log line: the flow that
/// decided (`None` when no flow took the request or it was refused before any flow looked at
/// it), the client ID once known, and the tokens or the failure.
#[derive(Debug)]
pub struct Exchange {
    /// Registered name of the flow that took or refused the request.
    pub flow: Option<Arc<str>>,
    /// The client ID, once a flow identified the client.
    pub client_id: Option<String>,
    /// The audience the request named (the parameter `audience`), for the log line of a
    /// refusal; issued tokens carry their own.
    pub audience: Option<String>,
    /// The AWS role the request named (the parameter `aws_role_arn`), for the log line.
    pub aws_role_arn: Option<String>,
    /// The Entra app and tenant the request named (`azure_client_id`, `azure_tenant_id`), for
    /// the log line.
    pub azure: Option<(String, String)>,
    /// The OCSP outcome that let the client's certificate in (`TLS_CLIENT_OCSP`), for the log
    /// line; a refusal by OCSP carries its own label.
    pub ocsp: Option<String>,
    /// The tokens, or why there are none.
    pub result: Result<IssuedTokens, Failure>,
}

/// The client-credentials grant over the enabled flows.
pub struct ClientCredentials {
    flows: Vec<EnabledFlow>,
    policy: Arc<dyn ClientPolicy>,
    issuer: IdTokenIssuer,
    access: Option<Arc<dyn AccessTokenBackend>>,
    limits: Option<Arc<Limits>>,
    aws: Option<AwsExchange>,
    azure: Option<AzureExchange>,
}

/// What a request asks for beyond an ID token for the default audience: what the policy
/// decides on, and the AWS call to make.
#[derive(Debug, Clone, Copy)]
struct Asked<'r> {
    requested: Requested<'r>,
    aws: Option<AwsRequest<'r>>,
    azure: Option<AzureRequest<'r>>,
}

/// What the enabled flows made of a request.
#[expect(
    clippy::large_enum_variant,
    reason = "lives for one call; boxing the client would add an allocation per request"
)]
enum Selected<'a> {
    /// `flow` authenticated the client.
    Client(&'a EnabledFlow, AuthenticatedClient),
    /// `flow` refused the request.
    Refused(&'a EnabledFlow, Failure),
    /// No flow took the request: the failure names what each one missed.
    Nobody(Failure),
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
            aws: None,
            azure: None,
        }
    }

    /// Serves requests that name an AWS role (`aws_role_arn`) through `aws`.
    #[must_use]
    pub fn with_aws(mut self, aws: AwsExchange) -> Self {
        self.aws = Some(aws);
        self
    }

    /// Serves requests that name an Entra app (`azure_client_id`) through `azure`.
    #[must_use]
    pub fn with_azure(mut self, azure: AzureExchange) -> Self {
        self.azure = Some(azure);
        self
    }

    /// Applies the per-client and failed-authentication limits of `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The ID-token issuer.
    pub fn issuer(&self) -> &IdTokenIssuer {
        &self.issuer
    }

    /// The grant types and distinct authentication methods of the enabled flows, for
    /// discovery.
    pub fn summary(&self) -> FlowSummary {
        let mut summary = FlowSummary {
            grant_types: GRANT_TYPES.iter().map(|g| (*g).to_owned()).collect(),
            auth_methods: Vec::new(),
        };
        for flow in &self.flows {
            if !summary.auth_methods.iter().any(|m| m == flow.auth_method) {
                summary.auth_methods.push(flow.auth_method.to_owned());
            }
        }
        summary
    }

    /// Runs the grant for a request whose issuer is `iss`; upstream calls end by `deadline`.
    ///
    /// A caller (peer address, see [`crate::limits::CallerKey`]) whose failed-authentication
    /// bucket is empty is refused with 429 before any flow looks at its request, so refusing
    /// it costs no verification; every refusal before the client is identified (a missing or
    /// unsupported grant type, no flow for the request, a flow's refusal, a client the policy
    /// denies) takes one token from that bucket, except a flow's "try again later" (503: an
    /// OCSP responder out of reach), which is nothing the client did.
    pub async fn exchange(
        &self,
        request: &TokenRequest,
        iss: &str,
        deadline: Deadline,
    ) -> Exchange {
        let limits = self.limits.as_deref();
        let caller = limits.and_then(|l| l.caller_of(request.remote_addr, &request.headers));
        let charge = || {
            if let (Some(limits), Some(caller)) = (limits, caller) {
                limits.auth_failed(caller);
            }
        };
        let audience = named_audience(request).map(|a| truncate(a, 200));
        let aws_role_arn = named_param(request, crate::aws::params::ROLE_ARN);
        let azure = named_azure(request);
        let refused = |failure: Failure| Exchange {
            flow: None,
            client_id: None,
            audience: audience.clone(),
            aws_role_arn: aws_role_arn.clone(),
            azure: azure.clone(),
            ocsp: None,
            result: Err(failure),
        };
        if let (Some(limits), Some(caller)) = (limits, caller)
            && let Err(failure) = check_auth_failures(limits, caller)
        {
            return refused(failure);
        }
        if let Err(failure) = check_grant_type(&request.grant_type) {
            charge();
            return refused(failure);
        }
        // Checked before the flows run, answered after: a request no flow takes is told so
        // first, as before the flows did their work in one call.
        let requested = self.requested(request);
        let (flow, authenticated) = match self.select(request).await {
            Selected::Nobody(failure) => {
                charge();
                return refused(failure);
            }
            Selected::Refused(flow, failure) => {
                // "Try again later" (an OCSP responder out of reach) is nothing the client did.
                if requested.is_ok() && !matches!(failure.kind(), Kind::Unavailable { .. }) {
                    charge();
                }
                let mut exchange = refused(requested.err().unwrap_or(failure));
                exchange.flow = Some(flow.name.clone());
                return exchange;
            }
            Selected::Client(flow, client) => (flow, client),
        };
        let mut exchange = Exchange {
            flow: Some(flow.name.clone()),
            client_id: None,
            audience,
            aws_role_arn,
            azure,
            ocsp: authenticated.facts.ocsp.clone(),
            result: Err(Failure::server("The token request was not answered")),
        };
        let asked = match requested {
            Ok(asked) => asked,
            Err(failure) => {
                exchange.result = Err(failure);
                return exchange;
            }
        };
        exchange.client_id = Some(authenticated.client_id.clone());
        exchange.result = match self
            .admitted(authenticated, asked, iss, deadline, &charge)
            .await
        {
            Ok((client_id, tokens)) => {
                // The policy may rename the client (a template): the tokens are for that name.
                exchange.client_id = Some(client_id);
                Ok(tokens)
            }
            Err(failure) => Err(failure),
        };
        exchange
    }

    /// The scope, service account and audience asked for, when this service can serve them.
    /// `audience` with `scope` is refused (400): the access token is exchanged at Google's STS,
    /// which accepts only the default audience (the workload identity pool's); an audience
    /// that is neither the default nor one of `TOKEN_AUDIENCES` is refused (403).
    fn requested<'r>(&'r self, request: &'r TokenRequest) -> Result<Asked<'r>, Failure> {
        let azure = crate::azure::params::azure_request(&request.params, request.scope.as_deref())?;
        let aws = crate::aws::params::aws_request(&request.params)?;
        if let Some(azure) = azure {
            if aws.is_some() {
                return Err(Failure::invalid_request(
                    "The parameters 'azure_client_id' and 'aws_role_arn' cannot be combined: Entra and AWS credentials are separate requests; remove one of them",
                ));
            }
            return self.requested_azure(request, azure);
        }
        if let Some(aws) = aws {
            return self.requested_aws(request, aws);
        }
        let scope = request.scope.as_deref().filter(|s| !s.trim().is_empty());
        let service_account = request
            .service_account
            .as_deref()
            .filter(|s| !s.trim().is_empty());
        let audience = named_audience(request);
        if audience.is_some() && scope.is_some() {
            return Err(Failure::invalid_request(
                "The parameters 'audience' and 'scope' cannot be combined: an access token needs the default audience (Google's STS accepts only the workload identity pool's); remove 'audience' to get an access token, or 'scope' to get an ID token for the audience",
            ));
        }
        let audience = match audience {
            Some(audience) => self.issuer.requested_audience(audience)?,
            None => None,
        };
        if self.access.is_none() && (scope.is_some() || service_account.is_some()) {
            return Err(Failure::invalid_request(
                "Access tokens are not configured on this service: remove 'scope' and 'service_account' to get an ID token",
            ));
        }
        if service_account.is_some() && scope.is_none() {
            return Err(Failure::invalid_request(
                "The parameter 'scope' is required when 'service_account' is given",
            ));
        }
        Ok(Asked {
            requested: Requested {
                scope,
                service_account,
                audience,
                aws_role: None,
                azure_client: None,
            },
            aws: None,
            azure: None,
        })
    }

    /// A request that names an AWS role: no `scope` or `service_account` (400), no audience
    /// but `AWS_AUDIENCE` (400), which must be allowed like any requested audience (the
    /// default, or one of `TOKEN_AUDIENCES`; else 403).
    fn requested_aws<'r>(
        &'r self,
        request: &'r TokenRequest,
        aws: AwsRequest<'r>,
    ) -> Result<Asked<'r>, Failure> {
        let Some(exchange) = &self.aws else {
            return Err(Failure::invalid_request(
                "AWS credentials are not configured on this service: remove 'aws_role_arn' to get an ID token",
            ));
        };
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|v| v.trim().is_empty());
        if !blank(&request.scope) || !blank(&request.service_account) {
            return Err(Failure::invalid_request(
                "The parameter 'aws_role_arn' cannot be combined with 'scope' or 'service_account': AWS credentials and Google access tokens are separate requests; remove one of them",
            ));
        }
        if let Some(named) = named_audience(request)
            && named != exchange.audience()
        {
            return Err(Failure::invalid_request(format!(
                "The parameters 'aws_role_arn' and 'audience' cannot be combined: the token presented to AWS is for AWS_AUDIENCE ('{}'); remove 'audience'",
                truncate(exchange.audience(), 200)
            )));
        }
        let audience = self.issuer.requested_audience(exchange.audience())?;
        Ok(Asked {
            requested: Requested {
                scope: None,
                service_account: None,
                audience,
                aws_role: Some(aws.role_arn),
                azure_client: None,
            },
            aws: Some(aws),
            azure: None,
        })
    }

    /// A request that names an Entra app: no `service_account` (400), no audience but
    /// `AZURE_AUDIENCE` (400), which must be allowed like any requested audience (the
    /// default, or one of `TOKEN_AUDIENCES`; else 403). Its `scope` is Entra's.
    fn requested_azure<'r>(
        &'r self,
        request: &'r TokenRequest,
        azure: AzureRequest<'r>,
    ) -> Result<Asked<'r>, Failure> {
        let Some(exchange) = &self.azure else {
            return Err(Failure::invalid_request(
                "Microsoft Entra access tokens are not configured on this service: remove 'azure_client_id' and 'azure_tenant_id' to get an ID token",
            ));
        };
        if request
            .service_account
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty())
        {
            return Err(Failure::invalid_request(
                "The parameter 'azure_client_id' cannot be combined with 'service_account': Entra and Google access tokens are separate requests; remove one of them",
            ));
        }
        if let Some(named) = named_audience(request)
            && named != exchange.audience()
        {
            return Err(Failure::invalid_request(format!(
                "The parameters 'azure_client_id' and 'audience' cannot be combined: the token presented to Entra is for AZURE_AUDIENCE ('{}'); remove 'audience'",
                truncate(exchange.audience(), 200)
            )));
        }
        let audience = self.issuer.requested_audience(exchange.audience())?;
        Ok(Asked {
            requested: Requested {
                scope: None,
                service_account: None,
                audience,
                aws_role: None,
                azure_client: Some(azure.client_id),
            },
            aws: None,
            azure: Some(azure),
        })
    }

    /// Asks the enabled flows in order; the first that takes the request or refuses it
    /// decides. When every flow declines, the failure says what each one missed: 403 when one
    /// saw its credentials in an untrusted form (load-balancer headers without the secret),
    /// else 400 (the request carried no credentials).
    async fn select(&self, request: &TokenRequest) -> Selected<'_> {
        let mut declined = Vec::with_capacity(self.flows.len());
        for flow in &self.flows {
            match flow.flow.authenticate(request).await {
                Ok(Authentication::Client(mut client)) => {
                    client.flow = flow.name.to_string();
                    return Selected::Client(flow, client);
                }
                Ok(Authentication::NotMine(why)) => declined.push((flow, why)),
                Err(failure) => return Selected::Refused(flow, failure),
            }
        }
        let untrusted = declined.iter().any(|(_, why)| why.is_untrusted());
        let reasons: Vec<String> = declined
            .iter()
            .map(|(flow, why)| format!("{}: {}", flow.name, why.reason()))
            .collect();
        let message = format!(
            "No suitable flow found for grant type '{}': {}",
            request.grant_type,
            reasons.join("; ")
        );
        Selected::Nobody(if untrusted {
            Failure::unauthorized(message)
        } else {
            Failure::invalid_request(message)
        })
    }

    /// The grant for an authenticated client: per-client limit, policy, ID token, access token;
    /// returns the client ID the policy admitted and the tokens. A client the policy does not
    /// admit counts as a failed authentication (`charge`).
    async fn admitted(
        &self,
        authenticated: AuthenticatedClient,
        asked: Asked<'_>,
        iss: &str,
        deadline: Deadline,
        charge: &(dyn Fn() + Sync),
    ) -> Result<(String, IssuedTokens), Failure> {
        if let Some(limits) = &self.limits
            && let Err(limited) = limits.check_client(&authenticated.client_id)
        {
            return Err(Failure::rate_limited(
                format!(
                    "Too many token requests from this client; retry in {} s",
                    limited.retry_after
                ),
                limited.retry_after,
            ));
        }
        let client = self
            .policy
            .authorize(&authenticated, asked.requested)
            .inspect_err(|failure| {
                if failure.kind() == Kind::UnauthorizedClient {
                    charge();
                }
            })?;
        // A failure after the policy admitted the client still shows its decision.
        let decided = |failure: Failure| match &client.decision {
            Some(decision) => with_decision(failure, decision),
            None => failure,
        };
        let tokens = self
            .tokens(&client, asked, iss, deadline)
            .await
            .map_err(decided)?;
        Ok((client.client_id, tokens))
    }

    /// The ID token for an admitted client, and the access token or AWS credentials when
    /// they were asked for.
    async fn tokens(
        &self,
        client: &Client,
        asked: Asked<'_>,
        iss: &str,
        deadline: Deadline,
    ) -> Result<IssuedTokens, Failure> {
        let requested = asked.requested;
        let id_token = self.issuer.issue(iss, client, deadline).await?;
        let aws_credentials = match (&self.aws, asked.aws) {
            (Some(exchange), Some(aws)) => {
                let derived = crate::aws::params::session_name_for(&client.client_id);
                let duration_seconds = crate::aws::params::duration_within_certificate(
                    aws.duration_seconds,
                    client,
                    id_token.issued_at,
                )?;
                let call = AssumeRole {
                    role_arn: aws.role_arn,
                    session_name: aws.session_name.unwrap_or(&derived),
                    duration_seconds,
                    web_identity_token: &id_token.token,
                };
                Some(exchange.assume_role(call, deadline).await?)
            }
            _ => None,
        };
        let entra_token = match (&self.azure, asked.azure) {
            (Some(exchange), Some(azure)) => {
                let call = EntraCall {
                    asked: azure,
                    assertion: &id_token.token,
                };
                Some(exchange.access_token(call, deadline).await?)
            }
            _ => None,
        };
        let access_token = match (&self.access, requested.scope) {
            (Some(backend), Some(scope)) => Some(
                backend
                    .access_token(
                        client,
                        &id_token.token,
                        scope,
                        requested.service_account,
                        deadline,
                    )
                    .await?,
            ),
            _ => entra_token,
        };
        Ok(IssuedTokens {
            id_token: id_token.token,
            id_token_expires_at: id_token.expires_at,
            jti: id_token.jti,
            audience: id_token.audience,
            access_token,
            aws_credentials,
            decision: client.decision.clone(),
        })
    }
}

/// The parameter `audience`, when the request gives one (blank counts as none, as for `scope`).
fn named_audience(request: &TokenRequest) -> Option<&str> {
    request.audience.as_deref().filter(|a| !a.trim().is_empty())
}

/// The parameter `name`, when given and not blank, shortened for the log line.
fn named_param(request: &TokenRequest, name: &str) -> Option<String> {
    request
        .params
        .get(name)
        .filter(|v| !v.trim().is_empty())
        .map(|v| truncate(v, 200))
}

/// The Entra app and tenant the request names, for the log line.
fn named_azure(request: &TokenRequest) -> Option<(String, String)> {
    let client = named_param(request, crate::azure::params::CLIENT_ID);
    let tenant = named_param(request, crate::azure::params::TENANT_ID);
    (client.is_some() || tenant.is_some())
        .then(|| (client.unwrap_or_default(), tenant.unwrap_or_default()))
}

/// Refuses a caller whose failed-authentication bucket is empty (429), before any flow works
/// for it.
fn check_auth_failures(limits: &Limits, caller: std::net::IpAddr) -> Result<(), Failure> {
    limits.check_auth_failures(caller).map_err(|limited| {
        Failure::rate_limited(
            format!(
                "Too many failed authentications from this address (RATE_LIMIT_AUTH_FAILURES); retry in {} s",
                limited.retry_after
            ),
            limited.retry_after,
        )
        .with_label("caller", caller.to_string())
    })
}

/// The grant type must be given and be one this service serves.
fn check_grant_type(grant: &str) -> Result<(), Failure> {
    if grant.is_empty() {
        return Err(Failure::invalid_request(
            "The parameter 'grant_type' is required",
        ));
    }
    if !GRANT_TYPES.contains(&grant) {
        return Err(Failure::new(
            Kind::UnsupportedGrantType,
            format!(
                "Grant type '{}' is not supported; supported: {}",
                truncate(grant, 64),
                GRANT_TYPES.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
