//! The registry of flows: each flow is registered as a [`FlowSpec`] (name, token-endpoint
//! authentication method, settings table, factory), the built-in ones in
//! [`FlowRegistry::builtin`], an embedder's next to them. `config` reads the enabled flows'
//! settings through their factories and checks what they need (client CAs, a TLS listener);
//! `app` builds them with the shared parts ([`FlowSettings`]: trust material, clock).
//!
//! Knows the flows only through their specs; reads no environment.

use std::sync::Arc;

use super::{Flow, TLS_CLIENT_AUTH, forwarded_cert, mtls, xlb_mtls};
use crate::clock::Clock;
use crate::config::reader::{Reader, Setting};
use crate::error::StartupError;

/// `AUTH_FLOWS`.
pub const AUTH_FLOWS: Setting = Setting::list(
    "AUTH_FLOWS",
    xlb_mtls::NAME,
    "Comma-separated list of enabled flows, tried in order; a flow claims only requests with its credentials in a trusted form, so the order never decides who is refused",
);

/// Builds a flow from the shared parts; made by a spec's factory from the flow's settings.
pub type Build = Arc<dyn Fn(&FlowSettings) -> Result<Arc<dyn Flow>, StartupError> + Send + Sync>;

/// The parts every flow may use besides its own settings: the loaded client trust material
/// (filled in by `app`) and the clock; and, from `config`, each enabled flow's settings
/// already read, ready to build.
#[derive(Clone, Default)]
pub struct FlowSettings {
    /// Client CA bundle and CRLs, loaded; `Some` whenever a flow that needs them is enabled.
    pub trust: Option<Arc<crate::x509::Trust>>,
    /// Clock of validity checks.
    pub clock: Clock,
    /// The enabled flows' builders, by name.
    pub(crate) prepared: Vec<(String, Build)>,
}

impl std::fmt::Debug for FlowSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.prepared.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("FlowSettings")
            .field("trust", &self.trust.is_some())
            .field("prepared", &names)
            .finish_non_exhaustive()
    }
}

impl FlowSettings {
    /// The trust material for `flow`, which declared it needs it.
    pub fn trust(&self, flow: &str) -> Result<Arc<crate::x509::Trust>, StartupError> {
        self.trust.clone().ok_or_else(|| needs_client_cas(flow))
    }
}

/// The error when a flow needs the client CAs and `TLS_CLIENT_CA_FILE` is not set.
pub fn needs_client_cas(flow: &str) -> StartupError {
    StartupError::setting(
        "TLS_CLIENT_CA_FILE",
        format!("required by the flow {flow}; set it to a PEM bundle of the client CAs"),
    )
}

/// What a flow needs of the rest of the service, checked by `config` before it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The client CA bundle (`TLS_CLIENT_CA_FILE`).
    pub client_cas: bool,
    /// Token Service terminating TLS itself (`TLS_CERT_FILE`, `TLS_KEY_FILE`).
    pub tls_listener: bool,
}

