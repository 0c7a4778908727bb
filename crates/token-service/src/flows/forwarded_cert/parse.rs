//! Turns the header value a TLS-terminating proxy forwards into DER certificates.
//!
//! Proxies that terminate mutual TLS (Envoy/Istio, nginx, HAProxy, Traefik, Google's load
//! balancer) pass the client certificate on in a request header, each in its own encoding. This
//! module only decodes those encodings: it checks that every certificate is a single DER
//! SEQUENCE and verifies nothing else. The caller re-verifies the certificates.
//!
//! The input is untrusted network data, so nothing here may panic: there is no indexing, no
//! unchecked arithmetic and no `unwrap`, every value is bounded by [`MAX_HEADER_LEN`], and a
//! client's chain by ten certificates (leaf included).

#![deny(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects
)]

use std::fmt::Write as _;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rustls_pki_types::pem::{self, SectionKind};

/// Maximum accepted header value length: 64 KiB (longer → [`ParseError::TooLong`]).
pub const MAX_HEADER_LEN: usize = 65536;

/// Most certificates accepted for one client, leaf included.
const MAX_CERTIFICATES: usize = 10;

/// Longest snippet of input echoed in an error message, in characters.
const MAX_ECHO: usize = 64;

/// Longest PEM label looked for when rebuilding the lines of a flattened PEM value.
const MAX_PEM_LABEL: usize = 64;

/// Standard-alphabet base64. RFC 8941 asks parsers not to fail on missing padding or non-zero
/// pad bits; the DER check that follows every decode catches any corruption.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Where a value came from, as named in error messages.
mod source {
    pub(super) const CLIENT_CERT: &str = "Client-Cert header";
    pub(super) const CLIENT_CERT_CHAIN: &str = "Client-Cert-Chain header";
    pub(super) const XFCC: &str = "X-Forwarded-Client-Cert header";
    pub(super) const XFCC_CERT: &str = "X-Forwarded-Client-Cert Cert field";
    pub(super) const XFCC_CHAIN: &str = "X-Forwarded-Client-Cert Chain field";
    pub(super) const NGINX: &str = "nginx $ssl_client_escaped_cert header";
    pub(super) const HAPROXY: &str = "HAProxy ssl_c_der header";
    pub(super) const HAPROXY_CHAIN: &str = "HAProxy ssl_c_chain_der header";
    pub(super) const TRAEFIK: &str = "Traefik X-Forwarded-Tls-Client-Cert header";
}

/// Header encodings of forwarded client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedFormat {
    /// RFC 9440 `Client-Cert` / `Client-Cert-Chain` (structured-field byte sequences); also
    /// Google's load balancer `{client_cert_leaf}` / `{client_cert_chain}`.
    Rfc9440,
    /// Envoy's (and Istio's) `x-forwarded-client-cert`.
    Xfcc,
    /// nginx `$ssl_client_escaped_cert` (URL-encoded PEM of the leaf).
    Nginx,
    /// HAProxy `ssl_c_der,base64` and `ssl_c_chain_der,base64`.
    Haproxy,
    /// Traefik `passTLSClientCert` with `pem: true`.
    Traefik,
}

impl ForwardedFormat {
    /// Every format.
    pub const ALL: [ForwardedFormat; 5] = [
        ForwardedFormat::Rfc9440,
        ForwardedFormat::Xfcc,
        ForwardedFormat::Nginx,
        ForwardedFormat::Haproxy,
        ForwardedFormat::Traefik,
    ];

    /// Parses a format name, case-insensitively: `rfc9440`, `xfcc` (also `envoy`, `istio`),
    /// `nginx`, `haproxy` or `traefik`.
    pub fn parse(name: &str) -> Option<Self> {
        const NAMES: [(&str, ForwardedFormat); 7] = [
            ("rfc9440", ForwardedFormat::Rfc9440),
            ("xfcc", ForwardedFormat::Xfcc),
            ("envoy", ForwardedFormat::Xfcc),
            ("istio", ForwardedFormat::Xfcc),
            ("nginx", ForwardedFormat::Nginx),
            ("haproxy", ForwardedFormat::Haproxy),
            ("traefik", ForwardedFormat::Traefik),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, format)| format)
    }

    /// Canonical lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedFormat::Rfc9440 => "rfc9440",
            ForwardedFormat::Xfcc => "xfcc",
            ForwardedFormat::Nginx => "nginx",
            ForwardedFormat::Haproxy => "haproxy",
            ForwardedFormat::Traefik => "traefik",
        }
    }

    /// Header that carries the leaf certificate by default (lowercase).
    pub fn default_header(self) -> &'static str {
        match self {
            ForwardedFormat::Rfc9440 => "client-cert",
            ForwardedFormat::Xfcc => "x-forwarded-client-cert",
            ForwardedFormat::Nginx => "x-ssl-client-cert",
            ForwardedFormat::Haproxy => "x-ssl-client-der",
            ForwardedFormat::Traefik => "x-forwarded-tls-client-cert",
        }
    }

    /// Header that carries the intermediates by default, for formats that use a separate one.
    /// XFCC and Traefik carry the chain in the leaf header; nginx cannot forward it.
    pub fn default_chain_header(self) -> Option<&'static str> {
        match self {
            ForwardedFormat::Rfc9440 => Some("client-cert-chain"),
            ForwardedFormat::Haproxy => Some("x-ssl-client-chain-der"),
            ForwardedFormat::Xfcc | ForwardedFormat::Nginx | ForwardedFormat::Traefik => None,
        }
    }
}

