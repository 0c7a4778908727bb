//! The re-signed twin of an ECDSA-signed certificate. An ECDSA signature (r, s) also verifies
//! as (r, n − s), n being the order of the curve, so whoever holds a certificate can present a
//! byte-different copy with the same TBSCertificate (serial, key, SANs, validity) that still
//! verifies, and whose SHA-256 fingerprint is new. Deny lists and fingerprint conditions match
//! either form; this module computes the other one.
//!
//! The rewriter is small and bounded: it parses the three top-level fields of the DER
//! certificate, accepts only the canonical encodings the verifier accepts (minimal lengths,
//! minimal positive INTEGERs, no trailing bytes, the exact ECDSA AlgorithmIdentifiers webpki
//! knows, equal inside and outside the TBSCertificate), and replaces s by n − s with byte-array arithmetic. The TBSCertificate is copied,
//! never interpreted. The curve comes from r, which the twin shares: the smallest supported
//! curve order above r (P-256, P-384, P-521), so `twin(twin(x)) == x` for every input with a
//! twin. (A genuine P-384 or P-521 signature has r below the next smaller order with
//! probability about 2^-128.) RSA and Ed25519 signatures have no such twin.
//!
//! Other re-encodings were checked against the verifier (see the tests): webpki refuses
//! non-minimal DER lengths, a signatureAlgorithm differing from the TBS one, unused bits in the
//! signature BIT STRING and trailing bytes, and aws-lc refuses non-minimal or negative INTEGERs
//! inside the ECDSA signature, so (r, s) and (r, n − s) are the only two encodings of a
//! certificate that verify.

/// Certificates larger than this have no twin computed (webpki refuses nothing below it, but
/// client certificates are a few KiB; the limit only bounds the work on hostile input).
pub const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];
const P521_ORDER: [u8; 66] = [
    0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xfa, 0x51, 0x86, 0x87, 0x83, 0xbf, 0x2f, 0x96, 0x6b, 0x7f, 0xcc, 0x01, 0x48, 0xf7, 0x09,
    0xa5, 0xd0, 0x3b, 0xb5, 0xc9, 0xb8, 0x89, 0x9c, 0x47, 0xae, 0xbb, 0x6f, 0xb7, 0x1e, 0x91, 0x38,
    0x64, 0x09,
];

/// The curve orders the verifier supports, smallest first.
const ORDERS: [&[u8]; 3] = [&P256_ORDER, &P384_ORDER, &P521_ORDER];

/// The AlgorithmIdentifiers (DER, parameters absent) of ecdsa-with-SHA256, -SHA384 and
/// -SHA512 (RFC 5758 §3.2), the ECDSA signature algorithms webpki accepts in certificates.
const ECDSA_ALGORITHMS: [&[u8]; 3] = [
    &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ],
    &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
    ],
    &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
    ],
];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;

