//! The rule index: which rules a certificate can still match, found without scanning them.
//!
//! Each rule is filed under one of its conditions (the one that narrows most), by the values that
//! condition can hold for: exact values (flow, trust domain, fingerprint, issuing CA, serial, a
//! glob without wildcards) in hash maps, other globs by their literal part (SPIFFE IDs, paths,
//! URIs and DN attributes by the text before the first wildcard, DNS names by the labels after
//! the last). A rule without conditions is a candidate always. A lookup gathers the rule lists
//! of every key the certificate's facts have, and [`Candidates`] merges them in rule order;
//! the rules are then evaluated in that order as before, so the first matching rule still
//! decides. Filing a rule under one condition never changes its meaning: a rule that matches
//! satisfies that condition, so one of the looked-up keys holds it (the equivalence test in
//! `policy/tests/index.rs` compares this with the plain scan). The keys are the facts the
//! conditions compare, as they compare them: the SPIFFE ID the flow admitted, the fingerprint in
//! both signature encodings.

use std::collections::HashMap;
use std::hash::Hash;

use super::pattern::{Pattern, matchable};
use super::{Condition, Rule};
use crate::model::AuthenticatedClient;
use crate::policy::deny_list::{parse_fingerprint, parse_serial};
use crate::policy::template::{attribute, spiffe_parts};

/// Rule positions, ascending.
type Postings = Vec<u32>;

/// The index of one policy's rules.
#[derive(Debug, Default)]
pub(super) struct Index {
    flow: Exact<String>,
    trust_domain: Exact<String>,
    fingerprint: Exact<[u8; 32]>,
    issuer_ca: Exact<[u8; 32]>,
    serial: Exact<Vec<u8>>,
    spiffe_id: Affix,
    spiffe_path: Affix,
    uri_san: Affix,
    dns_san: Affix,
    subject: HashMap<String, Affix>,
    issuer: HashMap<String, Affix>,
    always: Postings,
    /// Per rule, the index it is filed in (`None`: a candidate always).
    filed: Vec<Option<Field>>,
}

/// An index, as `policy explain` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Field {
    Flow,
    TrustDomain,
    Fingerprint,
    IssuerCa,
    Serial,
    SpiffeId,
    SpiffePath,
    UriSan,
    DnsSan,
    Subject(String),
    Issuer(String),
}

impl Field {
    /// The condition's name in the policy file (`match.NAME`).
    pub(super) fn name(&self) -> String {
        match self {
            Self::Flow => "flow".into(),
            Self::TrustDomain => "spiffe_trust_domain".into(),
            Self::Fingerprint => "sha256_fingerprint".into(),
            Self::IssuerCa => "issuer_ca_sha256".into(),
            Self::Serial => "serial".into(),
            Self::SpiffeId => "spiffe_id".into(),
            Self::SpiffePath => "spiffe_path".into(),
            Self::UriSan => "uri_san".into(),
            Self::DnsSan => "dns_san".into(),
            Self::Subject(a) => format!("subject.{a}"),
            Self::Issuer(a) => format!("issuer.{a}"),
        }
    }
}

/// Exact keys to rules.
#[derive(Debug)]
struct Exact<K>(HashMap<K, Postings>);

impl<K> Default for Exact<K> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Hash + Eq> Exact<K> {
    fn add(&mut self, key: K, rule: u32) {
        push(self.0.entry(key).or_default(), rule);
    }
}

/// Globs over one kind of text: literal globs by their text, the others by their literal
/// prefix (or suffix, for DNS names); `lengths` are the distinct lengths of those parts, so a
/// lookup hashes one slice of the value per length.
#[derive(Debug, Default)]
struct Affix {
    suffix: bool,
    exact: HashMap<String, Postings>,
    partial: HashMap<String, Postings>,
    lengths: Vec<usize>,
}

impl Affix {
    fn suffixes() -> Self {
        Self {
            suffix: true,
            ..Self::default()
        }
    }

