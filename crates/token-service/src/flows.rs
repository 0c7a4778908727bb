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

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Settings of the built-in flows, filled in by `config` (and the loaded trust material by
/// `app`).
#[derive(Debug, Clone, Default)]
pub struct FlowSettings {
    /// Settings of `xlb-mtls-client-credentials`.
    pub xlb: xlb_mtls::XlbSettings,
    /// Client ID attribute of the certificate-verifying flows (`MTLS_CLIENT_ID_ATTRIBUTE`).
    pub client_id: crate::x509::ClientIdAttribute,
    /// Settings of `forwarded-cert-client-credentials`.
    pub forwarded: forwarded_cert::ForwardedSettings,
    /// Client CA bundle and CRLs, loaded; required by the certificate-verifying flows.
    pub trust: Option<Arc<crate::x509::Trust>>,
}

impl FlowSettings {
    fn trust(&self, flow: &str) -> Result<Arc<crate::x509::Trust>, String> {
        self.trust
            .clone()
            .ok_or_else(|| format!("TLS_CLIENT_CA_FILE: required by the flow {flow}; set it to a PEM bundle of the client CAs"))
    }
}

/// Builds a flow from the settings; fails with a message naming the setting at fault.
pub type FlowFactory = Box<dyn Fn(&FlowSettings) -> Result<Arc<dyn Flow>, String> + Send + Sync>;

/// A registered flow: its name (in `AUTH_FLOWS`, the `amr` claim, logs and metrics), its
/// token-endpoint authentication method (published in discovery) and its factory.
struct Registration {
    auth_method: &'static str,
    factory: FlowFactory,
}

/// A flow as the grant runs it: its registered name and authentication method, and the flow.
#[derive(Clone)]
pub struct EnabledFlow {
    /// The name it was registered under.
    pub name: Arc<str>,
    /// Its token-endpoint authentication method, for discovery.
    pub auth_method: &'static str,
    /// The flow.
    pub flow: Arc<dyn Flow>,
}

/// The known flows, by name.
pub struct FlowRegistry {
    factories: BTreeMap<String, Registration>,
}

impl FlowRegistry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self {
            factories: BTreeMap::new(),
        }
    }

    /// The flows that ship with Token Service.
    pub fn builtin() -> Self {
        let mut registry = Self::empty();
        registry.register(xlb_mtls::NAME, TLS_CLIENT_AUTH, |s| {
            Ok(Arc::new(xlb_mtls::XlbMtlsFlow::new(s.xlb.clone())?))
        });
        registry.register(forwarded_cert::NAME, TLS_CLIENT_AUTH, |s| {
            let trust = s.trust(forwarded_cert::NAME)?;
            Ok(Arc::new(forwarded_cert::ForwardedCertFlow::new(
                s.forwarded.clone(),
                s.client_id,
                trust,
                s.xlb.clock,
            )?))
        });
        registry.register(mtls::NAME, TLS_CLIENT_AUTH, |s| {
            Ok(Arc::new(mtls::MtlsFlow::new(
                s.client_id,
                s.trust(mtls::NAME)?,
                s.xlb.clock,
            )))
        });
        registry
    }

    /// Registers a flow under `name` with its token-endpoint authentication method (e.g.
    /// [`TLS_CLIENT_AUTH`]), replacing any flow of that name.
    pub fn register<F>(&mut self, name: &str, auth_method: &'static str, factory: F)
    where
        F: Fn(&FlowSettings) -> Result<Arc<dyn Flow>, String> + Send + Sync + 'static,
    {
        self.factories.insert(
            name.to_owned(),
            Registration {
                auth_method,
                factory: Box::new(factory),
            },
        );
    }

    /// Names of the known flows, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Whether a flow of that name is known.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Builds the enabled flows in the given order.
    pub fn build(
        &self,
        enabled: &[String],
        settings: &FlowSettings,
    ) -> Result<Vec<EnabledFlow>, String> {
        enabled
            .iter()
            .map(|name| match self.factories.get(name) {
                Some(registration) => Ok(EnabledFlow {
                    name: Arc::from(name.as_str()),
                    auth_method: registration.auth_method,
                    flow: (registration.factory)(settings)?,
                }),
                None => Err(format!(
                    "AUTH_FLOWS: unknown flow '{name}'; known flows: {}",
                    self.names().join(", ")
                )),
            })
            .collect()
    }
}
