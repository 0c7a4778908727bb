//! Client policy: decides whether an authenticated client may get a token and what it gets.
//!
//! For now the policy is the reference's: a verified certificate suffices, and the token's
//! claims come from its facts. The policy-engine issue replaces [`CertificateFactsPolicy`]
//! behind the same trait, without touching flows. A refusal is the service's [`Failure`]: a
//! client the policy does not admit is `unauthorized_client` with a generic sentence (the
//! reason goes to the log only), a scope or service account it may not have is
//! `access_denied`. Uses `model`, `error`, `x509` and `metrics`.

pub mod deny_list;
pub mod engine;
pub mod rules;
pub(crate) mod settings;
pub mod template;
pub use settings::PolicySettings;

use serde_json::Map;

use crate::error::Failure;
use crate::model::{AudienceGrant, AuthenticatedClient, Client, PolicyDecision};

/// What a client the policy does not admit is told; why is in the log detail only.
pub const CLIENT_NOT_AUTHORIZED: &str = "The client is not authorized to obtain tokens";

/// The failure of a client the policy does not admit: `reason` reaches the log, not the client.
pub fn client_denied(reason: impl Into<String>) -> Failure {
    Failure::unauthorized(CLIENT_NOT_AUTHORIZED).with_detail(reason)
}

/// `failure` with the policy's `decision` as labels of the request's log line (see
/// [`PolicyDecision::labels`]): how a refusal, or a later failure of an admitted client,
/// carries the decision to that line.
pub fn with_decision(failure: Failure, decision: &PolicyDecision) -> Failure {
    decision
        .labels()
        .into_iter()
        .fold(failure, |failure, (key, value)| {
            failure.with_label(key, value)
        })
}

/// What the client asked for beyond an ID token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requested<'a> {
    /// Requested scopes, space-separated.
    pub scope: Option<&'a str>,
    /// Service account to impersonate.
    pub service_account: Option<&'a str>,
    /// Audience asked for with the parameter `audience`, when it is not the default audience
    /// (which every admitted client may have) and `TOKEN_AUDIENCES` lists it.
    pub audience: Option<&'a str>,
    /// AWS role asked for with the parameter `aws_role_arn` (its format checked).
    pub aws_role: Option<&'a str>,
    /// Entra app (client ID) asked for with the parameter `azure_client_id` (its format
    /// checked).
    pub azure_client: Option<&'a str>,
}

/// A client policy.
pub trait ClientPolicy: Send + Sync {
    /// Admits or refuses an authenticated client for the given request.
    fn authorize(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Result<Client, Failure>;
}

/// The reference's policy: any client a flow authenticated is admitted, with the client ID the
/// flow derived and no extra claims, for any audience `TOKEN_AUDIENCES` lists.
#[derive(Debug, Default, Clone, Copy)]
pub struct CertificateFactsPolicy;

impl ClientPolicy for CertificateFactsPolicy {
    fn authorize(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Result<Client, Failure> {
        Ok(Client {
            flow: client.flow.clone(),
            client_id: client.client_id.clone(),
            facts: client.facts.clone(),
            extra_claims: Map::new(),
            lifetime_seconds: None,
            decision: None,
            audience: requested.audience.map(AudienceGrant::new),
        })
    }
}

/// How logs and `policy explain` name what decided: `rule 'NAME'`, a deny list, or
/// `(no rule matched)`.
pub fn describe_rule(rule: &str) -> String {
    if rule.starts_with('(') || rule.starts_with("deny_lists.") {
        rule.to_owned()
    } else {
        format!("rule '{rule}'")
    }
}

#[cfg(test)]
mod tests;
