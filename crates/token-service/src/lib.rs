//! Token Service: a token broker that turns a verified client certificate into a signed OIDC ID
//! token (and, with a Google backend, into Google access tokens).
//!
//! One request, end to end, in the order a reader should follow the files:
//!
//! ```text
//! server (accept, TLS, connection limits, drain)               server.rs, tls.rs
//!   -> http (parse form, derive issuer, extract headers)       http.rs, http/*.rs
//!   -> grant: the shared client-credentials path               grant.rs
//!        -> flows: which flow? authenticate -> client facts    flows.rs, flows/*.rs
//!        -> policy: may this client get a token? claims        policy.rs
//!        -> issuer: claims -> signer -> compact JWT            issuer.rs, signer.rs, signer/*.rs
//!        -> access: optional access token                      access.rs
//!        -> aws: optional AWS role credentials (STS)           aws.rs
//!        -> azure: optional Microsoft Entra access token       azure.rs
//!   -> http: OAuth JSON or executable-sourced credential JSON  http/error.rs, http/token.rs
//! ```
//!
//! `model`, `clock` and `error` depend on nothing of ours. `config` knows every module's
//! settings type; no module knows `config`. `app` is the composition root: the only place that
//! names concrete flow, signer and policy types, and the maker of the one metrics registry and
//! the one owner of background work of an application (no process-wide state).
//!
//! # Public surface
//! Deliberately small; everything else is `pub(crate)` and may change without notice:
//! - [`cli`]: `cli::main()` (the shipped binary) and the commands;
//! - [`app`]: `build(config, registry)` -> `App`, `serve`/`serve_until(listener, app, shutdown)`
//!   for embedders and in-process tests (a listener bound to port 0 is handed over);
//! - [`config`]: the settings table, `load`, the value sources;
//! - [`flows`]: the `Flow` seam and the `FlowRegistry` an embedder adds its flows to;
//! - [`model`]: the plain data a flow reads and returns;
//! - [`error`]: the failure a flow returns and the typed startup error `app::build` reports;
//! - [`clock`]: `Clock` (fixed in tests) and the monotonic clock, which a flow checking time
//!   windows needs and which the benchmarks and tools outside the crate read time through.
//!
//! [`testing`] (hidden from the docs) re-exports the few internals that the benchmarks,
//! examples and fuzz targets of this repository exercise directly (parsers, the signer, the
//! trust material); it is not an API.

pub(crate) mod access;
pub mod app;
pub(crate) mod aws;
pub(crate) mod azure;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod flows;
pub(crate) mod google;
pub(crate) mod grant;
pub(crate) mod http;
pub(crate) mod issuer;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod model;
pub(crate) mod pki;
pub(crate) mod policy;
pub(crate) mod readiness;
pub(crate) mod server;
pub(crate) mod signer;
pub(crate) mod tasks;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod watch;
pub(crate) mod x509;

/// Internals re-exported for this repository's benchmarks (`benches/`), examples
/// (`examples/`) and fuzz targets (`fuzz/`), which measure or fuzz them directly. Not an API:
/// it changes with the code. Each submodule mirrors the internal module of the same name, so
/// `token_service::x509::facts` is `token_service::testing::x509::facts`. (Integration tests
/// use the public surface only.)
#[doc(hidden)]
pub mod testing {
    /// The network-facing form parser.
    pub mod http {
        pub use crate::http::form;
    }

    /// Claims and their signing.
    pub mod issuer {
        pub use crate::issuer::{IdTokenIssuer, IssuerSettings};
    }

    /// The registry a `TlsServer` counts its reloads in.
    pub mod metrics {
        pub use crate::metrics::Metrics;
    }

    /// The development PKI.
    pub mod pki {
        pub use crate::pki::DevPki;
    }

    /// The policy's parsers and evaluation.
    pub mod policy {
        pub use crate::policy::{Requested, deny_list, rules, template};
    }

    /// The signer seam and the local signer.
    pub mod signer {
        pub use crate::signer::Signer;
        pub use crate::signer::local::LocalSigner;
    }

    /// The owner of background work (the RSA signer's threads run under one).
    pub mod tasks {
        pub use crate::tasks::Background;
    }

    /// The TLS listener's material.
    pub mod tls {
        pub use crate::tls::{TlsServer, TlsSettings};
    }

    /// Certificate parsing, chain building and the trust material.
    pub mod x509 {
        pub use crate::x509::{
            ClientIdAttribute, MAX_INTERMEDIATES, Normalised, Trust, TrustSettings, chain, facts,
            fingerprint, normalise, provider, spiffe, twin, twin_fingerprint,
        };
    }
}
