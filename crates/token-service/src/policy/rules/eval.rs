//! Evaluating a compiled policy against an authenticated client: deny lists first, then the
//! rules in order; the first whose conditions all hold decides. Pure functions of the policy
//! and the client: no I/O, no logging (the engine logs the verdict).

use super::*;
use crate::model::AudienceGrant;
use crate::policy::template::MissingFact;

impl Policy {
    /// Decides a request: deny lists, then the rules the index leaves, in order.
    pub fn decide(&self, client: &AuthenticatedClient, requested: Requested<'_>) -> Verdict {
        if let Some(verdict) = self.deny_listed(client) {
            return verdict;
        }
        for position in self.index.candidates(client) {
            if let Some(rule) = self.rules.get(position)
                && let Ok(matched) = rule.check(client)
            {
                return rule.verdict(matched, client, requested);
            }
        }
        no_rule()
    }

    /// Decides a request by trying every rule in order, without the index: the meaning the
    /// index must keep (the equivalence test and the benchmarks compare the two).
    #[doc(hidden)]
    pub fn decide_by_scan(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Verdict {
        if let Some(verdict) = self.deny_listed(client) {
            return verdict;
        }
        for rule in self.rules.iter() {
            if let Ok(matched) = rule.check(client) {
                return rule.verdict(matched, client, requested);
            }
        }
        no_rule()
    }

    /// Decides a request and reports how every rule up to the deciding one fared: the rules
    /// the index left were evaluated; the others were skipped, and their trace names the index
    /// and the condition that failed (checked here, so the explanation stays exact).
    pub fn explain(
        &self,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> (Vec<RuleTrace>, Verdict) {
        let mut trace = Vec::new();
        if let Some(verdict) = self.deny_listed(client) {
            return (trace, verdict);
        }
        let candidates: HashSet<usize> = self.index.candidates(client).collect();
        for (position, rule) in self.rules.iter().enumerate() {
            let considered = candidates.contains(&position);
            let result = rule.check(client);
            let skipped_by = match (considered, &result) {
                (true, _) => None,
                // The index only skips rules that cannot match; should one match all the
                // same, it is reported as evaluated, and decides as the scan would.
                (false, Ok(_)) => None,
                (false, Err(_)) => Some(self.index.filed(position).map_or_else(
                    || "the index".to_owned(),
                    |f| format!("the {} index", f.name()),
                )),
            };
            trace.push(RuleTrace {
                name: rule.name.clone(),
                line: rule.line,
                result: result.clone(),
                skipped_by,
            });
            if let Ok(matched) = result {
                return (trace, rule.verdict(matched, client, requested));
            }
        }
        (trace, no_rule())
    }

    /// The verdict of the deny list that lists the certificate, if one does.
    fn deny_listed(&self, client: &AuthenticatedClient) -> Option<Verdict> {
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
            return Some(Verdict {
                rule: format!("deny_lists.{}", list.kind().key()),
                matched: vec![format!("{fact} '{value}' is listed{how}")],
                outcome: Outcome::DenyClient(format!(
                    "{fact} '{value}' is on the deny list {}{how}",
                    list.path().display()
                )),
            });
        }
        None
    }
}

/// The verdict when no rule matches.
fn no_rule() -> Verdict {
    Verdict {
        rule: NO_RULE.to_owned(),
        matched: Vec::new(),
        outcome: Outcome::DenyClient("no rule of the policy matches this client".into()),
    }
}

impl Rule {
    /// What matched when every condition holds, else the first that failed.
    fn check(&self, client: &AuthenticatedClient) -> Result<Vec<String>, Unmatched> {
        self.conditions.iter().map(|c| c.check(client)).collect()
    }

