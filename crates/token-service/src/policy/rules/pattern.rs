//! The globs of a policy file. Most globs a fleet writes are literal (one SPIFFE ID, one DNS
//! name) or use only `*` and `?`: those are matched here, byte by byte, with exactly the meaning
//! `globset` gives them (`?` is one byte, `*` any run of bytes, neither crossing `/` in a path
//! or DNS glob), and cost no regular expression; every other glob (`**`, classes, alternates,
//! escapes) is compiled by `globset` when the policy loads. A compiled regular expression costs
//! several kilobytes and tens of microseconds, which a policy of 100,000 rules cannot pay per
//! rule. The literal part of a glob (its prefix before the first wildcard, its suffix after the
//! last) is what the rule index files it under (`rules/index.rs`).

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
    /// Only `*` and `?` wildcards; `segments`: they stay within one `/` segment.
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
        } else if !text.contains("**") && !text.contains(&SPECIAL[2..]) {
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

/// A glob of literal bytes, `*` and `?` against `value`; with `segments`, neither wildcard
/// matches `/`, so the glob's and the value's `/`-separated segments pair up one to one.
fn wild_match(glob: &[u8], value: &[u8], segments: bool) -> bool {
    if !segments {
        return wild_segment(glob, value);
    }
    let mut globs = glob.split(|b| *b == b'/');
    let mut values = value.split(|b| *b == b'/');
    loop {
        match (globs.next(), values.next()) {
            (None, None) => return true,
            (Some(g), Some(v)) if wild_segment(g, v) => {}
            _ => return false,
        }
    }
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
        let p = Pattern::new("spiffe://td/**/x", GlobKind::Path).unwrap();
        assert!(matches!(p.form, Form::Glob(_)));
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
