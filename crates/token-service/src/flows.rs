//! Authentication flows: the one-method trait every flow implements and the registry of known
//! flows.
//!
//! A flow looks at a token request once: it returns the client it authenticated, says the
//! request is not its own (with a short phrase naming what was missing, so the answer to a
//! request no flow takes can say what each flow needed), or refuses it. Flows use `model` and
//! `x509` only; no flow imports another flow, and flows know nothing of HTTP responses,
//! signing, grant types or configuration loading. Flows log nothing: the HTTP handler writes the
//! one log line of a request, and a flow puts what that line should show into its `Failure`.
//!
//! Adding a flow takes one new module under `flows/` and one `register` line in
//! [`FlowRegistry::builtin`]; applications embedding the library can also register their own.

pub mod forwarded_cert;
pub mod mtls;
pub mod xlb_mtls;

use async_trait::async_trait;

/// A flow's refusal; re-exported so an embedder's flow needs only `flows` and `model`.
pub use crate::error::{Failure, Kind};
use crate::model::{AuthenticatedClient, TokenRequest};

/// The token-endpoint authentication method of flows that rely on a client certificate
/// (RFC 8705 §2.1).
pub const TLS_CLIENT_AUTH: &str = "tls_client_auth";

/// Why a flow left a request to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined {
    reason: String,
    untrusted: bool,
}

impl Declined {
    /// The request carries none of this flow's credentials; `reason` names what was missing
    /// (e.g. "no client certificate was presented in the TLS handshake").
    pub fn missing(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            untrusted: false,
        }
    }

    /// The request carries this flow's credentials in a form that must not be trusted (load
    /// balancer headers without the load balancer's secret): when no flow takes the request, the
    /// answer is 403 `unauthorized_client` rather than 400.
    pub fn untrusted(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            untrusted: true,
        }
    }

    /// The phrase naming what was missing.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the request carried this flow's credentials in an untrusted form.
    pub fn is_untrusted(&self) -> bool {
        self.untrusted
    }
}

/// What a flow made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "the client is the common answer and moves on at once: boxing it would add an allocation per request"
)]
pub enum Authentication {
    /// The flow authenticated the client. Its `flow` field is set by the grant from the
    /// registration name; whatever the flow put there is overwritten.
    Client(AuthenticatedClient),
    /// The request is not this flow's: the next enabled flow may take it.
    NotMine(Declined),
}

/// An authentication flow. Implementations must be cheap to call concurrently.
///
/// Name, authentication method and settings belong to the flow's registration, not to the
/// flow; the grant type is the grant's.
#[async_trait]
pub trait Flow: Send + Sync {
    /// Authenticates the client of `request`, leaves the request to the other flows
    /// ([`Authentication::NotMine`]), or refuses it (`Err`: the request carries this flow's
    /// credentials, trusted, but they do not authenticate a client). A flow claims only
    /// requests that carry its credentials in a form it may trust, so the order of
    /// `AUTH_FLOWS` never decides who is refused.
    async fn authenticate(&self, request: &TokenRequest) -> Result<Authentication, Failure>;
}

mod registry;
pub use registry::{
    AUTH_FLOWS, Build, EnabledFlow, FlowRegistry, FlowSettings, FlowSpec, Needs, needs_client_cas,
};
