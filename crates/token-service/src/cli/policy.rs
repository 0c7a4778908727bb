//! `token-service policy check|explain`: the client policy offline, without a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::clock::Clock;
use crate::config::reader::Reader;
use crate::config::source::Values;
use crate::error::StartupError;
use crate::flows::FlowRegistry;
use crate::model::AuthenticatedClient;
use crate::policy::Requested;
use crate::policy::rules::{Outcome, Policy, RuleTrace, Verdict};
use crate::x509::{ClientIdAttribute, Trust, TrustSettings};

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and its deny lists. Exit status 0 when valid, 1 when not (the
    /// message names the file, line and reason).
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Show which rule would decide for a certificate, and why, without running the server.
    /// Exit status 0 when the client would be allowed, 1 when denied, 2 on unusable input.
    Explain {
        /// PEM client certificate, leaf first; intermediates may follow.
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        /// Policy file [default: POLICY_FILE].
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Service account the client would ask to impersonate.
        #[arg(long, value_name = "EMAIL")]
        service_account: Option<String>,
        /// Scope(s) the client would ask for (space-separated, or repeat the option).
        #[arg(long)]
        scope: Vec<String>,
        /// Audience the client would ask for with the parameter `audience` (one of
        /// TOKEN_AUDIENCES; leave it out for the default audience).
        #[arg(long, value_name = "AUD")]
        audience: Option<String>,
        /// AWS role the client would ask for with the parameter `aws_role_arn` (checked
        /// against the rule's `aws_roles`; the audience is then AWS_AUDIENCE unless --audience
        /// says otherwise).
        #[arg(long, value_name = "ARN")]
        aws_role_arn: Option<String>,
        /// Entra app (client ID) the client would ask for with the parameter
        /// `azure_client_id` (checked against the rule's `azure_clients`; the audience is then
        /// AZURE_AUDIENCE unless --audience says otherwise).
        #[arg(long, value_name = "GUID")]
        azure_client_id: Option<String>,
        /// Flow that would authenticate the client.
        #[arg(long, default_value = "mtls-client-credentials")]
        flow: String,
        /// CA bundle to verify the certificate and name its issuing CA [default:
        /// TLS_CLIENT_CA_FILE].
        #[arg(long, value_name = "PEM")]
        ca: Option<PathBuf>,
    },
}

