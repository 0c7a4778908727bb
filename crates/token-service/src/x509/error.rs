//! The errors of the trust material: [`TrustError`] when the CA bundle or the CRL file is
//! refused (at startup a [`StartupError`] naming the setting the file came from; on reload the
//! `client_ca_reload_failed` line), and [`Refusal`] when a client chain does not verify (a
//! [`Failure`], 403, on the request path). Every text is a sentence a user acts on, unchanged
//! from when these were plain strings.

use std::path::PathBuf;

use super::chain::ChainError;
use super::revocation::CrlError;
use crate::error::{Failure, StartupError};

/// `TLS_CLIENT_CA_FILE`, the setting every [`BundleError`] is about.
pub const CA_SETTING: &str = "TLS_CLIENT_CA_FILE";

/// Why the CA bundle is refused; the text follows `TLS_CLIENT_CA_FILE: `.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file cannot be read.
    #[error("cannot read '{}': {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Certificate `n` (from 1) is broken PEM.
    #[error("'{}': certificate {n}: {error}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Which certificate, from 1.
        n: usize,
        /// Why.
        error: rustls_pki_types::pem::Error,
    },
    /// Certificate `n` may not sign certificates.
    #[error(
        "'{}': certificate {n} ('{subject}') {why}; remove it from the bundle or reissue it with keyCertSign",
        .path.display()
    )]
    MayNotSign {
        /// The file.
        path: PathBuf,
        /// Which certificate, from 1.
        n: usize,
        /// Its subject.
        subject: String,
        /// Why (from `chain::may_sign_certificates`).
        why: &'static str,
    },
    /// Certificate `n` is not a trust anchor webpki accepts.
    #[error("'{}': certificate {n} is not a usable CA: {error}", .path.display())]
    NotUsable {
        /// The file.
        path: PathBuf,
        /// Which certificate, from 1.
        n: usize,
        /// Why.
        error: rustls::Error,
    },
    /// No certificate at all.
    #[error("'{}' holds no PEM certificate", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Every CA is revoked by the CRL file.
    #[error(
        "'{}': every CA certificate in it is revoked by TLS_CLIENT_CRL_FILE, so no client certificate could be accepted; add a CA that is not revoked",
        .path.display()
    )]
    AllRevoked {
        /// The file.
        path: PathBuf,
    },
}

/// Why trust material was refused (at startup, by `policy explain --ca`, or on reload, when
/// the old material stays in force). Printed `SETTING: problem`.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA bundle.
    #[error("TLS_CLIENT_CA_FILE: {0}")]
    Bundle(#[from] BundleError),
    /// The CRL file.
    #[error("TLS_CLIENT_CRL_FILE: {0}")]
    Crl(#[from] CrlError),
    /// The two together did not make a verifier.
    #[error("TLS_CLIENT_CRL_FILE / TLS_CLIENT_CA_FILE: cannot build the verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
    /// The HTTP client of CRL downloads cannot be built.
    #[error("TLS_CLIENT_CRL_URLS: cannot build the HTTP client of CRL downloads: {0}")]
    Fetcher(String),
}

impl From<TrustError> for StartupError {
    /// The setting the refused file came from, and the problem; a verifier that the two files
    /// together do not make names both, as a problem of no single setting (as it always has).
    fn from(e: TrustError) -> Self {
        match e {
            TrustError::Bundle(e) => StartupError::setting(CA_SETTING, e.to_string()),
            TrustError::Crl(e) => StartupError::setting(super::revocation::SETTING, e.to_string()),
            e @ TrustError::Verifier(_) => StartupError::other(e.to_string()),
            TrustError::Fetcher(e) => StartupError::setting(
                "TLS_CLIENT_CRL_URLS",
                format!("cannot build the HTTP client of CRL downloads: {e}"),
            ),
        }
    }
}

/// Why a client chain does not verify against the trust material: a client-facing sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Refused before path building.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A CRL lists the client certificate.
    #[error("The client certificate has been revoked")]
    Revoked,
    /// A CRL lists a CA of its chain, or a bundle CA left out as revoked issued it (subject).
    #[error("The client certificate's issuing CA '{0}' has been revoked")]
    IssuerRevoked(String),
    /// What webpki found, as a phrase after "The client certificate " (`verify::describe`).
    #[error("The client certificate {0}")]
    Rejected(String),
    /// Like [`Refusal::Rejected`], for a refusal a CRL could still change: no CRL of a CA of
    /// the chain in force, or one past its nextUpdate (so fetching a distribution point may
    /// help; for any other refusal it cannot).
    #[error("The client certificate {0}")]
    RevocationUnknown(String),
}

impl Refusal {
    /// Whether a CRL not in force yet could change this refusal: one for want of a usable CRL,
    /// or a revocation (a newer CRL of that CA may supersede the one that lists it). Both are
    /// reached only on a path of verified signatures to the bundle.
    pub fn awaits_crl(&self) -> bool {
        matches!(
            self,
            Refusal::RevocationUnknown(_) | Refusal::Revoked | Refusal::IssuerRevoked(_)
        )
    }
}

impl From<Refusal> for Failure {
    /// 403 `unauthorized_client` with the sentence.
    fn from(e: Refusal) -> Self {
        Failure::unauthorized(e.to_string())
    }
}
