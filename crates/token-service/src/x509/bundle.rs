//! The client CA bundle (`TLS_CLIENT_CA_FILE`): its certificates, and the trust anchors made of
//! them once the CRLs have said which CAs are left out.

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::issuer::CaCert;
use super::{BundleError, TrustSettings, chain, revocation};

/// The CA bundle: its certificates (DER) and what names each as an issuer; refuses a
/// certificate that may not sign certificates.
pub(super) fn read_bundle(
    settings: &TrustSettings,
) -> Result<(Vec<CaCert>, Vec<CertificateDer<'static>>), BundleError> {
    let path = || settings.ca_file.clone();
    let pem = std::fs::read(&settings.ca_file).map_err(|error| BundleError::Read {
        path: path(),
        error,
    })?;
    let mut cas = Vec::new();
    let mut bundle = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let n = i + 1;
        let cert = cert.map_err(|error| BundleError::Pem {
            path: path(),
            n,
            error,
        })?;
        if let Ok((_, parsed)) = X509Certificate::from_der(&cert) {
            chain::may_sign_certificates(&parsed).map_err(|why| BundleError::MayNotSign {
                path: path(),
                n,
                subject: parsed.subject().to_string(),
                why,
            })?;
            cas.push(CaCert::of(&parsed, &cert));
        }
        bundle.push(cert);
    }
    Ok((cas, bundle))
}

/// The trust anchors: every CA of the bundle but those its issuer's CRL revokes (kept apart,
/// with their subject, to name them when a chain would have used one).
pub(super) fn anchors(
    settings: &TrustSettings,
    bundle: &[CertificateDer<'static>],
    revoked: &[revocation::RevokedCa],
) -> Result<(RootCertStore, Vec<(CaCert, String)>), BundleError> {
    let path = || settings.ca_file.clone();
    let mut roots = RootCertStore::empty();
    let mut revoked_cas = Vec::new();
    for (i, cert) in bundle.iter().enumerate() {
        if let Some(r) = revoked.iter().find(|r| r.index == i) {
            if let Ok((_, parsed)) = X509Certificate::from_der(cert) {
                revoked_cas.push((CaCert::of(&parsed, cert), r.subject.clone()));
            }
            continue;
        }
        roots
            .add(cert.clone())
            .map_err(|error| BundleError::NotUsable {
                path: path(),
                n: i + 1,
                error,
            })?;
    }
    if bundle.is_empty() {
        return Err(BundleError::Empty { path: path() });
    }
    if roots.is_empty() {
        return Err(BundleError::AllRevoked { path: path() });
    }
    Ok((roots, revoked_cas))
}
