//! The service's integration tests, one binary: one module per area; `support` holds the
//! harness shared by all of them.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "a test fails by panicking, with the value it did not expect; it may list its steps \
              at length, and it drives processes: it reads their environment and waits on the clock"
)]

mod support;

mod api;
mod audience;
mod aws;
mod azure;
mod cert_lifetime;
mod cli;
mod crl_fetch;
mod custom_flow;
mod deploy;
mod doctor;
mod forwarded;
mod google;
mod google_auth_interop;
mod layout;
mod ocsp;
mod policy;
mod policy_examples;
mod policy_scale;
mod production;
mod readme;
mod rotation;
mod tls;
