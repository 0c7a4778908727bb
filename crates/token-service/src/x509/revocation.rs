//! Revocation: the policy (`TLS_CLIENT_CRL_EXPIRED`, `TLS_CLIENT_CRL_REQUIRED`) and the checks a
//! CRL passes before it is used. The policy lives here alone so that every revocation source
//! (the CRL file today, CRLs fetched by URL later) applies the same rules.
//!
//! Every certificate of a chain except the trust anchor is checked against the CRLs of its
//! issuer, intermediates included. A CRL from a CA in `TLS_CLIENT_CA_FILE` must carry that CA's
//! signature (and the CA, if it has a keyUsage extension, cRLSign), else the whole file is
//! refused like any broken file; a CRL from a CA outside the bundle (an intermediate the
//! clients send) cannot be checked at load and is verified against that intermediate's key when
//! a chain uses it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::server::ClientCertVerifierBuilder;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::num_bigint::BigUint;
use x509_parser::oid_registry;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// What a CRL past its nextUpdate does (`TLS_CLIENT_CRL_EXPIRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiredCrl {
    /// It still revokes what it lists; a warning is logged, counted and shown in `/readyz`.
    #[default]
    Warn,
    /// Certificates it would vouch for are refused until a fresh CRL is loaded.
    Deny,
}

impl ExpiredCrl {
    /// Parses the setting's value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "warn" => Some(Self::Warn),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }

    /// The setting's value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Warn => "warn",
            Self::Deny => "deny",
        }
    }
}

/// How revocation information is applied, whatever its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevocationPolicy {
    /// `TLS_CLIENT_CRL_EXPIRED`.
    pub expired: ExpiredCrl,
    /// `TLS_CLIENT_CRL_REQUIRED`: every CA that issued a certificate of the chain must have a
    /// CRL; without one the certificate is refused.
    pub required: bool,
    /// Whether CRLs also come from URLs or distribution points (`TLS_CLIENT_CRL_URLS`,
    /// `TLS_CLIENT_CRL_FOLLOW_CDP`), for the sentences that name where CRLs come from.
    pub fetched: bool,
}

impl RevocationPolicy {
    /// Configures the chain verifier to check the whole chain under this policy.
    pub(crate) fn apply(self, builder: ClientCertVerifierBuilder) -> ClientCertVerifierBuilder {
        let builder = if self.required {
            builder
        } else {
            builder.allow_unknown_revocation_status()
        };
        match self.expired {
            ExpiredCrl::Warn => builder,
            ExpiredCrl::Deny => builder.enforce_revocation_expiration(),
        }
    }
}

/// What is remembered of one loaded CRL: for expiry warnings, for picking the newer of two CRLs
/// of one CA, and for `check-config`.
#[derive(Debug)]
pub struct CrlInfo {
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// Where it came from: `TLS_CLIENT_CRL_FILE 'PATH'` or its URL.
    pub source: String,
    /// thisUpdate, seconds since the epoch.
    pub this_update: i64,
    /// nextUpdate, seconds since the epoch (none: never expires).
    pub next_update: Option<i64>,
    /// The CRL number extension, when present.
    pub number: Option<BigUint>,
    /// What makes two CRLs rivals: the issuer's name (DER) and the issuingDistributionPoint
    /// extension (DER, empty without one), so the partitions of a partitioned CRL are kept
    /// side by side and only a newer CRL of the same scope replaces an older one.
    pub scope: Vec<u8>,
    warned: AtomicBool,
}

