//! Settings of the logs: the declarations and [`LogSettings`], which they fill. Read through
//! `config::reader`; reads no environment.

use super::LogFormat;
use crate::config::reader::{Reader, Setting};

/// `LOG_FORMAT`.
pub const FORMAT: Setting = Setting::choice(
    "LOG_FORMAT",
    Some("json"),
    &["json", "text"],
    "json (Cloud Logging) or text; both escape control characters in every value",
);
/// `LOG_LEVEL`.
pub const LEVEL: Setting = Setting::choice(
    "LOG_LEVEL",
    Some("info"),
    &["error", "warn", "info", "debug", "trace"],
    "error, warn, info, debug or trace",
);
/// `GOOGLE_CLOUD_PROJECT`.
pub const TRACE_PROJECT: Setting = Setting::text(
    "GOOGLE_CLOUD_PROJECT",
    None,
    "Project for trace IDs in logs",
);

/// Every setting of the logs, in help order.
pub const SETTINGS: &[Setting] = &[FORMAT, LEVEL, TRACE_PROJECT];

/// How and what to log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `LOG_FORMAT`.
    pub format: LogFormat,
    /// `LOG_LEVEL`, lowercase.
    pub level: String,
    /// `GOOGLE_CLOUD_PROJECT`, for trace IDs.
    pub trace_project: Option<String>,
}

impl LogSettings {
    /// Reads format, level and trace project.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let format = match r.choice(&FORMAT) {
            Some("text") => LogFormat::Text,
            _ => LogFormat::Json,
        };
        Self {
            format,
            level: r.choice(&LEVEL).unwrap_or_default().to_owned(),
            trace_project: r.text(&TRACE_PROJECT),
        }
    }
}
