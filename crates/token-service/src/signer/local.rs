//! Signing with local private keys: a PEM file of PKCS#8 keys (RSA ≥ 2048 bits → RS256, EC
//! P-256 → ES256), or a development key generated on first start. A plain file keeps its old
//! meaning, the first key signs and all are published; with metadata lines (`keyfile.rs`) each
//! key is `next`, `active` or `retired` (`states.rs`), so that a new key is published on every
//! replica before any replica signs with it, and every replica switches in the same second.
//! The file is watched and reloaded whole (`set.rs`).
//!
//! Keys are parsed once into aws-lc-rs key pairs: re-parsing per token (as a generic JWT
//! library does) costs more than the signature itself.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::SectionKind;
use serde_json::{Map, Value};

use super::{Publication, Signer};
use crate::clock::{Clock, Deadline};
use crate::error::{Failure, StartupError};
use crate::tasks::Background;

mod jwk;
pub mod keyfile;
mod rsa;
pub mod set;
pub mod states;

use jwk::generate_pem;
pub(crate) use jwk::generate_pem as generate_key_pem;
use rsa::{RsaPool, signing_failed};
use set::KeySet;
use states::Rules;

/// The setting whose folder holds the generated development key.
const DATA_DIR: &str = "DATA_DIR";

/// File name of the generated development key inside `DATA_DIR`.
pub const GENERATED_KEY_FILE: &str = "signing-key.pem";

enum KeyPair {
    Rsa(Arc<RsaKeyPair>),
    Ec(EcdsaKeyPair),
}

struct SigningKey {
    pair: KeyPair,
    alg: &'static str,
    kid: String,
    /// base64url of the JOSE header, computed once.
    header_b64: String,
    /// The key's metadata line, when the file has them.
    meta: Option<keyfile::Meta>,
}

/// Signs with the local key the key file's states name for the moment ([`states`]) and
/// publishes all of them. The compiled file is swapped whole when it changes
/// ([`LocalSigner::watch`]), so rotation needs no restart.
pub struct LocalSigner {
    current: ArcSwap<KeySet>,
    rules: Rules,
    clock: Clock,
    rng: SystemRandom,
    rsa: Option<RsaPool>,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.current.load();
        let key = set.signer_at(self.clock.now());
        write!(f, "LocalSigner {{ alg: {}, kid: {} }}", key.alg, key.kid)
    }
}

/// Problems of a key file as one phrase.
fn joined(problems: &[String]) -> String {
    problems.join("; ")
}

impl LocalSigner {
    fn new(set: KeySet, rules: Rules, clock: Clock) -> Self {
        Self {
            current: ArcSwap::from_pointee(set),
            rules,
            clock,
            rng: SystemRandom::new(),
            rsa: None,
        }
    }

    /// Loads every PKCS#8 private key of a PEM document, with the default rules and the
    /// system clock. `origin` names the source in errors (`origin: problem`).
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<Self, StartupError> {
        Self::from_pem_with(pem, Rules::default(), Clock::system())
            .map_err(|problems| StartupError::other(format!("{origin}: {}", joined(&problems))))
    }

    /// [`LocalSigner::from_pem`] with `rules` and `clock`; every problem found.
    pub fn from_pem_with(pem: &[u8], rules: Rules, clock: Clock) -> Result<Self, Vec<String>> {
        let set = KeySet::parse(pem, clock.now(), &rules)?;
        Ok(Self::new(set, rules, clock))
    }

    /// Reads a key file, without checking who may read or change it; each problem names
    /// `setting` and the file.
    pub fn from_file(
        path: &Path,
        setting: &'static str,
        rules: Rules,
    ) -> Result<Self, Vec<StartupError>> {
        let shown = path.display();
        let pem = fs::read(path).map_err(|e| {
            vec![StartupError::setting(
                setting,
                format!("cannot read '{shown}': {e}"),
            )]
        })?;
        Self::from_pem_with(&pem, rules, Clock::system()).map_err(|problems| {
            problems
                .iter()
                .map(|p| StartupError::setting(setting, format!("'{shown}': {p}")))
                .collect()
        })
    }