    /// The verdict of this rule, which matched on `matched`.
    fn verdict(
        &self,
        matched: Vec<String>,
        client: &AuthenticatedClient,
        requested: Requested<'_>,
    ) -> Verdict {
        let outcome = match &self.decision {
            Decision::Deny(reason) => Outcome::DenyClient(reason.clone()),
            Decision::Allow(allowance) => allowance.apply(&self.name, client, requested),
        };
        Verdict {
            rule: self.name.clone(),
            matched,
            outcome,
        }
    }
}

// The checks below answer `Ok(what matched)` or `Err(why not)`: phrases which the verdict's
// `matched` list and `policy explain` show as they are; the why-not is an [`Unmatched`].

/// One fact against globs.
fn one(name: &str, value: Option<&str>, patterns: &[Pattern]) -> Result<String, Unmatched> {
    match value {
        None => Err(Unmatched(format!("{name}: the certificate has none"))),
        Some(v) => match first_match(patterns, v) {
            Some(p) => Ok(format!("{name} '{v}' matches '{}'", p.source)),
            None => Err(Unmatched(format!(
                "{name} '{v}' matches none of {}",
                sources(patterns)
            ))),
        },
    }
}

/// Any of several facts (SANs) against globs.
fn any(name: &str, values: &[String], patterns: &[Pattern]) -> Result<String, Unmatched> {
    if values.is_empty() {
        return Err(Unmatched(format!("{name}: the certificate has none")));
    }
    for v in values {
        if let Some(p) = first_match(patterns, v) {
            return Ok(format!("{name} '{v}' matches '{}'", p.source));
        }
    }
    Err(Unmatched(format!(
        "{name} {} matches none of {}",
        values
            .iter()
            .map(|v| format!("'{v}'"))
            .collect::<Vec<_>>()
            .join(", "),
        sources(patterns)
    )))
}

/// A fact against a set.
fn set(name: &str, value: Option<&str>, hit: &dyn Fn(&str) -> bool) -> Result<String, Unmatched> {
    match value {
        None => Err(Unmatched(format!("{name}: not known for this certificate"))),
        Some(v) if hit(v) => Ok(format!("{name} '{v}' is listed")),
        Some(v) => Err(Unmatched(format!("{name} '{v}' is not listed"))),
    }
}

/// A fingerprint condition holds for the presented certificate or its re-signed twin.
fn fingerprints(
    name: &str,
    (value, twin): (Option<&str>, Option<&str>),
    listed: &HashSet<[u8; 32]>,
) -> Result<String, Unmatched> {
    let hit = |v: &str| parse_fingerprint(v).is_some_and(|fp| listed.contains(&fp));
    match (value, twin) {
        (Some(v), Some(t)) if !hit(v) && hit(t) => {
            Ok(format!("{name} '{v}' is listed {}", twin_phrase(t)))
        }
        _ => set(name, value, &hit),
    }
}

fn flow(names: &[String], client: &AuthenticatedClient) -> Result<String, Unmatched> {
    if names.contains(&client.flow) {
        Ok(format!("flow '{}' is listed", client.flow))
    } else {
        Err(Unmatched(format!(
            "flow '{}' is not one of {}",
            client.flow,
            names.join(", ")
        )))
    }
}

fn trust_domain(domains: &[String], client: &AuthenticatedClient) -> Result<String, Unmatched> {
    match spiffe_parts(&client.facts) {
        None => Err(Unmatched(
            "spiffe_trust_domain: the certificate has no SPIFFE ID".into(),
        )),
        Some((domain, _)) if domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) => {
            Ok(format!("spiffe_trust_domain '{domain}' is listed"))
        }
        Some((domain, _)) => Err(Unmatched(format!(
            "spiffe_trust_domain '{domain}' is not one of {}",
            domains.join(", ")
        ))),
    }
}

impl Condition {
    /// `Ok(what matched)` or `Err(why not)`, both for logs and `policy explain`.
    fn check(&self, client: &AuthenticatedClient) -> Result<String, Unmatched> {
        let facts = &client.facts;
        match self {
            Self::Flow(names) => flow(names, client),
            Self::SpiffeId(p) => one("spiffe_id", facts.spiffe_id.as_deref(), p),
            Self::SpiffeTrustDomain(domains) => trust_domain(domains, client),
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

impl ClaimValue {
    /// The value for `client`, or the fact a template needs and the certificate lacks.
    fn render(&self, client: &AuthenticatedClient) -> Result<Value, MissingFact> {
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
                    .collect::<Result<_, MissingFact>>()?,
            ),
        })
    }
}

