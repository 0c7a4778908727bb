//! The policy file (TOML): ordered rules and deny lists, compiled once per load so a request
//! only matches globs and looks up hash sets. Errors name the file, the line and what to fix.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};
use toml::Spanned;

use super::Requested;
use super::deny_list::{DenyList, Kind, parse_fingerprint, parse_serial};
use super::template::{Fact, Template, attribute, spiffe_parts};
use crate::error::StartupError;
use crate::model::{AuthenticatedClient, Client};

/// Bounds of `token_lifetime`, in seconds: those of `TOKEN_VALIDITY` (1 to 60 minutes).
pub const LIFETIME_BOUNDS: std::ops::RangeInclusive<i64> = 60..=3600;

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
];

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    deny_lists: Option<RawDenyLists>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDenyLists {
    sha256_fingerprints: Option<Spanned<String>>,
    serials: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    decision: Spanned<String>,
    reason: Option<Spanned<String>>,
    #[serde(rename = "match", default)]
    conditions: Option<RawMatch>,
    client_id: Option<Spanned<String>>,
    claims: Option<BTreeMap<String, Spanned<toml::Value>>>,
    service_accounts: Option<Spanned<OneOrMany>>,
    scopes: Option<Spanned<OneOrMany>>,
    token_lifetime: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    flow: Option<Spanned<OneOrMany>>,
    spiffe_id: Option<Spanned<OneOrMany>>,
    spiffe_trust_domain: Option<Spanned<OneOrMany>>,
    spiffe_path: Option<Spanned<OneOrMany>>,
    dns_san: Option<Spanned<OneOrMany>>,
    uri_san: Option<Spanned<OneOrMany>>,
    subject: Option<BTreeMap<String, Spanned<OneOrMany>>>,
    issuer: Option<BTreeMap<String, Spanned<OneOrMany>>>,
    issuer_ca_sha256: Option<Spanned<OneOrMany>>,
    sha256_fingerprint: Option<Spanned<OneOrMany>>,
    serial: Option<Spanned<OneOrMany>>,
}

/// A string or a list of strings.
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled policy.

/// A glob and the text it was written as.
#[derive(Debug, Clone)]
struct Pattern {
    source: String,
    matcher: GlobMatcher,
    dns: bool,
}

/// How a glob treats separators.
#[derive(Debug, Clone, Copy)]
enum GlobKind {
    /// `*` matches anything.
    Plain,
    /// `*` stays within one `/` segment, `**` crosses them (paths, URIs).
    Path,
    /// `*` stays within one DNS label, `**` crosses them; case-insensitive.
    Dns,
}

impl Pattern {
    fn new(source: &str, kind: GlobKind) -> Result<Self, String> {
        let (text, separator, dns) = match kind {
            GlobKind::Plain => (source.to_owned(), false, false),
            GlobKind::Path => (source.to_owned(), true, false),
            GlobKind::Dns => (source.to_ascii_lowercase().replace('.', "/"), true, true),
        };
        let matcher = GlobBuilder::new(&text)
            .literal_separator(separator)
            .build()
            .map_err(|e| format!("bad glob '{source}': {}", e.kind()))?
            .compile_matcher();
        Ok(Self {
            source: source.to_owned(),
            matcher,
            dns,
        })
    }

    fn matches(&self, value: &str) -> bool {
        if self.dns {
            dns_matchable(value)
                && self
                    .matcher
                    .is_match(value.to_ascii_lowercase().replace('.', "/"))
        } else {
            self.matcher.is_match(value)
        }
    }
}

/// How a match on a re-signed twin is phrased after "FACT 'PRESENTED' is listed".
fn twin_phrase(twin: &str) -> String {
    format!("as '{twin}', the same certificate with its other ECDSA signature encoding")
}

