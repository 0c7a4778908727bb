//! The globs of a policy file. Most globs a fleet writes are literal (one SPIFFE ID, one DNS
//! name) or use only `*`, `?` and (in paths, URIs and DNS names) `**`: those are matched here,
//! byte by byte, with exactly the meaning `globset` gives them (`?` is one byte, `*` any run of
//! bytes, neither crossing `/` in a path or DNS glob; `**` any number of segments), and cost no
//! regular expression; the others (classes, alternates, escapes, `**` in a plain glob) are
//! compiled by `globset` when the policy loads. A compiled regular expression costs kilobytes
//! and tens of microseconds, which a policy of 100,000 rules cannot pay per rule. The literal
//! part of a glob (its prefix before the first wildcard, its suffix after the last) is what the
//! rule index files it under (`rules/index.rs`).

use std::borrow::Cow;

use globset::{GlobBuilder, GlobMatcher};

/// A glob and the text it was written as.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    /// The glob as written.
    pub(super) source: String,
    /// DNS globs compare lowercase names with `/` for `.` (labels are path segments).
    dns: bool,
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    /// No wildcard: the (matchable form of the) value must be this text.
    Literal(String),
    /// Only `*` and `?` wildcards, and with `segments` (they stay within one `/` segment) `**`.
    Wild { glob: String, segments: bool },
    /// Anything else, compiled by `globset`.
    Glob(Box<GlobMatcher>),
}

/// A glob that does not compile: the glob as written and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad glob '{glob}': {reason}")]
pub(super) struct BadGlob {
    glob: String,
    reason: globset::ErrorKind,
}

/// How a glob treats separators.
#[derive(Debug, Clone, Copy)]
pub(super) enum GlobKind {
    /// `*` matches anything.
    Plain,
    /// `*` stays within one `/` segment, `**` crosses them (paths, URIs).
    Path,
    /// `*` stays within one DNS label, `**` crosses them; case-insensitive.
    Dns,
}

/// Characters with a meaning to `globset` (`,` and `]` only in some places; counting them
/// always is the safe side: such a glob goes to `globset`, and its literal part ends earlier).
const SPECIAL: &[char] = &['*', '?', '[', ']', '{', '}', ',', '\\'];

impl Pattern {
    /// The glob, or what is wrong with it (which becomes part of the policy file's
    /// `FILE:LINE: problem` line).
    pub(super) fn new(source: &str, kind: GlobKind) -> Result<Self, BadGlob> {
        let (text, segments, dns) = match kind {
            GlobKind::Plain => (source.to_owned(), false, false),
            GlobKind::Path => (source.to_owned(), true, false),
            GlobKind::Dns => (source.to_ascii_lowercase().replace('.', "/"), true, true),
        };
        let form = if !text.contains(SPECIAL) {
            Form::Literal(text)
        } else if !text.contains(&SPECIAL[2..]) && (segments || !text.contains("**")) {
            Form::Wild {
                glob: text,
                segments,
            }
        } else {
            let matcher = GlobBuilder::new(&text)
                .literal_separator(segments)
                .build()
                .map_err(|e| BadGlob {
                    glob: source.to_owned(),
                    reason: e.kind().clone(),
                })?
                .compile_matcher();
            Form::Glob(Box::new(matcher))
        };
        Ok(Self {
            source: source.to_owned(),
            dns,
            form,
        })
    }

    /// Whether `value` matches.
    pub(super) fn matches(&self, value: &str) -> bool {
        if self.dns && !dns_matchable(value) {
            return false;
        }
        let value = self.matchable(value);
        match &self.form {
            Form::Literal(text) => *text == value,
            Form::Wild { glob, segments } => {
                wild_match(glob.as_bytes(), value.as_bytes(), *segments)
            }
            Form::Glob(matcher) => matcher.is_match(value.as_ref()),
        }
    }

    /// `value` in the form this glob compares (DNS: lowercase, `/` for `.`).
    pub(super) fn matchable<'v>(&self, value: &'v str) -> Cow<'v, str> {
        matchable(self.dns, value)
    }

    /// The text every value this glob matches equals, in the matchable form, if the glob has no
    /// wildcard.
    pub(super) fn literal(&self) -> Option<&str> {
        match &self.form {
            Form::Literal(text) => Some(text),
            _ => None,
        }
    }

    /// The text every matching value (matchable form) starts with: the glob up to its first
    /// special character.
    pub(super) fn literal_prefix(&self) -> &str {
        let text = self.text();
        text.find(SPECIAL).map_or(text, |i| &text[..i])
    }

    /// The text every matching value (matchable form) ends with: the glob after its last special
    /// character, without a leading `/` (`**/a` matches `a`).
    pub(super) fn literal_suffix(&self) -> &str {
        let text = self.text();
        let tail = text.rfind(SPECIAL).map_or(text, |i| &text[i + 1..]);
        tail.strip_prefix('/').unwrap_or(tail)
    }

    fn text(&self) -> &str {
        match &self.form {
            Form::Literal(text) | Form::Wild { glob: text, .. } => text,
            Form::Glob(matcher) => matcher.glob().glob(),
        }
    }
}

