//! The signer of the composition root: a local key file (watched for new key states), the
//! development key, or IAM `signJwt`; and the rules the key states follow.

use std::sync::{Arc, OnceLock};

use super::startup;
use crate::config::{Config, SignerConfig};
use crate::error::StartupError;
use crate::google::Upstream;
use crate::google::credentials::{Credentials, TokenSource};
use crate::google::iam_credentials::IamCredentialsClient;
use crate::google::metadata::MetadataClient;
use crate::signer::Signer;
use crate::signer::iam::IamSigner;
use crate::signer::local::LocalSigner;
use crate::tasks::Background;

/// The rules of the key states under this configuration: `JWKS_MAX_AGE`, and the longest
/// lifetime a token can have (`TOKEN_VALIDITY`, `TOKEN_AUDIENCE_VALIDITY`, and with a policy
/// file the bound its rules share).
pub(crate) fn key_rules(config: &Config) -> crate::signer::local::states::Rules {
    use crate::signer::local::states;
    states::Rules {
        jwks_max_age: i64::try_from(config.jwks_max_age).unwrap_or(i64::MAX),
        longest_lifetime: states::longest_lifetime(
            config.validity_seconds,
            config.audiences.lifetimes.values().copied(),
            config.policy.is_some(),
        ),
    }
}

/// The signer of ID tokens: a local key (from `SIGNING_KEY_FILE`, or the development key in
/// `DATA_DIR`) or Google's IAM `signJwt`.
pub(super) fn build_signer(
    config: &Config,
    upstream: &Upstream,
    trace_project: &Arc<OnceLock<String>>,
    background: &Background,
    warnings: &mut Vec<String>,
) -> Result<Arc<dyn Signer>, Vec<StartupError>> {
    match &config.signer {
        SignerConfig::Local {
            key_file: Some(path),
            ..
        } => {
            let (mut signer, found) = LocalSigner::from_key_file(path, key_rules(config))?;
            signer.start(background);
            warnings.extend(found);
            let signer = Arc::new(signer);
            signer.watch(path.clone(), config.key_reload_interval, background);
            Ok(signer)
        }
        SignerConfig::Local {
            key_file: None,
            data_dir,
        } => development_signer(data_dir, background),
        SignerConfig::Iam { service_account } => iam_signer(
            config,
            service_account.as_deref(),
            upstream,
            trace_project,
            background,
        ),
    }
}

/// The development key in `data_dir`, generated on first start; its signing threads run in
/// `background`.
fn development_signer(
    data_dir: &std::path::Path,
    background: &Background,
) -> Result<Arc<dyn Signer>, Vec<StartupError>> {
    let (mut signer, path, generated) = LocalSigner::load_or_generate(data_dir).map_err(startup)?;
    signer.start(background);
    let verb = if generated {
        "generated"
    } else {
        "reusing the generated"
    };
    tracing::warn!(
        event = "development_key",
        path = %path.display(),
        "{verb} signing key {}: fine for development and a single instance; set SIGNING_KEY_FILE for production",
        path.display()
    );
    Ok(Arc::new(signer))
}

/// Signing with IAM `signJwt` as `service_account` (or the credentials' own account). The
/// identity check, and the trace project's lookup on the metadata server, run in `background`.
fn iam_signer(
    config: &Config,
    service_account: Option<&str>,
    upstream: &Upstream,
    trace_project: &Arc<OnceLock<String>>,
    background: &Background,
) -> Result<Arc<dyn Signer>, Vec<StartupError>> {
    let endpoints = &config.google.endpoints;
    let (credentials, metadata) = match &config.google.application_credentials {
        Some(path) => (Credentials::from_adc_file(path).map_err(startup)?, None),
        None => {
            let metadata = MetadataClient::new(endpoints.metadata.clone(), upstream.clone());
            (Credentials::Metadata(metadata.clone()), Some(metadata))
        }
    };
    let email = service_account
        .map(str::to_owned)
        .or_else(|| credentials.email().map(str::to_owned));
    if email.is_none() && metadata.is_none() {
        return Err(vec![StartupError::setting(
            "SERVICE_ACCOUNT",
            "required when GOOGLE_APPLICATION_CREDENTIALS holds user credentials; name the service account to sign as",
        )]);
    }
    tracing::info!(event = "google_credentials", credentials = ?credentials, "Google credentials: {credentials:?}");
    let tokens = Arc::new(TokenSource::new(credentials, upstream.clone()));
    let iam = IamCredentialsClient::new(endpoints.iam_credentials.clone(), upstream.clone());
    let signer = Arc::new(IamSigner::new(email, tokens, iam, upstream.clone()));
    signer.start(metadata.clone(), background);
    if trace_project.get().is_none()
        && let Some(metadata) = metadata
    {
        metadata.publish_project(trace_project.clone(), background);
    }
    Ok(signer)
}
