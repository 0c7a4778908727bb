//! The TLS listener: rustls (TLS 1.2 and 1.3, ALPN h2 and http/1.1) with client certificates
//! requested but optional, so verifiers can read discovery and JWKS without one. The handshake
//! checks only proof of possession of the client's key; the chain itself is verified on every
//! `/token` request by the flow (see `x509`), which can then answer with a precise reason
//! instead of a bare handshake failure. Server certificate, CA bundle and CRLs are re-read when
//! their files change, without dropping open connections; a broken new file is refused and the
//! old material stays in use.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DistinguishedName, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::readiness::NotReady;
use crate::x509::Trust;

pub(crate) mod settings;
pub use settings::TlsSettings;

/// Accepts any client certificate at the TLS layer but checks the handshake signature made
/// with its key (proof of possession). Chain, validity, EKU and revocation are checked per
/// request against the current trust material.
#[derive(Debug)]
struct PossessionVerifier {
    trust: Option<Arc<Trust>>,
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for PossessionVerifier {
    fn offer_client_auth(&self) -> bool {
        self.trust.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        match &self.trust {
            Some(trust) => trust.verify_signature(false, message, cert, dss),
            None => Err(rustls::Error::General(
                "client certificates are not accepted".into(),
            )),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        match &self.trust {
            Some(trust) => trust.verify_signature(true, message, cert, dss),
            None => Err(rustls::Error::General(
                "client certificates are not accepted".into(),
            )),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.trust
            .as_ref()
            .map(|t| t.supported_schemes())
            .unwrap_or_default()
    }
}

/// The server TLS configuration in force, reloadable.
pub struct TlsServer {
    settings: TlsSettings,
    trust: Option<Arc<Trust>>,
    config: ArcSwap<ServerConfig>,
    not_after: std::sync::atomic::AtomicI64,
    /// Where reloads are counted.
    metrics: Arc<Metrics>,
}

impl TlsServer {
    /// Loads the server certificate and key; reloads will be counted in `metrics`.
    pub fn load(
        settings: TlsSettings,
        trust: Option<Arc<Trust>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartupError> {
        let (config, not_after) = build_config(&settings, trust.as_ref())?;
        Ok(Self {
            settings,
            trust,
            config: ArcSwap::from_pointee(config),
            not_after: not_after.into(),
            metrics,
        })
    }

    /// Rebuilds from the files (trust first), swapping only when everything loads. The error
    /// is only logged: any error type of the parts will do.
    fn reload(&self) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        // The client trust material logs and counts its own outcome (`client_ca_*`), as it does
        // without a TLS listener; a refused one also refuses this reload.
        let trust = match &self.trust {
            Some(trust) => trust.reload_logged()?,
            None => "no client CA".into(),
        };
        let (config, not_after) = build_config(&self.settings, self.trust.as_ref())?;
        self.config.store(Arc::new(config));
        self.not_after
            .store(not_after, std::sync::atomic::Ordering::Relaxed);
        Ok(trust)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.settings.cert_file.clone(),
            self.settings.key_file.clone(),
        ];
        if let Some(trust) = &self.trust {
            files.extend(trust.files());
        }
        files
    }

    /// Whether the server certificate in force is valid at `now` (seconds since the epoch),
    /// for `/readyz`.
    pub fn readiness(&self, now: i64) -> Result<(), NotReady> {
        let not_after = self.not_after.load(std::sync::atomic::Ordering::Relaxed);
        if now > not_after {
            return Err(CertificateExpired { not_after }.into());
        }
        Ok(())
    }

    /// The configuration in force now, for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Watches the files and reloads when they change.
    pub fn watch(self: &Arc<Self>, background: &crate::tasks::Background) {
        let (files, server) = (self.clone(), self.clone());
        crate::watch::spawn(
            background,
            self.settings.reload_interval,
            move || files.files(),
            move || match server.reload() {
                Ok(summary) => {
                    server.metrics.reload("tls", true);
                    tracing::info!(event = "tls_reloaded", "reloaded TLS material: {summary}")
                }
                Err(e) => {
                    server.metrics.reload("tls", false);
                    tracing::error!(event = "tls_reload_failed", reason = %e, "refused new TLS material, keeping the old: {e}")
                }
            },
        );
    }
}

/// The server certificate in force is past its notAfter: `/readyz` answers 503 until a valid
/// one is loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the TLS server certificate in TLS_CERT_FILE expired at {not_after} (seconds since the epoch); replace the file"
)]
pub struct CertificateExpired {
    /// The certificate's notAfter, in seconds since the epoch.
    pub not_after: i64,
}

impl From<CertificateExpired> for NotReady {
    fn from(expired: CertificateExpired) -> Self {
        NotReady::new(expired)
    }
}

fn build_config(
    settings: &TlsSettings,
    trust: Option<&Arc<Trust>>,
) -> Result<(ServerConfig, i64), StartupError> {
    let cert_file = settings.cert_file.display();
    let cert = |problem: String| StartupError::setting("TLS_CERT_FILE", problem);
    let chain_pem = std::fs::read(&settings.cert_file)
        .map_err(|e| cert(format!("cannot read '{cert_file}': {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert(format!("'{cert_file}': {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(cert(format!("'{cert_file}' holds no PEM certificate")));
    };
    let not_after = crate::x509::facts(leaf)
        .ok()
        .and_then(|f| f.not_after)
        .ok_or_else(|| {
            cert(format!(
                "'{cert_file}': the first certificate cannot be parsed"
            ))
        })?;
    let key_file = settings.key_file.display();
    let key = |problem: String| StartupError::setting("TLS_KEY_FILE", problem);
    let key_pem = std::fs::read(&settings.key_file)
        .map_err(|e| key(format!("cannot read '{key_file}': {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| key(format!("'{key_file}' holds no usable PEM private key: {e}")))?;
    let verifier = PossessionVerifier {
        trust: trust.cloned(),
        hints: trust
            .map(|t| t.current().ca_subjects.clone())
            .unwrap_or_default(),
    };
    let mut config = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| StartupError::other(format!("TLS: {e}")))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .map_err(|e| StartupError::other(format!("TLS_CERT_FILE / TLS_KEY_FILE: the key does not fit the certificate or is unsupported: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Choose by the server's order (below), not the client's: clients commonly prefer
    // AES-256-GCM-SHA384, whose key schedule runs SHA-384, which most CPUs lack instructions for.
    // This also overrides a device without AES instructions that asks for ChaCha20 first; with
    // token exchanges of a few KiB, the bulk cipher's speed is noise next to the handshake.
    config.ignore_client_order = true;
    Ok((config, not_after))
}

/// rustls' default suites (same set, no additions), AES-128-GCM first: its SHA-256 key
/// schedule and transcript hash use the CPU's SHA extensions, where SHA-384 runs in software —
/// 8 % of the server's time per full handshake measured here (BENCHMARKS.md). Both AES-GCM
/// suites are equally acceptable by current guidance (128-bit security suffices for TLS).
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(suite_rank);
    Arc::new(provider)
}

fn suite_rank(suite: &rustls::SupportedCipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}