    fn add(&mut self, pattern: &Pattern, rule: u32) {
        if let Some(literal) = pattern.literal() {
            return push(self.exact.entry(literal.to_owned()).or_default(), rule);
        }
        let part = if self.suffix {
            pattern.literal_suffix()
        } else {
            pattern.literal_prefix()
        };
        if let Err(at) = self.lengths.binary_search(&part.len()) {
            self.lengths.insert(at, part.len());
        }
        push(self.partial.entry(part.to_owned()).or_default(), rule);
    }

    /// The rule lists of every key `value` (in matchable form) has.
    fn lookup<'i>(&'i self, value: &str, out: &mut Vec<&'i [u32]>) {
        out.extend(self.exact.get(value).map(Vec::as_slice));
        for &len in &self.lengths {
            let part = match (self.suffix, value.len().checked_sub(len)) {
                (_, None) => break,
                (true, Some(start)) => value.get(start..),
                (false, Some(_)) => value.get(..len),
            };
            if let Some(list) = part.and_then(|p| self.partial.get(p)) {
                out.push(list);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.partial.is_empty()
    }
}

fn push(list: &mut Postings, rule: u32) {
    if list.last() != Some(&rule) {
        list.push(rule);
    }
}

/// Whether a glob's literal part narrows at all: not empty, and more than a scheme
/// (`spiffe://*/…` and `https://*` are held by every SPIFFE ID and https URI, so such a glob
/// ranks below a trust domain, an issuing CA or a flow).
fn narrows(literal: &str) -> bool {
    !literal.is_empty() && !literal.ends_with("://")
}

/// How well a condition narrows: lower is better; `None` for none at all.
fn rank(condition: &Condition) -> u8 {
    let globs = |patterns: &[Pattern], suffix: bool| {
        if patterns.iter().all(|p| p.literal().is_some()) {
            1
        } else if patterns.iter().all(|p| {
            p.literal().is_some()
                || narrows(if suffix {
                    p.literal_suffix()
                } else {
                    p.literal_prefix()
                })
        }) {
            2
        } else {
            6
        }
    };
    match condition {
        Condition::Fingerprint(_) | Condition::Serial(_) => 0,
        Condition::SpiffeId(p)
        | Condition::SpiffePath(p)
        | Condition::UriSan(p)
        | Condition::Subject(_, p)
        | Condition::Issuer(_, p) => globs(p, false),
        Condition::DnsSan(p) => globs(p, true),
        Condition::SpiffeTrustDomain(_) => 3,
        Condition::IssuerCa(_) => 4,
        Condition::Flow(_) => 5,
    }
}

impl Index {
    /// Files every rule under its most narrowing condition; linear in the rules.
    pub(super) fn build(rules: &[Rule]) -> Self {
        let mut index = Self {
            dns_san: Affix::suffixes(),
            filed: Vec::with_capacity(rules.len()),
            ..Self::default()
        };
        for (position, rule) in rules.iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let best = rule.conditions.iter().min_by_key(|c| rank(c));
            let field = best.map(|condition| index.file(condition, position));
            if field.is_none() {
                index.always.push(position);
            }
            index.filed.push(field);
        }
        index
    }

    fn file(&mut self, condition: &Condition, rule: u32) -> Field {
        let globs = |affix: &mut Affix, patterns: &[Pattern]| {
            patterns.iter().for_each(|p| affix.add(p, rule));
        };
        match condition {
            Condition::Flow(names) => {
                names.iter().for_each(|n| self.flow.add(n.clone(), rule));
                Field::Flow
            }
            Condition::SpiffeTrustDomain(domains) => {
                for domain in domains {
                    self.trust_domain.add(domain.to_ascii_lowercase(), rule);
                }
                Field::TrustDomain
            }
            Condition::Fingerprint(set) => {
                set.iter().for_each(|fp| self.fingerprint.add(*fp, rule));
                Field::Fingerprint
            }
            Condition::IssuerCa(set) => {
                set.iter().for_each(|fp| self.issuer_ca.add(*fp, rule));
                Field::IssuerCa
            }
            Condition::Serial(set) => {
                set.iter().for_each(|s| self.serial.add(s.clone(), rule));
                Field::Serial
            }
            Condition::SpiffeId(p) => {
                globs(&mut self.spiffe_id, p);
                Field::SpiffeId
            }
            Condition::SpiffePath(p) => {
                globs(&mut self.spiffe_path, p);
                Field::SpiffePath
            }
            Condition::UriSan(p) => {
                globs(&mut self.uri_san, p);
                Field::UriSan
            }
            Condition::DnsSan(p) => {
                globs(&mut self.dns_san, p);
                Field::DnsSan
            }
            Condition::Subject(attr, p) => {
                globs(self.subject.entry(attr.clone()).or_default(), p);
                Field::Subject(attr.clone())
            }
            Condition::Issuer(attr, p) => {
                globs(self.issuer.entry(attr.clone()).or_default(), p);
                Field::Issuer(attr.clone())
            }
        }
    }