/// A forwarded certificate: the leaf and any intermediates the proxy sent (leaf excluded), DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedCertificate {
    /// DER of the client (leaf) certificate.
    pub leaf: Vec<u8>,
    /// DER of the intermediates, in the order the proxy sent them; never starts with the leaf.
    pub chain: Vec<Vec<u8>>,
    /// The XFCC element the certificate came from ([`ForwardedFormat::Xfcc`] only).
    pub xfcc: Option<XfccElement>,
}

/// One XFCC element (the fields Envoy documents), values unquoted/unescaped as Envoy defines.
///
/// `Cert` and `Chain` stay URL-encoded, as Envoy sent them. Keys other than these are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XfccElement {
    /// `By`: URI SANs of the proxy that added the element (repeatable).
    pub by: Vec<String>,
    /// `Hash`: lowercase hex SHA-256 of the client certificate's DER.
    pub hash: Option<String>,
    /// `Cert`: URL-encoded PEM of the client (leaf) certificate.
    pub cert: Option<String>,
    /// `Chain`: URL-encoded PEM of the client's whole chain, leaf first.
    pub chain: Option<String>,
    /// `Subject`: subject DN of the client certificate.
    pub subject: Option<String>,
    /// `URI`: URI SANs of the client certificate (repeatable).
    pub uri: Vec<String>,
    /// `DNS`: DNS SANs of the client certificate (repeatable).
    pub dns: Vec<String>,
}

