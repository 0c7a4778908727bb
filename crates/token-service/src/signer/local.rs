//! Signing with local private keys: a PEM file of PKCS#8 keys (RSA ≥ 2048 bits → RS256, EC
//! P-256 → ES256), or a development key generated on first start. The first key signs; all are
//! published, so rotation is "add the new key, let caches see it, move it first, drop the old
//! one a token lifetime later".
//!
//! Keys are parsed once into aws-lc-rs key pairs: re-parsing per token (as a generic JWT
//! library does) costs more than the signature itself.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::SectionKind;
use serde_json::{Map, Value, json};

use super::{Publication, Signer};
use crate::clock::Deadline;
use crate::error::{Failure, StartupError};
use crate::tasks::Background;

/// The setting whose folder holds the generated development key.
const DATA_DIR: &str = "DATA_DIR";

/// File name of the generated development key inside `DATA_DIR`.
pub const GENERATED_KEY_FILE: &str = "signing-key.pem";

enum KeyPair {
    Rsa(Arc<RsaKeyPair>),
    Ec(EcdsaKeyPair),
}

/// What the RSA signing threads are sent.
enum RsaJob {
    /// Sign this input and send the signature (`None` if signing failed) back.
    Sign(Vec<u8>, tokio::sync::oneshot::Sender<Option<Vec<u8>>>),
    /// Shutdown has begun: the thread that takes this ends.
    Quit,
}

/// Threads that make RSA signatures (about 0.25 ms each for RSA-2048), one per core, so the
/// async workers never block on them and no worker hands its core over per signature (as
/// `block_in_place` would). They belong to the service's [`Background`]: at shutdown one more
/// thread of it sends each a [`RsaJob::Quit`] (behind the signatures already queued), so
/// `Background::shutdown` joins them.
struct RsaPool {
    /// One queue for all threads: a signature goes to whichever thread is free first, so a
    /// thread that the scheduler set aside does not hold up the jobs queued behind it.
    jobs: mpsc::Sender<RsaJob>,
}

impl RsaPool {
    /// Starts the threads under `background`; `None` when the OS gives none.
    fn start(pair: &Arc<RsaKeyPair>, background: &Background) -> Option<Self> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let (jobs, queue) = mpsc::channel::<RsaJob>();
        // The stopper first: a signing thread that nothing tells to end would hold up shutdown.
        let quit = jobs.clone();
        background
            .spawn_thread("rsa-signer-stop", move |stop| {
                while !stop.sleep(Duration::from_secs(3600)) {}
                for _ in 0..threads {
                    let _ = quit.send(RsaJob::Quit);
                }
            })
            .ok()?;
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for i in 0..threads {
            let (queue, pair) = (queue.clone(), pair.clone());
            let spawned = background.spawn_thread(&format!("rsa-signer-{i}"), move |_stop| {
                sign_jobs(&queue, &pair);
            });
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then_some(Self { jobs })
    }

    async fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let (reply, signature) = tokio::sync::oneshot::channel();
        self.jobs
            .send(RsaJob::Sign(message, reply))
            .map_err(|_| signing_failed("the RSA signing threads stopped"))?;
        signature
            .await
            .ok()
            .flatten()
            .ok_or_else(|| signing_failed("RSA signing failed"))
    }
}

/// The loop of one RSA signing thread: signs what the queue holds until it takes a
/// [`RsaJob::Quit`] (or every sender is gone).
fn sign_jobs(queue: &Mutex<mpsc::Receiver<RsaJob>>, pair: &RsaKeyPair) {
    let rng = SystemRandom::new();
    loop {
        // The thread holding the lock waits for the next job; the others wait for the lock.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(RsaJob::Sign(message, reply)) = job else {
            return;
        };
        // A panic fails this one signature, never the thread: the pool must outlive anything
        // a single job does.
        let signed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, &message, &mut sig)
                .ok()
                .map(|()| sig)
        }))
        .ok()
        .flatten();
        let _ = reply.send(signed);
    }
}

/// A local signature that could not be made: a fault of this service, never of the client.
fn signing_failed(detail: &str) -> Failure {
    Failure::server("The token could not be signed; this is a fault of the service, retry later")
        .with_detail(detail)
}

struct SigningKey {
    pair: KeyPair,
    alg: &'static str,
    kid: String,
    /// base64url of the JOSE header, computed once.
    header_b64: String,
}

/// Signs with the first of a list of local keys and publishes all of them.
pub struct LocalSigner {
    signing: SigningKey,
    publication: Publication,
    rng: SystemRandom,
    rsa: Option<RsaPool>,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalSigner {{ alg: {}, kid: {} }}",
            self.signing.alg, self.signing.kid
        )
    }
}

