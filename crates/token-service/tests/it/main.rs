//! The service's integration tests, one binary: one module per area; `support` holds the
//! harness shared by all of them.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with the value it did not expect"
)]

mod support;

mod api;
mod cli;
mod custom_flow;
mod deploy;
mod forwarded;
mod layout;
mod google;
mod google_auth_interop;
mod policy;
mod policy_examples;
mod production;
mod readme;
mod tls;
