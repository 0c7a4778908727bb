//! SPIFFE IDs (the SPIFFE ID specification, §2): `spiffe://TRUST-DOMAIN/PATH`. A URI SAN is
//! *detected* as a SPIFFE ID by its scheme compared case-insensitively, and then *validated*
//! strictly: the scheme and trust domain lowercase, the trust domain of `[a-z0-9._-]`, path
//! segments of `[A-Za-z0-9._-]` with no empty, `.` or `..` segment and no trailing slash, no
//! userinfo, port, query, fragment or percent-encoding, at most 2,048 bytes.
//!
//! Every spelling that could name the same workload in another way (letter case, `%2F`, dot
//! segments, an empty segment) is refused rather than rewritten, so an accepted ID is its own
//! normal form: [`parse`] is the one normalisation, and deny globs, conditions and any index of
//! rules can compare accepted IDs as plain strings.

/// The longest SPIFFE ID accepted, in bytes (SPIFFE ID specification §2.3).
pub const MAX_BYTES: usize = 2048;

const PREFIX: &str = "spiffe://";

/// A validated SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    id: &'a str,
    trust_domain: &'a str,
    path: &'a str,
}

impl<'a> SpiffeId<'a> {
    /// The whole ID, in its normal form (the input, which validation left untouched).
    pub fn as_str(&self) -> &'a str {
        self.id
    }

    /// The trust domain (lowercase).
    pub fn trust_domain(&self) -> &'a str {
        self.trust_domain
    }

    /// The path, `""` or starting with `/`.
    pub fn path(&self) -> &'a str {
        self.path
    }
}

/// Whether a URI claims to be a SPIFFE ID: its scheme is `spiffe` in any letter case.
pub fn is_spiffe(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("spiffe:"))
}

/// Why a URI is not a valid SPIFFE ID: a phrase ("the trust domain must be lowercase"), to
/// follow "is not a valid SPIFFE ID: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// Longer than [`MAX_BYTES`].
    #[error("it is {0} bytes long, more than the {MAX_BYTES} allowed")]
    TooLong(usize),
    /// A control character anywhere.
    #[error("it contains the control character {0:?}")]
    ControlCharacter(char),
    /// `SPIFFE://` and the like.
    #[error("the scheme must be written in lowercase ('spiffe://')")]
    SchemeCase,
    /// Not `spiffe://` at all.
    #[error("it must start with 'spiffe://' followed by the trust domain")]
    NoPrefix,
    /// A query, fragment or percent-encoding (what it is, named).
    #[error("it must not contain {0}")]
    Forbidden(&'static str),
    /// `spiffe://` then nothing, or `/`.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// `user@`.
    #[error("the trust domain must not carry userinfo ('@')")]
    Userinfo,
    /// `:port`.
    #[error("the trust domain must not carry a port (':')")]
    Port,
    /// An uppercase letter in the trust domain.
    #[error("the trust domain must be lowercase")]
    TrustDomainCase,
    /// Another character in the trust domain.
    #[error(
        "the trust domain contains {0:?}; only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    TrustDomainCharacter(char),
    /// A trailing `/`.
    #[error("the path must not end with '/'")]
    TrailingSlash,
    /// `//`.
    #[error("the path has an empty segment ('//')")]
    EmptySegment,
    /// `.` or `..`.
    #[error("the path has a '{0}' segment")]
    DotSegment(&'static str),
    /// Another character in a path segment.
    #[error(
        "the path contains {0:?}; only letters, digits, '.', '-' and '_' are allowed in a segment"
    )]
    PathCharacter(char),
}

/// Validates a SPIFFE ID; the error says what is wrong ([`SpiffeError`]).
pub fn parse(uri: &str) -> Result<SpiffeId<'_>, SpiffeError> {
    if uri.len() > MAX_BYTES {
        return Err(SpiffeError::TooLong(uri.len()));
    }
    if let Some(c) = uri.chars().find(|c| c.is_control()) {
        return Err(SpiffeError::ControlCharacter(c));
    }
    if !uri.starts_with(PREFIX) {
        return Err(
            if uri
                .get(..PREFIX.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(PREFIX))
            {
                SpiffeError::SchemeCase
            } else {
                SpiffeError::NoPrefix
            },
        );
    }
    let rest = &uri[PREFIX.len()..];
    for (c, what) in [
        ('?', "a query ('?')"),
        ('#', "a fragment ('#')"),
        ('%', "percent-encoding ('%')"),
    ] {
        if rest.contains(c) {
            return Err(SpiffeError::Forbidden(what));
        }
    }
    let (trust_domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    check_trust_domain(trust_domain)?;
    check_path(path)?;
    Ok(SpiffeId {
        id: uri,
        trust_domain,
        path,
    })
}

/// The trust domain's rules (non-empty, no userinfo or port, lowercase letters, digits, `.`,
/// `-`, `_`); the error is a phrase, as for [`parse`].
fn check_trust_domain(trust_domain: &str) -> Result<(), SpiffeError> {
    if trust_domain.is_empty() {
        return Err(SpiffeError::EmptyTrustDomain);
    }
    if trust_domain.contains('@') {
        return Err(SpiffeError::Userinfo);
    }
    if trust_domain.contains(':') {
        return Err(SpiffeError::Port);
    }
    if trust_domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SpiffeError::TrustDomainCase);
    }
    if let Some(c) = trust_domain
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(SpiffeError::TrustDomainCharacter(c));
    }
    Ok(())
}

