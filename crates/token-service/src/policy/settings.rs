//! Settings of the client policy: the declarations and [`PolicySettings`], which they fill.
//! Read through `config::reader`; reads no environment.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::reader::{Reader, Setting};

/// `POLICY_FILE`.
pub const FILE: Setting = Setting::path(
    "POLICY_FILE",
    None,
    "TOML client policy (rules, deny lists); unset: every verified certificate is admitted",
);
/// `POLICY_RELOAD_INTERVAL`.
pub const RELOAD_INTERVAL: Setting = Setting::seconds(
    "POLICY_RELOAD_INTERVAL",
    5,
    1..=3600,
    "Seconds between checks of the policy and deny-list files for changes",
);

/// Every setting of the policy, in help order.
pub const SETTINGS: &[Setting] = &[FILE, RELOAD_INTERVAL];

/// The client policy file and how often to look for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// `POLICY_FILE`.
    pub file: PathBuf,
    /// `POLICY_RELOAD_INTERVAL`.
    pub reload_interval: Duration,
}

impl PolicySettings {
    /// The policy when `POLICY_FILE` is set.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let reload_interval = r.seconds(&RELOAD_INTERVAL);
        let file = r.path(&FILE)?;
        Some(Self {
            file,
            reload_interval,
        })
    }
}
