//! Integration tests of token-client against the real broker binary over mTLS, the Google API
//! emulator, and Google's own libraries (Python google-auth, Node google-auth-library).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "a test fails by panicking, with the value it did not expect; it drives processes \
              and reads their environment"
)]

mod support;

mod aws;
mod aws_sdk;
mod azure_sdk;
mod dependencies;
mod executable;
mod google_config;
mod google_libraries;
mod layout;
mod readme;
mod serve;
mod serve_audiences;
mod serve_libraries;
mod serve_resilience;
mod token;