/// Why a forwarded-certificate header value was rejected. Messages never echo more than 64
/// characters of input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The value is empty or only whitespace.
    #[error("the {input} is empty")]
    Empty {
        /// Which header or field the value came from.
        input: &'static str,
    },
    /// The value is longer than [`MAX_HEADER_LEN`].
    #[error("the {input} is {len} bytes long; at most {MAX_HEADER_LEN} bytes are accepted")]
    TooLong {
        /// Which header or field the value came from.
        input: &'static str,
        /// Length of the value in bytes.
        len: usize,
    },
    /// An RFC 9440 `Client-Cert` value is not `:base64:`.
    #[error("the {input} is not an RFC 9440 byte sequence (:base64:); found {found:?}")]
    NotByteSequence {
        /// Which header or field the value came from.
        input: &'static str,
        /// The start of the offending value.
        found: String,
    },
    /// An RFC 9440 `Client-Cert-Chain` value is not a list of `:base64:` separated by commas.
    #[error(
        "the {input} is not an RFC 9440 list of byte sequences (:base64:, :base64:, ...); \
         member {member} is {found:?}"
    )]
    NotByteSequenceList {
        /// Which header or field the value came from.
        input: &'static str,
        /// 1-based position of the offending list member.
        member: usize,
        /// The start of the offending member.
        found: String,
    },
    /// An RFC 9440 `Client-Cert` of `::`: the proxy sent the header although the client
    /// presented no certificate (HAProxy's `:%[ssl_c_der,base64]:` does).
    #[error(
        "the {input} is an empty byte sequence (::): the proxy forwarded no certificate; have it \
         set the header only when the client presented one"
    )]
    EmptyByteSequence {
        /// Which header or field the value came from.
        input: &'static str,
    },
    /// An RFC 9440 `Client-Cert-Chain` member holds several DER certificates one after another
    /// (what HAProxy's `ssl_c_chain_der` gives for more than one intermediate).
    #[error(
        "member {member} of the {input} holds several certificates one after another; RFC 9440 \
         wants one certificate per member (HAProxy's ssl_c_chain_der joins them like this: \
         behind HAProxy set FORWARDED_CERT_FORMAT=haproxy)"
    )]
    ConcatenatedCertificates {
        /// Which header or field the value came from.
        input: &'static str,
        /// 1-based position of the offending list member.
        member: usize,
    },
    /// Base64 that does not decode.
    #[error("the {input} is not valid base64: {detail}")]
    InvalidBase64 {
        /// Which header or field the value came from.
        input: &'static str,
        /// What the decoder found.
        detail: String,
    },
    /// A PEM block that cannot be read.
    #[error("the {input} is not valid PEM: {detail}")]
    InvalidPem {
        /// Which header or field the value came from.
        input: &'static str,
        /// What is wrong.
        detail: &'static str,
    },
    /// The value holds no certificate (PEM blocks other than `CERTIFICATE` are ignored).
    #[error("the {input} contains no certificate")]
    NoCertificate {
        /// Which header or field the value came from.
        input: &'static str,
    },
    /// A value that holds the leaf only carries more than one certificate.
    #[error("the {input} carries more than one certificate; only the client's leaf belongs there")]
    ExtraCertificates {
        /// Which header or field the value came from.
        input: &'static str,
    },
    /// More than ten certificates, leaf included.
    #[error(
        "the {input} makes a chain of more than {MAX_CERTIFICATES} certificates (leaf included)"
    )]
    TooManyCertificates {
        /// Which header or field the value came from.
        input: &'static str,
    },
    /// A decoded certificate is not exactly one DER SEQUENCE.
    #[error("a certificate in the {input} is not DER: {reason}")]
    NotDer {
        /// Which header or field the value came from.
        input: &'static str,
        /// What is wrong with the encoding.
        reason: &'static str,
    },
    /// The `x-forwarded-client-cert` value does not follow Envoy's syntax.
    #[error("the X-Forwarded-Client-Cert header is malformed at byte {position}: {reason}")]
    XfccSyntax {
        /// Byte offset in the header value.
        position: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An XFCC element repeats a key that Envoy writes at most once.
    #[error("an X-Forwarded-Client-Cert element has more than one {key} key")]
    XfccDuplicateKey {
        /// The repeated key.
        key: &'static str,
    },
    /// The last XFCC element has neither `Cert` nor `Chain`.
    #[error(
        "the last X-Forwarded-Client-Cert element carries neither Cert nor Chain: Envoy must \
         forward the certificate (forward_client_cert_details: SANITIZE_SET or APPEND_FORWARD, \
         with set_current_client_cert_details: {{ cert: true, chain: true }})"
    )]
    XfccMissingCertificate,
    /// The XFCC `Hash` is not the lowercase hex SHA-256 of the forwarded leaf.
    #[error(
        "the X-Forwarded-Client-Cert Hash is not the lowercase hex SHA-256 of the forwarded \
         certificate"
    )]
    HashMismatch,
}

impl ParseError {
    /// The header or field the error is about, when it names one.
    fn input(&self) -> Option<&'static str> {
        match self {
            ParseError::Empty { input }
            | ParseError::TooLong { input, .. }
            | ParseError::NotByteSequence { input, .. }
            | ParseError::NotByteSequenceList { input, .. }
            | ParseError::EmptyByteSequence { input }
            | ParseError::ConcatenatedCertificates { input, .. }
            | ParseError::InvalidBase64 { input, .. }
            | ParseError::InvalidPem { input, .. }
            | ParseError::NoCertificate { input }
            | ParseError::ExtraCertificates { input }
            | ParseError::TooManyCertificates { input }
            | ParseError::NotDer { input, .. } => Some(input),
            ParseError::XfccSyntax { .. }
            | ParseError::XfccDuplicateKey { .. }
            | ParseError::XfccMissingCertificate
            | ParseError::HashMismatch => None,
        }
    }

    /// Whether the error is about the separate chain header of the format (RFC 9440
    /// `Client-Cert-Chain`, HAProxy `ssl_c_chain_der`) rather than the leaf header.
    pub fn in_chain_header(&self) -> bool {
        self.input().is_some_and(|input| {
            input == source::CLIENT_CERT_CHAIN || input == source::HAPROXY_CHAIN
        })
    }
}