impl LocalSigner {
    /// Loads every PKCS#8 private key of a PEM document. `origin` names the source in errors
    /// (`origin: problem`).
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<Self, StartupError> {
        Self::parse(pem).map_err(|problem| StartupError::other(format!("{origin}: {problem}")))
    }

    /// The signer of a PEM document, or what is wrong with the document (a plain message: the
    /// caller adds which setting and file it came from).
    fn parse(pem: &[u8]) -> Result<Self, BadKey> {
        let mut reader = pem;
        let mut keys = Vec::new();
        let mut block = 0;
        loop {
            let section = rustls_pki_types::pem::from_buf(&mut reader)
                .map_err(|e| BadKey(format!("not a readable PEM file ({e})")))?;
            let Some((kind, der)) = section else { break };
            block += 1;
            match kind {
                SectionKind::PrivateKey => {
                    keys.push(parse_pkcs8(&der).map_err(|e| BadKey(format!("key {block}: {e}")))?);
                }
                SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                    return Err(BadKey(format!(
                        "PEM block {block} is a PKCS#1/SEC1 key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`"
                    )));
                }
                _ => {}
            }
        }
        Self::from_keys(keys).ok_or_else(|| {
            BadKey(
                "no 'PRIVATE KEY' (PKCS#8) block found; expected RSA ≥ 2048 bits or EC P-256 keys"
                    .to_owned(),
            )
        })
    }

    /// Reads a key file, without checking who may read or change it; a problem names
    /// `setting` and the file.
    pub fn from_file(path: &Path, setting: &str) -> Result<Self, StartupError> {
        let shown = path.display();
        let pem = fs::read(path)
            .map_err(|e| StartupError::setting(setting, format!("cannot read '{shown}': {e}")))?;
        Self::parse(&pem)
            .map_err(|problem| StartupError::setting(setting, format!("'{shown}': {problem}")))
    }

    /// Reads the operator's key file (`SIGNING_KEY_FILE`), refusing one that other users can
    /// change: writable by group or others, in a folder they can write (without the sticky
    /// bit), or owned by a user other than this one or root. Returns a warning when every user
    /// may read it (Kubernetes' default secret mode 0644).
    pub fn from_key_file(path: &Path) -> Result<(Self, Vec<String>), StartupError> {
        let warnings = files::check_key_file(path)?;
        Ok((Self::from_file(path, "SIGNING_KEY_FILE")?, warnings))
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
            let signer = Self::from_file(&path, DATA_DIR).map_err(|mut e| {
                e.problem = format!(
                    "{}; if you did not put it there it is left from an interrupted first start: delete '{}' and a new key is generated at the next start (tokens signed by the old one stop verifying), or set SIGNING_KEY_FILE",
                    e.problem,
                    path.display()
                );
                e
            })?;
            return Ok((signer, path, false));
        }
        let generated = |problem: &str| StartupError::setting(DATA_DIR, problem);
        let pem = generate_rsa_pem().map_err(generated)?;
        write_atomic(&path, pem.as_bytes(), DATA_DIR)?;
        let signer = Self::parse(pem.as_bytes())
            .map_err(|problem| generated(&format!("the generated key: {problem}")))?;
        Ok((signer, path, true))
    }

    fn from_keys(keys: Vec<SigningKey>) -> Option<Self> {
        let jwks: Vec<Value> = keys.iter().map(public_jwk).collect::<Vec<_>>();
        let signing = keys.into_iter().next()?;
        Some(Self {
            signing,
            publication: Publication::Jwks(json!({ "keys": jwks })),
            rng: SystemRandom::new(),
            rsa: None,
        })
    }

    /// Starts the threads that make RSA signatures, one per core, under `background`, so
    /// shutdown ends them; an EC key needs none. Until then, or when the OS gives no thread,
    /// RSA signatures are made inline (slower under load, still correct).
    pub fn start(&mut self, background: &Background) {
        if let (KeyPair::Rsa(pair), None) = (&self.signing.pair, &self.rsa) {
            self.rsa = RsaPool::start(pair, background);
        }
    }
}

#[async_trait]
impl Signer for LocalSigner {
    fn algorithm(&self) -> &str {
        self.signing.alg
    }

    fn key_id(&self) -> Option<&str> {
        Some(&self.signing.kid)
    }

    fn publication(&self) -> Option<&Publication> {
        Some(&self.publication)
    }

