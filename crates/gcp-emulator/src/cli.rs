//! Command-line interface of the `gcp-emulator` binary: flag definitions,
//! their parsing into a [`Config`], and the help text that documents the
//! emulated endpoints and the `/emulator/` admin API.

use std::net::{IpAddr, SocketAddr};

use clap::Parser;

use crate::cloud_config::{
    AwsConfig, AwsOidcProvider, AwsRole, EntraApp, EntraConfig, EntraTenant, FederatedCredential,
    TrustClaim, TrustCondition, TrustOperator,
};
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
  GET  /?Action=AssumeRoleWithWebIdentity&Version=2011-06-15&...      aws.sts
  POST /   (form: Action, Version, RoleArn, RoleSessionName, WebIdentityToken[, DurationSeconds])
       AWS STS AssumeRoleWithWebIdentity: XML answers and errors as AWS sends them; the token is
       verified against --aws-oidc-provider (discovery + JWKS by kid, RS256/384/512, ES256/384/512,
       aud in the client-ID list, exp/iat/nbf with 300 s skew) and the role's trust conditions
  POST /{TENANT}/oauth2/v2.0/token                                     entra.token
       Entra v2 client credentials with client_assertion_type=
       urn:ietf:params:oauth:client-assertion-type:jwt-bearer, scope RESOURCE/.default; the
       assertion must match a --entra-federated-credential (issuer, exact subject, audience),
       RS256, nbf/exp with 300 s skew; errors carry the AADSTS code
  GET  /{TENANT}/v2.0/.well-known/openid-configuration                 entra.discovery
  GET  /{TENANT}/discovery/v2.0/keys                                   entra.keys

ADMIN API:
  POST   /emulator/faults  {\"endpoint\":\"iam.signJwt\",\"status\":503,\"latency_ms\":0,\"times\":2,\"message\":\"...\"}
         inject a fault for the next `times` calls (omit times for every call; omit status for latency only)
         aws.sts: a message \"CODE: text\" sets the AWS error code (e.g. IDPCommunicationError,
         Throttling); otherwise 400 answers Throttling. entra.*: \"AADSTSnnn: text\" sets the code.
  GET    /emulator/faults  list active faults
  DELETE /emulator/faults  remove all faults
  GET    /emulator/calls   call counts per endpoint name
  POST   /emulator/reset   zero counts and remove faults

EXAMPLE:
  gcp-emulator --port 9090 \\
    --provider ci-pool/ci-oidc=https://issuer.example.com \\
    --allow-impersonation 'deployer@demo-project.iam.gserviceaccount.com=principalSet://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/ci-pool/*' \\
    --extra-service-account deployer@demo-project.iam.gserviceaccount.com

  gcp-emulator --port 9443 --https-ca-out /tmp/emulator-ca.pem --allow-loopback-issuers \\
    --aws-oidc-provider http://127.0.0.1:8080=sts.amazonaws.com \\
    --aws-role arn:aws:iam::123456789012:role/devices=http://127.0.0.1:8080 \\
    --aws-role-condition 'arn:aws:iam::123456789012:role/devices=sub:StringLike:device-*' \\
    --entra-federated-credential 'TENANT/CLIENT_ID=http://127.0.0.1:8080|device-class-a'";

