//! Client policy: decides whether an authenticated client may get a token and what it gets.
//!
//! For now the policy is the reference's: a verified certificate suffices, and the token's
//! claims come from its facts. The policy-engine issue replaces [`CertificateFactsPolicy`]
//! behind the same trait, without touching flows. Uses `model` only.

pub mod deny_list;
pub mod engine;
pub mod rules;
pub(crate) mod settings;
pub mod template;
pub use settings::PolicySettings;

use serde_json::Map;

use crate::model::{AuthenticatedClient, Client};

/// What the client asked for beyond an ID token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requested<'a> {
    /// Requested scopes, space-separated.
    pub scope: Option<&'a str>,
    /// Service account to impersonate.
    pub service_account: Option<&'a str>,
}

/// Why a policy refused a client.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The client may not get any token. Maps to 403 `unauthorized_client`; the reason is
    /// logged, the client sees a generic message.
    #[error("client denied: {reason}")]
    ClientDenied {
        /// Why, for the logs.
        reason: String,
    },
    /// The client may get tokens, but not the requested service account or scope. Maps to 403
    /// `access_denied`.
    #[error("{0}")]
    AccessDenied(String),
}

/// A client policy.
pub trait ClientPolicy: Send + Sync {
    /// Admits or refuses an authenticated client for the given request.
    fn authorize(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Result<Client, PolicyError>;
}

/// The reference's policy: any client a flow authenticated is admitted, with the client ID the
/// flow derived and no extra claims.
#[derive(Debug, Default, Clone, Copy)]
pub struct CertificateFactsPolicy;

impl ClientPolicy for CertificateFactsPolicy {
    fn authorize(
        &self,
        client: &AuthenticatedClient,
        _requested: Requested<'_>,
    ) -> Result<Client, PolicyError> {
        Ok(Client {
            flow: client.flow.clone(),
            client_id: client.client_id.clone(),
            facts: client.facts.clone(),
            extra_claims: Map::new(),
            lifetime_seconds: None,
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