    /// Local keys need no upstream: the deadline does not apply.
    async fn sign(
        &self,
        claims: &Map<String, Value>,
        _deadline: Deadline,
    ) -> Result<String, Failure> {
        let payload = serde_json::to_vec(claims)
            .map_err(|e| signing_failed(&format!("encoding the claims failed: {e}")))?;
        let key = &self.signing;
        let mut jwt = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 400);
        jwt.push_str(&key.header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        let signature = match &key.pair {
            KeyPair::Rsa(pair) => match &self.rsa {
                Some(pool) => pool.sign(jwt.as_bytes().to_vec()).await?,
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

/// Whether the first PKCS#8 key of a PEM document (the one that signs) is an RSA key.
pub fn first_key_is_rsa(pem: &[u8]) -> bool {
    let mut reader = pem;
    while let Ok(Some((kind, der))) = rustls_pki_types::pem::from_buf(&mut reader) {
        if kind == SectionKind::PrivateKey {
            return RsaKeyPair::from_pkcs8(&der).is_ok();
        }
    }
    false
}

/// What is wrong with a PEM key document, as a phrase; the caller names the setting, file and
/// block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct BadKey(String);

/// The signing key of one PKCS#8 block, or what is wrong with it (a plain message: the caller
/// names the setting, file and block).
fn parse_pkcs8(der: &[u8]) -> Result<SigningKey, BadKey> {
    let pair = match RsaKeyPair::from_pkcs8(der) {
        Ok(rsa) if rsa.public_modulus_len() * 8 >= 2048 => KeyPair::Rsa(Arc::new(rsa)),
        Ok(rsa) => {
            return Err(BadKey(format!(
                "RSA key of {} bits is too short; at least 2048 bits are required",
                rsa.public_modulus_len() * 8
            )));
        }
        Err(_) => match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            Ok(ec) => KeyPair::Ec(ec),
            Err(_) => {
                return Err(BadKey(
                    "neither an RSA (≥ 2048 bits) nor an EC P-256 private key".into(),
                ));
            }
        },
    };
    let alg = match pair {
        KeyPair::Rsa(_) => "RS256",
        KeyPair::Ec(_) => "ES256",
    };
    let kid = thumbprint(&pair);
    let header = json!({ "alg": alg, "kid": kid, "typ": "JWT" }).to_string();
    Ok(SigningKey {
        pair,
        alg,
        kid,
        header_b64: URL_SAFE_NO_PAD.encode(header),
    })
}

/// The public members of a key, in the lexical order RFC 7638 needs for thumbprints.
fn members(pair: &KeyPair) -> Vec<(&'static str, String)> {
    match pair {
        KeyPair::Rsa(rsa) => {
            let c = PublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
            vec![
                ("e", URL_SAFE_NO_PAD.encode(strip_zeros(&c.e))),
                ("kty", "RSA".into()),
                ("n", URL_SAFE_NO_PAD.encode(strip_zeros(&c.n))),
            ]
        }
        KeyPair::Ec(ec) => {
            // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = ec.public_key().as_ref();
            let (x, y) = point
                .get(1..)
                .unwrap_or_default()
                .split_at(point.len().saturating_sub(1) / 2);
            vec![
                ("crv", "P-256".into()),
                ("kty", "EC".into()),
                ("x", URL_SAFE_NO_PAD.encode(x)),
                ("y", URL_SAFE_NO_PAD.encode(y)),
            ]
        }
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url), used as `kid`.
fn thumbprint(pair: &KeyPair) -> String {
    thumbprint_of(members(pair))
}

fn thumbprint_of(members: Vec<(&'static str, String)>) -> String {
    let mut canonical = Map::new();
    for (k, v) in members {
        canonical.insert(k.to_owned(), Value::String(v));
    }
    // serde_json's Map is ordered by key, which is exactly the canonical order.
    let text = Value::Object(canonical).to_string();
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

fn public_jwk(key: &SigningKey) -> Value {
    let mut jwk = Map::new();
    for (k, v) in members(&key.pair) {
        jwk.insert(k.to_owned(), Value::String(v));
    }
    jwk.insert("kid".into(), Value::String(key.kid.clone()));
    jwk.insert("alg".into(), Value::String(key.alg.into()));
    jwk.insert("use".into(), Value::String("sig".into()));
    Value::Object(jwk)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

/// A new RSA-2048 key as PKCS#8 PEM; on failure, what failed.
fn generate_rsa_pem() -> Result<String, &'static str> {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed")?;
    let der = pair
        .as_der()
        .map_err(|_| "encoding the generated key failed")?;
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
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
