//! The policy file (TOML): ordered rules and deny lists, compiled once per load so a request
//! only matches globs and looks up hash sets. Errors name the file, the line and what to fix.
//! This file holds the compiled types and the loading API; `rules/compile.rs` turns the TOML
//! into them, `rules/eval.rs` decides requests with them. Uses `model`, the deny lists and
//! templates of `policy`, and `error` for startup errors; no I/O but reading the files.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};
use toml::Spanned;

use super::Requested;
use super::deny_list::{DenyList, Kind, parse_fingerprint, parse_serial};
use super::template::{Fact, Template, attribute, spiffe_parts};
use crate::error::StartupError;
use crate::model::{AuthenticatedClient, Client};
use pattern::{GlobKind, Pattern};

/// Bounds of `token_lifetime`, in seconds: those of `TOKEN_VALIDITY` (1 to 60 minutes).
pub const LIFETIME_BOUNDS: std::ops::RangeInclusive<i64> = {
    // TOKEN_VALIDITY's bounds, in seconds: one bound for both.
    let (min, max) = crate::issuer::settings::VALIDITY_MINUTES;
    (min as i64 * 60)..=(max as i64 * 60)
};

/// Claims a policy may not set: the service sets them itself.
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "amr",
    "client_id",
    "client",
    "cnf",
];

// ---------------------------------------------------------------------------------------------
// The compiled policy.

/// What is wrong with a claim value: its template, or a number JSON cannot hold.
#[derive(Debug, Clone, thiserror::Error)]
enum ClaimError {
    #[error(transparent)]
    Template(#[from] super::template::TemplateError),
    #[error("{0} cannot be written in JSON")]
    NotJson(f64),
}

/// How a match on a re-signed twin is phrased after "FACT 'PRESENTED' is listed".
fn twin_phrase(twin: &str) -> String {
    format!("as '{twin}', the same certificate with its other ECDSA signature encoding")
}

fn first_match<'p>(patterns: &'p [Pattern], value: &str) -> Option<&'p Pattern> {
    patterns.iter().find(|p| p.matches(value))
}

fn sources(patterns: &[Pattern]) -> String {
    patterns
        .iter()
        .map(|p| format!("'{}'", p.source))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone)]
enum Condition {
    Flow(Vec<String>),
    SpiffeId(Vec<Pattern>),
    SpiffeTrustDomain(Vec<String>),
    SpiffePath(Vec<Pattern>),
    DnsSan(Vec<Pattern>),
    UriSan(Vec<Pattern>),
    Subject(String, Vec<Pattern>),
    Issuer(String, Vec<Pattern>),
    IssuerCa(HashSet<[u8; 32]>),
    Fingerprint(HashSet<[u8; 32]>),
    Serial(HashSet<Vec<u8>>),
}

/// A claim value of an allow rule: strings are templates, also inside arrays and tables.
#[derive(Debug, Clone)]
enum ClaimValue {
    Static(Value),
    Template(Template),
    Array(Vec<ClaimValue>),
    Table(Vec<(String, ClaimValue)>),
}

#[derive(Debug, Clone)]
struct Allowance {
    client_id: Option<Template>,
    claims: Vec<(String, ClaimValue)>,
    service_accounts: Option<Vec<Pattern>>,
    scopes: Option<Vec<Pattern>>,
    lifetime: Option<i64>,
    audiences: AudienceRules,
    /// `aws_roles`: globs over the AWS role ARNs a client may name with `aws_role_arn`;
    /// `None` (absent) allows any, `[]` none.
    aws_roles: Option<Vec<Pattern>>,
    /// `azure_clients`: globs over the Entra app client IDs a client may name with
    /// `azure_client_id`; `None` (absent) allows any, `[]` none.
    azure_clients: Option<Vec<Pattern>>,
}

