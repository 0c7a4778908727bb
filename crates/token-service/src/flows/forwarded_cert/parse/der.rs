//! The encodings every format shares: bounded trimming, base64 and percent decoding, PEM
//! blocks (also flattened onto one line), and the check that a value is exactly one DER
//! SEQUENCE. Same contract as the parent module: untrusted input, no panics, no indexing, no
//! unchecked arithmetic.

use super::*;

/// Checks the length, strips surrounding whitespace and rejects an empty value.
pub(super) fn trimmed<'a>(source: &'static str, value: &'a str) -> Result<&'a str, ParseError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(ParseError::TooLong {
            input: source,
            len: value.len(),
        });
    }
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(ParseError::Empty { input: source });
    }
    Ok(value)
}

/// Like [`trimmed`] for an optional header, where absent, empty and blank all mean "none".
pub(super) fn optional<'a>(
    source: &'static str,
    value: Option<&'a str>,
) -> Result<Option<&'a str>, ParseError> {
    match value.map(|v| trimmed(source, v)) {
        None | Some(Err(ParseError::Empty { .. })) => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok(v)) => Ok(Some(v)),
    }
}

/// The base64 inside an RFC 8941 byte sequence `:base64:`, if `value` is one.
pub(super) fn sf_binary(value: &str) -> Option<&str> {
    let inner = value.strip_prefix(':')?.strip_suffix(':')?;
    inner
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .then_some(inner)
}

pub(super) fn decode_base64(
    source: &'static str,
    value: impl AsRef<[u8]>,
) -> Result<Vec<u8>, ParseError> {
    BASE64.decode(value).map_err(|e| ParseError::InvalidBase64 {
        input: source,
        detail: e.to_string(),
    })
}

/// Base64 of exactly one DER certificate.
pub(super) fn decode_der(
    source: &'static str,
    value: impl AsRef<[u8]>,
) -> Result<Vec<u8>, ParseError> {
    let der = decode_base64(source, value)?;
    check_der(source, &der)?;
    Ok(der)
}

/// Percent-decodes a value. Invalid escapes are kept as they are; `+` stays `+`.
pub(super) fn percent_decoded(value: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(value).collect()
}

/// Exactly one PEM certificate.
pub(super) fn single_pem(source: &'static str, bytes: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut certs = pem_certificates(source, bytes)?.into_iter();
    match (certs.next(), certs.next()) {
        (Some(leaf), None) => Ok(leaf),
        (Some(_), Some(_)) => Err(ParseError::ExtraCertificates { input: source }),
        (None, _) => Err(ParseError::NoCertificate { input: source }),
    }
}

/// The `CERTIFICATE` blocks of a PEM text, each checked to be DER. Other blocks are ignored.
/// Stops after `MAX_CERTIFICATES + 1` certificates, so callers can tell when there are too many.
pub(super) fn pem_certificates(
    source: &'static str,
    bytes: &[u8],
) -> Result<Vec<Vec<u8>>, ParseError> {
    let text = rebuild_pem_lines(bytes);
    let mut reader = text.as_slice();
    let mut certs = Vec::new();
    while certs.len() <= MAX_CERTIFICATES {
        match pem::from_buf(&mut reader) {
            Ok(Some((SectionKind::Certificate, der))) => {
                check_der(source, &der)?;
                certs.push(der);
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                let detail = match e {
                    pem::Error::MissingSectionEnd { .. } => "a BEGIN line has no matching END line",
                    pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line",
                    pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
                    _ => "unreadable PEM",
                };
                return Err(ParseError::InvalidPem {
                    input: source,
                    detail,
                });
            }
        }
    }
    if certs.is_empty() {
        return Err(ParseError::NoCertificate { input: source });
    }
    Ok(certs)
}

