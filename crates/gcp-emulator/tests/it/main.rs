//! The emulator's integration tests, one binary: one module per area; `support` holds the
//! helpers shared by them.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking, with the value it did not expect"
)]

mod support;

mod api;
mod cli;
mod sts;
