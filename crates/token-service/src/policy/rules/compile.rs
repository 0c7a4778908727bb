//! Compiling a policy file: the TOML as written (`Raw*`), checked and turned into rules whose
//! globs and sets are built once. Every error names the line and what to fix. Uses the types of
//! `rules` only; no evaluation happens here.

use std::collections::HashMap;

use super::*;

mod audience;

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
    conditions: Option<Box<RawMatch>>,
    client_id: Option<Spanned<String>>,
    claims: Option<BTreeMap<String, Spanned<toml::Value>>>,
    service_accounts: Option<Spanned<OneOrMany>>,
    scopes: Option<Spanned<OneOrMany>>,
    token_lifetime: Option<Spanned<i64>>,
    audiences: Option<Spanned<OneOrMany>>,
    audience: Option<audience::RawAudiences>,
    aws_roles: Option<Spanned<OneOrMany>>,
    azure_clients: Option<Spanned<OneOrMany>>,
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

impl Policy {
    /// Compiles the text of a policy file read from `path`. The error prints as one line,
    /// `FILE:LINE: problem`, which `policy check` prints as it is (a tested contract).
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyFileError> {
        let lines = Lines::of(text);
        let at = |offset: usize, message: &str| {
            PolicyFileError::at(path, Some(lines.line(offset)), message)
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            match e.span() {
                Some(span) => at(span.start, &message),
                None => PolicyFileError::at(path, None, message),
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
        // Linear in the rules: lines come from one table of line starts, and names are checked
        // for uniqueness in a hash map (both were scans per rule, which made 10,000 rules take
        // seconds to load).
        let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
        let mut names: HashMap<String, usize> = HashMap::with_capacity(raw.rule.len());
        for raw_rule in raw.rule {
            let line = lines.line(raw_rule.span().start);
            let rule =
                compile_rule(raw_rule.into_inner(), line).map_err(|(offset, m)| at(offset, &m))?;
            if let Some(other) = names.insert(rule.name.clone(), line) {
                return Err(PolicyFileError::at(
                    path,
                    Some(line),
                    format!(
                        "rule name '{}' is already used by the rule at line {other}; names must be unique",
                        rule.name
                    ),
                ));
            }
            rules.push(rule);
        }
        Ok(Self::new(path, rules, deny_lists))
    }

    /// Refuses `match.flow` names that are not among `known` (the flows this binary has): a
    /// misspelt flow would never match, so a deny rule naming it would silently let clients by.
    /// The error is a `FILE:LINE: problem` line, as [`Policy::parse`]'s.
    pub fn check_flows(&self, path: &Path, known: &[&str]) -> Result<(), PolicyFileError> {
        for rule in self.rules.iter() {
            for condition in &rule.conditions {
                let Condition::Flow(names) = condition else {
                    continue;
                };
                if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
                    return Err(PolicyFileError::at(
                        path,
                        Some(rule.line),
                        format!(
                            "rule '{}': match.flow: '{unknown}' is not a flow; known flows: {}",
                            rule.name,
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ClaimValue {
    /// The claim value, or what is wrong with it.
    fn compile(value: toml::Value) -> Result<Self, ClaimError> {
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
                    .collect::<Result<_, ClaimError>>()?,
            ),
            toml::Value::Integer(i) => Self::Static(Value::from(i)),
            // NaN and infinities, which JSON cannot represent, are refused, not made null.
            toml::Value::Float(f) => Self::Static(Value::Number(
                serde_json::Number::from_f64(f).ok_or(ClaimError::NotJson(f))?,
            )),
            toml::Value::Boolean(b) => Self::Static(Value::Bool(b)),
            // RFC 3339 text (serde would give toml's private `$__toml_private_datetime` wrapper).
            toml::Value::Datetime(d) => Self::Static(Value::String(d.to_string())),
        })
    }
}

/// Where the lines of a text start, to name the 1-based line of a byte offset in O(log lines).
struct Lines(Vec<usize>);

impl Lines {
    fn of(text: &str) -> Self {
        Self(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The line of `offset`: one more than the newlines before it.
    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|newline| *newline < offset) + 1
    }
}

type Located = (usize, String);

fn compile_rule(raw: RawRule, line: usize) -> Result<Rule, Located> {
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() {
        return Err((raw.name.span().start, "rule name is empty".into()));
    }
    let conditions = compile_match(*raw.conditions.unwrap_or_default())?;
    let decision_span = raw.decision.span().start;
    let decision = match raw.decision.get_ref().as_str() {
        "deny" => {
            let at = |s: &Option<Spanned<OneOrMany>>| s.as_ref().map(|s| s.span().start);
            let allow_only = [
                ("client_id", raw.client_id.as_ref().map(|s| s.span().start)),
                ("service_accounts", at(&raw.service_accounts)),
                ("scopes", at(&raw.scopes)),
                (
                    "token_lifetime",
                    raw.token_lifetime.as_ref().map(|s| s.span().start),
                ),
                ("aws_roles", at(&raw.aws_roles)),
                ("azure_clients", at(&raw.azure_clients)),
            ];
            if let Some((field, Some(at))) = allow_only.iter().find(|(_, at)| at.is_some()) {
                return Err((
                    *at,
                    format!(
                        "rule '{name}': '{field}' applies to allow rules only; this rule denies"
                    ),
                ));
            }
            audience::refuse_in_deny(&name, raw.audiences.as_ref(), raw.audience.as_ref())?;
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
            let mut allowance = compile_allowance(
                &name,
                raw.client_id,
                raw.claims,
                [
                    raw.service_accounts,
                    raw.scopes,
                    raw.aws_roles,
                    raw.azure_clients,
                ],
                raw.token_lifetime,
            )?;
            allowance.audiences = audience::compile(&name, raw.audiences, raw.audience)?;
            Decision::Allow(allowance)
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
    [service_accounts, scopes, aws_roles, azure_clients]: [Option<Spanned<OneOrMany>>; 4],
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
        audiences: AudienceRules::default(),
        aws_roles: patterns(aws_roles)?,
        azure_clients: patterns(azure_clients)?,
    })
}

/// The items of a `match` list; an empty list could never match and is refused.
fn strings(field: &str, list: Spanned<OneOrMany>) -> Result<Vec<String>, Located> {
    let at = list.span().start;
    let items = list.into_inner().0;
    if items.is_empty() {
        return Err((
            at,
            format!("match.{field}: the list is empty, so it could never match"),
        ));
    }
    Ok(items)
}

/// A `match` list of globs of `kind`.
fn globs(field: &str, list: Spanned<OneOrMany>, kind: GlobKind) -> Result<Vec<Pattern>, Located> {
    let at = list.span().start;
    strings(field, list)?
        .iter()
        .map(|p| Pattern::new(p, kind).map_err(|e| (at, format!("match.{field}: {e}"))))
        .collect()
}

/// A `match` list of SHA-256 fingerprints.
fn fingerprints(field: &str, list: Spanned<OneOrMany>) -> Result<HashSet<[u8; 32]>, Located> {
    let at = list.span().start;
    strings(field, list)?
        .iter()
        .map(|f| {
            parse_fingerprint(f).ok_or_else(|| {
                (at, format!("match.{field}: '{f}' is not a SHA-256 fingerprint (base64 of 32 bytes, or 64 hex digits)"))
            })
        })
        .collect()
}

/// `match.spiffe_id`: globs over whole IDs, refusing one that no valid ID could match.
fn spiffe_ids(list: Spanned<OneOrMany>) -> Result<Vec<Pattern>, Located> {
    let at = list.span().start;
    let patterns = globs("spiffe_id", list, GlobKind::Path)?;
    if let Some(p) = patterns.iter().find(|p| !spiffe_glob_can_match(&p.source)) {
        return Err((
            at,
            format!(
                "match.spiffe_id: '{}' can never match: a SPIFFE ID's scheme and trust domain are lowercase (spiffe://example.org/...)",
                p.source
            ),
        ));
    }
    Ok(patterns)
}

/// `match.serial`: serial numbers as hex.
fn serials(list: Spanned<OneOrMany>) -> Result<HashSet<Vec<u8>>, Located> {
    let at = list.span().start;
    strings("serial", list)?
        .iter()
        .map(|s| {
            parse_serial(s).ok_or_else(|| {
                (at, format!("match.serial: '{s}' is not a serial number (hex digits, optionally colon-separated)"))
            })
        })
        .collect()
}

/// `match.subject.ATTR` or `match.issuer.ATTR`: the attribute's short name and its globs.
fn name_globs(
    which: &str,
    attr: &str,
    list: Spanned<OneOrMany>,
) -> Result<(String, Vec<Pattern>), Located> {
    check_attribute(which, attr, &list)?;
    let attr = crate::policy::template::short_name(attr);
    let patterns = globs(&format!("{which}.{attr}"), list, GlobKind::Plain)?;
    Ok((attr, patterns))
}

fn compile_match(raw: RawMatch) -> Result<Vec<Condition>, Located> {
    let mut conditions = Vec::new();
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
        conditions.push(Condition::SpiffeId(spiffe_ids(l)?));
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
        let (attr, patterns) = name_globs("subject", &attr, l)?;
        conditions.push(Condition::Subject(attr, patterns));
    }
    for (attr, l) in raw.issuer.unwrap_or_default() {
        let (attr, patterns) = name_globs("issuer", &attr, l)?;
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
        conditions.push(Condition::Serial(serials(l)?));
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
