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

use std::collections::BTreeMap;
use std::sync::Arc;

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