    /// Reads the operator's key file (`SIGNING_KEY_FILE`), refusing one that other users can
    /// change: writable by group or others, in a folder they can write (without the sticky
    /// bit), or owned by a user other than this one or root; and one that breaks a rule of the
    /// key states (one error each). Returns a warning when every user may read it
    /// (Kubernetes' default secret mode 0644).
    pub fn from_key_file(
        path: &Path,
        rules: Rules,
    ) -> Result<(Self, Vec<String>), Vec<StartupError>> {
        let warnings = files::check_key_file(path).map_err(|e| vec![e])?;
        Ok((Self::from_file(path, "SIGNING_KEY_FILE", rules)?, warnings))
    }

    /// Loads the development key from `data_dir`, generating an RSA-2048 key there (mode 0600,
    /// written atomically) on first start. Returns the signer, the key's path and whether it
    /// was generated now. Refuses a `DATA_DIR` other users can write and a key file other
    /// users can read or write, or that another user owns.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Self, PathBuf, bool), StartupError> {
        let path = data_dir.join(GENERATED_KEY_FILE);
        files::check_data_dir(data_dir)?;
        if path.exists() {
            files::check_generated_key(&path)?;
            let signer = Self::from_file(&path, DATA_DIR, Rules::default()).map_err(|e| {
                let problems: Vec<String> = e.into_iter().map(|e| e.problem).collect();
                StartupError::setting(DATA_DIR, format!(
                    "{}; if you did not put it there it is left from an interrupted first start: delete '{}' and a new key is generated at the next start (tokens signed by the old one stop verifying), or set SIGNING_KEY_FILE",
                    joined(&problems),
                    path.display()
                ))
            })?;
            return Ok((signer, path, false));
        }
        let generated = |problem: &str| StartupError::setting(DATA_DIR, problem);
        let pem = generate_pem(false).map_err(generated)?;
        write_atomic(&path, pem.as_bytes(), DATA_DIR)?;
        let signer = Self::from_pem_with(pem.as_bytes(), Rules::default(), Clock::system())
            .map_err(|problems| generated(&format!("the generated key: {}", joined(&problems))))?;
        Ok((signer, path, true))
    }

    /// Starts the threads that make RSA signatures, one per core, under `background`, so
    /// shutdown ends them; a file of EC keys needs none. Until then, when the OS gives no
    /// thread, or when a reload brings the first RSA key, RSA signatures are made inline
    /// (slower under load, still correct).
    pub fn start(&mut self, background: &Background) {
        if self.rsa.is_none() && self.current.load().has_rsa() {
            self.rsa = RsaPool::start(background);
        }
    }

    /// The compiled key file in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Replaces the keys with those of `pem` when it compiles and keeps the reload rules
    /// (see [`states::reload_problems`]); otherwise keeps the keys in force and returns every
    /// problem. Returns the new keys' summary.
    pub fn reload(&self, pem: &[u8]) -> Result<String, Vec<String>> {
        let now = self.clock.now();
        let next = self.current.load().reloaded(pem, now, &self.rules)?;
        let summary = next.summary(now);
        self.current.store(Arc::new(next));
        Ok(summary)
    }

    /// Watches `path` every `interval` (a thread of `background`) and reloads the keys when
    /// the file changes. A version that is unsafe, unreadable or breaks a rule is logged once
    /// and the keys in force stay; it is tried again every `interval` until it loads, since
    /// some rules are about time (a retired key dropped early loads once it may go).
    pub fn watch(self: &Arc<Self>, path: PathBuf, interval: Duration, background: &Background) {
        let signer = Arc::downgrade(self);
        let spawned = background.spawn_thread("signing-keys-watch", move |stop| {
            let files = [path.clone()];
            let mut seen = crate::watch::stamps(&files);
            let mut refused: Option<Vec<String>> = None;
            while !stop.sleep(interval) {
                let now = crate::watch::stamps(&files);
                if now == seen && refused.is_none() {
                    continue;
                }
                seen = now;
                let Some(signer) = signer.upgrade() else {
                    return;
                };
                refused = signer.reload_file(&path, refused.take());
            }
        });
        if let Err(e) = spawned {
            tracing::error!(
                event = "watch_failed",
                "cannot start the thread that watches SIGNING_KEY_FILE: {e}; a changed file is not reloaded until a restart"
            );
        }
    }

    /// One reload attempt of `path`; the problems when refused, logged unless they are those
    /// of the previous attempt (`refused`).
    fn reload_file(&self, path: &Path, refused: Option<Vec<String>>) -> Option<Vec<String>> {
        let shown = path.display();
        let outcome = files::check_key_file(path)
            .map_err(|e| vec![e.problem])
            .and_then(|_| fs::read(path).map_err(|e| vec![format!("cannot read it: {e}")]))
            .and_then(|pem| self.reload(&pem));
        match outcome {
            Ok(summary) => {
                tracing::info!(
                    event = "signing_keys_reloaded",
                    "SIGNING_KEY_FILE '{shown}' reloaded: {summary}"
                );
                None
            }
            Err(problems) => {
                if refused.as_ref() != Some(&problems) {
                    tracing::error!(
                        event = "signing_keys_reload_failed",
                        "SIGNING_KEY_FILE '{shown}' not reloaded, the keys in force stay (tried again every TLS_RELOAD_INTERVAL): {}",
                        joined(&problems)
                    );
                }
                Some(problems)
            }
        }
    }
}

