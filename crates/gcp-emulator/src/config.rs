//! Configuration of an emulated Google Cloud project: which service accounts
//! exist, which workload identity pool providers trust which OIDC issuers, who
//! may impersonate or sign as whom, and the token lifetimes the emulated APIs
//! hand out. Also holds the resource-name helpers shared by STS and IAM.

use crate::cloud_config::{AwsConfig, EntraConfig};

/// The emulated project and its IAM policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Project ID served by the metadata server (`project/project-id`).
    pub project_id: String,
    /// Project number served by the metadata server (`project/numeric-project-id`).
    pub project_number: String,
    /// The metadata server's default service account.
    pub service_account: String,
    /// Further service accounts that exist (can be impersonated or signed as).
    pub extra_service_accounts: Vec<String>,
    /// Workload identity pool providers (OIDC) known to STS.
    pub providers: Vec<Provider>,
    /// `(service account email, member)` pairs granting
    /// `roles/iam.workloadIdentityUser` / Service Account Token Creator for
    /// `generateAccessToken`. A member is a `principal://…/subject/S`, a
    /// `principalSet://…/workloadIdentityPools/P/*`, or a service account
    /// email (optionally prefixed with `serviceAccount:`).
    pub impersonation: Vec<(String, String)>,
    /// `(target service account, caller)` pairs allowed to `signJwt` as the target.
    pub token_creators: Vec<(String, String)>,
    /// Whether a service account may `signJwt` as itself without being listed
    /// in `token_creators` (models "Token Creator on itself").
    pub self_sign_allowed: bool,
    /// `expires_in` of metadata-server access tokens.
    pub metadata_token_lifetime_secs: u64,
    /// Upper bound for `generateAccessToken` `lifetime` (3600 unless the
    /// organisation policy extends it; at most 43200).
    pub max_impersonation_lifetime_secs: u64,
    /// Clock skew tolerated when checking `exp` / `iat` of incoming JWTs.
    pub clock_skew_secs: i64,
    /// The emulated AWS account (STS `AssumeRoleWithWebIdentity`).
    pub aws: AwsConfig,
    /// The emulated Microsoft Entra tenants (v2 token endpoint).
    pub entra: EntraConfig,
    /// Local-use allowance for AWS providers, Entra issuers and their `jwks_uri`: accept
    /// `http://` and a port on a loopback host (`http://127.0.0.1:PORT`). The clouds never
    /// do; off by default so that the emulator refuses what they refuse.
    pub allow_loopback_issuers: bool,
    /// Serve HTTPS with a certificate from a CA the emulator generates (see
    /// `Emulator::ca_pem`) instead of plain HTTP.
    pub https: bool,
    /// Extra CA certificates (PEM) the emulator trusts when it fetches an issuer's discovery
    /// document and JWKS over HTTPS, besides the public roots.
    pub issuer_ca_pems: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            project_id: "demo-project".to_owned(),
            project_number: "123456789012".to_owned(),
            service_account: "token-service@demo-project.iam.gserviceaccount.com".to_owned(),
            extra_service_accounts: Vec::new(),
            providers: Vec::new(),
            impersonation: Vec::new(),
            token_creators: Vec::new(),
            self_sign_allowed: true,
            metadata_token_lifetime_secs: 3599,
            max_impersonation_lifetime_secs: 3600,
            clock_skew_secs: 60,
            aws: AwsConfig::default(),
            entra: EntraConfig::default(),
            allow_loopback_issuers: false,
            https: false,
            issuer_ca_pems: Vec::new(),
        }
    }
}

impl Config {
    /// Every service account that exists: the default one first, then the extras.
    pub fn all_service_accounts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for email in std::iter::once(&self.service_account).chain(&self.extra_service_accounts) {
            if !out.iter().any(|e| e.eq_ignore_ascii_case(email)) {
                out.push(email.clone());
            }
        }
        out
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.service_account.trim().is_empty() {
            anyhow::bail!("the default service account must not be empty");
        }
        for email in self.all_service_accounts() {
            if !email.contains('@') {
                anyhow::bail!("service account {email:?} is not an email address");
            }
        }
        if self.metadata_token_lifetime_secs == 0 {
            anyhow::bail!("metadata_token_lifetime_secs must be at least 1");
        }
        if !(1..=43_200).contains(&self.max_impersonation_lifetime_secs) {
            anyhow::bail!("max_impersonation_lifetime_secs must be between 1 and 43200");
        }
        if self.clock_skew_secs < 0 {
            anyhow::bail!("clock_skew_secs must not be negative");
        }
        self.aws.validate(self.allow_loopback_issuers)?;
        self.entra.validate()?;
        for p in &self.providers {
            if p.pool_id.is_empty() || p.provider_id.is_empty() || p.project_number.is_empty() {
                anyhow::bail!("provider {p:?} needs a project number, pool id and provider id");
            }
            if p.issuer_uri.is_empty() {
                anyhow::bail!(
                    "provider {}/{} needs an issuer URI",
                    p.pool_id,
                    p.provider_id
                );
            }
        }
        Ok(())
    }
}

