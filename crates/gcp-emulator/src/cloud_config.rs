//! Configuration of the emulated AWS account and Microsoft Entra tenants: the
//! IAM OIDC identity providers (issuer URL, client-ID list = allowed `aud`s,
//! thumbprints) and roles (ARN, trusted provider, `sub`/`aud` trust
//! conditions, maximum session duration) AWS STS checks a web-identity token
//! against, and the tenants, app registrations and federated identity
//! credentials (issuer, exact subject, one audience) Entra checks a client
//! assertion against. [`validate`](AwsConfig::validate) refuses what the
//! clouds refuse at registration time.

use crate::webid::{IssuerFormError, check_issuer_form};

/// `api://AzureADTokenExchange`, the audience Entra recommends for federated credentials.
pub const ENTRA_DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
/// Entra allows at most this many federated identity credentials per app.
pub const MAX_FEDERATED_CREDENTIALS: usize = 20;

/// The emulated AWS account.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The 12-digit account ID in ARNs.
    pub account_id: String,
    /// IAM OIDC identity providers.
    pub oidc_providers: Vec<AwsOidcProvider>,
    /// IAM roles that trust one of the providers.
    pub roles: Vec<AwsRole>,
    /// Clock skew tolerated on `exp`/`iat`/`nbf` (seconds).
    pub clock_skew_secs: i64,
    /// Longest `exp - iat` accepted (seconds); AWS documents none, the emulator applies
    /// Google's 24 hours so that a broker minting day-long tokens finds out.
    pub max_token_lifetime_secs: i64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            account_id: "123456789012".to_owned(),
            oidc_providers: Vec::new(),
            roles: Vec::new(),
            clock_skew_secs: 300,
            max_token_lifetime_secs: 24 * 3600,
        }
    }
}

/// An IAM OIDC identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsOidcProvider {
    /// The issuer URL; must equal the token's `iss`.
    pub url: String,
    /// The client-ID list: the `aud` values accepted.
    pub client_ids: Vec<String>,
    /// SHA-1 thumbprints (40 hex digits); AWS uses them only when the JWKS certificate
    /// is not from a trusted CA, so the emulator checks their form only.
    pub thumbprints: Vec<String>,
}

impl AwsOidcProvider {
    /// A provider accepting `aud` values `client_ids`.
    pub fn new(url: impl Into<String>, client_ids: &[&str]) -> Self {
        AwsOidcProvider {
            url: url.into(),
            client_ids: client_ids.iter().map(|c| (*c).to_owned()).collect(),
            thumbprints: Vec::new(),
        }
    }

    /// The URL without its scheme: the provider's name in ARNs and condition keys.
    pub fn host_path(&self) -> &str {
        strip_scheme(&self.url)
    }

    /// `arn:aws:iam::ACCOUNT:oidc-provider/HOST/PATH`.
    pub fn arn(&self, account_id: &str) -> String {
        format!(
            "arn:aws:iam::{account_id}:oidc-provider/{}",
            self.host_path()
        )
    }
}

pub(crate) fn strip_scheme(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.trim_end_matches('/')
}

/// The claim a trust-policy condition reads (`<provider>:sub` / `<provider>:aud`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustClaim {
    Sub,
    Aud,
}

/// IAM condition operators used on web-identity claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustOperator {
    /// Exact, case-sensitive.
    StringEquals,
    /// `*` and `?` wildcards, case-sensitive.
    StringLike,
}

/// One condition of a role's trust policy: the claim must match one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustCondition {
    pub claim: TrustClaim,
    pub operator: TrustOperator,
    pub values: Vec<String>,
}

impl TrustCondition {
    pub fn new(claim: TrustClaim, operator: TrustOperator, values: &[&str]) -> Self {
        TrustCondition {
            claim,
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }
}

/// An IAM role that web identities of one provider may assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRole {
    /// `arn:aws:iam::ACCOUNT:role/[PATH/]NAME`.
    pub arn: String,
    /// The trusted provider's URL (the trust policy's `Federated` principal).
    pub provider_url: String,
    /// All must hold (each against any of its values).
    pub conditions: Vec<TrustCondition>,
    /// `MaxSessionDuration`: 3600 to 43200 seconds.
    pub max_session_duration_secs: u32,
}

