//! Settings of the TLS listener: the declarations and [`TlsSettings`], which they fill. Read
//! through `config::reader`; reads no environment.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::reader::{Reader, Setting};

/// `TLS_CERT_FILE`.
pub const CERT_FILE: Setting = Setting::path(
    "TLS_CERT_FILE",
    None,
    "PEM server certificate chain; with TLS_KEY_FILE the listener speaks TLS",
);
/// `TLS_KEY_FILE`.
pub const KEY_FILE: Setting = Setting::path("TLS_KEY_FILE", None, "PEM server private key");
/// `TLS_RELOAD_INTERVAL`: also how often the client CA files are checked.
pub const RELOAD_INTERVAL: Setting = Setting::seconds(
    "TLS_RELOAD_INTERVAL",
    5,
    1..=3600,
    "Seconds between checks of the TLS and CA files for changes",
);

/// The server certificate and key.
pub const LISTENER: &[Setting] = &[CERT_FILE, KEY_FILE];
/// How often the files are checked.
pub const RELOAD: &[Setting] = &[RELOAD_INTERVAL];

/// TLS listener settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `TLS_CERT_FILE`: PEM chain, leaf first.
    pub cert_file: PathBuf,
    /// `TLS_KEY_FILE`: PEM private key.
    pub key_file: PathBuf,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// The TLS listener when both files are set; one without the other is an error.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let reload_interval = r.seconds(&RELOAD_INTERVAL);
        match (r.path(&CERT_FILE), r.path(&KEY_FILE)) {
            (Some(cert_file), Some(key_file)) => Some(Self {
                cert_file,
                key_file,
                reload_interval,
            }),
            (None, None) => None,
            (Some(_), None) => {
                r.fail(
                    KEY_FILE.name,
                    "required with TLS_CERT_FILE; set both, or neither for plain HTTP",
                );
                None
            }
            (None, Some(_)) => {
                r.fail(
                    CERT_FILE.name,
                    "required with TLS_KEY_FILE; set both, or neither for plain HTTP",
                );
                None
            }
        }
    }
}
