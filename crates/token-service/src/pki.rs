//! A development PKI for trying Token Service out: a CA, a server certificate for
//! localhost/127.0.0.1 and client certificates with a SPIFFE ID and DNS SANs, kept under
//! `DATA_DIR/pki`. Not for production: the CA key sits next to the certificates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::Duration;

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

fn err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("development PKI: cannot {what}: {e}")
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
    pub fn ensure(&self) -> Result<(Issued, Issued), String> {
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
            write_atomic(&self.ca_key(), key.serialize_pem().as_bytes(), PKI)
                .map_err(|e| e.to_string())?;
            write_atomic(&self.ca_cert(), cert.pem().as_bytes(), PKI).map_err(|e| e.to_string())?;
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
    ) -> Result<Issued, String> {
        self.issue_client_as(name_, name_, spiffe_id, dns, days)
    }

    fn issue_client_as(
        &self,
        file: &str,
        name_: &str,
        spiffe_id: Option<&str>,
        dns: &[String],
        days: i64,
    ) -> Result<Issued, String> {
        let params = client_params(name_, spiffe_id, dns)?;
        let issued = self.pair(file);
        for existing in [&issued.cert, &issued.key] {
            if existing.exists() {
                return Err(format!(
                    "pki: '{}' exists already; choose another --name",
                    existing.display()
                ));
            }
        }
        self.issue(&issued, params, days)?;
        Ok(issued)
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    fn issue(&self, to: &Issued, mut params: CertificateParams, days: i64) -> Result<(), String> {
        let unusable = |path: &Path, e: String| {
            format!(
                "development PKI: cannot use '{}' ({e}); delete the folder '{}' and a new development PKI is created at the next start",
                path.display(),
                self.dir.display()
            )
        };
        let (ca_key_path, ca_path) = (self.ca_key(), self.ca_cert());
        let ca_key_pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| unusable(&ca_key_path, e.to_string()))?;
        let ca_pem =
            std::fs::read_to_string(&ca_path).map_err(|e| unusable(&ca_path, e.to_string()))?;
        let ca_key =
            KeyPair::from_pem(&ca_key_pem).map_err(|e| unusable(&ca_key_path, e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
            .map_err(|e| unusable(&ca_path, e.to_string()))?;
        let now = crate::clock::utc_now();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days.clamp(1, 3650));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(err("generate a key"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(err("sign the certificate"))?;
        write_atomic(&to.key, key.serialize_pem().as_bytes(), PKI).map_err(|e| e.to_string())?;
        write_atomic(&to.cert, cert.pem().as_bytes(), PKI).map_err(|e| e.to_string())
    }
}

/// What errors about the PKI's files start with.
const PKI: &str = "development PKI";

/// A client certificate's parameters: common name `name_`, the SANs, clientAuth.
fn client_params(
    name_: &str,
    spiffe_id: Option<&str>,
    dns: &[String],
) -> Result<CertificateParams, String> {
    if name_.is_empty()
        || !name_
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || name_.starts_with('.')
    {
        return Err(format!(
            "pki: name '{name_}' must be letters, digits, '-', '_' or '.'"
        ));
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
