//! Command-line interface of the `gcp-emulator` binary: flag definitions,
//! their parsing into a [`Config`], and the help text that documents the
//! emulated endpoints and the `/emulator/` admin API.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;

use crate::config::{Config, Provider};

const AFTER_HELP: &str = "\
EMULATED ENDPOINTS (one port):
  GET  /computeMetadata/v1/instance/service-accounts/default/email     metadata.email
  GET  /computeMetadata/v1/instance/service-accounts/default/token     metadata.token  (?scopes=a,b)
  GET  /computeMetadata/v1/project/project-id | numeric-project-id     metadata.project
       (all metadata paths need the header Metadata-Flavor: Google)
  POST /v1/projects/-/serviceAccounts/{EMAIL}:signJwt                  iam.signJwt
  POST /v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken      iam.generateAccessToken
       (IAM calls need Authorization: Bearer <token issued by this emulator>)
  GET  /service_accounts/v1/metadata/jwk/{EMAIL}                       jwks
  POST /v1/token        STS token exchange (RFC 8693)                  sts.token
  POST /token           OAuth 2.0 token endpoint (refresh_token, jwt-bearer)  oauth.token

ADMIN API:
  POST   /emulator/faults  {\"endpoint\":\"iam.signJwt\",\"status\":503,\"latency_ms\":0,\"times\":2,\"message\":\"...\"}
         inject a fault for the next `times` calls (omit times for every call; omit status for latency only)
  GET    /emulator/faults  list active faults
  DELETE /emulator/faults  remove all faults
  GET    /emulator/calls   call counts per endpoint name
  POST   /emulator/reset   zero counts and remove faults

EXAMPLE:
  gcp-emulator --port 9090 \\
    --provider ci-pool/ci-oidc=https://issuer.example.com \\
    --allow-impersonation 'deployer@demo-project.iam.gserviceaccount.com=principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/ci-pool/*' \\
    --extra-service-account deployer@demo-project.iam.gserviceaccount.com";

/// Local emulator of the Google Cloud metadata server, IAM Credentials, STS,
/// service-account JWKS and OAuth token endpoint.
#[derive(Debug, Clone, Parser)]
#[command(name = "gcp-emulator", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 9090)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Project ID served by the metadata server.
    #[arg(long, default_value = "demo-project")]
    pub project_id: String,

    /// Project number served by the metadata server and used for --provider.
    #[arg(long, default_value = "123456789012")]
    pub project_number: String,

    /// The metadata server's default service account.
    #[arg(
        long,
        default_value = "token-service@demo-project.iam.gserviceaccount.com"
    )]
    pub service_account: String,

    /// A further service account that exists (repeatable).
    #[arg(long = "extra-service-account", value_name = "EMAIL")]
    pub extra_service_accounts: Vec<String>,

    /// A workload identity pool OIDC provider in the project (repeatable).
    #[arg(long = "provider", value_name = "POOL/PROVIDER=ISSUER_URI", value_parser = parse_provider_spec)]
    pub providers: Vec<(String, String, String)>,

    /// Let MEMBER call generateAccessToken as SA (repeatable). MEMBER is a
    /// principal://…/subject/S, a principalSet://…/workloadIdentityPools/P/*,
    /// or a service account email.
    #[arg(long = "allow-impersonation", value_name = "SA=MEMBER", value_parser = parse_pair)]
    pub impersonation: Vec<(String, String)>,

    /// Let CALLER call signJwt as TARGET (repeatable).
    #[arg(long = "token-creator", value_name = "TARGET=CALLER", value_parser = parse_pair)]
    pub token_creators: Vec<(String, String)>,

    /// Refuse signJwt by a service account on itself unless --token-creator allows it.
    #[arg(long)]
    pub no_self_sign: bool,

    /// expires_in of metadata-server access tokens, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3599, value_parser = clap::value_parser!(u64).range(1..))]
    pub metadata_token_lifetime: u64,

    /// Longest generateAccessToken lifetime accepted, in seconds (Google: 3600, or up to 43200 by org policy).
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=43200))]
    pub max_impersonation_lifetime: u64,

    /// Clock skew tolerated on exp/iat of incoming JWTs, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(i64).range(0..=3600))]
    pub clock_skew: i64,
}

fn parse_pair(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => {
            Ok((a.trim().to_owned(), b.trim().to_owned()))
        }
        _ => Err(format!("expected LEFT=RIGHT, got {raw:?}")),
    }
}

fn parse_provider_spec(raw: &str) -> Result<(String, String, String), String> {
    let (ids, issuer) =
        parse_pair(raw).map_err(|_| format!("expected POOL/PROVIDER=ISSUER_URI, got {raw:?}"))?;
    match ids.split_once('/') {
        Some((pool, provider))
            if !pool.is_empty() && !provider.is_empty() && !provider.contains('/') =>
        {
            Ok((pool.to_owned(), provider.to_owned(), issuer))
        }
        _ => Err(format!("expected POOL/PROVIDER=ISSUER_URI, got {raw:?}")),
    }
}

impl Cli {
    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The emulator configuration these flags describe.
    pub fn config(&self) -> Config {
        Config {
            project_id: self.project_id.clone(),
            project_number: self.project_number.clone(),
            service_account: self.service_account.clone(),
            extra_service_accounts: self.extra_service_accounts.clone(),
            providers: self
                .providers
                .iter()
                .map(|(pool, provider, issuer)| {
                    Provider::new(
                        self.project_number.clone(),
                        pool.clone(),
                        provider.clone(),
                        issuer.clone(),
                    )
                })
                .collect(),
            impersonation: self.impersonation.clone(),
            token_creators: self.token_creators.clone(),
            self_sign_allowed: !self.no_self_sign,
            metadata_token_lifetime_secs: self.metadata_token_lifetime,
            max_impersonation_lifetime_secs: self.max_impersonation_lifetime,
            clock_skew_secs: self.clock_skew,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_a_config() {
        let cli = Cli::try_parse_from([
            "gcp-emulator",
            "--port",
            "0",
            "--provider",
            "pool/prov=https://issuer.example",
            "--allow-impersonation",
            "sa@p.iam.gserviceaccount.com=principalSet://x/*",
            "--extra-service-account",
            "sa@p.iam.gserviceaccount.com",
        ])
        .unwrap();
        let config = cli.config();
        assert_eq!(
            config.providers[0].sts_audience(),
            "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/pool/providers/prov"
        );
        assert_eq!(config.impersonation[0].1, "principalSet://x/*");
        assert!(Cli::try_parse_from(["gcp-emulator", "--provider", "nopool=https://x"]).is_err());
        assert!(
            Cli::try_parse_from(["gcp-emulator", "--max-impersonation-lifetime", "43201"]).is_err()
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
