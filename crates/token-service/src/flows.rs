//! Authentication flows: the trait every flow implements and the registry of known flows.
//!
//! A flow decides whether it can handle a token request (for example: the load balancer says a
//! client certificate was presented) and, if so, authenticates the client from it. Flows use
//! `model` only; they know nothing of HTTP responses, signing or configuration loading.
//!
//! Adding a flow takes one new module under `flows/` and one `register` line in
//! [`FlowRegistry::builtin`]; applications embedding the library can also register their own.

pub mod forwarded_cert;
pub mod mtls;
pub mod xlb_mtls;

use async_trait::async_trait;

use crate::model::{AuthenticatedClient, TokenRequest};

/// The token-endpoint authentication method of flows that rely on a client certificate
/// (RFC 8705 §2.1).
pub const TLS_CLIENT_AUTH: &str = "tls_client_auth";

/// Why a flow refused to authenticate a client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowError {
    /// The request is malformed (e.g. a header that cannot be decoded). Maps to 400.
    #[error("{0}")]
    InvalidRequest(String),
    /// The client presented something, but it is not acceptable. Maps to 403
    /// `unauthorized_client`.
    #[error("{0}")]
    Unauthorized(String),
}

/// An authentication flow. Implementations must be cheap to call concurrently.
#[async_trait]
pub trait Flow: Send + Sync {
    /// The flow's name as used in `AUTH_FLOWS` and in the `amr` claim.
    fn name(&self) -> &str;
    /// The OAuth grant type this flow serves.
    fn grant_type(&self) -> &str;
    /// The token-endpoint authentication method, as published in discovery.
    fn auth_method(&self) -> &str;
    /// Whether this flow can handle the request. Must not fail: a request it cannot handle is
    /// left to the next flow. A flow claims only requests that carry its credentials in a form
    /// it may trust (the xlb flow: the load balancer's secret), so the order of `AUTH_FLOWS`
    /// never decides who is refused.
    fn can_handle(&self, request: &TokenRequest) -> bool;
    /// Why this flow did not claim the request, as one phrase naming what was missing (e.g. "no
    /// client certificate was presented in the TLS handshake"). Asked only when no enabled flow
    /// claims a request, so the answer can say what each flow needed.
    /// [`FlowError::Unauthorized`] means the request carries this flow's credentials in a form
    /// that must not be trusted (403); [`FlowError::InvalidRequest`] that it carries none (400).
    fn declined(&self, request: &TokenRequest) -> FlowError {
        let _ = request;
        FlowError::InvalidRequest("the request carries nothing this flow can use".into())
    }
    /// Authenticates the client.
    async fn authenticate(&self, request: &TokenRequest) -> Result<AuthenticatedClient, FlowError>;
}

mod registry;
pub use registry::{
    AUTH_FLOWS, Build, EnabledFlow, FlowRegistry, FlowSettings, FlowSpec, Needs, needs_client_cas,
};