/// `value` as globs of the kind compare it: DNS names lowercase with `/` for `.`.
pub(super) fn matchable(dns: bool, value: &str) -> Cow<'_, str> {
    if dns {
        Cow::Owned(value.to_ascii_lowercase().replace('.', "/"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Whether a DNS name can match a DNS glob: no empty label (`.example.org`, `a..b`, a trailing
/// dot) and no `*`, so a glob never admits a wildcard SAN or an empty label as if it were a host.
pub(super) fn dns_matchable(name: &str) -> bool {
    !name.is_empty() && !name.contains('*') && !name.split('.').any(str::is_empty)
}

/// A glob of literal bytes, `*` and `?` (and, with `segments`, `**`) against `value`. With
/// `segments`, neither `*` nor `?` matches `/`, so the glob's `/`-separated segments pair up
/// with the value's, except a segment `**`, which stands for any number of the value's
/// segments, as `globset` reads it: `**/a` matches `a`, `/a` and `x/y/a`; `a/**/b` matches
/// `a/b`; a trailing `a/**` needs at least one segment after `a/` (so `a/` but not `a`); a
/// glob of only `**` matches everything.
fn wild_match(glob: &[u8], value: &[u8], segments: bool) -> bool {
    if !segments {
        return wild_segment(glob, value);
    }
    let mut tokens: Vec<Option<&[u8]>> = Vec::new();
    let parts: Vec<&[u8]> = glob.split(|b| *b == b'/').collect();
    // Only `**` segments, perhaps with a trailing `/` (`**/`, `**/**/`): `globset` keeps one
    // recursive prefix and nothing after it, which matches everything.
    let last = parts.len() - 1;
    if parts
        .iter()
        .enumerate()
        .all(|(i, p)| *p == b"**" || (i == last && i > 0 && p.is_empty()))
    {
        return true;
    }
    for (i, part) in parts.iter().enumerate() {
        if *part == b"**" {
            if i > 0 && i == parts.len() - 1 {
                // `a/**` is `a/` and then anything: one segment at least.
                tokens.push(Some(b"*"));
            }
            if tokens.last() != Some(&None) {
                tokens.push(None);
            }
        } else {
            tokens.push(Some(part));
        }
    }
    let values: Vec<&[u8]> = value.split(|b| *b == b'/').collect();
    // The greedy match over segments, returning to the last `**` (`None`) on a mismatch:
    // O(segments × segments) at worst.
    let (mut t, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < values.len() {
        match tokens.get(t) {
            Some(None) => {
                star = Some((t, v));
                t += 1;
            }
            Some(Some(g)) if wild_segment(g, values[v]) => (t, v) = (t + 1, v + 1),
            _ => match star {
                Some((st, sv)) => {
                    star = Some((st, sv + 1));
                    (t, v) = (st + 1, sv + 1);
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(Option::is_none)
}

/// `*` (any bytes) and `?` (one byte) against `value`: the greedy match that returns to the
/// last `*` on a mismatch, O(glob × value) at worst.
fn wild_segment(glob: &[u8], value: &[u8]) -> bool {
    let (mut g, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, v));
                g += 1;
            }
            Some(b'?') => (g, v) = (g + 1, v + 1),
            Some(c) if *c == value[v] => (g, v) = (g + 1, v + 1),
            _ => match star {
                Some((sg, sv)) => {
                    star = Some((sg, sv + 1));
                    (g, v) = (sg + 1, sv + 1);
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift, so that the comparison with `globset` covers many globs and values.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn text(&mut self, alphabet: &[&str], max: u64) -> String {
            let n = self.next() % (max + 1);
            (0..n)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn the_own_matcher_agrees_with_globset() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let globs = ["a", "b", "/", ".", "*", "?", "é", "ab"];
        let values = ["a", "b", "/", ".", "é", "B"];
        for _ in 0..20_000 {
            let glob = rng.text(&globs, 7);
            let value = rng.text(&values, 8);
            for (kind, segments) in [
                (GlobKind::Plain, false),
                (GlobKind::Path, true),
                (GlobKind::Dns, true),
            ] {
                let ours = Pattern::new(&glob, kind).unwrap();
                let text = ours.text().to_owned();
                let reference = GlobBuilder::new(&text)
                    .literal_separator(segments)
                    .build()
                    .unwrap()
                    .compile_matcher();
                let expected = (!ours.dns || dns_matchable(&value))
                    && reference.is_match(ours.matchable(&value).as_ref());
                assert_eq!(
                    ours.matches(&value),
                    expected,
                    "{glob:?} {value:?} {kind:?}"
                );
                if expected {
                    let v = ours.matchable(&value);
                    assert!(v.starts_with(ours.literal_prefix()), "{glob:?} {value:?}");
                    assert!(v.ends_with(ours.literal_suffix()), "{glob:?} {value:?}");
                }
            }
        }
    }

    #[test]
    fn globs_beyond_stars_go_to_globset_and_keep_their_literal_parts() {
        let class = Pattern::new("spiffe://td/[ab]/x", GlobKind::Path).unwrap();
        assert!(matches!(class.form, Form::Glob(_)));
        assert!(class.matches("spiffe://td/a/x") && !class.matches("spiffe://td/c/x"));
        assert_eq!(class.literal_prefix(), "spiffe://td/");
        let plain = Pattern::new("a**b", GlobKind::Plain).unwrap();
        assert!(matches!(plain.form, Form::Glob(_)));
        let p = Pattern::new("spiffe://td/**/x", GlobKind::Path).unwrap();
        assert!(matches!(p.form, Form::Wild { .. }));
        assert!(p.matches("spiffe://td/x") && p.matches("spiffe://td/a/b/x"));
        assert_eq!(
            (p.literal_prefix(), p.literal_suffix()),
            ("spiffe://td/", "x")
        );
        let dns = Pattern::new("**.Example.org", GlobKind::Dns).unwrap();
        assert!(dns.matches("example.org") && dns.matches("a.b.example.ORG"));
        assert_eq!(dns.literal_suffix(), "example/org");
        let literal = Pattern::new("Host.Example.org", GlobKind::Dns).unwrap();
        assert_eq!(literal.literal(), Some("host/example/org"));
        assert!(literal.matches("host.example.org") && !literal.matches("host.example.org."));
    }
}