/// Puts PEM `-----BEGIN …-----` and `-----END …-----` markers on lines of their own and turns
/// all other whitespace into line breaks, so PEM flattened onto one line (newlines replaced by
/// spaces or tabs, as `$ssl_client_cert` is often passed on) reads like the original.
pub(super) fn rebuild_pem_lines(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().saturating_add(64));
    let mut rest = bytes;
    while let Some((&byte, tail)) = rest.split_first() {
        if let Some(len) = pem_marker_len(rest)
            && let Some((marker, after)) = rest.split_at_checked(len)
        {
            out.push(b'\n');
            out.extend_from_slice(marker);
            out.push(b'\n');
            rest = after;
            continue;
        }
        out.push(if byte.is_ascii_whitespace() {
            b'\n'
        } else {
            byte
        });
        rest = tail;
    }
    out
}

/// Length of the PEM marker (`-----BEGIN label-----` or `-----END label-----`) that `bytes`
/// starts with, if it does; the label must close within [`MAX_PEM_LABEL`] bytes on the line.
pub(super) fn pem_marker_len(bytes: &[u8]) -> Option<usize> {
    const DASHES: &[u8] = b"-----";
    let after = bytes
        .strip_prefix(b"-----BEGIN ".as_slice())
        .or_else(|| bytes.strip_prefix(b"-----END ".as_slice()))?;
    let prefix_len = bytes.len().checked_sub(after.len())?;
    let window = after.get(..after.len().min(MAX_PEM_LABEL.saturating_add(DASHES.len())))?;
    let label_len = window
        .windows(DASHES.len())
        .take_while(|w| !w.iter().any(|&b| b == b'\n' || b == b'\r'))
        .position(|w| w == DASHES)?;
    prefix_len.checked_add(label_len)?.checked_add(DASHES.len())
}

/// Checks that `der` is exactly one DER SEQUENCE.
pub(super) fn check_der(source: &'static str, der: &[u8]) -> Result<(), ParseError> {
    let len = der_sequence_len(der).map_err(|reason| ParseError::NotDer {
        input: source,
        reason,
    })?;
    if len != der.len() {
        return Err(ParseError::NotDer {
            input: source,
            reason: "bytes follow the end of the certificate",
        });
    }
    Ok(())
}

/// Encoded length (tag, length and contents) of the DER SEQUENCE `bytes` starts with. Rejects
/// other tags, indefinite and non-minimal lengths, and contents that run past the end of
/// `bytes`. Trailing bytes are allowed; the caller decides what they mean.
pub(super) fn der_sequence_len(bytes: &[u8]) -> Result<usize, &'static str> {
    let (&tag, rest) = bytes.split_first().ok_or("it is empty")?;
    if tag != 0x30 {
        return Err("it does not start with a SEQUENCE (0x30)");
    }
    let (&first, rest) = rest.split_first().ok_or("it ends before its length")?;
    let (header_len, content_len) = if first < 0x80 {
        (2usize, usize::from(first))
    } else if first == 0x80 {
        return Err("it uses an indefinite length, which DER forbids");
    } else {
        let count = usize::from(first & 0x7f);
        if count > 4 {
            return Err("its length is too large");
        }
        let octets = rest.get(..count).ok_or("it ends inside its length")?;
        if octets.first() == Some(&0) {
            return Err("its length is not minimally encoded");
        }
        let mut len = 0usize;
        for &octet in octets {
            len = len
                .checked_mul(256)
                .and_then(|l| l.checked_add(usize::from(octet)))
                .ok_or("its length is too large")?;
        }
        if len < 0x80 {
            return Err("its length is not minimally encoded");
        }
        (count.saturating_add(2), len)
    };
    let total = header_len
        .checked_add(content_len)
        .ok_or("its length is too large")?;
    if total > bytes.len() {
        return Err("it is truncated");
    }
    Ok(total)
}

/// Lowercase hex SHA-256.
pub(super) fn sha256_hex(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// At most [`MAX_ECHO`] characters of input, for error messages.
pub(super) fn echo(value: &str) -> String {
    value.chars().take(MAX_ECHO).collect()
}
