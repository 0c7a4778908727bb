//! Deny lists: files of SHA-256 fingerprints or serial numbers, one per line, that revoke single
//! certificates at once without touching the PKI. Sized for fleets: entries are decoded to bytes
//! and kept in hash sets, so loading is linear and a lookup costs one hash.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What a deny list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SHA-256 fingerprints of certificates.
    Fingerprints,
    /// Certificate serial numbers.
    Serials,
}

impl Kind {
    /// The policy key that names a file of this kind.
    pub fn key(self) -> &'static str {
        match self {
            Self::Fingerprints => "sha256_fingerprints",
            Self::Serials => "serials",
        }
    }
}

/// Why a deny list was refused, printed as one line naming the file (and the line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyListError {
    /// The file cannot be read.
    #[error("{}: cannot read: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// A line holds no valid entry.
    #[error("{}:{line}: '{entry}' is not {expected}", path.display())]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The entry, truncated to 100 characters.
        entry: String,
        /// What an entry of this list must be.
        expected: &'static str,
    },
}

/// A loaded deny list.
#[derive(Debug, Clone)]
pub struct DenyList {
    kind: Kind,
    path: PathBuf,
    fingerprints: HashSet<[u8; 32]>,
    serials: HashSet<Box<[u8]>>,
}

impl DenyList {
    /// Reads a deny list. Lines hold one entry; `#` starts a comment; blank lines are ignored.
    /// The error prints as one line naming the file and line.
    pub fn load(kind: Kind, path: &Path) -> Result<Self, DenyListError> {
        let text = std::fs::read_to_string(path).map_err(|e| DenyListError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(kind, path, &text)
    }

    /// Parses the text of a deny list read from `path`.
    pub fn parse(kind: Kind, path: &Path, text: &str) -> Result<Self, DenyListError> {
        let estimate = text.len() / 45;
        let mut list = Self {
            kind,
            path: path.to_owned(),
            fingerprints: HashSet::new(),
            serials: HashSet::new(),
        };
        match kind {
            Kind::Fingerprints => list.fingerprints.reserve(estimate),
            Kind::Serials => list.serials.reserve(estimate),
        }
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            let fail = |what: &'static str| DenyListError::BadEntry {
                path: path.to_owned(),
                line: i + 1,
                entry: crate::model::truncate(entry, 100),
                expected: what,
            };
            match kind {
                Kind::Fingerprints => {
                    let fp = parse_fingerprint(entry).ok_or_else(|| {
                        fail("a SHA-256 fingerprint (base64 of 32 bytes, or 64 hex digits with or without colons)")
                    })?;
                    list.fingerprints.insert(fp);
                }
                Kind::Serials => {
                    let serial = parse_serial(entry).ok_or_else(|| {
                        fail("a serial number (hex digits, optionally colon-separated)")
                    })?;
                    list.serials.insert(serial.into_boxed_slice());
                }
            }
        }
        Ok(list)
    }

    /// What the list holds.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of distinct entries.
    pub fn len(&self) -> usize {
        self.fingerprints.len() + self.serials.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the list holds `value` (a fingerprint or serial in any accepted spelling).
    pub fn contains(&self, value: &str) -> bool {
        match self.kind {
            Kind::Fingerprints => {
                parse_fingerprint(value).is_some_and(|fp| self.fingerprints.contains(&fp))
            }
            Kind::Serials => parse_serial(value).is_some_and(|s| self.serials.contains(&s[..])),
        }
    }
}

/// Decodes a SHA-256 fingerprint written as base64 (standard or URL-safe, padded or not) or as
/// hex (64 digits, optionally separated by colons, either case).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let hex: Vec<u8> = if text.contains(':') {
        hex_decode(&text.replace(':', ""))?
    } else if text.len() == 64 {
        hex_decode(text)?
    } else {
        [STANDARD_NO_PAD, URL_SAFE_NO_PAD, STANDARD, URL_SAFE]
            .iter()
            .find_map(|engine| engine.decode(text).ok())?
    };
    hex.try_into().ok()
}

/// Decodes a serial number written as hex, optionally colon-separated; leading zero bytes are
/// dropped, so `00:a1` and `a1` name the same serial.
pub fn parse_serial(text: &str) -> Option<Vec<u8>> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    if digits.is_empty() {
        return None;
    }
    let padded = if !digits.len().is_multiple_of(2) {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes = hex_decode(&padded)?;
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    Some(bytes[first..].to_vec())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}
