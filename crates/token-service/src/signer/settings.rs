//! Settings of the signer: the declarations and [`SignerConfig`], which they fill. Read
//! through `config::reader`; reads no environment.

use std::path::PathBuf;

use crate::config::reader::{Reader, Setting};

/// `SIGNER`: the default depends on `K_SERVICE`.
pub const SIGNER: Setting = Setting::choice(
    "SIGNER",
    None,
    &["local", "iam"],
    "Signer: local (keys in SIGNING_KEY_FILE) or iam (keyless, IAM Credentials signJwt)",
)
.noted("local; iam when K_SERVICE is set");
/// `SERVICE_ACCOUNT`.
pub const SERVICE_ACCOUNT: Setting = Setting::text(
    "SERVICE_ACCOUNT",
    None,
    "Service account whose signJwt signs ID tokens (SIGNER=iam)",
)
.noted("the metadata server's default account");
/// `SIGNING_KEY_FILE`.
pub const SIGNING_KEY_FILE: Setting = Setting::path(
    "SIGNING_KEY_FILE",
    None,
    "PEM file of PKCS#8 keys (RSA >= 2048 bits, EC P-256), all published; the first signs, or the one a '# token-service: state=active' line marks (see `token-service keys`). Reloaded when it changes. Refused when group/others can write it or its folder, or another user (not root) owns it; world-readable warns",
)
.noted("generated into DATA_DIR");
/// `DATA_DIR`.
pub const DATA_DIR: Setting = Setting::path(
    "DATA_DIR",
    Some("./.token-service"),
    "Directory for the generated development key (mode 0600, written atomically); refused when group/others can write it without the sticky bit or another user owns it",
);

/// Which signer.
pub const CHOICE: &[Setting] = &[SIGNER, SERVICE_ACCOUNT];
/// The local keys.
pub const LOCAL: &[Setting] = &[SIGNING_KEY_FILE, DATA_DIR];

/// The signer to build.
#[derive(Debug, Clone)]
pub enum SignerConfig {
    /// IAM Credentials signJwt.
    Iam {
        /// `SERVICE_ACCOUNT`, when set.
        service_account: Option<String>,
    },
    /// Local keys.
    Local {
        /// `SIGNING_KEY_FILE`.
        key_file: Option<PathBuf>,
        /// `DATA_DIR`.
        data_dir: PathBuf,
    },
}

impl SignerConfig {
    /// Reads the signer; on Cloud Run (`K_SERVICE` set) keyless IAM signing is the default.
    pub fn read(r: &mut Reader<'_>, on_cloud_run: bool) -> Self {
        let data_dir = r.path(&DATA_DIR).unwrap_or_default();
        let key_file = r.path(&SIGNING_KEY_FILE);
        let local = Self::Local { key_file, data_dir };
        let service_account = r.text(&SERVICE_ACCOUNT);
        if let Some(sa) = &service_account
            && (!sa.contains('@') || sa.contains('/') || sa.contains(char::is_whitespace))
        {
            r.fail(
                SERVICE_ACCOUNT.name,
                format!("'{sa}' is not a service account email"),
            );
        }
        let chosen = match r.choice(&SIGNER) {
            Some(chosen) => chosen,
            None if r.get(SIGNER.name).is_some() => "local",
            None if on_cloud_run => "iam",
            None => "local",
        };
        r.resolve(&SIGNER, chosen);
        match chosen {
            "iam" => Self::Iam { service_account },
            _ => local,
        }
    }
}
