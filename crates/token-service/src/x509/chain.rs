//! What a client-supplied chain is reduced to before path building, so that the work spent on
//! it is bounded whatever the client sends: at most [`MAX_INTERMEDIATES`] certificates after the
//! leaf (more is refused outright), duplicates dropped, self-issued certificates dropped (trust
//! anchors come from `TLS_CLIENT_CA_FILE`, never from the client), and certificates that are not
//! on any issuer path from the leaf (by name) dropped. What remains is put in a canonical order,
//! so padding or reordering a chain yields the same normalised chain and the same cache key.
//!
//! An issuing CA on that path whose keyUsage extension is present without keyCertSign is
//! refused (RFC 5280 §4.2.1.3); one without a keyUsage extension is accepted.

use x509_parser::prelude::{FromDer, X509Certificate};

/// Most CA certificates a client may send after its own certificate.
pub const MAX_INTERMEDIATES: usize = 4;

/// A chain reduced to the leaf and the certificates that can be on its issuer path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    /// The leaf first, then the kept intermediates in canonical (byte) order.
    pub chain: Vec<Vec<u8>>,
    /// SHA-256 over the normalised chain, length-prefixed: the key of verification caches.
    pub key: [u8; 32],
}

/// Why a client's chain is refused before path building: a client-facing sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An empty chain.
    #[error("No client certificate was presented")]
    NoCertificate,
    /// More than [`MAX_INTERMEDIATES`] after the leaf (how many were sent).
    #[error(
        "The client sent {0} CA certificates after its own; at most {MAX_INTERMEDIATES} are accepted: send only the intermediates between the client certificate and a CA in TLS_CLIENT_CA_FILE"
    )]
    TooManyIntermediates(usize),
    /// The leaf is not a certificate.
    #[error("The client certificate cannot be parsed")]
    UnparseableLeaf,
    /// A certificate after the leaf is not one.
    #[error("A CA certificate the client sent after its own cannot be parsed")]
    UnparseableIntermediate,
    /// A CA on the issuer path that may not sign certificates: its subject and why.
    #[error("The client certificate's chain holds the CA certificate '{subject}', which {why}")]
    MayNotSign {
        /// The CA's subject.
        subject: String,
        /// From [`may_sign_certificates`].
        why: &'static str,
    },
}

impl From<ChainError> for crate::error::Failure {
    /// 403 `unauthorized_client` with the sentence.
    fn from(e: ChainError) -> Self {
        Self::unauthorized(e.to_string())
    }
}

/// Whether a parsed certificate's keyUsage extension, if present, allows signing certificates.
/// `Err` with the reason when it is present without keyCertSign or cannot be parsed.
pub(crate) fn may_sign_certificates(cert: &X509Certificate<'_>) -> Result<(), &'static str> {
    match cert.key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(ku)) if ku.value.key_cert_sign() => Ok(()),
        Ok(Some(_)) => Err(
            "has a keyUsage extension without keyCertSign, so it may not issue certificates (RFC 5280 4.2.1.3)",
        ),
        Err(_) => Err("has an unreadable keyUsage extension"),
    }
}

/// Reduces `chain` (DER, leaf first) as described in the module documentation. The leaf itself
/// is not checked here (it is parsed for its issuer name only when CA certificates follow);
/// `Err` is a client-facing sentence ([`ChainError`]).
pub fn normalise(chain: &[Vec<u8>]) -> Result<Normalised, ChainError> {
    let Some((leaf_der, rest)) = chain.split_first() else {
        return Err(ChainError::NoCertificate);
    };
    if rest.len() > MAX_INTERMEDIATES {
        return Err(ChainError::TooManyIntermediates(rest.len()));
    }
    if rest.is_empty() {
        // The common case costs no parsing: the leaf is parsed for its facts anyway.
        let chain = vec![leaf_der.clone()];
        let key = key(&chain);
        return Ok(Normalised { chain, key });
    }
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|_| ChainError::UnparseableLeaf)?;
    let mut candidates: Vec<(&Vec<u8>, X509Certificate<'_>)> = Vec::with_capacity(rest.len());
    for der in rest {
        if der == leaf_der || candidates.iter().any(|(d, _)| *d == der) {
            continue;
        }
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return Err(ChainError::UnparseableIntermediate);
        };
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            continue;
        }
        candidates.push((der, cert));
    }
    // Walk up by name from the leaf: keep what can issue something already kept.
    let mut wanted: Vec<Vec<u8>> = vec![leaf.issuer().as_raw().to_vec()];
    let mut kept: Vec<(&Vec<u8>, X509Certificate<'_>)> = Vec::with_capacity(candidates.len());
    loop {
        let before = kept.len();
        let mut i = 0;
        while i < candidates.len() {
            if wanted
                .iter()
                .any(|w| w == candidates[i].1.subject().as_raw())
            {
                let (der, cert) = candidates.swap_remove(i);
                kept.push((der, cert));
            } else {
                i += 1;
            }
        }
        if kept.len() == before {
            break;
        }
        for (_, cert) in &kept[before..] {
            wanted.push(cert.issuer().as_raw().to_vec());
        }
    }
    for (_, cert) in &kept {
        may_sign_certificates(cert).map_err(|why| ChainError::MayNotSign {
            subject: cert.subject().to_string(),
            why,
        })?;
    }
    let mut intermediates: Vec<Vec<u8>> = kept.into_iter().map(|(der, _)| der.clone()).collect();
    intermediates.sort_unstable();
    let mut chain = Vec::with_capacity(1 + intermediates.len());
    chain.push(leaf_der.clone());
    chain.extend(intermediates);
    let key = key(&chain);
    Ok(Normalised { chain, key })
}

