//! The CRLs in force: those of `TLS_CLIENT_CRL_FILE` and those fetched from URLs together, one
//! per scope (issuer and issuingDistributionPoint): of two CRLs of one scope, from the file and
//! a URL or twice from the file, the newer wins (CRL number, then thisUpdate; the file's on a
//! tie). The chain verifier takes the first CRL of an issuer that it finds, so an older CRL
//! kept beside a newer one could be the one consulted.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::Fetched;
use crate::x509::revocation::{CrlInfo, LoadedCrls, bundle_signer};

/// `file`'s CRLs and `fetched`, the newer of each scope kept; `None` when there is none.
/// A fetched CRL that names a CA of `bundle` as issuer must carry that CA's signature (it did
/// when fetched; the bundle may have changed since), else it is left out with a warning.
pub fn newest(
    file: Option<LoadedCrls>,
    fetched: &[Fetched],
    bundle: &[CertificateDer<'_>],
) -> Option<LoadedCrls> {
    let mut all = file.unwrap_or(LoadedCrls {
        crls: Vec::new(),
        info: Vec::new(),
        warnings: Vec::new(),
        signers: Vec::new(),
    });
    let cas: Vec<(usize, X509Certificate<'_>)> = bundle
        .iter()
        .enumerate()
        .filter_map(|(i, der)| X509Certificate::from_der(der).ok().map(|(_, c)| (i, c)))
        .collect();
    for f in fetched {
        let Ok((_, crl)) = CertificateRevocationList::from_der(&f.der) else {
            continue;
        };
        let issuers: Vec<&(usize, X509Certificate<'_>)> = cas
            .iter()
            .filter(|(_, ca)| ca.subject().as_raw() == crl.issuer().as_raw())
            .collect();
        let signer = if issuers.is_empty() {
            None
        } else if let Ok(index) = bundle_signer(&crl, &issuers) {
            Some(index)
        } else {
            all.warnings.push(format!(
                "the CRL of '{}' from {} no longer verifies with a CA of TLS_CLIENT_CA_FILE; it is not used",
                crl.issuer(),
                f.url
            ));
            continue;
        };
        all.info.push(CrlInfo::of(&crl, f.url.clone()));
        all.crls.push(f.der.clone());
        all.signers.push(signer);
    }
    if all.crls.is_empty() {
        return None;
    }
    Some(keep_newest(all))
}

/// `all` with only the newest CRL of each scope, in their first order.
fn keep_newest(all: LoadedCrls) -> LoadedCrls {
    let mut winners: Vec<usize> = Vec::new();
    for (i, info) in all.info.iter().enumerate() {
        match winners
            .iter_mut()
            .find(|w| all.info[**w].scope == info.scope)
        {
            Some(w) if info.newer_than(&all.info[*w]) => *w = i,
            Some(_) => {}
            None => winners.push(i),
        }
    }
    let LoadedCrls {
        crls,
        info,
        warnings,
        signers,
    } = all;
    let mut out = LoadedCrls {
        crls: Vec::new(),
        info: Vec::new(),
        warnings,
        signers: Vec::new(),
    };
    for (i, ((crl, info), signer)) in crls.into_iter().zip(info).zip(signers).enumerate() {
        if winners.contains(&i) {
            out.crls.push(crl);
            out.info.push(info);
            out.signers.push(signer);
        }
    }
    out
}
