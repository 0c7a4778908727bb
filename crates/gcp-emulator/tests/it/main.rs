//! The emulator's integration tests, one binary: one module per area; `support` holds the
//! helpers shared by them.

mod support;

mod api;
mod cli;
mod sts;
