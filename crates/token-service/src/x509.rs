//! Client-certificate verification and facts, shared by every flow that sees the certificate
//! itself (TLS terminated here, or forwarded whole by a proxy): the chain is verified against
//! the client CA bundle and CRLs (`TLS_CLIENT_CA_FILE`, `TLS_CLIENT_CRL_FILE`, and CRLs fetched
//! from `TLS_CLIENT_CRL_URLS` and distribution points, see `crl_fetch.rs`), its validity and
//! the clientAuth extended key usage, on every request and against the trust material current at
//! that moment, so a newly loaded CRL bites at once even on resumed TLS sessions.
//!
//! Facts use the encodings of Google's load balancer, so claims do not depend on where TLS
//! ended (`facts.rs`); which CA issued a leaf is `issuer.rs`; verification of a request's
//! chain and the cache of verdicts are `verify.rs`; a refused file or chain is a typed error of
//! `error.rs` (a `StartupError` or `Failure` through `From`). Uses `model`, `clock`, `error` and
//! `metrics`; knows nothing of flows, listeners or HTTP.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DistinguishedName};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::clock::Clock;
use crate::metrics::Metrics;

mod bundle;
pub mod chain;
mod client_id;
pub mod crl_fetch;
mod error;
mod facts;
mod issuer;
pub mod ocsp;
pub mod revocation;
pub mod spiffe;
pub mod twin;
mod verify;

pub use chain::{ChainError, MAX_INTERMEDIATES, Normalised, normalise};
pub use client_id::ClientIdAttribute;
use crl_fetch::CrlFetcher;
pub use error::{BundleError, Refusal, TrustError};
pub use facts::{facts, fingerprint, twin_fingerprint};
use issuer::{CaCert, unique};
pub use revocation::{ExpiredCrl, RevocationPolicy};
pub(crate) mod settings;
pub use settings::TrustSettings;
pub use verify::VerifiedChains;
use verify::describe;

/// One loaded version of the trust material.
pub struct TrustMaterial {
    /// Increases with every successful (re)load: what caches of verdicts hold instead of the
    /// material itself, so superseded material is freed at once.
    pub version: u64,
    verifier: Arc<dyn ClientCertVerifier>,
    /// Subjects of the CAs, sent as hints in the TLS CertificateRequest.
    pub ca_subjects: Vec<DistinguishedName>,
    /// Number of CAs and CRLs, for logs.
    pub summary: String,
    /// The CA certificates of the bundle, to name the issuer of a verified leaf.
    cas: Vec<CaCert>,
    /// The CAs of the bundle left out because their issuer's CRL lists them (with their
    /// subject), to name them when a chain would have used one.
    revoked_cas: Vec<(CaCert, String)>,
    /// The CRLs in force (DER), to name what a revocation hit.
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// One per CRL, for expiry warnings.
    crl_info: Vec<revocation::CrlInfo>,
    /// Where expired CRLs are counted.
    metrics: Arc<Metrics>,
    /// Earliest nextUpdate of the CRLs, so the per-request expiry check is one comparison.
    first_expiry: Option<i64>,
    policy: RevocationPolicy,
    /// The CA certificates of the bundle (DER), which fetched CRLs and the issuers of
    /// distribution points are checked against.
    bundle: Vec<Vec<u8>>,
}

impl TrustMaterial {
    /// Until when (seconds since the epoch) a verdict that `chain` verified against this material
    /// may be reused: the earliest notAfter of its certificates (an intermediate may expire
    /// before the leaf) and, with `TLS_CLIENT_CRL_EXPIRED=deny`, the earliest nextUpdate of the
    /// CRLs, after which the same chain may have to be refused without any file changing.
    pub fn verdict_valid_until(&self, chain: &[Vec<u8>]) -> i64 {
        let mut until = chain
            .iter()
            .filter_map(|der| X509Certificate::from_der(der).ok())
            .map(|(_, c)| c.validity().not_after.timestamp())
            .min()
            .unwrap_or(i64::MIN);
        if self.policy.expired == revocation::ExpiredCrl::Deny
            && let Some(first) = self.first_expiry
        {
            until = until.min(first);
        }
        until
    }