    /// The index rule `position` is filed in, `None` when it is a candidate always.
    pub(super) fn filed(&self, position: usize) -> Option<&Field> {
        self.filed.get(position).and_then(Option::as_ref)
    }

    /// The rules `client` can still match, in rule order.
    pub(super) fn candidates(&self, client: &AuthenticatedClient) -> Candidates<'_> {
        let facts = &client.facts;
        let mut lists: Vec<&[u32]> = Vec::with_capacity(8);
        lists.push(&self.always);
        lists.extend(self.flow.0.get(&client.flow).map(Vec::as_slice));
        let spiffe = if self.trust_domain.0.is_empty() && self.spiffe_path.is_empty() {
            None
        } else {
            spiffe_parts(facts)
        };
        if let Some((domain, path)) = spiffe {
            let domain = domain.to_ascii_lowercase();
            lists.extend(self.trust_domain.0.get(&domain).map(Vec::as_slice));
            self.spiffe_path.lookup(path, &mut lists);
        }
        let fps = [&facts.sha256_fingerprint, &facts.sha256_fingerprint_twin];
        twins(&self.fingerprint, fps, &mut lists);
        let cas = [&facts.issuer_ca_sha256, &facts.issuer_ca_sha256_twin];
        twins(&self.issuer_ca, cas, &mut lists);
        if !self.serial.0.is_empty()
            && let Some(serial) = facts.serial_number.as_deref().and_then(parse_serial)
        {
            lists.extend(self.serial.0.get(&serial).map(Vec::as_slice));
        }
        if let Some(id) = facts.spiffe_id.as_deref() {
            self.spiffe_id.lookup(id, &mut lists);
        }
        for uri in &facts.uri_sans {
            self.uri_san.lookup(uri, &mut lists);
        }
        if !self.dns_san.is_empty() {
            for name in &facts.dns_sans {
                self.dns_san.lookup(&matchable(true, name), &mut lists);
            }
        }
        for (names, by_attr) in [
            (&facts.subject, &self.subject),
            (&facts.issuer, &self.issuer),
        ] {
            for (attr, affix) in by_attr {
                if let Some(value) = attribute(names, attr) {
                    affix.lookup(value, &mut lists);
                }
            }
        }
        lists.retain(|l| !l.is_empty());
        // Many SANs of one certificate can hit the same key: each list once, so the merge
        // costs what the distinct lists hold, not what a certificate repeats.
        lists.sort_unstable_by_key(|l| (l.as_ptr().addr(), l.len()));
        lists.dedup_by(|a, b| std::ptr::eq(*a, *b));
        Candidates { lists }
    }
}

/// The rule lists of a fingerprint condition's index for the certificate's fingerprint in either
/// signature encoding (a condition holds for either).
fn twins<'i>(set: &'i Exact<[u8; 32]>, pair: [&Option<String>; 2], lists: &mut Vec<&'i [u32]>) {
    if set.0.is_empty() {
        return;
    }
    for fp in pair
        .into_iter()
        .flatten()
        .filter_map(|f| parse_fingerprint(f))
    {
        lists.extend(set.0.get(&fp).map(Vec::as_slice));
    }
}

/// The merge of sorted rule lists: each rule once, in rule order.
pub(super) struct Candidates<'i> {
    lists: Vec<&'i [u32]>,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let least = self.lists.iter().filter_map(|l| l.first()).min().copied()?;
        for list in &mut self.lists {
            if list.first() == Some(&least) {
                *list = &list[1..];
            }
        }
        self.lists.retain(|l| !l.is_empty());
        usize::try_from(least).ok()
    }
}