/// What an allow rule says about the audiences a client may name with the parameter
/// `audience` (the default audience is always allowed).
#[derive(Debug, Clone, Default)]
struct AudienceRules {
    /// `audiences`: globs; `None` (absent) allows any of `TOKEN_AUDIENCES`, `[]` none.
    allowed: Option<Vec<Pattern>>,
    /// `[rule.audience."AUD"]`: what tokens for that exact audience get.
    each: BTreeMap<String, AudienceRule>,
}

/// `[rule.audience."AUD"]`, compiled.
#[derive(Debug, Clone)]
struct AudienceRule {
    /// `sub` of tokens for the audience (a template); `client_id` stays the client's.
    sub: Option<Template>,
    /// Their lifetime in seconds, within [`LIFETIME_BOUNDS`].
    lifetime: Option<i64>,
}

#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per rule, built once when the policy loads"
)]
enum Decision {
    Deny(String),
    Allow(Allowance),
}

/// One rule of the policy.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name, for logs.
    pub name: String,
    /// Line of the file where it starts.
    pub line: usize,
    conditions: Vec<Condition>,
    decision: Decision,
}

impl Rule {
    /// Whether the rule admits the clients it matches.
    pub fn allows(&self) -> bool {
        matches!(self.decision, Decision::Allow(_))
    }

    /// What the rule says about audiences, for `policy check`; `None` when it says nothing
    /// (any audience of `TOKEN_AUDIENCES`, with the rule's client ID and lifetime).
    pub fn audiences(&self) -> Option<String> {
        let Decision::Allow(allowance) = &self.decision else {
            return None;
        };
        let rules = &allowance.audiences;
        let allowed = match &rules.allowed {
            None if rules.each.is_empty() => return None,
            None => "any of TOKEN_AUDIENCES".to_owned(),
            Some(globs) if globs.is_empty() => "none but the default".to_owned(),
            Some(globs) => sources(globs),
        };
        let mut text = format!("audiences {allowed}");
        for (audience, rule) in &rules.each {
            let mut keys = Vec::new();
            if let Some(sub) = &rule.sub {
                keys.push(format!("sub '{}'", sub.source()));
            }
            if let Some(lifetime) = rule.lifetime {
                keys.push(format!("token_lifetime {lifetime} s"));
            }
            text.push_str(&format!("; '{audience}': {}", keys.join(", ")));
        }
        Some(text)
    }
}

impl Rule {
    /// What the rule says about AWS roles, for `policy check`; `None` when it says nothing
    /// (any role).
    pub fn aws_roles(&self) -> Option<String> {
        let Decision::Allow(allowance) = &self.decision else {
            return None;
        };
        match allowance.aws_roles.as_deref()? {
            [] => Some("aws_roles none".to_owned()),
            globs => Some(format!("aws_roles {}", sources(globs))),
        }
    }

    /// What the rule says about Entra apps, for `policy check`; `None` when it says nothing
    /// (any app).
    pub fn azure_clients(&self) -> Option<String> {
        let Decision::Allow(allowance) = &self.decision else {
            return None;
        };
        match allowance.azure_clients.as_deref()? {
            [] => Some("azure_clients none".to_owned()),
            globs => Some(format!("azure_clients {}", sources(globs))),
        }
    }
}

/// A loaded policy: rules in order and deny lists.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    /// Shared with the versions [`Policy::with_reloaded_deny_lists`] makes.
    rules: Arc<[Rule]>,
    index: Arc<index::Index>,
    deny_lists: Vec<DenyList>,
}

/// How a request fared.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Admitted, with what the client gets.
    Allow(Box<Client>),
    /// The client gets no token; the reason is for the logs only.
    DenyClient(String),
    /// The client may get tokens, but not what it asked for: `log` for the logs, `message`
    /// for the client.
    DenyAccess {
        /// Reason for the logs.
        log: String,
        /// Generic reason for the client.
        message: String,
    },
}

/// The decision on one request: which rule decided, on which facts, and how.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The deciding rule (or deny list, or `no rule matched`).
    pub rule: String,
    /// What matched, as `fact 'value' matches 'glob'` phrases.
    pub matched: Vec<String>,
    /// The outcome.
    pub outcome: Outcome,
}