/// An OIDC workload identity pool provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub project_number: String,
    pub pool_id: String,
    pub provider_id: String,
    /// Must equal the subject token's `iss` and the discovery document's `issuer`.
    pub issuer_uri: String,
    /// Accepted `aud` values; empty means Google's default
    /// (`https://iam.googleapis.com/` + the provider's resource name).
    pub allowed_audiences: Vec<String>,
}

impl Provider {
    /// A provider with Google's default allowed audience.
    pub fn new(
        project_number: impl Into<String>,
        pool_id: impl Into<String>,
        provider_id: impl Into<String>,
        issuer_uri: impl Into<String>,
    ) -> Self {
        Provider {
            project_number: project_number.into(),
            pool_id: pool_id.into(),
            provider_id: provider_id.into(),
            issuer_uri: issuer_uri.into(),
            allowed_audiences: Vec::new(),
        }
    }

    /// `projects/N/locations/global/workloadIdentityPools/P/providers/R`.
    pub fn resource_name(&self) -> String {
        format!(
            "projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            self.project_number, self.pool_id, self.provider_id
        )
    }

    /// The STS `audience` parameter naming this provider.
    pub fn sts_audience(&self) -> String {
        format!("//iam.googleapis.com/{}", self.resource_name())
    }

    /// The audiences a subject token may carry.
    pub fn accepted_audiences(&self) -> Vec<String> {
        if self.allowed_audiences.is_empty() {
            vec![format!(
                "https://iam.googleapis.com/{}",
                self.resource_name()
            )]
        } else {
            self.allowed_audiences.clone()
        }
    }

    /// The federated principal for a subject of this provider's pool.
    pub fn principal_for(&self, subject: &str) -> String {
        format!(
            "principal://iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/subject/{}",
            self.project_number, self.pool_id, subject
        )
    }
}

/// Does IAM `member` (from a policy binding) match the authenticated `principal`?
pub(crate) fn member_matches(member: &str, principal: &str) -> bool {
    if let Some(rest) = member.strip_prefix("principalSet://") {
        let Some(pool_prefix) = rest.strip_suffix('*') else {
            return false;
        };
        if !pool_prefix.ends_with('/') {
            return false;
        }
        return principal
            .strip_prefix("principal://")
            .and_then(|p| p.strip_prefix(pool_prefix))
            .is_some_and(|s| s.starts_with("subject/") && s.len() > "subject/".len());
    }
    if member.starts_with("principal://") {
        return member == principal;
    }
    let bare = strip_member_kind(member);
    !bare.is_empty() && bare.eq_ignore_ascii_case(strip_member_kind(principal))
}

/// `serviceAccount:a@b` / `user:a@b` → `a@b`.
pub(crate) fn strip_member_kind(member: &str) -> &str {
    member
        .strip_prefix("serviceAccount:")
        .or_else(|| member.strip_prefix("user:"))
        .unwrap_or(member)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p";

    #[test]
    fn principal_set_matches_any_subject_of_the_pool() {
        let set = format!("principalSet://{POOL}/*");
        assert!(member_matches(
            &set,
            &format!("principal://{POOL}/subject/x")
        ));
        assert!(!member_matches(
            &set,
            &format!("principal://{POOL}x/subject/x")
        ));
        assert!(!member_matches(
            &set,
            &format!("principal://{POOL}/subject/")
        ));
        assert!(!member_matches(&set, "sa@p.iam.gserviceaccount.com"));
    }

    #[test]
    fn principal_and_email_members() {
        let p = format!("principal://{POOL}/subject/x");
        assert!(member_matches(&p, &p));
        assert!(!member_matches(&p, &format!("{p}y")));
        assert!(member_matches("serviceAccount:A@b.com", "a@b.com"));
        assert!(member_matches("a@b.com", "a@b.com"));
        assert!(!member_matches("a@b.com", "c@b.com"));
    }
}
