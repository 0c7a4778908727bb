//! The emulator's integration tests, one binary: one module per area; `support` holds the
//! helpers shared by them.
#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "a test fails by panicking, with the value it did not expect, and may list its steps at length"
)]

mod support;

mod api;
mod aws;
mod cli;
mod entra;
mod https;
mod sts;
mod sts_cache;