impl Allowance {
    fn apply(&self, rule: &str, client: &AuthenticatedClient, requested: Requested<'_>) -> Outcome {
        let missing = |what: &str, fact: MissingFact| {
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
            refused(rule, what, value, allowed, message)
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
        if let Some(outcome) = self.refused_cloud(rule, requested) {
            return outcome;
        }
        let audience = match requested.audience {
            None => None,
            Some(audience) => match self.audiences.grant(rule, client, audience) {
                Ok(grant) => Some(grant),
                Err(outcome) => return outcome,
            },
        };
        Outcome::Allow(Box::new(Client {
            flow: client.flow.clone(),
            client_id,
            facts: client.facts.clone(),
            extra_claims,
            lifetime_seconds: self.lifetime,
            decision: None,
            audience,
        }))
    }
}

impl Allowance {
    /// The refusal of an AWS role or Entra app the rule's `aws_roles` / `azure_clients` globs
    /// do not match, if any.
    fn refused_cloud(&self, rule: &str, requested: Requested<'_>) -> Option<Outcome> {
        let named = [
            (
                &self.aws_roles,
                requested.aws_role,
                "AWS role",
                "This client may not obtain credentials for the AWS role",
            ),
            (
                &self.azure_clients,
                requested.azure_client,
                "Entra app",
                "This client may not obtain access tokens for the Entra app",
            ),
        ];
        named
            .into_iter()
            .find_map(|(allowed, value, what, message)| match (allowed, value) {
                (Some(allowed), Some(value)) if first_match(allowed, value).is_none() => {
                    Some(refused(rule, what, value, allowed, message))
                }
                _ => None,
            })
    }
}

/// The refusal (`access_denied`) of `value`, which none of the rule's `allowed` globs match.
fn refused(rule: &str, what: &str, value: &str, allowed: &[Pattern], message: &str) -> Outcome {
    let listed = if allowed.is_empty() {
        "(none allowed)".to_owned()
    } else {
        sources(allowed)
    };
    Outcome::DenyAccess {
        log: format!("rule '{rule}': {what} '{value}' matches none of {listed}"),
        message: format!("{message} '{}'", crate::model::truncate(value, 200)),
    }
}

impl AudienceRules {
    /// The grant of `audience` (named with the parameter, listed in `TOKEN_AUDIENCES`) to a
    /// client of `rule`: refused (`access_denied`) when the rule's `audiences` globs do not
    /// admit it; else with the `sub` and lifetime of its `[rule.audience."AUD"]` table. A `sub`
    /// template the certificate cannot fill denies the client, as a `client_id` template does.
    fn grant(
        &self,
        rule: &str,
        client: &AuthenticatedClient,
        audience: &str,
    ) -> Result<AudienceGrant, Outcome> {
        if let Some(allowed) = &self.allowed
            && first_match(allowed, audience).is_none()
        {
            let listed = if allowed.is_empty() {
                "(none allowed but the default)".to_owned()
            } else {
                sources(allowed)
            };
            return Err(Outcome::DenyAccess {
                log: format!("rule '{rule}': audience '{audience}' matches none of {listed}"),
                message: format!(
                    "This client may not obtain tokens for the audience '{}': the parameter 'audience' must name an audience its policy rule allows; leave 'audience' out for a token for the default audience",
                    crate::model::truncate(audience, 200)
                ),
            });
        }
        let table = self.each.get(audience);
        let subject = match table.and_then(|t| t.sub.as_ref()) {
            None => None,
            Some(template) => match template.render(client) {
                Ok(sub) if !sub.is_empty() => Some(sub),
                Ok(_) => {
                    return Err(Outcome::DenyClient(format!(
                        "rule '{rule}': the sub template of audience '{audience}' gave an empty subject"
                    )));
                }
                Err(fact) => {
                    return Err(Outcome::DenyClient(format!(
                        "rule '{rule}': the sub template of audience '{audience}' needs the fact '{fact}', which this certificate lacks"
                    )));
                }
            },
        };
        Ok(AudienceGrant {
            audience: audience.to_owned(),
            subject,
            lifetime_seconds: table.and_then(|t| t.lifetime),
        })
    }
}