/// How one rule fared, for `policy explain`.
#[derive(Debug, Clone)]
pub struct RuleTrace {
    /// Rule name.
    pub name: String,
    /// Its line.
    pub line: usize,
    /// `Ok(matches)` when every condition held, else `Err(the first that failed)`.
    pub result: Result<Vec<String>, Unmatched>,
    /// The index that skipped the rule (`the spiffe_id index`), when it was not evaluated
    /// in the decision; `result` is then what evaluating it would have found.
    pub skipped_by: Option<String>,
}

/// Why a rule's condition did not hold, as the phrase `policy explain` prints after
/// `no match: ` (e.g. `dns_san 'a.example' matches none of '*.example.org'`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unmatched(pub String);

/// A problem in a policy file: the file, the line when known, and what is wrong. Prints as
/// `FILE:LINE: problem` (or `FILE: problem`), the line `policy check` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {problem}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyFileError {
    /// The policy file.
    pub path: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong, and what would be valid.
    pub problem: String,
}

impl PolicyFileError {
    fn at(path: &Path, line: Option<usize>, problem: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line,
            problem: problem.into(),
        }
    }
}

impl From<PolicyFileError> for StartupError {
    /// A policy file's problem is `POLICY_FILE`'s.
    fn from(e: PolicyFileError) -> Self {
        StartupError::setting(POLICY_FILE, e.to_string())
    }
}

/// Name of the pseudo-rule that decides when no rule matches.
pub const NO_RULE: &str = "(no rule matched)";

/// The setting that names the policy file.
const POLICY_FILE: &str = "POLICY_FILE";

impl Policy {
    /// The policy of `rules` (in order) and `deny_lists`, with the rules indexed.
    fn new(path: &Path, rules: Vec<Rule>, deny_lists: Vec<DenyList>) -> Self {
        let index = Arc::new(index::Index::build(&rules));
        Self {
            path: path.to_owned(),
            rules: rules.into(),
            index,
            deny_lists,
        }
    }

    /// Reads and compiles a policy file (and its deny lists, relative to the file's folder); a
    /// problem names `POLICY_FILE`, the file and the line.
    pub fn load(path: &Path) -> Result<Self, StartupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyFileError::at(path, None, format!("cannot read: {e}")))?;
        Ok(Self::parse(path, &text)?)
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Reads and compiles a policy file and checks its flow names against `known`.
    pub fn load_for(path: &Path, known: &[&str]) -> Result<Self, StartupError> {
        let policy = Self::load(path)?;
        policy.check_flows(path, known)?;
        Ok(policy)
    }

    /// The same rules with the deny lists read again from their files: revocations still apply
    /// while a broken policy file is being fixed. The error is the deny list's own, for the log.
    pub fn with_reloaded_deny_lists(&self) -> Result<Self, super::deny_list::DenyListError> {
        let deny_lists = self
            .deny_lists
            .iter()
            .map(|list| DenyList::load(list.kind(), list.path()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            deny_lists,
            ..self.clone()
        })
    }

    /// Whether the policy has deny lists.
    pub fn has_deny_lists(&self) -> bool {
        !self.deny_lists.is_empty()
    }

    /// The policy file and its deny lists, for change detection.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        files.extend(self.deny_lists.iter().map(|l| l.path().to_owned()));
        files
    }

    /// One line for logs: rules and deny-list sizes.
    pub fn summary(&self) -> String {
        let mut text = format!("{} rule(s)", self.rules.len());
        for list in &self.deny_lists {
            text.push_str(&format!(
                ", {} {} on the deny list {}",
                list.len(),
                match list.kind() {
                    Kind::Fingerprints => "fingerprint(s)",
                    Kind::Serials => "serial(s)",
                },
                list.path().display()
            ));
        }
        text
    }
}

mod compile;
mod eval;
mod index;
mod pattern;
mod shadow;
pub use shadow::Shadowed;