/// Parses the leaf header value and the optional chain header value in the given format.
///
/// `chain` is read only by formats with a separate chain header ([`ForwardedFormat::Rfc9440`],
/// [`ForwardedFormat::Haproxy`]); an empty or blank chain value means no intermediates, and so
/// does an RFC 9440 chain member that is an empty byte sequence (`::`). XFCC
/// and Traefik carry the chain in `leaf`, nginx cannot forward it. A chain that starts with a
/// copy of the leaf has that copy dropped.
pub fn parse_forwarded(
    format: ForwardedFormat,
    leaf: &str,
    chain: Option<&str>,
) -> Result<ForwardedCertificate, ParseError> {
    match format {
        ForwardedFormat::Rfc9440 => parse_rfc9440(leaf, chain),
        ForwardedFormat::Xfcc => parse_xfcc_certificate(leaf),
        ForwardedFormat::Nginx => parse_nginx(leaf),
        ForwardedFormat::Haproxy => parse_haproxy(leaf, chain),
        ForwardedFormat::Traefik => parse_traefik(leaf),
    }
}

/// Parses a whole XFCC header into elements (several elements, one per proxy hop,
/// comma-separated; quoting).
///
/// The last element was added by the proxy directly in front of this service.
pub fn parse_xfcc(value: &str) -> Result<Vec<XfccElement>, ParseError> {
    let trimmed = trimmed(source::XFCC, value)?;
    let offset = value.len().saturating_sub(value.trim_ascii_start().len());
    XfccParser::new(trimmed, offset).elements()
}

// ---------------------------------------------------------------------------------------------
// Formats

