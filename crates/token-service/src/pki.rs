//! A development PKI for trying Token Service out: a CA, a server certificate for
//! localhost/127.0.0.1 and client certificates with a SPIFFE ID and DNS SANs, kept under
//! `DATA_DIR/pki`. Not for production: the CA key sits next to the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::Duration;

use crate::error::StartupError;
use crate::signer::local::write_atomic;

/// Paths of the development PKI.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// Folder holding everything.
    pub dir: PathBuf,
}

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (mode 0600).
    pub key: PathBuf,
}

/// The demo client's SPIFFE ID.
pub const DEMO_SPIFFE_ID: &str = "spiffe://token-service.local/ns/demo/sa/device-1";
/// The demo client's DNS SAN.
pub const DEMO_DNS: &str = "device-1.token-service.local";

/// Why the development PKI cannot be created or used, or a client certificate not issued.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating, describing or signing failed.
    #[error("development PKI: cannot {what}: {source}")]
    Rcgen {
        /// What was being done, e.g. `sign the CA`.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A file of the PKI cannot be read or parsed.
    #[error(
        "development PKI: cannot use '{}' ({problem}); delete the folder '{}' and a new development PKI is created at the next start",
        path.display(),
        dir.display()
    )]
    Unusable {
        /// The file at fault.
        path: PathBuf,
        /// The PKI's folder.
        dir: PathBuf,
        /// What is wrong with the file.
        problem: String,
    },
    /// Writing a key or certificate failed (the message names the file).
    #[error(transparent)]
    Write(#[from] crate::signer::local::WriteError),
    /// `pki client --name` would overwrite an existing file.
    #[error("pki: '{}' exists already; choose another --name", .0.display())]
    Exists(PathBuf),
    /// `pki client --name` is not a safe file name.
    #[error("pki: name '{0}' must be letters, digits, '-', '_' or '.'")]
    BadName(String),
}

impl From<PkiError> for StartupError {
    fn from(e: PkiError) -> Self {
        StartupError::other(e.to_string())
    }
}

fn err(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { what, source }
}

/// Writes a file of the PKI (mode 0600, atomically).
fn write(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    Ok(write_atomic(path, contents, PKI)?)
}

impl DevPki {
    /// The PKI under `data_dir/pki`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("pki"),
        }
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn pair(&self, name: &str) -> Issued {
        Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// Creates the CA, the server certificate and the demo client certificate once; later calls
    /// reuse them.
    pub fn ensure(&self) -> Result<(Issued, Issued), PkiError> {
        let server = self.pair("server");
        let client = self.pair("client");
        if !self.ca_cert().exists() {
            let key = KeyPair::generate().map_err(err("generate the CA key"))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name("Token Service development CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = crate::clock::utc_now();
            params.not_before = now - Duration::hours(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.self_signed(&key).map_err(err("sign the CA"))?;
            // A CA key without its certificate is left from an interrupted first start, and
            // nothing was issued with it: replace it.
            write(&self.ca_key(), key.serialize_pem().as_bytes())?;
            write(&self.ca_cert(), cert.pem().as_bytes())?;
        }
        if !server.cert.exists() {
            let mut params =
                CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
                    .map_err(err("describe the server certificate"))?;
            params.distinguished_name = name("localhost");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            self.issue(&server, params, 825)?;
        }
        if !client.cert.exists() {
            let params = client_params("device-1", Some(DEMO_SPIFFE_ID), &[DEMO_DNS.to_owned()])?;
            self.issue(&client, params, 365)?;
        }
        Ok((server, client))
    }

    /// Issues a client certificate `NAME.pem`/`NAME.key` (common name NAME) with the given SANs.
    pub fn issue_client(
        &self,
        name_: &str,
        spiffe_id: Option<&str>,
        dns: &[String],
        days: i64,
    ) -> Result<Issued, PkiError> {
        self.issue_client_as(name_, name_, spiffe_id, dns, days)
    }

    fn issue_client_as(
        &self,
        file: &str,
        name_: &str,
        spiffe_id: Option<&str>,
        dns: &[String],
        days: i64,
    ) -> Result<Issued, PkiError> {
        let params = client_params(name_, spiffe_id, dns)?;
        let issued = self.pair(file);
        for existing in [&issued.cert, &issued.key] {
            if existing.exists() {
                return Err(PkiError::Exists(existing.clone()));
            }
        }
        self.issue(&issued, params, days)?;
        Ok(issued)
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    fn issue(&self, to: &Issued, mut params: CertificateParams, days: i64) -> Result<(), PkiError> {
        let unusable = |path: &Path, e: &dyn std::fmt::Display| PkiError::Unusable {
            path: path.to_owned(),
            dir: self.dir.clone(),
            problem: e.to_string(),
        };
        let (ca_key_path, ca_path) = (self.ca_key(), self.ca_cert());
        let ca_key_pem =
            std::fs::read_to_string(&ca_key_path).map_err(|e| unusable(&ca_key_path, &e))?;
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(|e| unusable(&ca_path, &e))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| unusable(&ca_key_path, &e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| unusable(&ca_path, &e))?;
        let now = crate::clock::utc_now();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days.clamp(1, 3650));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(err("generate a key"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(err("sign the certificate"))?;
        write(&to.key, key.serialize_pem().as_bytes())?;
        write(&to.cert, cert.pem().as_bytes())
    }
}

/// What errors about the PKI's files start with.
const PKI: &str = "development PKI";

/// A client certificate's parameters: common name `name_`, the SANs, clientAuth.
fn client_params(
    name_: &str,
    spiffe_id: Option<&str>,
    dns: &[String],
) -> Result<CertificateParams, PkiError> {
    if name_.is_empty()
        || !name_
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || name_.starts_with('.')
    {
        return Err(PkiError::BadName(name_.to_owned()));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = name(name_);
    for d in dns {
        params.subject_alt_names.push(SanType::DnsName(
            d.clone().try_into().map_err(err("use that DNS name"))?,
        ));
    }
    if let Some(uri) = spiffe_id {
        params.subject_alt_names.push(SanType::URI(
            uri.to_owned()
                .try_into()
                .map_err(err("use that SPIFFE ID"))?,
        ));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Token Service development");
    dn.push(DnType::CommonName, common_name);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_client_names_and_existing_files_keep_their_messages() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::new(dir.path());
        let bad = pki.issue_client(".hidden", None, &[], 1).unwrap_err();
        assert_eq!(
            StartupError::from(bad).to_string(),
            "pki: name '.hidden' must be letters, digits, '-', '_' or '.'"
        );
        pki.ensure().unwrap();
        let again = pki.issue_client("client", None, &[], 1).unwrap_err();
        let cert = pki.dir.join("client.pem");
        assert_eq!(
            again.to_string(),
            format!(
                "pki: '{}' exists already; choose another --name",
                cert.display()
            )
        );
    }

    #[test]
    fn an_unreadable_ca_key_says_to_delete_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::new(dir.path());
        pki.ensure().unwrap();
        std::fs::write(pki.ca_key(), "not a key").unwrap();
        let e = pki.issue_client("device-2", None, &[], 1).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "development PKI: cannot use '{}' (",
                pki.ca_key().display()
            )),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "); delete the folder '{}' and a new development PKI is created at the next start",
                pki.dir.display()
            )),
            "{text}"
        );
    }
}