impl AwsRole {
    /// A role trusting `provider_url` without conditions, max session one hour.
    pub fn new(arn: impl Into<String>, provider_url: impl Into<String>) -> Self {
        AwsRole {
            arn: arn.into(),
            provider_url: provider_url.into(),
            conditions: Vec::new(),
            max_session_duration_secs: 3600,
        }
    }

    /// The role's name: the last path segment of the ARN.
    pub fn name(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or("")
    }
}

/// Why the AWS or Entra registry cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudConfigError {
    #[error("AWS account ID {0:?} must be 12 digits")]
    AccountId(String),
    #[error(
        "the OIDC provider URL {url:?} is not accepted by AWS IAM: {problem} (for a local issuer on 127.0.0.1 set allow_loopback_issuers / --allow-loopback-issuers)"
    )]
    ProviderUrl {
        url: String,
        problem: IssuerFormError,
    },
    #[error("the OIDC provider {0:?} needs at least one client ID (allowed audience)")]
    NoClientIds(String),
    #[error(
        "the OIDC provider {url:?} has thumbprint {thumbprint:?}; a thumbprint is 40 hex digits"
    )]
    Thumbprint { url: String, thumbprint: String },
    #[error("the role ARN {0:?} must look like arn:aws:iam::ACCOUNT:role/NAME in this account")]
    RoleArn(String),
    #[error(
        "the role {0} has conditions or a max session but no trusted provider: add --aws-role {0}=PROVIDER_URL"
    )]
    RoleWithoutProvider(String),
    #[error("the role {role} trusts {provider:?}, which is not a configured OIDC provider")]
    RoleProvider { role: String, provider: String },
    #[error("the role {0} needs a MaxSessionDuration between 3600 and 43200 seconds")]
    MaxSession(String),
    #[error("the Entra tenant {0:?} needs a tenant ID")]
    TenantId(String),
    #[error("the Entra app {0:?} needs a client ID")]
    ClientId(String),
    #[error(
        "the Entra app {app} has {count} federated identity credentials; Entra allows at most {MAX_FEDERATED_CREDENTIALS}"
    )]
    TooManyCredentials { app: String, count: usize },
    #[error("the federated identity credential {name:?} of app {app} is invalid: {problem}")]
    Credential {
        app: String,
        name: String,
        problem: String,
    },
}

impl AwsConfig {
    pub(crate) fn validate(&self, allow_loopback: bool) -> Result<(), CloudConfigError> {
        if self.oidc_providers.is_empty() && self.roles.is_empty() {
            return Ok(());
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CloudConfigError::AccountId(self.account_id.clone()));
        }
        for p in &self.oidc_providers {
            check_issuer_form(&p.url, allow_loopback).map_err(|problem| {
                CloudConfigError::ProviderUrl {
                    url: p.url.clone(),
                    problem,
                }
            })?;
            if p.client_ids.is_empty() {
                return Err(CloudConfigError::NoClientIds(p.url.clone()));
            }
            if let Some(t) = p
                .thumbprints
                .iter()
                .find(|t| t.len() != 40 || !t.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(CloudConfigError::Thumbprint {
                    url: p.url.clone(),
                    thumbprint: t.clone(),
                });
            }
        }
        let prefix = format!("arn:aws:iam::{}:role/", self.account_id);
        for r in &self.roles {
            if !r.arn.starts_with(&prefix) || r.name().is_empty() {
                return Err(CloudConfigError::RoleArn(r.arn.clone()));
            }
            if r.provider_url.is_empty() {
                return Err(CloudConfigError::RoleWithoutProvider(r.arn.clone()));
            }
            if self.provider(&r.provider_url).is_none() {
                return Err(CloudConfigError::RoleProvider {
                    role: r.arn.clone(),
                    provider: r.provider_url.clone(),
                });
            }
            if !(3600..=43_200).contains(&r.max_session_duration_secs) {
                return Err(CloudConfigError::MaxSession(r.arn.clone()));
            }
        }
        Ok(())
    }

    /// The provider registered for issuer `url` (scheme and trailing slash aside, as IAM
    /// names providers by host and path).
    pub(crate) fn provider(&self, url: &str) -> Option<&AwsOidcProvider> {
        self.oidc_providers
            .iter()
            .find(|p| p.host_path() == strip_scheme(url))
    }
}