#[async_trait]
impl Signer for LocalSigner {
    fn algorithm(&self) -> &str {
        self.current.load().signer_at(self.clock.now()).alg
    }

    fn algorithms(&self) -> Vec<&str> {
        let set = self.current.load();
        let mut algorithms = vec![set.signer_at(self.clock.now()).alg];
        for key in &set.keys {
            if !algorithms.contains(&key.alg) {
                algorithms.push(key.alg);
            }
        }
        algorithms
    }

    fn key_id(&self) -> Option<String> {
        Some(self.current.load().signer_at(self.clock.now()).kid.clone())
    }

    fn publication(&self) -> Option<Publication> {
        Some(self.current.load().publication.clone())
    }

    /// Local keys need no upstream: the deadline does not apply.
    async fn sign(
        &self,
        claims: &Map<String, Value>,
        _deadline: Deadline,
    ) -> Result<String, Failure> {
        let payload = serde_json::to_vec(claims)
            .map_err(|e| signing_failed(&format!("encoding the claims failed: {e}")))?;
        let set = self.current.load_full();
        let key = set.signer_at(self.clock.now());
        let mut jwt = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 400);
        jwt.push_str(&key.header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        let signature = match &key.pair {
            KeyPair::Rsa(pair) => match &self.rsa {
                Some(pool) => pool.sign(pair.clone(), jwt.as_bytes().to_vec()).await?,
                None => {
                    let mut sig = vec![0; pair.public_modulus_len()];
                    pair.sign(&RSA_PKCS1_SHA256, &self.rng, jwt.as_bytes(), &mut sig)
                        .map_err(|_| signing_failed("RSA signing failed"))?;
                    sig
                }
            },
            KeyPair::Ec(pair) => pair
                .sign(&self.rng, jwt.as_bytes())
                .map_err(|_| signing_failed("ECDSA signing failed"))?
                .as_ref()
                .to_vec(),
        };
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        Ok(jwt)
    }
}

