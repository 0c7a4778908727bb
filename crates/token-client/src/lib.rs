//! token-client: the device side of Token Service. It authenticates to the broker with the
//! device's certificate (mTLS) and offers the broker's tokens in the forms Google's client
//! libraries accept.
//!
//! - [`settings`]: the command line; every setting is a flag and an environment variable.
//! - [`broker`]: [`broker::Broker`], the `/token` client that follows certificate rotation.
//! - [`files`]: atomic writes of token and cache files.

pub mod broker;
pub mod files;
pub mod settings;
