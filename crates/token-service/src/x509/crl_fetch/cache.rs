//! The on-disk copy of fetched CRLs (`TLS_CLIENT_CRL_CACHE_DIR`), so a restart while a CRL
//! server is down still has them: one JSON file per URL (named by the URL's SHA-256), holding
//! the URL, where it came from, the CRL and, for a distribution point, the certificates that
//! vouched for it. Written with the service's one atomic writer (temporary file, fsync,
//! rename, fsync of the folder); read at startup before any fetch. What is read back is
//! checked again like a download (signature, issuer), so a damaged or planted file is skipped.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::Origin;
use super::settings::CRL_CACHE_DIR;

/// One cached CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// Its URL.
    pub url: String,
    /// Configured, or a distribution point.
    pub origin: Origin,
    /// The CRL (DER).
    pub der: Vec<u8>,
    /// For a distribution point: the issuer path (DER), the CRL's signer first.
    pub issuers: Vec<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct File {
    url: String,
    origin: String,
    crl: String,
    #[serde(default)]
    issuers: Vec<String>,
}

/// The file of `url` in `dir`.
fn path_of(dir: &Path, url: &str) -> PathBuf {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
    let name: String = digest
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("{name}.json"))
}

/// Writes `entry` into `dir`, replacing the previous copy of its URL.
pub fn store(dir: &Path, entry: &Cached) -> Result<(), String> {
    let file = File {
        url: entry.url.clone(),
        origin: entry.origin.name().to_owned(),
        crl: STANDARD.encode(&entry.der),
        issuers: entry.issuers.iter().map(|d| STANDARD.encode(d)).collect(),
    };
    let json = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
    crate::signer::local::write_atomic(&path_of(dir, &entry.url), &json, CRL_CACHE_DIR.name)
        .map_err(|e| e.to_string())
}

/// The cached CRLs of `dir` (none when it does not exist), at most `max` of them, each file at
/// most `max_bytes` (base64 and JSON around a CRL of that size). Unreadable files are named
/// in the second list, for a warning.
pub fn load(dir: &Path, max: usize, max_bytes: u64) -> (Vec<Cached>, Vec<String>) {
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (found, skipped);
    };
    let limit = max_bytes.saturating_mul(2).saturating_add(64 * 1024);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") || found.len() >= max {
            continue;
        }
        match read_one(&path, limit) {
            Ok(cached) if path_of(dir, &cached.url) == path => found.push(cached),
            Ok(_) => skipped.push(format!("'{}': not the file of its URL", path.display())),
            Err(why) => skipped.push(format!("'{}': {why}", path.display())),
        }
    }
    found.sort_by(|a, b| a.url.cmp(&b.url));
    (found, skipped)
}

fn read_one(path: &Path, limit: u64) -> Result<Cached, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let file: File = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let origin = Origin::parse(&file.origin).ok_or("unknown origin")?;
    let der = STANDARD.decode(&file.crl).map_err(|e| e.to_string())?;
    let issuers = file
        .issuers
        .iter()
        .map(|d| STANDARD.decode(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(Cached {
        url: file.url,
        origin,
        der,
        issuers,
    })
}
