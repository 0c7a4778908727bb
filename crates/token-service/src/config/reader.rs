//! The typed readers: a module declares each of its settings once, as a [`Setting`]
//! (`config/setting.rs`), and reads it here with the declared default and bound: seconds,
//! minutes, count, port, IP, header name, URL, CIDR list, flag, list, choice, path, text. The
//! reader never stops at the first problem: it collects every problem as a [`StartupError`]
//! (setting, origin, problem) and returns the setting's default instead, so one run reports
//! everything that is wrong. It records what it resolved, for `check-config`.
//!
//! Uses only `config::source` (the values) and `error`; reads no environment itself.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

pub use super::setting::{Kind, Setting, one_of};
use super::source::{Origin, Values};
use crate::error::StartupError;

/// Reads typed values from setting values, collecting every problem.
pub struct Reader<'a> {
    values: &'a Values,
    errors: Vec<StartupError>,
    warnings: Vec<String>,
    resolved: BTreeMap<&'static str, String>,
}

impl<'a> Reader<'a> {
    /// A reader of `values`.
    pub fn new(values: &'a Values) -> Self {
        Self {
            values,
            errors: Vec::new(),
            warnings: Vec::new(),
            resolved: BTreeMap::new(),
        }
    }

    /// The value as given, trimmed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.values
            .get(name)
            .map(|(v, _)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Whether the setting is present at all, even blank (a blank secret is an error, not
    /// "unset").
    pub fn is_present(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The raw value, untrimmed, when present.
    pub fn raw(&self, name: &str) -> Option<&'a str> {
        self.values.get(name).map(|(v, _)| v.as_str())
    }

    /// Records a problem with `setting` (printed `SETTING: problem`).
    pub fn fail(&mut self, setting: &str, problem: impl Into<String>) {
        let mut error = StartupError::setting(setting, problem);
        if let Some(origin) = self.origin(setting) {
            error = error.from_origin(origin);
        }
        self.push(error);
    }

    /// Records a problem that spans settings, printed as it is.
    pub fn fail_other(&mut self, problem: impl Into<String>) {
        self.push(StartupError::other(problem));
    }

    fn push(&mut self, error: StartupError) {
        // Shared settings (e.g. MTLS_LB_SECRET: the xlb flow and the limits) may be read
        // twice; a problem is reported once.
        if !self
            .errors
            .iter()
            .any(|e| e.to_string() == error.to_string())
        {
            self.errors.push(error);
        }
    }

    /// Records a startup warning.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        if !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }

    /// Where a setting's value came from, for errors.
    fn origin(&self, name: &str) -> Option<&'static str> {
        self.values
            .get(name)
            .map(|(_, origin)| origin_text(*origin))
    }

    /// Records the value the service will use, for `check-config`.
    /// Secrets are never recorded.
    pub fn resolve(&mut self, setting: &Setting, value: impl ToString) {
        if setting.secret {
            return;
        }
        self.resolved.insert(setting.name, value.to_string());
    }

    /// The problems found so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Problems, warnings and resolved values.
    pub fn finish(
        self,
    ) -> (
        Vec<StartupError>,
        Vec<String>,
        BTreeMap<&'static str, String>,
    ) {
        (self.errors, self.warnings, self.resolved)
    }

    /// A number of seconds.
    pub fn seconds(&mut self, setting: &Setting) -> Duration {
        let (default, min, max, minutes) = match setting.kind {
            Kind::Seconds { default, min, max } => (default, min, max, false),
            Kind::Minutes { default, min, max } => (default, min, max, true),
            _ => return self.wrong_kind(setting, Duration::ZERO),
        };
        let what = if minutes {
            "whole minutes"
        } else {
            "whole seconds"
        };
        let n = self
            .number(setting, Some(default), min, max, what, !minutes)
            .unwrap_or(default);
        self.resolve(setting, n);
        let unit = if minutes { 60 } else { 1 };
        Duration::from_secs(n.saturating_mul(unit))
    }

    /// A whole number; `None` when unset and the declaration has no default.
    pub fn count(&mut self, setting: &Setting) -> Option<u64> {
        let Kind::Count { default, min, max } = setting.kind else {
            return self.wrong_kind(setting, None);
        };
        let n = self.number(setting, default, min, max, "a whole number", false);
        if let Some(n) = n {
            self.resolve(setting, n);
        }
        n
    }

    fn number(
        &mut self,
        setting: &Setting,
        default: Option<u64>,
        min: u64,
        max: u64,
        what: &str,
        suffix: bool,
    ) -> Option<u64> {
        let Some(v) = self.get(setting.name) else {
            return default;
        };
        let digits = if suffix { v.trim_end_matches('s') } else { v };
        match digits.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let problem = format!("'{v}' is not valid; expected {what} from {min} to {max}");
                self.fail(setting.name, problem);
                default
            }
        }
    }

    /// A port; `None` when unset without a default.
    pub fn port(&mut self, setting: &Setting) -> Option<u16> {
        let Kind::Port { default } = setting.kind else {
            return self.wrong_kind(setting, None);
        };
        let port = match self.get(setting.name) {
            None => default,
            Some(v) => match v.parse::<u16>() {
                Ok(p) => Some(p),
                Err(_) => {
                    let problem =
                        format!("'{v}' is not valid; expected a port number from 0 to 65535");
                    self.fail(setting.name, problem);
                    return None;
                }
            },
        };
        if let Some(p) = port {
            self.resolve(setting, p);
        }
        port.or(default)
    }

    /// An IP address, `default` when unset.
    pub fn ip(&mut self, setting: &Setting, default: IpAddr) -> IpAddr {
        let ip = match self.get(setting.name).map(|v| (v, v.parse::<IpAddr>())) {
            None => default,
            Some((_, Ok(ip))) => ip,
            Some((v, Err(_))) => {
                let problem = format!(
                    "'{v}' is not valid; expected an IP address such as 0.0.0.0 or 127.0.0.1"
                );
                self.fail(setting.name, problem);
                default
            }
        };
        self.resolve(setting, ip);
        ip
    }

    /// A header name; the declared default when unset, or `default` for declarations whose
    /// default depends on other settings.
    pub fn header(&mut self, setting: &Setting, default: Option<&str>) -> HeaderName {
        let declared = match setting.kind {
            Kind::Header { default } => default,
            _ => None,
        };
        let fallback_text = default.or(declared).unwrap_or("x-unset");
        // Declared defaults are valid header names (a unit test checks every one).
        let fallback = HeaderName::from_bytes(fallback_text.as_bytes())
            .unwrap_or(HeaderName::from_static("x-unset"));
        let name = match self.get(setting.name) {
            None => fallback,
            Some(v) => HeaderName::from_bytes(v.as_bytes()).unwrap_or_else(|_| {
                let problem =
                    format!("'{v}' is not a valid HTTP header name (letters, digits and '-')");
                self.fail(setting.name, problem);
                fallback
            }),
        };
        self.resolve(setting, &name);
        name
    }

    /// A URL without trailing `/`; the declared default when unset.
    pub fn url(&mut self, setting: &Setting) -> Option<String> {
        let declared = match setting.kind {
            Kind::Url { default } => default,
            _ => None,
        };
        let Some(v) = self.get(setting.name) else {
            let default = declared.map(str::to_owned);
            if let Some(d) = &default {
                self.resolve(setting, d);
            }
            return default;
        };
        let v = v.trim_end_matches('/');
        match v.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("https" | "http"))
                    && uri.host().is_some_and(|h| !h.is_empty())
                    && uri.query().is_none()
                    && !v.contains('#') =>
            {
                self.resolve(setting, v);
                Some(v.to_owned())
            }
            _ => {
                self.fail(setting.name, format!("'{v}' is not valid; expected an https:// URL without query or fragment, e.g. https://tokens.example.com"));
                declared.map(str::to_owned)
            }
        }
    }

    /// IP networks; IPv4 ranges written in IPv6-mapped form are matched as the IPv4 range
    /// they are, since peers are compared in canonical form.
    pub fn cidrs(&mut self, setting: &Setting) -> Vec<IpNet> {
        let mut nets = Vec::new();
        let listed = self.get(setting.name).unwrap_or("");
        for item in listed.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parsed = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(canonical(net)),
                Err(_) => self.fail(
                    setting.name,
                    format!(
                        "'{item}' is not valid; expected IP addresses or CIDRs such as 10.0.0.0/8"
                    ),
                ),
            }
        }
        if !nets.is_empty() {
            let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
            self.resolve(setting, shown.join(","));
        }
        nets
    }

    /// On or off.
    pub fn flag(&mut self, setting: &Setting) -> bool {
        let Kind::Flag { default } = setting.kind else {
            return self.wrong_kind(setting, false);
        };
        let on = match self
            .get(setting.name)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => default,
            Some("on" | "true" | "1" | "yes") => true,
            Some("off" | "false" | "0" | "no") => false,
            Some(other) => {
                let problem = format!("'{other}' is not valid; expected on or off");
                self.fail(setting.name, problem);
                default
            }
        };
        self.resolve(setting, if on { "on" } else { "off" });
        on
    }

    /// A comma-separated list, items trimmed, blanks dropped. Set but blank is an empty list,
    /// not "unset".
    pub fn list(&mut self, setting: &Setting) -> Vec<String> {
        let declared = match setting.kind {
            Kind::List { default } => default,
            _ => "",
        };
        let raw = self.raw(setting.name).unwrap_or(declared);
        let items: Vec<String> = raw
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        self.resolve(setting, items.join(","));
        items
    }

    /// One of the declared words, lowercased; the declared default when unset (or invalid).
    pub fn choice(&mut self, setting: &Setting) -> Option<&'static str> {
        let Kind::Choice { default, words } = setting.kind else {
            return self.wrong_kind(setting, None);
        };
        let chosen = match self.get(setting.name) {
            None => default,
            Some(v) => {
                let lower = v.to_ascii_lowercase();
                match words.iter().find(|w| **w == lower) {
                    Some(w) => Some(*w),
                    None => {
                        let problem = format!("'{v}' is not valid; expected {}", one_of(words));
                        self.fail(setting.name, problem);
                        default
                    }
                }
            }
        };
        if let Some(c) = chosen {
            self.resolve(setting, c);
        }
        chosen
    }

    /// A path; the declared default when unset.
    pub fn path(&mut self, setting: &Setting) -> Option<PathBuf> {
        self.text(setting).map(PathBuf::from)
    }

    /// Text, trimmed; the declared default when unset.
    pub fn text(&mut self, setting: &Setting) -> Option<String> {
        let declared = match setting.kind {
            Kind::Path { default } | Kind::Text { default } | Kind::Header { default } => default,
            _ => None,
        };
        let value = self.get(setting.name).or(declared).map(str::to_owned);
        if let Some(v) = &value {
            self.resolve(setting, v);
        }
        value
    }

    /// A declaration read with the wrong reader: a bug of ours, reported, never a panic.
    fn wrong_kind<T>(&mut self, setting: &Setting, fallback: T) -> T {
        self.fail(
            setting.name,
            "is declared with a type its module does not read (a bug in Token Service); please report it",
        );
        fallback
    }
}

/// IPv4-mapped IPv6 ranges as the IPv4 range they are.
fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        return match ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
            Ok(v4) => IpNet::V4(v4.trunc()),
            Err(_) => net,
        };
    }
    net
}

/// How an origin is named in `check-config` and errors.
pub fn origin_text(origin: Origin) -> &'static str {
    match origin {
        Origin::Env => "environment",
        Origin::File => "config file",
        Origin::Command => "command default",
    }
}