    /// SHA-256 fingerprints (as presented, and of its re-signed twin) of the CA certificate
    /// that issued the leaf of an already verified chain: the one CA certificate (of the
    /// bundle, else of the intermediates the client sent) whose subject is the leaf's issuer,
    /// whose key identifier matches the leaf's authority key identifier and whose key verifies
    /// the leaf's signature; an intermediate sent in both signature encodings counts once. `(None, None)` when that is not unique,
    /// so conditions on it fail closed.
    pub fn issuer_fingerprint(&self, chain: &[Vec<u8>]) -> (Option<String>, Option<String>) {
        let Some((_, leaf)) = chain
            .first()
            .and_then(|der| X509Certificate::from_der(der).ok())
        else {
            return (None, None);
        };
        let from_bundle: Vec<&CaCert> = self.cas.iter().filter(|c| c.issued(&leaf)).collect();
        let from_chain: Vec<CaCert> = chain
            .iter()
            .skip(1)
            .filter_map(|der| {
                let (_, cert) = X509Certificate::from_der(der).ok()?;
                Some(CaCert::of(&cert, der))
            })
            .filter(|c| c.issued(&leaf))
            .collect();
        if from_bundle.is_empty() {
            unique(from_chain.iter())
        } else {
            unique(from_bundle.into_iter())
        }
    }

    /// Verifies an already normalised chain (leaf first) against this material at `now`. A
    /// predicate: it neither logs nor counts (expired CRLs are noted at load, reload and by
    /// `/readyz`, see [`Trust::readiness_details`]).
    pub fn verify(&self, chain: &[Vec<u8>], now: UnixTime) -> Result<(), Refusal> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(ChainError::NoCertificate.into());
        };
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let verified = self
            .verifier
            .verify_client_cert(&leaf_der, &intermediates, now)
            .map(|_| ());
        // Without any CRL the verifier checks no revocation at all; with CRLs from URLs that
        // have not come in yet, TLS_CLIENT_CRL_REQUIRED=true still means "refuse".
        if verified.is_ok() && self.policy.required && self.crls.is_empty() {
            let unknown =
                rustls::Error::InvalidCertificate(CertificateError::UnknownRevocationStatus);
            return Err(describe(&unknown, self.policy));
        }
        verified.map_err(|e| match e {
            rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
                self.describe_revoked(chain)
            }
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => self
                .revoked_issuer(chain)
                .unwrap_or_else(|| describe(&e, self.policy)),
            e => describe(&e, self.policy),
        })
    }

    /// Logs (once per CRL and material) and counts the CRLs past their nextUpdate at `now`.
    fn note_expired(&self, now: i64) {
        if self.first_expiry.is_none_or(|t| now <= t) {
            return;
        }
        let mut expired = 0;
        let mut new = false;
        for crl in self.crl_info.iter().filter(|c| c.expired(now)) {
            expired += 1;
            if crl.first_warning() {
                new = true;
                let detail = crl.describe_expired(self.policy.expired);
                tracing::warn!(event = "client_crl_expired", issuer = %crl.issuer, "{detail}");
            }
        }
        if new {
            self.metrics.client_crls_expired(expired);
        }
    }

    /// Publishes the number of expired CRLs of this material, once it is the one in force.
    fn publish(&self, now: i64) {
        let expired = self.crl_info.iter().filter(|c| c.expired(now)).count();
        self.metrics.client_crls_expired(expired);
    }

    /// The expired CRLs at `now`, one sentence each (for `/readyz`).
    pub fn expired_crls(&self, now: i64) -> Vec<String> {
        self.crl_info
            .iter()
            .filter(|c| c.expired(now))
            .map(|c| c.describe_expired(self.policy.expired))
            .collect()
    }

    /// For a chain with no path to a trusted CA: the revoked bundle CA that issued one of its
    /// certificates, named in a sentence.
    fn revoked_issuer(&self, chain: &[Vec<u8>]) -> Option<Refusal> {
        chain.iter().find_map(|der| {
            let (_, cert) = X509Certificate::from_der(der).ok()?;
            let (_, subject) = self.revoked_cas.iter().find(|(ca, _)| ca.issued(&cert))?;
            Some(Refusal::IssuerRevoked(subject.clone()))
        })
    }

    /// Which certificate of `chain` a CRL lists: the leaf, or a CA certificate of its chain.
    fn describe_revoked(&self, chain: &[Vec<u8>]) -> Refusal {
        let crls: Vec<CertificateRevocationList<'_>> = self
            .crls
            .iter()
            .filter_map(|der| {
                CertificateRevocationList::from_der(der)
                    .ok()
                    .map(|(_, c)| c)
            })
            .collect();
        for (i, der) in chain.iter().enumerate() {
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                continue;
            };
            let listed = crls.iter().any(|crl| {
                crl.issuer().as_raw() == cert.issuer().as_raw()
                    && crl
                        .iter_revoked_certificates()
                        .any(|r| r.raw_serial() == cert.raw_serial())
            });
            if listed && i > 0 {
                return Refusal::IssuerRevoked(cert.subject().to_string());
            }
            if listed {
                break;
            }
        }
        Refusal::Revoked
    }
}