/// Runs a `policy` subcommand; `values` are the settings (environment and `--config`), and
/// a policy's flow conditions may name the flows of `registry`.
pub fn run(command: &PolicyCommand, values: &Values, registry: &FlowRegistry) -> ExitCode {
    match command {
        PolicyCommand::Check { file } => check(file, registry),
        PolicyCommand::Explain {
            cert,
            policy,
            service_account,
            scope,
            audience,
            aws_role_arn,
            azure_client_id,
            flow,
            ca,
        } => {
            let setting = |name: &str| {
                values
                    .get(name)
                    .map(|(v, _)| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            };
            let Some(policy_path) = policy
                .clone()
                .or_else(|| setting("POLICY_FILE").map(PathBuf::from))
            else {
                eprintln!("error: no policy: pass --policy FILE or set POLICY_FILE");
                return ExitCode::from(2);
            };
            let mut reader = Reader::new(values);
            let attribute = crate::x509::settings::read_client_id(&mut reader);
            let aws = crate::aws::AwsConfig::read(&mut reader);
            let azure = crate::azure::AzureConfig::read(&mut reader);
            let (errors, _, _) = reader.finish();
            if let Some(e) = errors.first() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let ca = ca
                .clone()
                .or_else(|| setting("TLS_CLIENT_CA_FILE").map(PathBuf::from));
            let scope = scope.join(" ");
            let aws_role = aws_role_arn.as_deref().filter(|a| !a.trim().is_empty());
            // A request naming a role asks for a token for AWS_AUDIENCE; the default audience
            // (TOKEN_AUDIENCE) needs no policy check.
            let azure_client = azure_client_id.as_deref().filter(|a| !a.trim().is_empty());
            let aws_audience = aws_role
                .map(|_| aws.audience.as_str())
                .or(azure_client.map(|_| azure.audience.as_str()))
                .filter(|a| setting("TOKEN_AUDIENCE").as_deref() != Some(a));
            let audience = audience
                .as_deref()
                .filter(|a| !a.trim().is_empty())
                .or(aws_audience);
            print_explanation(&Request {
                cert,
                policy: &policy_path,
                ca: ca.as_deref(),
                flow,
                flows: registry,
                attribute,
                requested: Requested {
                    scope: Some(scope.as_str()).filter(|s| !s.trim().is_empty()),
                    service_account: service_account.as_deref(),
                    audience,
                    aws_role,
                    azure_client,
                },
            })
        }
    }
}

/// `policy check FILE`: the rules with their lines, or the first problem. The output lines are
/// a tested contract.
fn check(file: &Path, registry: &FlowRegistry) -> ExitCode {
    match Policy::load_for(file, &registry.names()) {
        Ok(policy) => {
            println!("{}: valid: {}", file.display(), policy.summary());
            for rule in policy.rules() {
                println!(
                    "  line {:<4} rule '{}': {}",
                    rule.line,
                    rule.name,
                    if rule.allows() { "allow" } else { "deny" }
                );
                if let Some(audiences) = rule.audiences() {
                    println!("             {audiences}");
                }
                if let Some(roles) = rule.aws_roles() {
                    println!("             {roles}");
                }
                if let Some(apps) = rule.azure_clients() {
                    println!("             {apps}");
                }
            }
            if policy.rules().is_empty() {
                println!("  no rules: every client would be denied");
            }
            print_shadowed(&policy);
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The file names itself in the problem; the setting is not what was passed here.
            eprintln!("error: {}", e.problem);
            ExitCode::FAILURE
        }
    }
}

/// The rules that can never match, one line each (a tested contract); the file stays valid.
fn print_shadowed(policy: &Policy) {
    let rules = policy.rules();
    for shadow in policy.shadowed() {
        let (Some(rule), Some(by)) = (rules.get(shadow.rule), rules.get(shadow.by)) else {
            continue;
        };
        println!(
            "  unreachable: rule '{}' (line {}) can never match: rule '{}' (line {}) matches every client it would, and decides first",
            rule.name, rule.line, by.name, by.line
        );
    }
}

/// `policy explain`: prints the trace; exits 0 when the client would be allowed.
fn print_explanation(request: &Request<'_>) -> ExitCode {
    match explain(request) {
        Ok((text, allowed)) => {
            print!("{text}");
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

struct Request<'a> {
    cert: &'a Path,
    policy: &'a Path,
    ca: Option<&'a Path>,
    flow: &'a str,
    flows: &'a FlowRegistry,
    attribute: ClientIdAttribute,
    requested: Requested<'a>,
}

/// Why `policy explain` cannot answer: its Display is the one line printed after `error: `
/// (a tested contract).
#[derive(Debug, thiserror::Error)]
enum ExplainError {
    /// `--flow` names no registered flow.
    #[error("--flow: '{flow}' is not a flow; known flows: {known}")]
    UnknownFlow {
        /// What was passed.
        flow: String,
        /// The registered flows, comma-separated.
        known: String,
    },
    /// The policy file is unusable; its problem names the file.
    #[error("{}", .0.problem)]
    Policy(#[from] StartupError),
    /// `--cert` cannot be read.
    #[error("--cert: cannot read '{}': {source}", path.display())]
    ReadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--cert` is not PEM.
    #[error("--cert: '{}': {source}", path.display())]
    CertPem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// `--cert` holds no certificate.
    #[error("--cert: '{}' holds no PEM certificate", .0.display())]
    NoCert(PathBuf),
    /// The leaf cannot be parsed, or the `--ca` bundle not loaded (the message says which).
    #[error("{0}")]
    Unusable(String),
}

/// The explanation as text, and whether the client would be allowed.
fn explain(request: &Request<'_>) -> Result<(String, bool), ExplainError> {
    use std::fmt::Write as _;
    // Offline, a flow condition may name the flows registered in this binary.
    let builtin = request.flows;
    if !builtin.contains(request.flow) {
        return Err(ExplainError::UnknownFlow {
            flow: request.flow.to_owned(),
            known: builtin.names().join(", "),
        });
    }
    let policy = Policy::load_for(request.policy, &builtin.names())?;
    let chain = read_chain(request.cert)?;
    let leaf = chain
        .first()
        .ok_or_else(|| ExplainError::NoCert(request.cert.to_owned()))?;
    let mut facts = crate::x509::facts(leaf).map_err(|e| ExplainError::Unusable(e.to_string()))?;
    let verification = verification(request.ca, &chain, &mut facts)?;
    let mut out = String::new();
    write_facts(&mut out, &facts, &verification);
    let Some(client_id) = request.attribute.client_id(&facts) else {
        let _ = writeln!(
            out,
            "\nDecision: DENY before the policy: the certificate lacks the attribute MTLS_CLIENT_ID_ATTRIBUTE={} names, so the flow refuses it",
            request.attribute.name()
        );
        return Ok((
            format!("Certificate {}\n{out}", request.cert.display()),
            false,
        ));
    };
    field(
        &mut out,
        "client_id (flow)",
        &format!(
            "{client_id} (MTLS_CLIENT_ID_ATTRIBUTE={})",
            request.attribute.name()
        ),
    );
    let client = AuthenticatedClient {
        flow: request.flow.to_owned(),
        client_id,
        facts,
    };
    let (trace, verdict) = policy.explain(&client, request.requested);
    let _ = writeln!(
        out,
        "\nPolicy {}: {}",
        request.policy.display(),
        policy.summary()
    );
    write_trace(&mut out, &trace);
    let allowed = write_decision(&mut out, &verdict, request.requested);
    Ok((
        format!("Certificate {}\n{out}", request.cert.display()),
        allowed,
    ))
}

/// The certificates of `--cert`, leaf first. Errors here and in [`verification`] are lines of
/// [`explain`]'s output.
fn read_chain(cert: &Path) -> Result<Vec<Vec<u8>>, ExplainError> {
    let pem = std::fs::read(cert).map_err(|source| ExplainError::ReadCert {
        path: cert.to_owned(),
        source,
    })?;
    CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|source| ExplainError::CertPem {
            path: cert.to_owned(),
            source,
        })
}

/// Whether the chain verifies against `--ca` (which also names the issuing CA's fingerprint in
/// `facts`), as a phrase.
fn verification(
    ca: Option<&Path>,
    chain: &[Vec<u8>],
    facts: &mut crate::model::CertificateFacts,
) -> Result<String, ExplainError> {
    let Some(ca) = ca else {
        return Ok("not checked (pass --ca or set TLS_CLIENT_CA_FILE)".to_owned());
    };
    let trust = Trust::load(
        TrustSettings {
            ca_file: ca.to_owned(),
            crl_file: None,
            reload_interval: std::time::Duration::from_secs(5),
            revocation: Default::default(),
            fetch: Default::default(),
        },
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    )
    .map_err(|e| ExplainError::Unusable(e.to_string()))?;
    (facts.issuer_ca_sha256, facts.issuer_ca_sha256_twin) = trust.issuer_fingerprint(chain);
    let seconds = u64::try_from(Clock::system().now()).unwrap_or(0);
    let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    Ok(match trust.verify(chain, now) {
        Ok(()) => format!("verifies against {}", ca.display()),
        Err(e) => format!("REFUSED against {}: {e}", ca.display()),
    })
}

fn write_facts(out: &mut String, facts: &crate::model::CertificateFacts, verification: &str) {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    field(out, "subject", &dash(facts.subject_dn.as_deref()));
    field(out, "issuer", &dash(facts.issuer_dn.as_deref()));
    field(out, "spiffe_id", &dash(facts.spiffe_id.as_deref()));
    field(out, "dns_san", &list(&facts.dns_sans));
    field(out, "uri_san", &list(&facts.uri_sans));
    field(out, "sha256", &dash(facts.sha256_fingerprint.as_deref()));
    field(out, "serial", &dash(facts.serial_number.as_deref()));
    field(
        out,
        "issuer_ca_sha256",
        &dash(facts.issuer_ca_sha256.as_deref()),
    );
    field(out, "verification", verification);
}

fn write_trace(out: &mut String, trace: &[RuleTrace]) {
    use std::fmt::Write as _;
    for t in trace {
        match &t.result {
            Ok(matched) if matched.is_empty() => {
                let _ = writeln!(
                    out,
                    "  rule '{}' (line {}): matches (no conditions)",
                    t.name, t.line
                );
            }
            Ok(matched) => {
                let _ = writeln!(
                    out,
                    "  rule '{}' (line {}): matches: {}",
                    t.name,
                    t.line,
                    matched.join("; ")
                );
            }
            Err(why) => match &t.skipped_by {
                None => {
                    let _ = writeln!(
                        out,
                        "  rule '{}' (line {}): no match: {why}",
                        t.name, t.line
                    );
                }
                Some(index) => {
                    let _ = writeln!(
                        out,
                        "  rule '{}' (line {}): skipped by {index}: {why}",
                        t.name, t.line
                    );
                }
            },
        }
    }
}

/// Writes the decision; returns whether the client would be allowed.
fn write_decision(out: &mut String, verdict: &Verdict, requested: Requested<'_>) -> bool {
    use std::fmt::Write as _;
    match &verdict.outcome {
        Outcome::Allow(admitted) => {
            let _ = writeln!(out, "\nDecision: ALLOW by rule '{}'", verdict.rule);
            let _ = writeln!(out, "  client_id            {}", admitted.client_id);
            if !admitted.extra_claims.is_empty() {
                let _ = writeln!(
                    out,
                    "  extra claims         {}",
                    serde_json::Value::Object(admitted.extra_claims.clone())
                );
            }
            if let Some(l) = admitted.lifetime_seconds {
                let _ = writeln!(out, "  token lifetime       {l} s");
            }
            if let Some(audience) = &admitted.audience {
                write_audience(out, audience);
            }
            if let Some(sa) = requested.service_account {
                let _ = writeln!(out, "  service account      {sa}: allowed");
            }
            if let Some(scope) = requested.scope {
                let _ = writeln!(out, "  scope                {scope}: allowed");
            }
            if let Some(role) = requested.aws_role {
                let _ = writeln!(out, "  aws role             {role}: allowed");
            }
            if let Some(app) = requested.azure_client {
                let _ = writeln!(out, "  azure client         {app}: allowed");
            }
            true
        }
        Outcome::DenyClient(reason) => {
            let _ = writeln!(
                out,
                "\nDecision: DENY by {}: {reason}",
                crate::policy::describe_rule(&verdict.rule)
            );
            let _ = writeln!(out, "  the client would get 403 unauthorized_client");
            false
        }
        Outcome::DenyAccess { log, .. } => {
            let _ = writeln!(
                out,
                "\nDecision: DENY what was asked for, by rule '{}': {log}",
                verdict.rule
            );
            let _ = writeln!(
                out,
                "  the client would get 403 access_denied (an ID token alone would be allowed)"
            );
            false
        }
    }
}

/// The audience the client would get, with the rule's `sub` and lifetime for it. The service
/// also requires the audience to be one of `TOKEN_AUDIENCES` (not checked here), and
/// `TOKEN_AUDIENCE_VALIDITY` may set its lifetime where the rule does not.
fn write_audience(out: &mut String, audience: &crate::model::AudienceGrant) {
    field(
        out,
        "audience",
        &format!(
            "{}: allowed by the rule (the service also requires it in TOKEN_AUDIENCES)",
            audience.audience
        ),
    );
    if let Some(sub) = &audience.subject {
        field(out, "sub", &format!("{sub} (for this audience)"));
    }
    if let Some(l) = audience.lifetime_seconds {
        field(out, "token lifetime", &format!("{l} s (for this audience)"));
    }
}

fn field(out: &mut String, key: &str, value: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "  {key:<20} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        cert: &'a Path,
        policy: &'a Path,
        flow: &'a str,
        flows: &'a FlowRegistry,
    ) -> Request<'a> {
        Request {
            cert,
            policy,
            ca: None,
            flow,
            flows,
            attribute: ClientIdAttribute::default(),
            requested: Requested::default(),
        }
    }

    #[test]
    fn explain_errors_are_the_lines_printed_after_error() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "").unwrap();
        let flows = FlowRegistry::builtin();
        let missing = dir.path().join("missing.pem");
        let unknown = explain(&request(&missing, &policy, "mtls", &flows)).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "--flow: 'mtls' is not a flow; known flows: forwarded-cert-client-credentials, mtls-client-credentials, xlb-mtls-client-credentials"
        );
        let flow = "mtls-client-credentials";
        let unreadable = explain(&request(&missing, &policy, flow, &flows)).unwrap_err();
        assert!(
            unreadable
                .to_string()
                .starts_with(&format!("--cert: cannot read '{}': ", missing.display())),
            "{unreadable}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let none = explain(&request(&empty, &policy, flow, &flows)).unwrap_err();
        assert_eq!(
            none.to_string(),
            format!("--cert: '{}' holds no PEM certificate", empty.display())
        );
    }
}
