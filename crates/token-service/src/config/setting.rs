//! Setting declarations: environment name, typed default, bounds, help, whether secret. The
//! one place of each default and bound: the help's default text is derived from the typed
//! default ([`Setting::default_text`]), and [`super::reader::Reader`] reads with the same
//! default and bound. Plain data; uses nothing of ours.

/// What kind of value a setting holds, with its typed default and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Whole seconds (an `s` suffix is allowed) from `min` to `max`.
    Seconds {
        /// Used when unset.
        default: u64,
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
    },
    /// Whole minutes from `min` to `max`.
    Minutes {
        /// Used when unset.
        default: u64,
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
    },
    /// A whole number from `min` to `max`; `default` `None` when it follows another setting.
    Count {
        /// Used when unset.
        default: Option<u64>,
        /// Smallest valid value.
        min: u64,
        /// Largest valid value.
        max: u64,
    },
    /// A TCP port.
    Port {
        /// Used when unset; `None`: the feature is off.
        default: Option<u16>,
    },
    /// An IP address (its default depends on other settings: see the note).
    Ip,
    /// An HTTP header name.
    Header {
        /// Used when unset, as shown in the help.
        default: Option<&'static str>,
    },
    /// An `http(s)://` URL without query or fragment.
    Url {
        /// Used when unset.
        default: Option<&'static str>,
    },
    /// A comma-separated list of IP addresses or CIDRs.
    Cidrs,
    /// On or off (also true/false, 1/0, yes/no).
    Flag {
        /// Used when unset.
        default: bool,
    },
    /// A comma-separated list of words.
    List {
        /// Used when unset.
        default: &'static str,
    },
    /// One of a few words, case-insensitive.
    Choice {
        /// Used when unset.
        default: Option<&'static str>,
        /// The valid words, in the order the error message lists them.
        words: &'static [&'static str],
    },
    /// A file or folder.
    Path {
        /// Used when unset.
        default: Option<&'static str>,
    },
    /// Free text.
    Text {
        /// Used when unset.
        default: Option<&'static str>,
    },
}

/// One documented setting: the single place of its name, default, bound and help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Environment variable name (also the key in a `--config` file).
    pub name: &'static str,
    /// What it does.
    pub help: &'static str,
    /// Whether its value must never be shown.
    pub secret: bool,
    /// Its type, typed default and bounds.
    pub kind: Kind,
    /// The default in words, for defaults that depend on other settings (`BIND_ADDRESS`:
    /// 127.0.0.1, or 0.0.0.0 on Cloud Run); `None`: derived from the typed default.
    pub note: Option<&'static str>,
}

impl Setting {
    const fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            help,
            secret: false,
            kind,
            note: None,
        }
    }

    /// Whole seconds within `range`.
    pub const fn seconds(
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        help: &'static str,
    ) -> Self {
        let (min, max) = (*range.start(), *range.end());
        Self::new(name, Kind::Seconds { default, min, max }, help)
    }

    /// Whole minutes within `range`.
    pub const fn minutes(
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        help: &'static str,
    ) -> Self {
        let (min, max) = (*range.start(), *range.end());
        Self::new(name, Kind::Minutes { default, min, max }, help)
    }

    /// A whole number within `range`.
    pub const fn count(
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
        help: &'static str,
    ) -> Self {
        let (min, max) = (*range.start(), *range.end());
        let default = Some(default);
        Self::new(name, Kind::Count { default, min, max }, help)
    }

    /// A whole number within `range` whose default is another setting's value (see the note).
    pub const fn count_following(
        name: &'static str,
        range: std::ops::RangeInclusive<u64>,
        note: &'static str,
        help: &'static str,
    ) -> Self {
        let (min, max) = (*range.start(), *range.end());
        Self::new(
            name,
            Kind::Count {
                default: None,
                min,
                max,
            },
            help,
        )
        .noted(note)
    }

    /// A TCP port.
    pub const fn port(name: &'static str, default: Option<u16>, help: &'static str) -> Self {
        Self::new(name, Kind::Port { default }, help)
    }

    /// An IP address whose default depends on other settings, described by `note`.
    pub const fn ip(name: &'static str, note: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Ip, help).noted(note)
    }

    /// An HTTP header name, `default` as shown in the help (any case).
    pub const fn header(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self::new(
            name,
            Kind::Header {
                default: Some(default),
            },
            help,
        )
    }

    /// An HTTP header name whose default depends on other settings.
    pub const fn header_noted(name: &'static str, note: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Header { default: None }, help).noted(note)
    }

    /// A URL.
    pub const fn url(
        name: &'static str,
        default: Option<&'static str>,
        help: &'static str,
    ) -> Self {
        Self::new(name, Kind::Url { default }, help)
    }

    /// A list of IP addresses and CIDRs.
    pub const fn cidrs(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Cidrs, help)
    }

    /// On or off.
    pub const fn flag(name: &'static str, default: bool, help: &'static str) -> Self {
        Self::new(name, Kind::Flag { default }, help)
    }

    /// A comma-separated list.
    pub const fn list(name: &'static str, default: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::List { default }, help)
    }

    /// One of `words`.
    pub const fn choice(
        name: &'static str,
        default: Option<&'static str>,
        words: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self::new(name, Kind::Choice { default, words }, help)
    }

    /// A file or folder.
    pub const fn path(
        name: &'static str,
        default: Option<&'static str>,
        help: &'static str,
    ) -> Self {
        Self::new(name, Kind::Path { default }, help)
    }

    /// Free text.
    pub const fn text(
        name: &'static str,
        default: Option<&'static str>,
        help: &'static str,
    ) -> Self {
        Self::new(name, Kind::Text { default }, help)
    }

    /// The same setting with the default described in words.
    #[must_use]
    pub const fn noted(mut self, note: &'static str) -> Self {
        self.note = Some(note);
        self
    }

    /// The same setting, its value never shown.
    #[must_use]
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// The default as the help shows it; empty when unset by default.
    pub fn default_text(&self) -> String {
        if let Some(note) = self.note {
            return note.to_owned();
        }
        match self.kind {
            Kind::Seconds { default, .. } | Kind::Minutes { default, .. } => default.to_string(),
            Kind::Count { default, .. } => default.map(|d| d.to_string()).unwrap_or_default(),
            Kind::Port { default } => default.map(|d| d.to_string()).unwrap_or_default(),
            Kind::Flag { default } => if default { "on" } else { "off" }.to_owned(),
            Kind::List { default } => default.to_owned(),
            Kind::Header { default }
            | Kind::Url { default }
            | Kind::Choice { default, .. }
            | Kind::Path { default }
            | Kind::Text { default } => default.unwrap_or_default().to_owned(),
            Kind::Ip | Kind::Cidrs => String::new(),
        }
    }
}

/// "a, b or c".
pub fn one_of(words: &[&str]) -> String {
    match words.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}
