//! Settings of the OCSP check of client certificates: the declarations and [`OcspSettings`],
//! which they fill. Read through `config::reader`; reads no environment.

use std::time::Duration;

use crate::config::reader::{Reader, Setting};

/// `TLS_CLIENT_OCSP`.
pub const MODE: Setting = Setting::choice(
    "TLS_CLIENT_OCSP",
    Some("off"),
    &["off", "when-available", "required"],
    "OCSP check of each verified client certificate (mtls and forwarded-cert flows): off; when-available (a verified revoked answer refuses, no answer accepts with ocsp=unavailable on the log line); required (no verified good answer refuses: 403, or 503 when the responder is unreachable)",
);
/// `TLS_CLIENT_OCSP_RESPONDER`.
pub const RESPONDER: Setting = Setting::url(
    "TLS_CLIENT_OCSP_RESPONDER",
    None,
    "OCSP responder URL (http:// or https://) asked instead of the one in each certificate's Authority Information Access extension",
);
/// `TLS_CLIENT_OCSP_TIMEOUT`.
pub const TIMEOUT: Setting = Setting::seconds(
    "TLS_CLIENT_OCSP_TIMEOUT",
    5,
    1..=30,
    "Seconds one OCSP exchange with the responder may take, connection included (1 to 30)",
);

/// The OCSP settings, in help order.
pub const SETTINGS: &[Setting] = &[MODE, RESPONDER, TIMEOUT];

/// What the OCSP check does when there is no usable answer (`TLS_CLIENT_OCSP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No OCSP check.
    #[default]
    Off,
    /// A verified answer counts; no answer accepts the certificate.
    WhenAvailable,
    /// Only a verified good answer accepts the certificate.
    Required,
}

impl Mode {
    /// Parses the setting's value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "off" => Some(Self::Off),
            "when-available" => Some(Self::WhenAvailable),
            "required" => Some(Self::Required),
            _ => None,
        }
    }

    /// The setting's value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::WhenAvailable => "when-available",
            Self::Required => "required",
        }
    }
}

/// `TLS_CLIENT_OCSP`, `TLS_CLIENT_OCSP_RESPONDER`, `TLS_CLIENT_OCSP_TIMEOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspSettings {
    /// What to do without a usable answer.
    pub mode: Mode,
    /// The responder asked instead of each certificate's AIA URL.
    pub responder: Option<String>,
    /// The bound of one exchange with the responder.
    pub timeout: Duration,
}

impl Default for OcspSettings {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            responder: None,
            timeout: Duration::from_secs(5),
        }
    }
}

impl OcspSettings {
    /// Reads the settings; `client_cas` says whether `TLS_CLIENT_CA_FILE` is set (without it no
    /// certificate is verified here, so no certificate is checked either: a warning).
    pub fn read(r: &mut Reader<'_>, client_cas: bool) -> Self {
        let mode = r.choice(&MODE).and_then(Mode::parse).unwrap_or_default();
        let responder = r.url(&RESPONDER);
        let timeout = r.seconds(&TIMEOUT);
        if mode != Mode::Off && !client_cas {
            r.warn(format!(
                "TLS_CLIENT_OCSP={} has no effect without TLS_CLIENT_CA_FILE: only the mtls and forwarded-cert flows verify certificates (the xlb flow never sees the certificate)",
                mode.name()
            ));
        }
        if mode == Mode::Off && responder.is_some() {
            r.warn("TLS_CLIENT_OCSP_RESPONDER is set but TLS_CLIENT_OCSP=off: no OCSP check is made; set TLS_CLIENT_OCSP=when-available or required");
        }
        Self {
            mode,
            responder,
            timeout,
        }
    }
}