/// The current trust material; swapped atomically on reload.
pub struct Trust {
    settings: TrustSettings,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<TrustMaterial>,
    versions: AtomicU64,
    metrics: Arc<Metrics>,
    /// Chain verifications allowed to run at once for this material's users (see
    /// [`VerifiedChains`]): owned here, so two applications in one process bound theirs apart.
    verifications: Arc<tokio::sync::Semaphore>,
    /// The OCSP check after each verified chain (`TLS_CLIENT_OCSP`), see [`ocsp`].
    ocsp: Option<Arc<ocsp::Ocsp>>,
    /// CRLs from URLs, when `TLS_CLIENT_CRL_URLS` or `TLS_CLIENT_CRL_FOLLOW_CDP` ask for them.
    fetcher: Option<Arc<CrlFetcher>>,
    /// Held while a new version is built and stored, so a file reload and a fetched CRL never
    /// store an older build over a newer one.
    rebuilding: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trust({:?})", self.settings)
    }
}

/// The crypto provider used for TLS and verification.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Trust {
    /// Loads the trust material; fails naming the setting and the problem.
    /// Reloads and expired CRLs are counted in `metrics`.
    pub fn load(settings: TrustSettings, metrics: Arc<Metrics>) -> Result<Self, TrustError> {
        let provider = provider();
        let fetcher = if settings.fetch.enabled() {
            let (_, bundle) = bundle::read_bundle(&settings)?;
            let bundle: Vec<Vec<u8>> = bundle.iter().map(|c| c.to_vec()).collect();
            let fetcher = CrlFetcher::new(
                settings.fetch.clone(),
                &bundle,
                Clock::system(),
                metrics.clone(),
            )
            .map_err(TrustError::Fetcher)?;
            Some(Arc::new(fetcher))
        } else {
            None
        };
        let fetched = fetcher.as_ref().map(|f| f.snapshot()).unwrap_or_default();
        let material = Self::build(&settings, &provider, 1, &metrics, &fetched)?;
        let now = Clock::system().now();
        material.publish(now);
        material.note_expired(now);
        Ok(Self {
            settings,
            provider,
            current: ArcSwap::from_pointee(material),
            versions: AtomicU64::new(1),
            metrics,
            verifications: Arc::new(tokio::sync::Semaphore::new(verify::concurrency())),
            ocsp: None,
            fetcher,
            rebuilding: std::sync::Mutex::new(()),
        })
    }

    /// The permits of chain verifications for this trust material: half the CPUs, at least one.
    pub(crate) fn verifications(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.verifications
    }

    /// Re-reads the files; on success swaps the new material in, else keeps the old one.
    pub fn reload(&self) -> Result<String, TrustError> {
        let _building = self
            .rebuilding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let fetched = self
            .fetcher
            .as_ref()
            .map(|f| f.snapshot())
            .unwrap_or_default();
        let material = Self::build(
            &self.settings,
            &self.provider,
            version,
            &self.metrics,
            &fetched,
        )?;
        let summary = material.summary.clone();
        let now = Clock::system().now();
        material.publish(now);
        material.note_expired(now);
        self.current.store(Arc::new(material));
        Ok(summary)
    }

    /// Re-reads the files with the `client_ca_reloaded` / `client_ca_reload_failed` log line and
    /// reload metric; `Err` when the new material was refused.
    pub fn reload_logged(&self) -> Result<String, TrustError> {
        match self.reload() {
            Ok(summary) => {
                self.metrics.reload("client_ca", true);
                tracing::info!(
                    event = "client_ca_reloaded",
                    "reloaded client trust material: {summary}"
                );
                Ok(summary)
            }
            Err(e) => {
                self.metrics.reload("client_ca", false);
                tracing::error!(event = "client_ca_reload_failed", reason = %e, "refused new client trust material, keeping the old: {e}");
                Err(e)
            }
        }
    }

    /// For `/readyz`: one sentence per CRL in force that is past its nextUpdate.
    pub fn readiness_details(&self, now: i64) -> Vec<String> {
        self.current().expired_crls(now)
    }

    /// The files behind the material.
    pub fn settings(&self) -> &TrustSettings {
        &self.settings
    }

    /// The CA and CRL files, for change detection.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.settings.ca_file.clone()];
        files.extend(self.settings.crl_file.clone());
        files
    }

    /// Re-reads the CA bundle and CRLs whenever they change. Only needed without a TLS
    /// listener (forwarded certificates): the listener reloads them with its own files.
    pub fn watch(self: &Arc<Self>, background: &crate::tasks::Background) {
        let (files, trust) = (self.clone(), self.clone());
        crate::watch::spawn(
            background,
            self.settings.reload_interval,
            move || files.files(),
            move || {
                let _ = trust.reload_logged();
            },
        );
    }

    /// Notes CRLs that expire between reloads: every `TLS_RELOAD_INTERVAL`, logs each newly
    /// expired one once (`client_crl_expired`) and counts them, as a load or reload does. Token
    /// requests never do it (they only verify). Nothing to do without `TLS_CLIENT_CRL_FILE` or
    /// fetched CRLs.
    pub fn watch_expiry(self: &Arc<Self>, background: &crate::tasks::Background, clock: Clock) {
        if self.settings.crl_file.is_none() && !self.settings.fetch.enabled() {
            return;
        }
        let (trust, interval) = (self.clone(), self.settings.reload_interval);
        let spawned = background.spawn_thread("token-service-crl-expiry", move |stop| {
            while !stop.sleep(interval) {
                trust.current().note_expired(clock.now());
            }
        });
        if let Err(e) = spawned {
            tracing::error!(
                event = "watch_failed",
                "cannot start the thread that notes expired CRLs: {e}; they are logged and counted only at reloads"
            );
        }
    }

    /// The material in force now.
    pub fn current(&self) -> Arc<TrustMaterial> {
        self.current.load_full()
    }

    fn build(
        settings: &TrustSettings,
        provider: &Arc<CryptoProvider>,
        version: u64,
        metrics: &Arc<Metrics>,
        fetched: &[crl_fetch::Fetched],
    ) -> Result<TrustMaterial, TrustError> {
        let setting = error::CA_SETTING;
        let (cas, bundle) = bundle::read_bundle(settings)?;
        let (mut crls, mut crl_info, mut revoked) = (Vec::new(), Vec::new(), Vec::new());
        let file = match &settings.crl_file {
            Some(path) => Some(revocation::load(path, &bundle)?),
            None => None,
        };
        // The file's CRLs and the fetched ones, the newer of one CA's winning.
        let loaded = crl_fetch::merge::newest(file, fetched, &bundle);
        if let Some(loaded) = &loaded {
            for warning in &loaded.warnings {
                tracing::warn!(event = "client_crl_unchecked", "{warning}");
            }
            // The verifier never checks a trust anchor against a CRL, and every CA of the
            // bundle is an anchor: a bundle CA its issuer's CRL lists is left out instead.
            revoked = revocation::revoked_bundle_cas(&bundle, loaded);
        }
        let (roots, revoked_cas) = bundle::anchors(settings, &bundle, &revoked)?;
        let ca_subjects = roots.subjects();
        let ca_count = roots.len();
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if let Some(loaded) = loaded {
            builder = settings
                .revocation
                .apply(builder.with_crls(loaded.crls.clone()));
            (crls, crl_info) = (loaded.crls, loaded.info);
        }
        let verifier = builder.build().map_err(TrustError::Verifier)?;
        let first_expiry = crl_info.iter().filter_map(|c| c.next_update).min();
        for r in &revoked {
            tracing::warn!(
                event = "client_ca_revoked",
                ca = %r.subject,
                serial = %r.serial,
                "{setting}: CA certificate '{}' (serial {}) is left out of the trusted CAs: {}; clients whose chain uses it are refused; remove it from the bundle",
                r.subject,
                r.serial,
                r.reason
            );
        }
        let left_out = if revoked.is_empty() {
            String::new()
        } else {
            format!(" ({} more left out: revoked)", revoked.len())
        };
        let material = TrustMaterial {
            version,
            verifier,
            ca_subjects,
            summary: format!(
                "{ca_count} CA certificate(s){left_out}, {} CRL(s)",
                crls.len()
            ),
            cas,
            revoked_cas,
            crls,
            crl_info,
            metrics: metrics.clone(),
            first_expiry,
            policy: settings.revocation,
            bundle: bundle.iter().map(|c| c.to_vec()).collect(),
        };
        Ok(material)
    }

    /// Verifies a client chain (DER, leaf first) against the current material at `now`, after
    /// normalising it (see [`chain`]).
    pub fn verify(&self, chain: &[Vec<u8>], now: UnixTime) -> Result<(), Refusal> {
        let normalised = normalise(chain)?;
        self.current().verify(&normalised.chain, now)
    }

    /// [`TrustMaterial::issuer_fingerprint`] against the material in force now.
    pub fn issuer_fingerprint(&self, chain: &[Vec<u8>]) -> (Option<String>, Option<String>) {
        self.current().issuer_fingerprint(chain)
    }

    /// Checks proof of possession: the handshake signature with the leaf's key.
    pub fn verify_signature(
        &self,
        tls13: bool,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        if tls13 {
            rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        } else {
            rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
        }
    }

    /// Signature schemes accepted in the handshake.
    pub fn supported_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