/// Whether a DNS name can match a DNS glob: no empty label (`.example.org`, `a..b`, a trailing
/// dot) and no `*`, so a glob never admits a wildcard SAN or an empty label as if it were a host.
fn dns_matchable(name: &str) -> bool {
    !name.is_empty() && !name.contains('*') && !name.split('.').any(str::is_empty)
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

impl Condition {
    /// `Ok(what matched)` or `Err(why not)`, both for logs and `policy explain`.
    fn check(&self, client: &AuthenticatedClient) -> Result<String, String> {
        let facts = &client.facts;
        let one = |name: &str, value: Option<&str>, patterns: &[Pattern]| match value {
            None => Err(format!("{name}: the certificate has none")),
            Some(v) => match first_match(patterns, v) {
                Some(p) => Ok(format!("{name} '{v}' matches '{}'", p.source)),
                None => Err(format!(
                    "{name} '{v}' matches none of {}",
                    sources(patterns)
                )),
            },
        };
        let any = |name: &str, values: &[String], patterns: &[Pattern]| {
            if values.is_empty() {
                return Err(format!("{name}: the certificate has none"));
            }
            for v in values {
                if let Some(p) = first_match(patterns, v) {
                    return Ok(format!("{name} '{v}' matches '{}'", p.source));
                }
            }
            Err(format!(
                "{name} {} matches none of {}",
                values
                    .iter()
                    .map(|v| format!("'{v}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                sources(patterns)
            ))
        };
        let set = |name: &str, value: Option<&str>, hit: &dyn Fn(&str) -> bool| match value {
            None => Err(format!("{name}: not known for this certificate")),
            Some(v) if hit(v) => Ok(format!("{name} '{v}' is listed")),
            Some(v) => Err(format!("{name} '{v}' is not listed")),
        };
        // A fingerprint condition holds for the presented certificate or its re-signed twin.
        let fingerprints =
            |name: &str, (value, twin): (Option<&str>, Option<&str>), s: &HashSet<[u8; 32]>| {
                let hit = |v: &str| parse_fingerprint(v).is_some_and(|fp| s.contains(&fp));
                match (value, twin) {
                    (Some(v), Some(t)) if !hit(v) && hit(t) => {
                        Ok(format!("{name} '{v}' is listed {}", twin_phrase(t)))
                    }
                    _ => set(name, value, &hit),
                }
            };
        match self {
            Self::Flow(names) => {
                if names.contains(&client.flow) {
                    Ok(format!("flow '{}' is listed", client.flow))
                } else {
                    Err(format!(
                        "flow '{}' is not one of {}",
                        client.flow,
                        names.join(", ")
                    ))
                }
            }
            Self::SpiffeId(p) => one("spiffe_id", facts.spiffe_id.as_deref(), p),
            Self::SpiffeTrustDomain(domains) => match spiffe_parts(facts) {
                None => Err("spiffe_trust_domain: the certificate has no SPIFFE ID".into()),
                Some((domain, _)) if domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) => {
                    Ok(format!("spiffe_trust_domain '{domain}' is listed"))
                }
                Some((domain, _)) => Err(format!(
                    "spiffe_trust_domain '{domain}' is not one of {}",
                    domains.join(", ")
                )),
            },
            Self::SpiffePath(p) => one("spiffe_path", spiffe_parts(facts).map(|(_, path)| path), p),
            Self::DnsSan(p) => any("dns_san", &facts.dns_sans, p),
            Self::UriSan(p) => any("uri_san", &facts.uri_sans, p),
            Self::Subject(a, p) => one(&format!("subject.{a}"), attribute(&facts.subject, a), p),
            Self::Issuer(a, p) => one(&format!("issuer.{a}"), attribute(&facts.issuer, a), p),
            Self::IssuerCa(s) => fingerprints(
                "issuer_ca_sha256",
                (
                    facts.issuer_ca_sha256.as_deref(),
                    facts.issuer_ca_sha256_twin.as_deref(),
                ),
                s,
            ),
            Self::Fingerprint(s) => fingerprints(
                "sha256_fingerprint",
                (
                    facts.sha256_fingerprint.as_deref(),
                    facts.sha256_fingerprint_twin.as_deref(),
                ),
                s,
            ),
            Self::Serial(s) => set("serial", facts.serial_number.as_deref(), &|v| {
                parse_serial(v).is_some_and(|n| s.contains(&n))
            }),
        }
    }
}

/// A claim value of an allow rule: strings are templates, also inside arrays and tables.
#[derive(Debug, Clone)]
enum ClaimValue {
    Static(Value),
    Template(Template),
    Array(Vec<ClaimValue>),
    Table(Vec<(String, ClaimValue)>),
}

impl ClaimValue {
    fn compile(value: toml::Value) -> Result<Self, String> {
        Ok(match value {
            toml::Value::String(s) => Self::Template(Template::parse(&s)?),
            toml::Value::Array(items) => Self::Array(
                items
                    .into_iter()
                    .map(Self::compile)
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(table) => Self::Table(
                table
                    .into_iter()
                    .map(|(k, v)| Ok((k, Self::compile(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            toml::Value::Integer(i) => Self::Static(Value::from(i)),
            // NaN and infinities, which JSON cannot represent, are refused, not made null.
            toml::Value::Float(f) => Self::Static(Value::Number(
                serde_json::Number::from_f64(f)
                    .ok_or_else(|| format!("{f} cannot be written in JSON"))?,
            )),
            toml::Value::Boolean(b) => Self::Static(Value::Bool(b)),
            // RFC 3339 text (serde would give toml's private `$__toml_private_datetime` wrapper).
            toml::Value::Datetime(d) => Self::Static(Value::String(d.to_string())),
        })
    }

    /// The value for `client`, or the fact a template needs and the certificate lacks.
    fn render(&self, client: &AuthenticatedClient) -> Result<Value, String> {
        Ok(match self {
            Self::Static(v) => v.clone(),
            Self::Template(t) => Value::String(t.render(client)?),
            Self::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| v.render(client))
                    .collect::<Result<_, _>>()?,
            ),
            Self::Table(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(client)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

#[derive(Debug, Clone)]
struct Allowance {
    client_id: Option<Template>,
    claims: Vec<(String, ClaimValue)>,
    service_accounts: Option<Vec<Pattern>>,
    scopes: Option<Vec<Pattern>>,
    lifetime: Option<i64>,
}

#[derive(Debug, Clone)]
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
}

/// A loaded policy: rules in order and deny lists.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    rules: Vec<Rule>,
    deny_lists: Vec<DenyList>,
}

/// How a request fared.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per request, moved out at once"
)]
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
    pub result: Result<Vec<String>, String>,
}

/// Name of the pseudo-rule that decides when no rule matches.
pub const NO_RULE: &str = "(no rule matched)";

/// The setting that names the policy file.
const POLICY_FILE: &str = "POLICY_FILE";

impl Policy {
    /// Reads and compiles a policy file (and its deny lists, relative to the file's folder); a
    /// problem names `POLICY_FILE`, the file and the line.
    pub fn load(path: &Path) -> Result<Self, StartupError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            StartupError::setting(POLICY_FILE, format!("{}: cannot read: {e}", path.display()))
        })?;
        Self::parse(path, &text).map_err(|problem| StartupError::setting(POLICY_FILE, problem))
    }

    /// Compiles the text of a policy file read from `path`. The error is one line,
    /// `FILE:LINE: problem`, which `policy check` prints as it is (a tested contract, hence a
    /// plain message).
    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let at = |offset: usize, message: &str| {
            format!("{}:{}: {message}", path.display(), line_of(text, offset))
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            match e.span() {
                Some(span) => at(span.start, &message),
                None => format!("{}: {message}", path.display()),
            }
        })?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut deny_lists = Vec::new();
        if let Some(lists) = raw.deny_lists {
            for (kind, file) in [
                (Kind::Fingerprints, lists.sha256_fingerprints),
                (Kind::Serials, lists.serials),
            ] {
                if let Some(file) = file {
                    let list_path = folder.join(file.get_ref());
                    let list = DenyList::load(kind, &list_path).map_err(|e| {
                        at(
                            file.span().start,
                            &format!("deny_lists.{}: {e}", kind.key()),
                        )
                    })?;
                    deny_lists.push(list);
                }
            }
        }
        let mut rules: Vec<Rule> = Vec::new();
        for raw_rule in raw.rule {
            let line = line_of(text, raw_rule.span().start);
            let rule =
                compile_rule(raw_rule.into_inner(), line).map_err(|(offset, m)| at(offset, &m))?;
            if let Some(other) = rules.iter().find(|r| r.name == rule.name) {
                return Err(format!(
                    "{}:{line}: rule name '{}' is already used by the rule at line {}; names must be unique",
                    path.display(),
                    rule.name,
                    other.line
                ));
            }
            rules.push(rule);
        }
        Ok(Self {
            path: path.to_owned(),
            rules,
            deny_lists,
        })
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Refuses `match.flow` names that are not among `known` (the flows this binary has): a
    /// misspelt flow would never match, so a deny rule naming it would silently let clients by.
    /// The error is a `FILE:LINE: problem` line, as [`Policy::parse`]'s.
    pub fn check_flows(&self, path: &Path, known: &[&str]) -> Result<(), String> {
        for rule in &self.rules {
            for condition in &rule.conditions {
                let Condition::Flow(names) = condition else {
                    continue;
                };
                if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
                    return Err(format!(
                        "{}:{}: rule '{}': match.flow: '{unknown}' is not a flow; known flows: {}",
                        path.display(),
                        rule.line,
                        rule.name,
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads and compiles a policy file and checks its flow names against `known`.
    pub fn load_for(path: &Path, known: &[&str]) -> Result<Self, StartupError> {
        let policy = Self::load(path)?;
        policy
            .check_flows(path, known)
            .map_err(|problem| StartupError::setting(POLICY_FILE, problem))?;
        Ok(policy)
    }

    /// The same rules with the deny lists read again from their files: revocations still apply
    /// while a broken policy file is being fixed. The error is the deny list's own line, for
    /// the log.
    pub fn with_reloaded_deny_lists(&self) -> Result<Self, String> {
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

    /// Decides a request.
    pub fn decide(&self, client: &AuthenticatedClient, requested: Requested<'_>) -> Verdict {
        self.evaluate(client, requested, None)
    }

    /// Decides a request and reports how every rule up to the deciding one fared.
    pub fn explain(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> (Vec<RuleTrace>, Verdict) {
        let mut trace = Vec::new();
        let verdict = self.evaluate(client, requested, Some(&mut trace));
        (trace, verdict)
    }

    fn evaluate(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
        mut trace: Option<&mut Vec<RuleTrace>>,
    ) -> Verdict {
        let facts = &client.facts;
        for list in &self.deny_lists {
            // A fingerprint list holds a certificate in either of its signature encodings.
            let (fact, value, twin) = match list.kind() {
                Kind::Fingerprints => (
                    "sha256_fingerprint",
                    facts.sha256_fingerprint.as_deref(),
                    facts.sha256_fingerprint_twin.as_deref(),
                ),
                Kind::Serials => ("serial", facts.serial_number.as_deref(), None),
            };
            let Some(value) = value else { continue };
            let how = if list.contains(value) {
                String::new()
            } else if let Some(twin) = twin.filter(|t| list.contains(t)) {
                format!(" {}", twin_phrase(twin))
            } else {
                continue;
            };
            return Verdict {
                rule: format!("deny_lists.{}", list.kind().key()),
                matched: vec![format!("{fact} '{value}' is listed{how}")],
                outcome: Outcome::DenyClient(format!(
                    "{fact} '{value}' is on the deny list {}{how}",
                    list.path().display()
                )),
            };
        }
        for rule in &self.rules {
            let mut matched = Vec::with_capacity(rule.conditions.len());
            let mut failed = None;
            for condition in &rule.conditions {
                match condition.check(client) {
                    Ok(m) => matched.push(m),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(RuleTrace {
                    name: rule.name.clone(),
                    line: rule.line,
                    result: match &failed {
                        Some(e) => Err(e.clone()),
                        None => Ok(matched.clone()),
                    },
                });
            }
            if failed.is_some() {
                continue;
            }
            let outcome = match &rule.decision {
                Decision::Deny(reason) => Outcome::DenyClient(reason.clone()),
                Decision::Allow(allowance) => allowance.apply(&rule.name, client, requested),
            };
            return Verdict {
                rule: rule.name.clone(),
                matched,
                outcome,
            };
        }
        Verdict {
            rule: NO_RULE.to_owned(),
            matched: Vec::new(),
            outcome: Outcome::DenyClient("no rule of the policy matches this client".into()),
        }
    }
}

impl Allowance {
    fn apply(&self, rule: &str, client: &AuthenticatedClient, requested: Requested<'_>) -> Outcome {
        let missing = |what: &str, fact: String| {
            Outcome::DenyClient(format!(
                "rule '{rule}': the {what} template needs the fact '{fact}', which this certificate lacks"
            ))
        };
        let client_id = match &self.client_id {
            None => client.client_id.clone(),
            Some(t) => match t.render(client) {
                Ok(id) if !id.is_empty() => id,
                Ok(_) => {
                    return Outcome::DenyClient(format!(
                        "rule '{rule}': the client_id template gave an empty client ID"
                    ));
                }
                Err(fact) => return missing("client_id", fact),
            },
        };
        let mut extra_claims = Map::new();
        for (name, value) in &self.claims {
            match value.render(client) {
                Ok(value) => extra_claims.insert(name.clone(), value),
                Err(fact) => return missing(&format!("claim '{name}'"), fact),
            };
        }
        let refuse = |what: &str, value: &str, allowed: &[Pattern], message: &str| {
            let listed = if allowed.is_empty() {
                "(none allowed)".to_owned()
            } else {
                sources(allowed)
            };
            Outcome::DenyAccess {
                log: format!("rule '{rule}': {what} '{value}' matches none of {listed}"),
                message: format!("{message} '{}'", crate::model::truncate(value, 200)),
            }
        };
        if let (Some(allowed), Some(sa)) = (&self.service_accounts, requested.service_account)
            && first_match(allowed, sa).is_none()
        {
            return refuse(
                "service account",
                sa,
                allowed,
                "This client may not obtain tokens for the service account",
            );
        }
        if let (Some(allowed), Some(scope)) = (&self.scopes, requested.scope)
            && let Some(s) = scope
                .split_ascii_whitespace()
                .find(|s| first_match(allowed, s).is_none())
        {
            return refuse("scope", s, allowed, "This client may not obtain the scope");
        }
        Outcome::Allow(Box::new(Client {
            flow: client.flow.clone(),
            client_id,
            facts: client.facts.clone(),
            extra_claims,
            lifetime_seconds: self.lifetime,
        }))
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

type Located = (usize, String);

fn compile_rule(raw: RawRule, line: usize) -> Result<Rule, Located> {
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() {
        return Err((raw.name.span().start, "rule name is empty".into()));
    }
    let conditions = compile_match(raw.conditions.unwrap_or_default())?;
    let decision_span = raw.decision.span().start;
    let decision = match raw.decision.get_ref().as_str() {
        "deny" => {
            let allow_only = [
                ("client_id", raw.client_id.as_ref().map(|s| s.span().start)),
                (
                    "service_accounts",
                    raw.service_accounts.as_ref().map(|s| s.span().start),
                ),
                ("scopes", raw.scopes.as_ref().map(|s| s.span().start)),
                (
                    "token_lifetime",
                    raw.token_lifetime.as_ref().map(|s| s.span().start),
                ),
            ];
            if let Some((field, Some(at))) = allow_only.iter().find(|(_, at)| at.is_some()) {
                return Err((
                    *at,
                    format!(
                        "rule '{name}': '{field}' applies to allow rules only; this rule denies"
                    ),
                ));
            }
            if raw.claims.is_some() {
                return Err((
                    decision_span,
                    format!(
                        "rule '{name}': 'claims' applies to allow rules only; this rule denies"
                    ),
                ));
            }
            let reason = raw
                .reason
                .map(Spanned::into_inner)
                .unwrap_or_else(|| format!("denied by rule '{name}'"));
            Decision::Deny(reason)
        }
        "allow" => {
            if let Some(reason) = raw.reason {
                return Err((
                    reason.span().start,
                    format!("rule '{name}': 'reason' applies to deny rules only"),
                ));
            }
            Decision::Allow(compile_allowance(
                &name,
                raw.client_id,
                raw.claims,
                raw.service_accounts,
                raw.scopes,
                raw.token_lifetime,
            )?)
        }
        other => {
            return Err((
                decision_span,
                format!(
                    "rule '{name}': decision '{other}' is not valid; expected \"allow\" or \"deny\""
                ),
            ));
        }
    };
    Ok(Rule {
        name,
        line,
        conditions,
        decision,
    })
}

fn compile_allowance(
    rule: &str,
    client_id: Option<Spanned<String>>,
    claims: Option<BTreeMap<String, Spanned<toml::Value>>>,
    service_accounts: Option<Spanned<OneOrMany>>,
    scopes: Option<Spanned<OneOrMany>>,
    lifetime: Option<Spanned<i64>>,
) -> Result<Allowance, Located> {
    let template = |s: &Spanned<String>| {
        Template::parse(s.get_ref()).map_err(|e| (s.span().start, format!("rule '{rule}': {e}")))
    };
    let client_id = client_id.as_ref().map(template).transpose()?;
    let mut compiled_claims = Vec::new();
    for (name, value) in claims.unwrap_or_default() {
        let at = value.span().start;
        if RESERVED_CLAIMS.contains(&name.as_str()) {
            return Err((
                at,
                format!(
                    "rule '{rule}': claim '{name}' is set by Token Service itself and cannot be overridden; reserved: {}",
                    RESERVED_CLAIMS.join(", ")
                ),
            ));
        }
        let compiled = ClaimValue::compile(value.into_inner())
            .map_err(|e| (at, format!("rule '{rule}': claim '{name}': {e}")))?;
        compiled_claims.push((name, compiled));
    }
    let patterns = |list: Option<Spanned<OneOrMany>>| -> Result<Option<Vec<Pattern>>, Located> {
        list.map(|l| {
            let at = l.span().start;
            l.into_inner()
                .0
                .iter()
                .map(|p| {
                    Pattern::new(p, GlobKind::Plain)
                        .map_err(|e| (at, format!("rule '{rule}': {e}")))
                })
                .collect()
        })
        .transpose()
    };
    let lifetime = match lifetime {
        None => None,
        Some(l) if LIFETIME_BOUNDS.contains(l.get_ref()) => Some(*l.get_ref()),
        Some(l) => {
            return Err((
                l.span().start,
                format!(
                    "rule '{rule}': token_lifetime {} is out of bounds; expected seconds from {} to {}",
                    l.get_ref(),
                    LIFETIME_BOUNDS.start(),
                    LIFETIME_BOUNDS.end()
                ),
            ));
        }
    };
    Ok(Allowance {
        client_id,
        claims: compiled_claims,
        service_accounts: patterns(service_accounts)?,
        scopes: patterns(scopes)?,
        lifetime,
    })
}

fn compile_match(raw: RawMatch) -> Result<Vec<Condition>, Located> {
    let mut conditions = Vec::new();
    let globs =
        |field: &str, list: Spanned<OneOrMany>, kind: GlobKind| -> Result<Vec<Pattern>, Located> {
            let at = list.span().start;
            let items = list.into_inner().0;
            if items.is_empty() {
                return Err((
                    at,
                    format!("match.{field}: the list is empty, so it could never match"),
                ));
            }
            items
                .iter()
                .map(|p| Pattern::new(p, kind).map_err(|e| (at, format!("match.{field}: {e}"))))
                .collect()
        };
    let strings = |field: &str, list: Spanned<OneOrMany>| -> Result<Vec<String>, Located> {
        let at = list.span().start;
        let items = list.into_inner().0;
        if items.is_empty() {
            return Err((
                at,
                format!("match.{field}: the list is empty, so it could never match"),
            ));
        }
        Ok(items)
    };
    let fingerprints = |field: &str,
                        list: Spanned<OneOrMany>|
     -> Result<HashSet<[u8; 32]>, Located> {
        let at = list.span().start;
        let items = strings(field, list)?;
        items
            .iter()
            .map(|f| {
                parse_fingerprint(f).ok_or_else(|| {
                    (at, format!("match.{field}: '{f}' is not a SHA-256 fingerprint (base64 of 32 bytes, or 64 hex digits)"))
                })
            })
            .collect()
    };
    if let Some(l) = raw.flow {
        conditions.push(Condition::Flow(strings("flow", l)?));
    }
    if let Some(l) = raw.spiffe_trust_domain {
        conditions.push(Condition::SpiffeTrustDomain(strings(
            "spiffe_trust_domain",
            l,
        )?));
    }
    if let Some(l) = raw.spiffe_id {
        let at = l.span().start;
        let patterns = globs("spiffe_id", l, GlobKind::Path)?;
        if let Some(p) = patterns.iter().find(|p| !spiffe_glob_can_match(&p.source)) {
            return Err((
                at,
                format!(
                    "match.spiffe_id: '{}' can never match: a SPIFFE ID's scheme and trust domain are lowercase (spiffe://example.org/...)",
                    p.source
                ),
            ));
        }
        conditions.push(Condition::SpiffeId(patterns));
    }
    if let Some(l) = raw.spiffe_path {
        conditions.push(Condition::SpiffePath(globs(
            "spiffe_path",
            l,
            GlobKind::Path,
        )?));
    }
    if let Some(l) = raw.dns_san {
        conditions.push(Condition::DnsSan(globs("dns_san", l, GlobKind::Dns)?));
    }
    if let Some(l) = raw.uri_san {
        conditions.push(Condition::UriSan(globs("uri_san", l, GlobKind::Path)?));
    }
    for (attr, l) in raw.subject.unwrap_or_default() {
        check_attribute("subject", &attr, &l)?;
        let attr = super::template::short_name(&attr);
        let patterns = globs(&format!("subject.{attr}"), l, GlobKind::Plain)?;
        conditions.push(Condition::Subject(attr, patterns));
    }
    for (attr, l) in raw.issuer.unwrap_or_default() {
        check_attribute("issuer", &attr, &l)?;
        let attr = super::template::short_name(&attr);
        let patterns = globs(&format!("issuer.{attr}"), l, GlobKind::Plain)?;
        conditions.push(Condition::Issuer(attr, patterns));
    }
    if let Some(l) = raw.issuer_ca_sha256 {
        conditions.push(Condition::IssuerCa(fingerprints("issuer_ca_sha256", l)?));
    }
    if let Some(l) = raw.sha256_fingerprint {
        conditions.push(Condition::Fingerprint(fingerprints(
            "sha256_fingerprint",
            l,
        )?));
    }
    if let Some(l) = raw.serial {
        let at = l.span().start;
        let items = strings("serial", l)?;
        let serials = items
            .iter()
            .map(|s| {
                parse_serial(s).ok_or_else(|| {
                    (at, format!("match.serial: '{s}' is not a serial number (hex digits, optionally colon-separated)"))
                })
            })
            .collect::<Result<_, _>>()?;
        conditions.push(Condition::Serial(serials));
    }
    Ok(conditions)
}

/// Whether a `spiffe_id` glob can match a valid SPIFFE ID: one that starts with the scheme in
/// any letter case must have it, and the trust domain after it, in lowercase.
fn spiffe_glob_can_match(glob: &str) -> bool {
    if !crate::x509::spiffe::is_spiffe(glob) {
        return true;
    }
    let authority = glob.get(
        ..glob
            .get(9..)
            .and_then(|r| r.find('/'))
            .map_or(glob.len(), |i| i + 9),
    );
    authority.is_some_and(|a| !a.bytes().any(|b| b.is_ascii_uppercase()))
}

fn check_attribute(which: &str, attr: &str, at: &Spanned<OneOrMany>) -> Result<(), Located> {
    match Fact::parse(&format!("{which}.{attr}")) {
        Some(_) => Ok(()),
        None => Err((
            at.span().start,
            format!(
                "match.{which}: '{attr}' is not a DN attribute name (e.g. CN, O, OU, C, L, ST, DC, serialNumber, emailAddress)"
            ),
        )),
    }
}