/// SHA-256 over the length-prefixed certificates of `chain`.
pub fn key(chain: &[Vec<u8>]) -> [u8; 32] {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for der in chain {
        digest.update(&(der.len() as u64).to_be_bytes());
        digest.update(der);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    fn ca(
        name: &str,
        parent: Option<&Issuer<'static, KeyPair>>,
    ) -> (Vec<u8>, Issuer<'static, KeyPair>) {
        ca_with(name, parent, vec![KeyUsagePurpose::KeyCertSign])
    }

    fn ca_with(
        name: &str,
        parent: Option<&Issuer<'static, KeyPair>>,
        key_usages: Vec<KeyUsagePurpose>,
    ) -> (Vec<u8>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = key_usages;
        let cert = match parent {
            Some(parent) => params.signed_by(&key, parent).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (cert.der().to_vec(), Issuer::new(params, key))
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.signed_by(&key, issuer).unwrap().der().to_vec()
    }

    #[test]
    fn keeps_only_the_issuer_path_in_canonical_order() {
        let (root, root_issuer) = ca("Root", None);
        let (mid, mid_issuer) = ca("Mid", Some(&root_issuer));
        let (low, low_issuer) = ca("Low", Some(&mid_issuer));
        let (stranger, stranger_issuer) = ca("Stranger", None);
        let (strangers_child, _) = ca("Stranger child", Some(&stranger_issuer));
        let leaf = leaf(&low_issuer);
        let plain = normalise(&[leaf.clone(), low.clone(), mid.clone()]).unwrap();
        let mut expected = [low.clone(), mid.clone()];
        expected.sort_unstable();
        assert_eq!(plain.chain[0], leaf);
        assert_eq!(plain.chain[1..], expected[..]);
        for padded in [
            vec![leaf.clone(), mid.clone(), low.clone()],
            vec![leaf.clone(), low.clone(), root.clone(), mid.clone()],
            vec![
                leaf.clone(),
                low.clone(),
                low.clone(),
                mid.clone(),
                leaf.clone(),
            ],
            vec![
                leaf.clone(),
                strangers_child.clone(),
                low.clone(),
                mid.clone(),
            ],
            vec![leaf.clone(), low.clone(), stranger.clone(), mid.clone()],
        ] {
            assert_eq!(normalise(&padded).unwrap(), plain, "{}", padded.len());
        }
        // A break in the names drops what lies above it.
        let broken = normalise(&[leaf.clone(), mid.clone()]).unwrap();
        assert_eq!(broken.chain, vec![leaf.clone()]);
    }

    #[test]
    fn self_issued_certificates_of_the_leafs_issuer_name_are_dropped() {
        let cas: Vec<_> = (0..4).map(|_| ca("Same name", None)).collect();
        let leaf = leaf(&cas[0].1);
        let mut chain = vec![leaf.clone()];
        chain.extend(cas.iter().map(|(der, _)| der.clone()));
        assert_eq!(normalise(&chain).unwrap().chain, vec![leaf]);
    }

    #[test]
    fn more_than_four_intermediates_are_refused_before_parsing() {
        let chain = vec![b"leaf".to_vec(); 1 + MAX_INTERMEDIATES + 1];
        let refused = normalise(&chain).unwrap_err().to_string();
        assert!(
            refused.starts_with("The client sent 5 CA certificates after its own; at most 4"),
            "{refused}"
        );
        assert_eq!(
            normalise(&[]).unwrap_err().to_string(),
            "No client certificate was presented"
        );
    }

    #[test]
    fn intermediate_with_key_usage_but_without_key_cert_sign_is_refused() {
        let (_, root_issuer) = ca("Root", None);
        let (bad, bad_issuer) = ca_with(
            "No CertSign",
            Some(&root_issuer),
            vec![KeyUsagePurpose::DigitalSignature],
        );
        let refused = normalise(&[leaf(&bad_issuer), bad])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("'CN=No CertSign'") && refused.contains("without keyCertSign"),
            "{refused}"
        );
        let (fine, fine_issuer) = ca_with("No KeyUsage", Some(&root_issuer), vec![]);
        let leaf = leaf(&fine_issuer);
        assert_eq!(
            normalise(&[leaf.clone(), fine.clone()]).unwrap().chain,
            vec![leaf, fine]
        );
    }
}