/// The path's rules (no empty, `.` or `..` segment, no trailing `/`, letters, digits, `.`,
/// `-`, `_` in a segment); the error is a phrase, as for [`parse`].
fn check_path(path: &str) -> Result<(), SpiffeError> {
    if !path.is_empty() {
        let segments: Vec<&str> = path[1..].split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            match *segment {
                "" if i + 1 == segments.len() => return Err(SpiffeError::TrailingSlash),
                "" => return Err(SpiffeError::EmptySegment),
                "." => return Err(SpiffeError::DotSegment(".")),
                ".." => return Err(SpiffeError::DotSegment("..")),
                _ => {}
            }
            if let Some(c) = segment
                .chars()
                .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
            {
                return Err(SpiffeError::PathCharacter(c));
            }
        }
    }
    Ok(())
}

/// Text of untrusted input for a message: control characters escaped, at most `max` bytes.
pub fn printable(text: &str, max: usize) -> String {
    let escaped: String = text.chars().flat_map(char::escape_debug).collect();
    crate::model::truncate(&escaped, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_parse_into_trust_domain_and_path() {
        for (id, domain, path) in [
            ("spiffe://example.org", "example.org", ""),
            (
                "spiffe://example.org/ns/prod/sa/web",
                "example.org",
                "/ns/prod/sa/web",
            ),
            (
                "spiffe://a-b_c.9/A.b-C_9/..x/x..",
                "a-b_c.9",
                "/A.b-C_9/..x/x..",
            ),
        ] {
            let parsed = parse(id).unwrap();
            assert_eq!(
                (parsed.as_str(), parsed.trust_domain(), parsed.path()),
                (id, domain, path)
            );
        }
        let longest = format!("spiffe://example.org/{}", "a".repeat(MAX_BYTES - 21));
        assert_eq!(longest.len(), MAX_BYTES);
        assert!(parse(&longest).is_ok());
        assert!(
            parse(&format!("{longest}a"))
                .unwrap_err()
                .to_string()
                .contains("2048")
        );
    }

    #[test]
    fn malformed_ids_are_refused_saying_why() {
        for (id, why) in [
            ("SPIFFE://example.org/a", "lowercase ('spiffe://')"),
            ("Spiffe://example.org/a", "lowercase ('spiffe://')"),
            ("spiffe:example.org/a", "must start with 'spiffe://'"),
            ("spiffe:/example.org/a", "must start with 'spiffe://'"),
            ("spiffe://Example.org/a", "trust domain must be lowercase"),
            ("spiffe://user@example.org/a", "userinfo"),
            ("spiffe://example.org:443/a", "port"),
            ("spiffe://example.org/a/../admin", "'..' segment"),
            ("spiffe://example.org/./a", "'.' segment"),
            ("spiffe://example.org/a?x=1", "query"),
            ("spiffe://example.org/a#f", "fragment"),
            ("spiffe://example.org/a%2Fb", "percent-encoding"),
            ("spiffe://example.org//a", "empty segment"),
            ("spiffe://example.org/a/", "must not end with '/'"),
            ("spiffe://example.org/", "must not end with '/'"),
            ("spiffe://example.org/a\nb", "control character"),
            ("spiffe://example.org/a\u{1b}[31m", "control character"),
            ("spiffe://", "trust domain is empty"),
            ("spiffe:///a", "trust domain is empty"),
            ("spiffe://exa mple.org/a", "trust domain contains ' '"),
            ("spiffe://example.org/a b", "path contains ' '"),
            ("spiffe://example.org/a+b", "path contains '+'"),
            ("spiffe://ex*.org/a", "trust domain contains '*'"),
        ] {
            let e = parse(id).unwrap_err().to_string();
            assert!(e.contains(why), "{id:?}: {e}");
            assert!(is_spiffe(id) || !id.starts_with("spiffe"), "{id:?}");
        }
        assert!(is_spiffe("SPIFFE://x") && is_spiffe("spiffe:x") && !is_spiffe("https://x"));
        assert!(!is_spiffe("spiff"));
    }

    /// The phrases are contracts (they follow "is not a valid SPIFFE ID: " in refusals).
    #[test]
    fn refusals_read_as_phrases() {
        for (id, phrase) in [
            (
                "spiffe://ex*.org",
                "the trust domain contains '*'; only lowercase letters, digits, '.', '-' and '_' are allowed",
            ),
            (
                "spiffe://example.org/a+b",
                "the path contains '+'; only letters, digits, '.', '-' and '_' are allowed in a segment",
            ),
            ("spiffe://example.org/a/..", "the path has a '..' segment"),
            (
                "spiffe://example.org/a#f",
                "it must not contain a fragment ('#')",
            ),
            (
                "https://example.org",
                "it must start with 'spiffe://' followed by the trust domain",
            ),
        ] {
            assert_eq!(parse(id).unwrap_err().to_string(), phrase, "{id:?}");
        }
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("a\nb\u{1b}", 100), "a\\nb\\u{1b}");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
