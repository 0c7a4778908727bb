//! Token Service: a token broker that turns a verified client certificate into a signed OIDC ID
//! token (and, with a Google backend, into Google access tokens).
//!
//! One request, end to end, in the order a reader should follow the files:
//!
//! ```text
//! http (parse form, derive issuer, extract headers)            http.rs, http/*.rs
//!   -> grant: the shared client-credentials path               grant.rs
//!        -> flows: which flow? authenticate -> client facts    flows.rs, flows/*.rs
//!        -> policy: may this client get a token? claims        policy.rs
//!        -> issuer: claims -> signer -> compact JWT            issuer.rs, signer.rs, signer/*.rs
//!        -> access: optional access token (later issue)        access.rs
//!   -> http: OAuth JSON or executable-sourced credential JSON  http/error.rs, http/token.rs
//! ```
//!
//! `model` and `clock` depend on nothing of ours. `config` knows every module's settings type; no
//! module knows `config`. `app` is the composition root: the only place that names concrete
//! flow, signer and policy types.

pub mod access;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod flows;
pub mod google;
pub mod grant;
pub mod http;
pub mod issuer;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod policy;
pub mod server;
pub mod signer;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod x509;