/// The same certificate with the other ECDSA signature encoding (s replaced by n − s), or
/// `None` when there is none: not a canonically encoded certificate, not signed with ECDSA on
/// P-256, P-384 or P-521, or a signature value out of range.
pub fn twin(der: &[u8]) -> Option<Vec<u8>> {
    if der.len() > MAX_CERTIFICATE_BYTES {
        return None;
    }
    let (certificate, rest) = tlv(der, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (tbs, rest) = tlv_whole(certificate, SEQUENCE)?;
    let (algorithm, rest) = tlv_whole(rest, SEQUENCE)?;
    let (bits, rest) = tlv(rest, BIT_STRING)?;
    if !rest.is_empty()
        || !ECDSA_ALGORITHMS.contains(&algorithm)
        || inner_algorithm(tbs)? != algorithm
    {
        return None;
    }
    let (&unused_bits, signature) = bits.split_first()?;
    if unused_bits != 0 {
        return None;
    }
    let (value, rest) = tlv(signature, SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (r, rest) = tlv(value, INTEGER)?;
    let (s, rest) = tlv(rest, INTEGER)?;
    if !rest.is_empty() {
        return None;
    }
    let (r, s) = (magnitude(r)?, magnitude(s)?);
    let order = ORDERS.into_iter().find(|n| less(r, n))?;
    if is_zero(r) || is_zero(s) || !less(s, order) {
        return None;
    }
    let twin_s = subtract(order, s);

    let mut value = integer(r);
    value.extend(integer(&twin_s));
    let mut bits = vec![0];
    bits.extend(encode(SEQUENCE, &value));
    let mut certificate = tbs.to_vec();
    certificate.extend_from_slice(algorithm);
    certificate.extend(encode(BIT_STRING, &bits));
    Some(encode(SEQUENCE, &certificate))
}

/// The `signature` AlgorithmIdentifier inside a TBSCertificate (after the optional version
/// and the serial number), which webpki requires to equal the outer one.
fn inner_algorithm(tbs: &[u8]) -> Option<&[u8]> {
    let (fields, _) = tlv(tbs, SEQUENCE)?;
    let fields = match tlv(fields, 0xa0) {
        Some((_, rest)) => rest,
        None => fields,
    };
    let (_, fields) = tlv(fields, INTEGER)?;
    Some(tlv_whole(fields, SEQUENCE)?.0)
}

/// Reads one TLV with tag `tag` and a canonical (minimal) length of at most four bytes, as
/// webpki requires: (contents, rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let count = usize::from(first & 0x7f);
        if !(1..=4).contains(&count) || input.len() < count {
            return None;
        }
        let (bytes, input) = input.split_at(count);
        if bytes[0] == 0 {
            return None;
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return None;
        }
        (len, input)
    };
    if input.len() < len {
        return None;
    }
    Some(input.split_at(len))
}

/// Like [`tlv`], but returns the whole TLV (header included) and the rest.
fn tlv_whole(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (contents, rest) = tlv(input, tag)?;
    let header = input.len() - rest.len() - contents.len();
    Some(input.split_at(header + contents.len()))
}

/// The big-endian magnitude of a minimally encoded, non-negative DER INTEGER.
fn magnitude(contents: &[u8]) -> Option<&[u8]> {
    match contents {
        [] => None,
        [first, ..] if first & 0x80 != 0 => None,
        [0, second, ..] if second & 0x80 == 0 => None,
        [0, rest @ ..] if !rest.is_empty() => Some(rest),
        _ => Some(contents),
    }
}

fn is_zero(value: &[u8]) -> bool {
    value.iter().all(|b| *b == 0)
}

/// Whether the big-endian `a` is less than the big-endian `b` (leading zeros allowed).
fn less(a: &[u8], b: &[u8]) -> bool {
    let a = strip(a);
    let b = strip(b);
    a.len() < b.len() || (a.len() == b.len() && a < b)
}

fn strip(value: &[u8]) -> &[u8] {
    let first = value.iter().position(|b| *b != 0).unwrap_or(value.len());
    &value[first..]
}

/// `n − s` for big-endian `s < n`, as many bytes as `n`.
fn subtract(n: &[u8], s: &[u8]) -> Vec<u8> {
    let s = strip(s);
    let mut out = vec![0u8; n.len()];
    let mut borrow = 0i16;
    for i in 0..n.len() {
        let a = i16::from(n[n.len() - 1 - i]);
        let b = s.len().checked_sub(1 + i).map_or(0, |j| i16::from(s[j]));
        let mut d = a - b - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[n.len() - 1 - i] = d as u8;
    }
    out
}

/// A minimal DER INTEGER TLV of the non-negative big-endian `value`.
fn integer(value: &[u8]) -> Vec<u8> {
    let value = strip(value);
    let mut contents = Vec::with_capacity(value.len() + 1);
    if value.first().is_none_or(|b| b & 0x80 != 0) {
        contents.push(0);
    }
    contents.extend_from_slice(value);
    encode(INTEGER, &contents)
}

/// A TLV with a minimal length.
fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let significant = strip(&bytes);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests;