type Factory = Arc<dyn Fn(&mut Reader<'_>) -> Build + Send + Sync>;

/// A flow's registration: everything about it that is data.
#[derive(Clone)]
pub struct FlowSpec {
    /// The name in `AUTH_FLOWS`, the `amr` claim, logs and metrics.
    pub name: String,
    /// The token-endpoint authentication method published in discovery (e.g.
    /// [`TLS_CLIENT_AUTH`], `client_secret_post`).
    pub auth_method: &'static str,
    /// Its settings: shown in `--help` and `check-config`, accepted in `--config` files and
    /// from the environment.
    pub settings: Vec<Setting>,
    /// What it needs besides its own settings.
    pub needs: Needs,
    factory: Factory,
}

impl FlowSpec {
    /// A flow named `name`. `factory` reads the flow's settings through the reader (every
    /// problem recorded there) and returns what builds the flow from them and the shared
    /// parts.
    pub fn new<F, B>(
        name: &str,
        auth_method: &'static str,
        settings: &[Setting],
        factory: F,
    ) -> Self
    where
        F: Fn(&mut Reader<'_>) -> B + Send + Sync + 'static,
        B: Fn(&FlowSettings) -> Result<Arc<dyn Flow>, StartupError> + Send + Sync + 'static,
    {
        Self {
            name: name.to_owned(),
            auth_method,
            settings: settings.to_vec(),
            needs: Needs::default(),
            factory: Arc::new(move |r| Arc::new(factory(r)) as Build),
        }
    }

    /// The same spec, needing the client CA bundle.
    #[must_use]
    pub fn needs_client_cas(mut self) -> Self {
        self.needs.client_cas = true;
        self
    }

    /// The same spec, needing Token Service to terminate TLS.
    #[must_use]
    pub fn needs_tls_listener(mut self) -> Self {
        self.needs.tls_listener = true;
        self
    }

    /// Reads the flow's settings; the builder is used once the shared parts exist.
    pub fn read(&self, r: &mut Reader<'_>) -> Build {
        (self.factory)(r)
    }
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

/// The known flows, in registration order.
#[derive(Clone)]
pub struct FlowRegistry {
    specs: Vec<FlowSpec>,
}

impl FlowRegistry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self { specs: Vec::new() }
    }

    /// The flows that ship with Token Service.
    pub fn builtin() -> Self {
        let mut registry = Self::empty();
        registry.add(xlb_spec());
        registry.add(forwarded_spec());
        registry.add(mtls_spec());
        registry
    }

    /// Registers a flow, replacing any flow of that name.
    pub fn add(&mut self, spec: FlowSpec) {
        self.specs.retain(|s| s.name != spec.name);
        self.specs.push(spec);
    }

    /// The registry with `spec` added: `FlowRegistry::builtin().with(my_flow())`.
    #[must_use]
    pub fn with(mut self, spec: FlowSpec) -> Self {
        self.add(spec);
        self
    }

    /// Registers a flow without settings under `name` with its token-endpoint authentication
    /// method, replacing any flow of that name. The factory's error names the setting at fault
    /// (`StartupError::setting`) or none (`StartupError::other`).
    pub fn register<F>(&mut self, name: &str, auth_method: &'static str, factory: F)
    where
        F: Fn(&FlowSettings) -> Result<Arc<dyn Flow>, StartupError> + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        self.add(FlowSpec::new(name, auth_method, &[], move |_| {
            let factory = Arc::clone(&factory);
            move |shared: &FlowSettings| factory(shared)
        }));
    }

    /// The specs, in registration order.
    pub fn specs(&self) -> &[FlowSpec] {
        &self.specs
    }

    /// The spec of a flow.
    pub fn spec(&self, name: &str) -> Option<&FlowSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// Names of the known flows, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// Whether a flow of that name is known.
    pub fn contains(&self, name: &str) -> bool {
        self.spec(name).is_some()
    }

    /// Builds the enabled flows in the given order from the settings `config` read.
    pub fn build(
        &self,
        enabled: &[String],
        settings: &FlowSettings,
    ) -> Result<Vec<EnabledFlow>, StartupError> {
        enabled
            .iter()
            .map(|name| {
                let spec = self.spec(name).ok_or_else(|| {
                    StartupError::setting(
                        AUTH_FLOWS.name,
                        format!(
                            "unknown flow '{name}'; known flows: {}",
                            self.names().join(", ")
                        ),
                    )
                })?;
                let build = settings
                    .prepared
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, b)| Arc::clone(b))
                    .ok_or_else(|| StartupError::other(format!("the settings of the flow {name} were not read; load the configuration with this registry")))?;
                Ok(EnabledFlow {
                    name: Arc::from(name.as_str()),
                    auth_method: spec.auth_method,
                    flow: build(settings)?,
                })
            })
            .collect()
    }
}

fn xlb_spec() -> FlowSpec {
    FlowSpec::new(xlb_mtls::NAME, TLS_CLIENT_AUTH, xlb_mtls::SETTINGS, |r| {
        let settings = xlb_mtls::XlbSettings::read(r);
        if let Err(e) = settings.validate() {
            r.fail(xlb_mtls::settings::CLIENT_ID.name, e.to_string());
        }
        move |shared: &FlowSettings| {
            let mut settings = settings.clone();
            settings.clock = shared.clock;
            let flow = xlb_mtls::XlbMtlsFlow::new(settings)?;
            Ok(Arc::new(flow) as Arc<dyn Flow>)
        }
    })
}

fn forwarded_spec() -> FlowSpec {
    let name = forwarded_cert::NAME;
    FlowSpec::new(name, TLS_CLIENT_AUTH, forwarded_cert::SETTINGS, move |r| {
        let settings = forwarded_cert::ForwardedSettings::read(r);
        if settings.trusted_proxies.is_empty() {
            r.fail(
                "TRUSTED_PROXIES",
                format!(
                    "required by the flow {name}; list the proxies that forward certificates (CIDR)"
                ),
            );
        }
        let attribute = crate::x509::settings::read_client_id(r);
        move |shared: &FlowSettings| {
            let flow = forwarded_cert::ForwardedCertFlow::new(
                settings.clone(),
                attribute,
                shared.trust(name)?,
                shared.clock,
            )?;
            Ok(Arc::new(flow) as Arc<dyn Flow>)
        }
    })
    .needs_client_cas()
}

fn mtls_spec() -> FlowSpec {
    FlowSpec::new(mtls::NAME, TLS_CLIENT_AUTH, &[], |r| {
        let attribute = crate::x509::settings::read_client_id(r);
        move |shared: &FlowSettings| {
            let trust = shared.trust(mtls::NAME)?;
            let flow = mtls::MtlsFlow::new(attribute, trust, shared.clock);
            Ok(Arc::new(flow) as Arc<dyn Flow>)
        }
    })
    .needs_tls_listener()
    .needs_client_cas()
}
