//! A small, bounded reader of the XML AWS STS answers with: it walks the elements, keeps the
//! text of each leaf by its path of local names (`ErrorResponse/Error/Code`) and refuses what
//! STS never sends (a DOCTYPE, CDATA, unknown entities, nesting deeper than [`MAX_DEPTH`],
//! more than [`MAX_ELEMENTS`] elements, mismatched tags). No crate for XML is in the
//! dependency tree, and the two documents STS sends need no more than this; the caller caps
//! the body's size before it gets here.

/// Deepest nesting accepted (STS answers nest four deep).
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted.
pub const MAX_ELEMENTS: usize = 512;

/// Why a body is not XML this reader accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The text ends inside a tag, comment or element.
    #[error("the XML ends early")]
    Truncated,
    /// A closing tag does not close the open element.
    #[error("the XML closes '{found}' where '{expected}' is open")]
    Mismatched {
        /// The open element.
        expected: String,
        /// The closing tag found.
        found: String,
    },
    /// Nesting or element count beyond the bounds.
    #[error("the XML is nested deeper than {MAX_DEPTH} or has more than {MAX_ELEMENTS} elements")]
    TooLarge,
    /// A construct STS never sends.
    #[error("the XML holds {0}, which AWS STS never sends")]
    Unsupported(&'static str),
    /// Text outside the root element, or no root element.
    #[error("the XML has no single root element")]
    NoRoot,
}

/// The leaves of a document: (path of local names joined by `/`, unescaped text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    leaves: Vec<(String, String)>,
}

impl Document {
    /// The text of the first leaf at `path` (e.g. `ErrorResponse/Error/Code`).
    pub fn get(&self, path: &str) -> Option<&str> {
        self.leaves
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.as_str())
    }

    /// The name of the root element.
    pub fn root(&self) -> Option<&str> {
        self.leaves
            .first()
            .map(|(p, _)| p.split('/').next().unwrap_or(p))
    }
}

/// Reads `text` into its leaves.
pub fn parse(text: &str) -> Result<Document, XmlError> {
    let mut rest = text.trim_start_matches('\u{feff}');
    let mut stack: Vec<String> = Vec::new();
    let mut leaves = Vec::new();
    let mut text_here = String::new();
    let mut elements = 0usize;
    let mut seen_root = false;
    loop {
        let Some(open) = rest.find('<') else {
            if !stack.is_empty() {
                return Err(XmlError::Truncated);
            }
            if !rest.trim().is_empty() || !seen_root {
                return Err(XmlError::NoRoot);
            }
            break;
        };
        let (before, after) = rest.split_at(open);
        if stack.is_empty() {
            if !before.trim().is_empty() {
                return Err(XmlError::NoRoot);
            }
        } else {
            text_here.push_str(&unescape(before)?);
        }
        rest = after;
        if let Some(tail) = rest.strip_prefix("<?") {
            rest = skip_past(tail, "?>")?;
        } else if let Some(tail) = rest.strip_prefix("<!--") {
            rest = skip_past(tail, "-->")?;
        } else if rest.starts_with("<!") {
            return Err(XmlError::Unsupported("a DOCTYPE or CDATA section"));
        } else if let Some(tail) = rest.strip_prefix("</") {
            let end = tail.find('>').ok_or(XmlError::Truncated)?;
            let name = local(tail[..end].trim());
            let expected = stack.pop().ok_or(XmlError::NoRoot)?;
            if expected != name {
                return Err(XmlError::Mismatched {
                    expected,
                    found: name.to_owned(),
                });
            }
            let mut path = stack.join("/");
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&expected);
            leaves.push((path, std::mem::take(&mut text_here)));
            rest = &tail[end + 1..];
        } else {
            if stack.is_empty() && seen_root {
                return Err(XmlError::NoRoot);
            }
            let (name, self_closing, tail) = open_tag(&rest[1..])?;
            elements += 1;
            if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
                return Err(XmlError::TooLarge);
            }
            seen_root = true;
            text_here.clear();
            if !self_closing {
                stack.push(name.to_owned());
            }
            rest = tail;
        }
    }
    // A parent's closing tag also records its (inner) text; only leaves matter to callers,
    // and a leaf is recorded before its parent, so `get` finds the leaf.
    Ok(Document { leaves })
}

/// After `<`: the element's local name, whether it closes itself, and the text after `>`.
/// Attributes are skipped (quoted values may hold `>`).
fn open_tag(tag: &str) -> Result<(&str, bool, &str), XmlError> {
    let name_end = tag
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .ok_or(XmlError::Truncated)?;
    let name = local(&tag[..name_end]);
    let mut quote = None;
    for (i, c) in tag[name_end..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => {
                let at = name_end + i;
                let self_closing = tag[..at].ends_with('/');
                return Ok((name, self_closing, &tag[at + 1..]));
            }
            (None, _) => {}
        }
    }
    Err(XmlError::Truncated)
}

/// The name without its namespace prefix.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn skip_past<'t>(text: &'t str, end: &str) -> Result<&'t str, XmlError> {
    let at = text.find(end).ok_or(XmlError::Truncated)?;
    Ok(&text[at + end.len()..])
}

/// Text with the five predefined entities and character references replaced.
fn unescape(text: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp + 1..];
        let end = tail
            .find(';')
            .filter(|e| *e <= 10)
            .ok_or(XmlError::Unsupported("an unterminated entity"))?;
        let entity = &tail[..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32)
                .ok_or(XmlError::Unsupported(
                    "an entity other than XML's predefined ones",
                ))?,
        };
        out.push(c);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn></AssumedRoleUser>
    <!-- a comment -->
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>se&lt;cr&amp;et&#x2F;&#47;</SecretAccessKey>
      <SessionToken>token</SessionToken>
      <Expiration>2026-12-03T20:00:00Z</Expiration>
    </Credentials>
    <Empty/>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>
"#;

    #[test]
    fn leaves_are_found_by_their_path_of_local_names_and_unescaped() {
        let doc = parse(SUCCESS).unwrap();
        let at = |leaf: &str| {
            doc.get(&format!(
                "AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult/{leaf}"
            ))
        };
        assert_eq!(at("Credentials/AccessKeyId"), Some("ASIAEXAMPLE"));
        assert_eq!(at("Credentials/SecretAccessKey"), Some("se<cr&et//"));
        assert_eq!(at("Credentials/Expiration"), Some("2026-12-03T20:00:00Z"));
        assert_eq!(at("Credentials/Missing"), None);
        assert_eq!(doc.root(), Some("AssumeRoleWithWebIdentityResponse"));
        let prefixed = parse("<a:Root xmlns:a='x'><a:Code>C</a:Code></a:Root>").unwrap();
        assert_eq!(prefixed.get("Root/Code"), Some("C"));
    }

    #[test]
    fn what_sts_never_sends_is_refused() {
        for (text, error) in [
            ("<a><b>x</a></b>", "closes 'a' where 'b' is open"),
            ("<a><b>x</b>", "ends early"),
            ("<a><b", "ends early"),
            ("<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>", "DOCTYPE"),
            ("<a><![CDATA[x]]></a>", "DOCTYPE or CDATA"),
            ("<a>&e;</a>", "predefined"),
            ("<a>&amp</a>", "unterminated"),
            ("not xml", "no single root"),
            ("<a/><b/>", "no single root"),
            ("", "no single root"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(error), "{text}: {e}");
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep), Err(XmlError::TooLarge));
        let wide = format!("<r>{}</r>", "<x/>".repeat(MAX_ELEMENTS));
        assert_eq!(parse(&wide), Err(XmlError::TooLarge));
    }
}
