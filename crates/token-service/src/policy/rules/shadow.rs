//! Rules that can never match: an earlier rule matches every client they match, so it always
//! decides first (`policy check` reports them). Only exact conditions prove it: rule A shadows
//! rule B when every condition of A has a counterpart in B on the same fact whose exact values
//! are among A's (B holding then makes A hold); a rule without conditions shadows all after it.
//! Linear: each rule is compared only with the earlier rules that share one of its exact keys,
//! at most [`PER_KEY`] of them.

use std::collections::HashMap;

use super::index::Field;
use super::{Condition, Policy};

/// How many earlier rules sharing a key are compared with a rule, so that a key thousands of
/// rules share (a trust domain) keeps the check linear; beyond them a shadow goes unreported.
const PER_KEY: usize = 32;

/// A rule that can never match, and the earlier rule that decides instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shadowed {
    /// Position of the rule that can never match.
    pub rule: usize,
    /// Position of the earlier rule that always decides first.
    pub by: usize,
}

/// A condition's exact values, as comparable text, when every value it holds for is listed.
fn exact(condition: &Condition) -> Option<(Field, Vec<String>)> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let literals = |field: Field, patterns: &[super::Pattern]| {
        let keys: Option<Vec<String>> = patterns
            .iter()
            .map(|p| p.literal().map(str::to_owned))
            .collect();
        keys.map(|keys| (field, keys))
    };
    match condition {
        Condition::Flow(names) => Some((Field::Flow, names.clone())),
        Condition::SpiffeTrustDomain(domains) => Some((
            Field::TrustDomain,
            domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        )),
        Condition::Fingerprint(set) => {
            Some((Field::Fingerprint, set.iter().map(|f| hex(f)).collect()))
        }
        Condition::IssuerCa(set) => Some((Field::IssuerCa, set.iter().map(|f| hex(f)).collect())),
        Condition::Serial(set) => Some((Field::Serial, set.iter().map(|s| hex(s)).collect())),
        Condition::SpiffeId(p) => literals(Field::SpiffeId, p),
        Condition::SpiffePath(p) => literals(Field::SpiffePath, p),
        Condition::UriSan(p) => literals(Field::UriSan, p),
        Condition::DnsSan(p) => literals(Field::DnsSan, p),
        Condition::Subject(attr, p) => literals(Field::Subject(attr.clone()), p),
        Condition::Issuer(attr, p) => literals(Field::Issuer(attr.clone()), p),
    }
}

type Exact = Vec<(Field, Vec<String>)>;

/// Whether a rule whose conditions are all the exact `a` matches whenever the exact conditions
/// `b` of another rule hold.
fn implies(a: &Exact, b: &Exact) -> bool {
    a.iter().all(|(field, allowed)| {
        b.iter()
            .any(|(f, keys)| f == field && keys.iter().all(|k| allowed.contains(k)))
    })
}

impl Policy {
    /// The rules that can never match because an earlier rule always decides first.
    pub fn shadowed(&self) -> Vec<Shadowed> {
        let mut found = Vec::new();
        let mut by_key: HashMap<(Field, &str), Vec<usize>> = HashMap::new();
        let mut unconditional = None;
        let exacts: Vec<(Exact, bool)> = self
            .rules
            .iter()
            .map(|rule| {
                let exact: Exact = rule.conditions.iter().filter_map(exact).collect();
                let all = exact.len() == rule.conditions.len();
                (exact, all)
            })
            .collect();
        for (position, (exact, all)) in exacts.iter().enumerate() {
            let by = unconditional.or_else(|| {
                exact.iter().find_map(|(field, keys)| {
                    let earlier = by_key.get(&(field.clone(), keys.first()?.as_str()))?;
                    earlier
                        .iter()
                        .take(PER_KEY)
                        .copied()
                        .find(|a| implies(&exacts[*a].0, exact))
                })
            });
            if let Some(by) = by {
                found.push(Shadowed { rule: position, by });
                continue;
            }
            if !*all {
                continue;
            }
            if exact.is_empty() {
                unconditional = Some(position);
            }
            for (field, keys) in exact {
                for key in keys {
                    by_key
                        .entry((field.clone(), key))
                        .or_default()
                        .push(position);
                }
            }
        }
        found
    }
}