/// Local emulator of the Google Cloud metadata server, IAM Credentials, STS,
/// service-account JWKS and OAuth token endpoint, of AWS STS
/// AssumeRoleWithWebIdentity and of the Microsoft Entra v2 token endpoint.
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

    /// The emulated AWS account's ID (in role and provider ARNs).
    #[arg(long, value_name = "ID", default_value = "123456789012")]
    pub aws_account_id: String,

    /// An IAM OIDC identity provider and its client-ID list (the accepted `aud`s) (repeatable).
    #[arg(long = "aws-oidc-provider", value_name = "URL=CLIENT_ID[,CLIENT_ID...]", value_parser = parse_aws_provider)]
    pub aws_providers: Vec<(String, Vec<String>)>,

    /// An IAM role whose trust policy lets web identities of the provider at URL assume it (repeatable).
    #[arg(long = "aws-role", value_name = "ROLE_ARN=PROVIDER_URL", value_parser = parse_pair)]
    pub aws_roles: Vec<(String, String)>,

    /// A trust-policy condition of a role: CLAIM is sub or aud, OPERATOR StringEquals or
    /// StringLike (repeatable; conditions of one role must all hold).
    #[arg(long = "aws-role-condition", value_name = "ROLE_ARN=CLAIM:OPERATOR:VALUE", value_parser = parse_condition)]
    pub aws_conditions: Vec<(String, TrustCondition)>,

    /// A role's MaxSessionDuration (3600..43200; default 3600) (repeatable).
    #[arg(long = "aws-role-max-session", value_name = "ROLE_ARN=SECS", value_parser = parse_max_session)]
    pub aws_max_sessions: Vec<(String, u32)>,

    /// An Entra app registration, TENANT/CLIENT_ID, without federated credentials (repeatable).
    #[arg(long = "entra-app", value_name = "TENANT/CLIENT_ID", value_parser = parse_entra_app)]
    pub entra_apps: Vec<(String, String)>,

    /// A federated identity credential of an Entra app (the app and tenant are created as
    /// needed); AUDIENCE defaults to api://AzureADTokenExchange (repeatable).
    #[arg(long = "entra-federated-credential", value_name = "TENANT/CLIENT_ID=ISSUER|SUBJECT[|AUDIENCE]", value_parser = parse_fic)]
    pub entra_credentials: Vec<(String, String, FederatedCredential)>,

    /// Local use: accept http:// and a port for loopback issuers (http://127.0.0.1:PORT) in
    /// AWS providers, Entra credentials and jwks_uri. AWS and Entra never do.
    #[arg(long)]
    pub allow_loopback_issuers: bool,

    /// Serve HTTPS with a CA generated at start and write the CA's PEM to PATH (for
    /// REQUESTS_CA_BUNDLE / SSL_CERT_FILE).
    #[arg(long, value_name = "PATH")]
    pub https_ca_out: Option<std::path::PathBuf>,

    /// A CA certificate file (PEM) to trust when fetching an issuer's discovery document
    /// and JWKS over HTTPS, besides the public roots (repeatable).
    #[arg(long = "issuer-ca-file", value_name = "PATH", value_parser = read_pem)]
    pub issuer_ca_pems: Vec<String>,
}

fn read_pem(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the CA file {path}: {e}"))
}

fn parse_aws_provider(raw: &str) -> Result<(String, Vec<String>), String> {
    let (url, ids) = parse_pair(raw)
        .map_err(|_| format!("expected URL=CLIENT_ID[,CLIENT_ID...], got {raw:?}"))?;
    let ids: Vec<String> = ids
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((url, ids))
}

fn parse_condition(raw: &str) -> Result<(String, TrustCondition), String> {
    let usage = || {
        format!(
            "expected ROLE_ARN=CLAIM:OPERATOR:VALUE (CLAIM sub|aud, OPERATOR StringEquals|StringLike), got {raw:?}"
        )
    };
    let (arn, rest) = raw.split_once('=').ok_or_else(usage)?;
    let mut parts = rest.splitn(3, ':');
    let (Some(claim), Some(operator), Some(value)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(usage());
    };
    let claim = match claim {
        "sub" => TrustClaim::Sub,
        "aud" => TrustClaim::Aud,
        _ => return Err(usage()),
    };
    let operator = match operator {
        "StringEquals" => TrustOperator::StringEquals,
        "StringLike" => TrustOperator::StringLike,
        _ => return Err(usage()),
    };
    Ok((
        arn.trim().to_owned(),
        TrustCondition::new(claim, operator, &[value]),
    ))
}

fn parse_max_session(raw: &str) -> Result<(String, u32), String> {
    let usage = || format!("expected ROLE_ARN=SECS with SECS in 3600..43200, got {raw:?}");
    let (arn, secs) = parse_pair(raw).map_err(|_| usage())?;
    match secs.parse::<u32>() {
        Ok(s) if (3600..=43_200).contains(&s) => Ok((arn, s)),
        _ => Err(usage()),
    }
}