impl CrlInfo {
    /// The facts of `crl`, which came from `source`.
    pub fn of(crl: &CertificateRevocationList<'_>, source: String) -> Self {
        let mut scope = crl.issuer().as_raw().to_vec();
        if let Some(idp) = crl
            .extensions()
            .iter()
            .find(|e| e.oid == oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT)
        {
            scope.extend_from_slice(idp.value);
        }
        Self {
            issuer: crl.issuer().to_string(),
            source,
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            number: crl.crl_number().cloned(),
            scope,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether this CRL is newer than `other` (of the same scope): the higher CRL number when
    /// both have one and they differ, else the later thisUpdate.
    pub fn newer_than(&self, other: &CrlInfo) -> bool {
        match (&self.number, &other.number) {
            (Some(a), Some(b)) if a != b => a > b,
            _ => self.this_update > other.this_update,
        }
    }

    /// Whether it is past its nextUpdate at `now`.
    pub fn expired(&self, now: i64) -> bool {
        self.next_update.is_some_and(|t| now > t)
    }

    /// A sentence naming it as expired, for logs and `/readyz`.
    pub fn describe_expired(&self, policy: ExpiredCrl) -> String {
        let effect = match policy {
            ExpiredCrl::Warn => "it still revokes what it lists (TLS_CLIENT_CRL_EXPIRED=warn)",
            ExpiredCrl::Deny => {
                "certificates of that CA are refused until a fresh CRL is loaded (TLS_CLIENT_CRL_EXPIRED=deny)"
            }
        };
        format!(
            "the CRL of '{}' from {} expired at {} (nextUpdate, seconds since the epoch); {effect}; load a fresh CRL",
            self.issuer,
            self.source,
            self.next_update.unwrap_or_default()
        )
    }

    /// True the first time it is called for an expired CRL (to log it once).
    pub fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// The CRLs of a file, checked against the CA bundle.
pub struct LoadedCrls {
    /// For the verifier.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// One per CRL, same order.
    pub info: Vec<CrlInfo>,
    /// Warnings for the log (CRLs whose signature could not be checked at load).
    pub warnings: Vec<String>,
    /// One per CRL, same order: the index in the bundle of the CA whose key verified its
    /// signature at load; `None` for a CRL of a CA outside the bundle.
    pub signers: Vec<Option<usize>>,
}

/// A CA of the bundle that a verified CRL of its issuer (also in the bundle) lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCa {
    /// Its index in the bundle.
    pub index: usize,
    /// Its subject, for logs and refusals.
    pub subject: String,
    /// Its serial number, colon-separated hex.
    pub serial: String,
    /// Why it is left out: listed on its issuer's CRL, or issued only by CAs left out.
    pub reason: String,
}

/// The CAs of `bundle` that no chain may use, although the verifier would trust them as
/// anchors (and never check an anchor against a CRL): each CA that is not self-issued and is
/// listed on a CRL whose signature a bundle CA verified at load, that same CA having signed
/// it; then, until nothing changes, each CA whose every issuer in the bundle is left out.
pub fn revoked_bundle_cas(bundle: &[CertificateDer<'_>], loaded: &LoadedCrls) -> Vec<RevokedCa> {
    let cas: Vec<Option<X509Certificate<'_>>> = bundle
        .iter()
        .map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    let crls: Vec<(usize, CertificateRevocationList<'_>)> = loaded
        .crls
        .iter()
        .zip(&loaded.signers)
        .filter_map(|(der, signer)| {
            let (_, crl) = CertificateRevocationList::from_der(der).ok()?;
            Some(((*signer)?, crl))
        })
        .collect();
    // The bundle CAs whose key signed each CA (itself excluded).
    let issuers: Vec<Vec<usize>> = cas
        .iter()
        .enumerate()
        .map(|(i, ca)| {
            let Some(ca) = ca else { return Vec::new() };
            if ca.subject().as_raw() == ca.issuer().as_raw() {
                return Vec::new();
            }
            cas.iter()
                .enumerate()
                .filter_map(|(j, issuer)| {
                    let issuer = issuer.as_ref()?;
                    (j != i
                        && issuer.subject().as_raw() == ca.issuer().as_raw()
                        && ca.verify_signature(Some(issuer.public_key())).is_ok())
                    .then_some(j)
                })
                .collect()
        })
        .collect();
    let mut revoked: Vec<RevokedCa> = Vec::new();
    for (i, ca) in cas.iter().enumerate() {
        let Some(ca) = ca else { continue };
        let listed = crls.iter().find(|(signer, crl)| {
            issuers[i].contains(signer)
                && crl
                    .iter_revoked_certificates()
                    .any(|r| r.raw_serial() == ca.raw_serial())
        });
        if let Some((_, crl)) = listed {
            revoked.push(RevokedCa {
                index: i,
                subject: ca.subject().to_string(),
                serial: ca.raw_serial_as_string(),
                reason: format!("it is listed on the CRL of '{}'", crl.issuer()),
            });
        }
    }
    loop {
        let out: Vec<usize> = revoked.iter().map(|r| r.index).collect();
        let more: Vec<RevokedCa> = cas
            .iter()
            .enumerate()
            .filter_map(|(i, ca)| {
                let ca = ca.as_ref()?;
                (!out.contains(&i)
                    && !issuers[i].is_empty()
                    && issuers[i].iter().all(|j| out.contains(j)))
                .then(|| RevokedCa {
                    index: i,
                    subject: ca.subject().to_string(),
                    serial: ca.raw_serial_as_string(),
                    reason: format!("its issuer '{}' is itself revoked", ca.issuer()),
                })
            })
            .collect();
        if more.is_empty() {
            return revoked;
        }
        revoked.extend(more);
    }
}

/// `TLS_CLIENT_CRL_FILE`, the setting every [`CrlError`] is about.
pub const SETTING: &str = "TLS_CLIENT_CRL_FILE";

/// Why the CRL file is refused; the text follows `TLS_CLIENT_CRL_FILE: ` (see
/// [`crate::x509::TrustError`]).
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// The file cannot be read.
    #[error("cannot read '{}': {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Broken PEM.
    #[error("'{}': {error}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls_pki_types::pem::Error,
    },
    /// PEM without a CRL.
    #[error("'{}' holds no CRL", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// CRL `n` (from 1) is not a CRL.
    #[error("'{}': CRL {n} cannot be parsed: {error}", .path.display())]
    Unparseable {
        /// The file.
        path: PathBuf,
        /// Which CRL, from 1.
        n: usize,
        /// The parser's reason.
        error: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    /// Two CRLs of one CA outside the bundle.
    #[error(
        "'{}': CRLs {first} and {n} are both issued by '{issuer}', which is not in TLS_CLIENT_CA_FILE, so their signatures cannot be checked at load; keep one CRL per CA, or add that CA to TLS_CLIENT_CA_FILE",
        .path.display()
    )]
    TwoUnchecked {
        /// The file.
        path: PathBuf,
        /// The first of the two, from 1.
        first: usize,
        /// The second.
        n: usize,
        /// Their issuer.
        issuer: String,
    },
    /// A CRL whose signature the bundle CA it names does not verify.
    #[error(
        "'{}': CRL {n} claims to be issued by '{issuer}', but its signature does not verify with the key of that CA in TLS_CLIENT_CA_FILE (forged, damaged or signed by another key); the file is refused",
        .path.display()
    )]
    BadSignature {
        /// The file.
        path: PathBuf,
        /// Which CRL, from 1.
        n: usize,
        /// The issuer it names.
        issuer: String,
    },
    /// A CRL signed by a CA whose keyUsage lacks cRLSign.
    #[error(
        "'{}': CRL {n} is signed by '{issuer}', whose keyUsage extension lacks cRLSign, so it may not sign CRLs (RFC 5280 4.2.1.3); the file is refused",
        .path.display()
    )]
    NoCrlSign {
        /// The file.
        path: PathBuf,
        /// Which CRL, from 1.
        n: usize,
        /// Its signer.
        issuer: String,
    },
}

