//! Envoy's `x-forwarded-client-cert` syntax (elements, `key=value` pairs, quoting). Same
//! contract as the parent module: untrusted input, no panics, no indexing, no unchecked
//! arithmetic.

use super::*;

/// Envoy's XFCC syntax: elements separated by `,`, `key=value` pairs separated by `;`, values
/// containing `,` `;` or `=` double-quoted with `\"` and `\\` escapes inside.
pub(super) struct XfccParser<'a> {
    text: &'a str,
    /// Byte offset into `text`; always on a character boundary.
    pos: usize,
    /// Offset of `text` in the header value, for error positions.
    offset: usize,
}

/// A parsed XFCC key.
#[derive(Clone, Copy)]
pub(super) enum XfccKey {
    By,
    Hash,
    Cert,
    Chain,
    Subject,
    Uri,
    Dns,
    Unknown,
}

impl XfccKey {
    fn from_name(name: &str) -> Self {
        const KEYS: [(&str, XfccKey); 7] = [
            ("by", XfccKey::By),
            ("hash", XfccKey::Hash),
            ("cert", XfccKey::Cert),
            ("chain", XfccKey::Chain),
            ("subject", XfccKey::Subject),
            ("uri", XfccKey::Uri),
            ("dns", XfccKey::Dns),
        ];
        KEYS.iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map_or(XfccKey::Unknown, |&(_, key)| key)
    }
}

impl<'a> XfccParser<'a> {
    fn peek(&self) -> Option<char> {
        self.text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self, c: char) {
        self.pos = self.pos.saturating_add(c.len_utf8());
    }

    fn skip_ows(&mut self) {
        while let Some(c @ (' ' | '\t')) = self.peek() {
            self.bump(c);
        }
    }

    fn error(&self, position: usize, reason: &'static str) -> ParseError {
        ParseError::XfccSyntax {
            position: self.offset.saturating_add(position),
            reason,
        }
    }

    /// A parser of `text`, which starts `offset` bytes into the header value.
    pub(super) fn new(text: &'a str, offset: usize) -> Self {
        Self {
            text,
            pos: 0,
            offset,
        }
    }

    pub(super) fn elements(mut self) -> Result<Vec<XfccElement>, ParseError> {
        let mut elements = Vec::new();
        loop {
            elements.push(self.element()?);
            match self.peek() {
                Some(c @ ',') => self.bump(c),
                None => return Ok(elements),
                Some(_) => return Err(self.error(self.pos, "expected ',' between elements")),
            }
        }
    }

    /// One element, up to (not including) the `,` that ends it.
    fn element(&mut self) -> Result<XfccElement, ParseError> {
        let start = self.pos;
        let mut element = XfccElement::default();
        let mut pairs = 0usize;
        loop {
            self.skip_ows();
            match self.peek() {
                None | Some(',') => break,
                Some(c @ ';') => {
                    self.bump(c);
                    continue;
                }
                Some(_) => {}
            }
            let key = self.key()?;
            self.skip_ows();
            let value = if let Some(c @ '"') = self.peek() {
                self.bump(c);
                self.quoted()?
            } else {
                self.unquoted()?
            };
            self.skip_ows();
            match self.peek() {
                None | Some(',') => {}
                Some(c @ ';') => self.bump(c),
                Some(_) => {
                    return Err(self.error(self.pos, "expected ';' or ',' after a quoted value"));
                }
            }
            assign(&mut element, key, value)?;
            pairs = pairs.saturating_add(1);
        }
        if pairs == 0 {
            return Err(self.error(start, "empty element"));
        }
        Ok(element)
    }

    /// A key and the `=` after it.
    fn key(&mut self) -> Result<XfccKey, ParseError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, '=' | ';' | ',' | '"') {
                break;
            }
            self.bump(c);
        }
        let name = self
            .text
            .get(start..self.pos)
            .unwrap_or_default()
            .trim_ascii();
        match self.peek() {
            Some(c @ '=') if !name.is_empty() => {
                self.bump(c);
                Ok(XfccKey::from_name(name))
            }
            Some('=') => Err(self.error(start, "empty key")),
            _ => Err(self.error(start, "key without '='")),
        }
    }

    /// A quoted value; the opening quote has been consumed.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let start = self.pos.saturating_sub(1);
        let mut value = String::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| self.error(start, "unterminated quoted value"))?;
            self.bump(c);
            match c {
                '"' => return Ok(value),
                '\\' => match self.peek() {
                    Some(e @ ('"' | '\\')) => {
                        self.bump(e);
                        value.push(e);
                    }
                    // Other backslashes (such as RFC 4514 escapes in Subject) are kept.
                    Some(_) => value.push('\\'),
                    None => return Err(self.error(start, "unterminated quoted value")),
                },
                c => value.push(c),
            }
        }
    }

    /// An unquoted value, up to `;`, `,` or the end, without trailing whitespace.
    fn unquoted(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                ';' | ',' => break,
                '"' => return Err(self.error(self.pos, "'\"' inside an unquoted value")),
                c => self.bump(c),
            }
        }
        Ok(self
            .text
            .get(start..self.pos)
            .unwrap_or_default()
            .trim_end_matches([' ', '\t'])
            .to_owned())
    }
}

pub(super) fn assign(
    element: &mut XfccElement,
    key: XfccKey,
    value: String,
) -> Result<(), ParseError> {
    let (slot, name) = match key {
        XfccKey::By => {
            element.by.push(value);
            return Ok(());
        }
        XfccKey::Uri => {
            element.uri.push(value);
            return Ok(());
        }
        XfccKey::Dns => {
            element.dns.push(value);
            return Ok(());
        }
        XfccKey::Unknown => return Ok(()),
        XfccKey::Hash => (&mut element.hash, "Hash"),
        XfccKey::Cert => (&mut element.cert, "Cert"),
        XfccKey::Chain => (&mut element.chain, "Chain"),
        XfccKey::Subject => (&mut element.subject, "Subject"),
    };
    if slot.is_some() {
        return Err(ParseError::XfccDuplicateKey { key: name });
    }
    *slot = Some(value);
    Ok(())
}