/// RFC 9440: `Client-Cert: :base64:` and `Client-Cert-Chain: :base64:, :base64:`.
fn parse_rfc9440(leaf: &str, chain: Option<&str>) -> Result<ForwardedCertificate, ParseError> {
    let value = trimmed(source::CLIENT_CERT, leaf)?;
    let inner = sf_binary(value).ok_or_else(|| ParseError::NotByteSequence {
        input: source::CLIENT_CERT,
        found: echo(value),
    })?;
    if inner.is_empty() {
        return Err(ParseError::EmptyByteSequence {
            input: source::CLIENT_CERT,
        });
    }
    let leaf = decode_der(source::CLIENT_CERT, inner)?;

    let mut intermediates = Vec::new();
    if let Some(value) = optional(source::CLIENT_CERT_CHAIN, chain)? {
        // The whole list's syntax first, then the certificates.
        let members = value
            .split(',')
            .enumerate()
            .map(|(index, member)| {
                let member = member.trim_matches([' ', '\t']);
                let position = index.saturating_add(1);
                sf_binary(member)
                    .map(|inner| (position, inner))
                    .ok_or_else(|| ParseError::NotByteSequenceList {
                        input: source::CLIENT_CERT_CHAIN,
                        member: position,
                        found: echo(member),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if members.len() > MAX_CERTIFICATES {
            return Err(ParseError::TooManyCertificates {
                input: source::CLIENT_CERT_CHAIN,
            });
        }
        // An empty byte sequence `::` carries no certificate and is skipped: HAProxy's
        // `:%[ssl_c_chain_der,base64]:` sends one for a client without intermediates.
        for (position, inner) in members.into_iter().filter(|(_, inner)| !inner.is_empty()) {
            intermediates.push(decode_chain_member(position, inner)?);
        }
    }
    finish(source::CLIENT_CERT_CHAIN, leaf, intermediates, None)
}

/// One `Client-Cert-Chain` member: exactly one DER certificate. Several complete certificates
/// one after another get their own error, which points HAProxy users at the `haproxy` format.
fn decode_chain_member(member: usize, inner: &str) -> Result<Vec<u8>, ParseError> {
    let input = source::CLIENT_CERT_CHAIN;
    let der = decode_base64(input, inner)?;
    if let Err(e) = check_der(input, &der) {
        let first = der_sequence_len(&der).unwrap_or(der.len());
        if let Some(rest) = der.get(first..)
            && !rest.is_empty()
            && splits_into_sequences(rest)
        {
            return Err(ParseError::ConcatenatedCertificates { input, member });
        }
        return Err(e);
    }
    Ok(der)
}

/// Whether `bytes` is one or more complete DER SEQUENCEs back to back.
fn splits_into_sequences(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match der_sequence_len(bytes)
            .ok()
            .and_then(|len| bytes.get(len..))
        {
            Some(rest) => bytes = rest,
            None => return false,
        }
    }
    true
}

/// nginx `$ssl_client_escaped_cert`, or a PEM whose newlines became spaces or tabs.
fn parse_nginx(leaf: &str) -> Result<ForwardedCertificate, ParseError> {
    let value = trimmed(source::NGINX, leaf)?;
    let leaf = single_pem(source::NGINX, &percent_decoded(value))?;
    Ok(ForwardedCertificate {
        leaf,
        chain: Vec::new(),
        xfcc: None,
    })
}

/// HAProxy `ssl_c_der,base64` and `ssl_c_chain_der,base64` (concatenated DER).
fn parse_haproxy(leaf: &str, chain: Option<&str>) -> Result<ForwardedCertificate, ParseError> {
    let value = trimmed(source::HAPROXY, leaf)?;
    let leaf = decode_der(source::HAPROXY, value)?;

    let mut intermediates = Vec::new();
    if let Some(value) = optional(source::HAPROXY_CHAIN, chain)? {
        let bytes = decode_base64(source::HAPROXY_CHAIN, value)?;
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            if intermediates.len() >= MAX_CERTIFICATES {
                return Err(ParseError::TooManyCertificates {
                    input: source::HAPROXY_CHAIN,
                });
            }
            let len = der_sequence_len(rest).map_err(|reason| ParseError::NotDer {
                input: source::HAPROXY_CHAIN,
                reason,
            })?;
            let (cert, tail) = rest.split_at_checked(len).ok_or(ParseError::NotDer {
                input: source::HAPROXY_CHAIN,
                reason: "the length runs past the end of the value",
            })?;
            intermediates.push(cert.to_vec());
            rest = tail;
        }
    }
    finish(source::HAPROXY_CHAIN, leaf, intermediates, None)
}

/// Traefik `passTLSClientCert` with `pem: true`: base64 PEM bodies separated by `,`, the whole
/// possibly URL-escaped; the first is the leaf.
fn parse_traefik(leaf: &str) -> Result<ForwardedCertificate, ParseError> {
    let value = trimmed(source::TRAEFIK, leaf)?;
    let decoded = percent_decoded(value);
    let mut certs = Vec::new();
    for item in decoded.split(|&b| b == b',') {
        if certs.len() >= MAX_CERTIFICATES {
            return Err(ParseError::TooManyCertificates {
                input: source::TRAEFIK,
            });
        }
        certs.push(decode_der(source::TRAEFIK, item.trim_ascii())?);
    }
    let mut certs = certs.into_iter();
    let leaf = certs.next().ok_or(ParseError::NoCertificate {
        input: source::TRAEFIK,
    })?;
    finish(source::TRAEFIK, leaf, certs.collect(), None)
}

/// Envoy XFCC: the certificate of the last element.
fn parse_xfcc_certificate(value: &str) -> Result<ForwardedCertificate, ParseError> {
    let mut elements = parse_xfcc(value)?;
    let element = elements.pop().ok_or(ParseError::Empty {
        input: source::XFCC,
    })?;
    let cert = element.cert.as_deref().filter(|v| !v.is_empty());
    let chain = element.chain.as_deref().filter(|v| !v.is_empty());

    let chain = match chain {
        Some(chain) => pem_certificates(source::XFCC_CHAIN, &percent_decoded(chain))?,
        None => Vec::new(),
    };
    if chain.len() > MAX_CERTIFICATES {
        return Err(ParseError::TooManyCertificates {
            input: source::XFCC_CHAIN,
        });
    }
    let (leaf, intermediates) = match cert {
        // `finish` drops the first chain certificate when it is the leaf.
        Some(cert) => (
            single_pem(source::XFCC_CERT, &percent_decoded(cert))?,
            chain,
        ),
        None => {
            let mut chain = chain.into_iter();
            let leaf = chain.next().ok_or(ParseError::XfccMissingCertificate)?;
            (leaf, chain.collect())
        }
    };

    if let Some(hash) = &element.hash
        && *hash != sha256_hex(&leaf)
    {
        return Err(ParseError::HashMismatch);
    }
    finish(source::XFCC_CHAIN, leaf, intermediates, Some(element))
}

/// Drops a copy of the leaf at the start of the chain and enforces `MAX_CERTIFICATES`.
fn finish(
    chain_source: &'static str,
    leaf: Vec<u8>,
    mut chain: Vec<Vec<u8>>,
    xfcc: Option<XfccElement>,
) -> Result<ForwardedCertificate, ParseError> {
    if chain.first() == Some(&leaf) {
        chain.remove(0);
    }
    if chain.len() >= MAX_CERTIFICATES {
        return Err(ParseError::TooManyCertificates {
            input: chain_source,
        });
    }
    Ok(ForwardedCertificate { leaf, chain, xfcc })
}

mod der;
mod xfcc;

use der::*;
use xfcc::*;

#[cfg(test)]
mod tests;