fn parse_entra_app(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('/') {
        Some((t, c)) if !t.is_empty() && !c.is_empty() && !c.contains('/') => {
            Ok((t.to_owned(), c.to_owned()))
        }
        _ => Err(format!("expected TENANT/CLIENT_ID, got {raw:?}")),
    }
}

fn parse_fic(raw: &str) -> Result<(String, String, FederatedCredential), String> {
    let usage = || format!("expected TENANT/CLIENT_ID=ISSUER|SUBJECT[|AUDIENCE], got {raw:?}");
    let (app, rest) = raw.split_once('=').ok_or_else(usage)?;
    let (tenant, client_id) = parse_entra_app(app).map_err(|_| usage())?;
    let mut parts = rest.split('|');
    let (Some(issuer), Some(subject)) = (parts.next(), parts.next()) else {
        return Err(usage());
    };
    let mut credential = FederatedCredential::new(String::new(), issuer, subject);
    if let Some(audience) = parts.next() {
        credential.audiences = vec![audience.to_owned()];
    }
    if parts.next().is_some() || issuer.is_empty() || subject.is_empty() {
        return Err(usage());
    }
    Ok((tenant, client_id, credential))
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
            aws: self.aws_config(),
            entra: self.entra_config(),
            allow_loopback_issuers: self.allow_loopback_issuers,
            https: self.https_ca_out.is_some(),
            issuer_ca_pems: self.issuer_ca_pems.clone(),
        }
    }

    fn aws_config(&self) -> AwsConfig {
        let mut roles: Vec<AwsRole> = self
            .aws_roles
            .iter()
            .map(|(arn, url)| AwsRole::new(arn.clone(), url.clone()))
            .collect();
        let mut role = |arn: &str| -> usize {
            if let Some(i) = roles.iter().position(|r| r.arn == arn) {
                return i;
            }
            // No --aws-role for it: validation reports the missing provider.
            roles.push(AwsRole::new(arn, ""));
            roles.len() - 1
        };
        let mut conditions = Vec::new();
        for (arn, c) in &self.aws_conditions {
            conditions.push((role(arn), c.clone()));
        }
        let mut sessions = Vec::new();
        for (arn, secs) in &self.aws_max_sessions {
            sessions.push((role(arn), *secs));
        }
        for (i, c) in conditions {
            roles[i].conditions.push(c);
        }
        for (i, secs) in sessions {
            roles[i].max_session_duration_secs = secs;
        }
        AwsConfig {
            account_id: self.aws_account_id.clone(),
            oidc_providers: self
                .aws_providers
                .iter()
                .map(|(url, ids)| AwsOidcProvider {
                    url: url.clone(),
                    client_ids: ids.clone(),
                    thumbprints: Vec::new(),
                })
                .collect(),
            roles,
            ..AwsConfig::default()
        }
    }

    fn entra_config(&self) -> EntraConfig {
        let mut config = EntraConfig::default();
        let apps = self.entra_apps.iter().map(|(t, c)| (t, c, None)).chain(
            self.entra_credentials
                .iter()
                .map(|(t, c, f)| (t, c, Some(f))),
        );
        for (tenant_id, client_id, credential) in apps {
            let tenant = match config
                .tenants
                .iter()
                .position(|t| &t.tenant_id == tenant_id)
            {
                Some(i) => &mut config.tenants[i],
                None => {
                    config.tenants.push(EntraTenant {
                        tenant_id: tenant_id.clone(),
                        apps: Vec::new(),
                    });
                    let last = config.tenants.len() - 1;
                    &mut config.tenants[last]
                }
            };
            let app = match tenant.apps.iter().position(|a| &a.client_id == client_id) {
                Some(i) => &mut tenant.apps[i],
                None => {
                    tenant.apps.push(EntraApp {
                        client_id: client_id.clone(),
                        federated_credentials: Vec::new(),
                    });
                    let last = tenant.apps.len() - 1;
                    &mut tenant.apps[last]
                }
            };
            if let Some(credential) = credential {
                let mut credential = credential.clone();
                credential.name = format!("credential-{}", app.federated_credentials.len() + 1);
                app.federated_credentials.push(credential);
            }
        }
        config
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