/// The CRLs of the file: PEM (any number) or one DER CRL; at least one.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, CrlError> {
    let bytes = std::fs::read(path).map_err(|error| CrlError::Read {
        path: path.to_owned(),
        error,
    })?;
    let crls: Vec<CertificateRevocationListDer<'static>> =
        if bytes.trim_ascii_start().starts_with(b"-----") {
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|error| CrlError::Pem {
                    path: path.to_owned(),
                    error,
                })?
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
    if crls.is_empty() {
        return Err(CrlError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(crls)
}

/// Reads the CRL file (PEM or DER) and checks each CRL against the CAs of the bundle.
pub fn load(path: &Path, bundle: &[CertificateDer<'_>]) -> Result<LoadedCrls, CrlError> {
    let crls = read_crls(path)?;
    let cas: Vec<(usize, X509Certificate<'_>)> = bundle
        .iter()
        .enumerate()
        .filter_map(|(i, der)| X509Certificate::from_der(der).ok().map(|(_, c)| (i, c)))
        .collect();
    let mut info = Vec::with_capacity(crls.len());
    let mut signers = Vec::with_capacity(crls.len());
    let mut warnings = Vec::new();
    let mut unchecked: Vec<(Vec<u8>, usize)> = Vec::new();
    for (i, der) in crls.iter().enumerate() {
        let n = i + 1;
        let (_, crl) =
            CertificateRevocationList::from_der(der).map_err(|error| CrlError::Unparseable {
                path: path.to_owned(),
                n,
                error,
            })?;
        let issuer = crl.issuer().to_string();
        let issuers: Vec<&(usize, X509Certificate<'_>)> = cas
            .iter()
            .filter(|(_, ca)| ca.subject().as_raw() == crl.issuer().as_raw())
            .collect();
        if issuers.is_empty() {
            // Unchecked until used: two of them for one CA could let a forged one shadow the
            // real one (the first found is the one used).
            if let Some((_, first)) = unchecked
                .iter()
                .find(|(raw, _)| raw == crl.issuer().as_raw())
            {
                return Err(CrlError::TwoUnchecked {
                    path: path.to_owned(),
                    first: *first,
                    n,
                    issuer,
                });
            }
            unchecked.push((crl.issuer().as_raw().to_vec(), n));
            warnings.push(format!(
                "{SETTING}: '{}': CRL {n} is issued by '{issuer}', which is not in TLS_CLIENT_CA_FILE: its signature is checked only when a client presents that CA as an intermediate",
                path.display()
            ));
            signers.push(None);
        } else {
            let index = match bundle_signer(&crl, &issuers) {
                Ok(index) => index,
                Err(SignerProblem::BadSignature) => {
                    return Err(CrlError::BadSignature {
                        path: path.to_owned(),
                        n,
                        issuer,
                    });
                }
                Err(SignerProblem::NoCrlSign) => {
                    return Err(CrlError::NoCrlSign {
                        path: path.to_owned(),
                        n,
                        issuer,
                    });
                }
            };
            signers.push(Some(index));
        }
        info.push(CrlInfo::of(&crl, format!("{SETTING} '{}'", path.display())));
    }
    Ok(LoadedCrls {
        crls,
        info,
        warnings,
        signers,
    })
}

/// Why a CA of the bundle refuses a CRL that names it as issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerProblem {
    /// No CA of that name has the key that signed it.
    BadSignature,
    /// The CA whose key signed it has a keyUsage extension without cRLSign.
    NoCrlSign,
}

/// The index in the bundle of the CA among `issuers` (the bundle CAs named as the CRL's issuer,
/// with their index) whose key verifies `crl`, which must also allow cRLSign.
pub fn bundle_signer(
    crl: &CertificateRevocationList<'_>,
    issuers: &[&(usize, X509Certificate<'_>)],
) -> Result<usize, SignerProblem> {
    let Some((index, signer)) = issuers
        .iter()
        .find(|(_, ca)| crl.verify_signature(ca.public_key()).is_ok())
        .map(|(i, ca)| (*i, ca))
    else {
        return Err(SignerProblem::BadSignature);
    };
    may_sign_crls(signer)?;
    Ok(index)
}

/// Whether `ca`'s keyUsage extension, if present, allows signing CRLs.
pub fn may_sign_crls(ca: &X509Certificate<'_>) -> Result<(), SignerProblem> {
    match ca.key_usage() {
        Ok(Some(ku)) if !ku.value.crl_sign() => Err(SignerProblem::NoCrlSign),
        _ => Ok(()),
    }
}