/// The emulated Microsoft Entra directory.
#[derive(Debug, Clone, Default)]
pub struct EntraConfig {
    pub tenants: Vec<EntraTenant>,
}

/// A tenant (directory) and its app registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraTenant {
    /// The tenant ID (a GUID in Entra; any path-safe string here).
    pub tenant_id: String,
    pub apps: Vec<EntraApp>,
}

/// An app registration (or user-assigned managed identity) with federated credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraApp {
    /// The application (client) ID.
    pub client_id: String,
    pub federated_credentials: Vec<FederatedCredential>,
}

/// A `federatedIdentityCredential`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    pub name: String,
    /// Must equal the assertion's `iss` exactly.
    pub issuer: String,
    /// Must equal the assertion's `sub` exactly (case-sensitive).
    pub subject: String,
    /// A single value; default [`ENTRA_DEFAULT_AUDIENCE`].
    pub audiences: Vec<String>,
}

impl FederatedCredential {
    /// A credential with the default audience.
    pub fn new(
        name: impl Into<String>,
        issuer: impl Into<String>,
        subject: impl Into<String>,
    ) -> Self {
        FederatedCredential {
            name: name.into(),
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: vec![ENTRA_DEFAULT_AUDIENCE.to_owned()],
        }
    }

    fn problem(&self) -> Option<String> {
        if self.name.is_empty() || self.name.len() > 120 {
            return Some("its name must have 1 to 120 characters".to_owned());
        }
        if self.issuer.is_empty() || self.issuer.len() > 600 {
            return Some("its issuer must have 1 to 600 characters".to_owned());
        }
        if self.subject.is_empty() || self.subject.len() > 600 {
            return Some("its subject must have 1 to 600 characters".to_owned());
        }
        if self.audiences.len() != 1 || self.audiences.iter().any(|a| a.is_empty() || a.len() > 600)
        {
            return Some("it must have exactly one audience of 1 to 600 characters".to_owned());
        }
        None
    }
}

impl EntraConfig {
    pub(crate) fn validate(&self) -> Result<(), CloudConfigError> {
        for t in &self.tenants {
            if t.tenant_id.is_empty() || t.tenant_id.contains('/') {
                return Err(CloudConfigError::TenantId(t.tenant_id.clone()));
            }
            for app in &t.apps {
                if app.client_id.is_empty() {
                    return Err(CloudConfigError::ClientId(app.client_id.clone()));
                }
                let count = app.federated_credentials.len();
                if count > MAX_FEDERATED_CREDENTIALS {
                    return Err(CloudConfigError::TooManyCredentials {
                        app: app.client_id.clone(),
                        count,
                    });
                }
                for (i, c) in app.federated_credentials.iter().enumerate() {
                    let duplicate = app.federated_credentials[..i]
                        .iter()
                        .any(|d| d.issuer == c.issuer && d.subject == c.subject);
                    let problem = c.problem().or_else(|| {
                        duplicate.then(|| {
                            "another credential of the app has the same issuer and subject"
                                .to_owned()
                        })
                    });
                    if let Some(problem) = problem {
                        return Err(CloudConfigError::Credential {
                            app: app.client_id.clone(),
                            name: c.name.clone(),
                            problem,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn tenant(&self, id: &str) -> Option<&EntraTenant> {
        self.tenants.iter().find(|t| t.tenant_id == id)
    }
}
