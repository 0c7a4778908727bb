//! The service's integration tests, one binary: one module per area; `support` holds the
//! harness shared by all of them.

mod support;

mod api;
mod cli;
// The README's custom-flow example stays at the path the README names.
#[path = "../custom_flow.rs"]
mod custom_flow;
mod deploy;
mod forwarded;
mod google;
mod google_auth_interop;
mod policy;
mod policy_examples;
mod production;
mod readme;
mod tls;