/// Whether a PEM document holds an RSA key (then the signer starts its RSA threads).
pub fn any_key_is_rsa(pem: &[u8]) -> bool {
    let mut reader = pem;
    while let Ok(Some((kind, der))) = rustls_pki_types::pem::from_buf(&mut reader) {
        if kind == SectionKind::PrivateKey && RsaKeyPair::from_pkcs8(&der).is_ok() {
            return true;
        }
    }
    false
}

/// Writes `contents` to `path` (mode 0600) so that a crash or a full disk never leaves a
/// half-written file behind: into a new temporary file in the same folder, fsync, rename over
/// `path`, fsync the folder. Creates the folder (mode 0700) when missing. A temporary file left
/// by an interrupted earlier write (`.NAME.tmp-*`, older than a minute, so never a concurrent
/// writer's) is removed. `setting` names the setting in errors. The one way Token Service
/// writes files: the generated signing key and the development PKI.
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    setting: &'static str,
) -> Result<(), WriteError> {
    write_like(path, contents, setting, None)
}

/// [`write_atomic`] of a new version of the file at `path`, with its owner, group and mode
/// (never writable by group or others): a key file rewritten by `sudo token-service keys …
/// --write` stays readable by the service that reads it.
pub(crate) fn rewrite_atomic(
    path: &Path,
    contents: &[u8],
    setting: &'static str,
) -> Result<(), WriteError> {
    write_like(path, contents, setting, fs::metadata(path).ok().as_ref())
}

/// The new file takes `like`'s owner, group and mode when given (unix), else mode 0600.
fn write_like(
    path: &Path,
    contents: &[u8],
    setting: &'static str,
    like: Option<&fs::Metadata>,
) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |step: WriteStep, target: &Path, source: std::io::Error| WriteError {
        setting,
        step,
        path: target.to_path_buf(),
        source,
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| fail(WriteStep::CreateFolder, dir, e))?;
    let prefix = format!(".{name}.tmp-");
    remove_stale_temporaries(dir, &prefix);
    // Only needs to differ between writers of one process: random bytes, no clock.
    let mut nonce = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut nonce);
    let nonce = u32::from_le_bytes(nonce);
    let temporary = dir.join(format!("{prefix}{}-{nonce}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&temporary)
        .and_then(|mut file| {
            #[cfg(unix)]
            if let Some(like) = like {
                use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
                let mine = file.metadata()?;
                if (mine.uid(), mine.gid()) != (like.uid(), like.gid()) {
                    std::os::unix::fs::fchown(&file, Some(like.uid()), Some(like.gid()))?;
                }
                file.set_permissions(fs::Permissions::from_mode(like.mode() & 0o644))?;
            }
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(fail(WriteStep::Write, path, e));
    }
    // The rename is durable only once the folder's entry is on disk.
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(WriteStep::SyncFolder, dir, e))?;
    Ok(())
}

/// A file [`write_atomic`] could not write: which step failed on which path, and the setting
/// (or part, e.g. `development PKI`) the file belongs to. Shown as `SETTING: cannot STEP
/// 'PATH': ERROR`.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: cannot {step} '{}': {source}", path.display())]
pub struct WriteError {
    setting: &'static str,
    step: WriteStep,
    path: PathBuf,
    source: std::io::Error,
}

/// The step of [`write_atomic`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum WriteStep {
    #[error("create the folder")]
    CreateFolder,
    #[error("write")]
    Write,
    #[error("sync the folder")]
    SyncFolder,
}

impl From<WriteError> for StartupError {
    /// The setting at fault, and `cannot STEP 'PATH': ERROR` as the problem.
    fn from(e: WriteError) -> Self {
        StartupError::setting(
            e.setting,
            format!("cannot {} '{}': {}", e.step, e.path.display(), e.source),
        )
    }
}

/// Removes `prefix*` files older than a minute: temporary files of writes that never finished.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry
                .metadata()
                .ok()
                .filter(fs::Metadata::is_file)
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Who may change or read the key files: checks on Unix, nothing elsewhere.
pub mod files;

#[cfg(test)]
mod tests;
