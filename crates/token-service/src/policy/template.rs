//! Facts of an authenticated client by name, and templates over them (`device-{dns_san}`).
//! The same names serve templates, `policy explain` and the decision log.

use std::fmt::Write as _;

use crate::model::{AuthenticatedClient, CertificateFacts};

/// A fact a template or the log can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// The client ID the flow derived (`MTLS_CLIENT_ID_ATTRIBUTE`).
    ClientId,
    /// The flow's name.
    Flow,
    /// The SPIFFE ID.
    SpiffeId,
    /// Trust domain of the SPIFFE ID, as written in the certificate.
    SpiffeTrustDomain,
    /// Path of the SPIFFE ID, from its first `/` (empty when it has none).
    SpiffePath,
    /// The first DNS SAN.
    DnsSan,
    /// The first URI SAN other than the SPIFFE ID.
    UriSan,
    /// Base64 SHA-256 fingerprint of the certificate.
    Sha256,
    /// Serial number, colon-separated lowercase hex.
    Serial,
    /// Base64 SHA-256 fingerprint of the issuing CA's certificate.
    IssuerCaSha256,
    /// First value of a subject DN attribute (short name such as `CN`).
    Subject(String),
    /// First value of an issuer DN attribute.
    Issuer(String),
}

/// Names of the facts, for messages and documentation (`subject.*` and `issuer.*` take any DN
/// attribute short name).
pub const FACT_NAMES: &str = "client_id, flow, spiffe_id, spiffe_trust_domain, spiffe_path, dns_san, uri_san, sha256, serial, issuer_ca_sha256, subject.<ATTR>, issuer.<ATTR> (e.g. subject.CN)";

impl Fact {
    /// Parses a fact name.
    pub fn parse(name: &str) -> Option<Self> {
        let attribute = |a: &str| {
            (!a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
                .then(|| short_name(a))
        };
        Some(match name {
            "client_id" => Self::ClientId,
            "flow" => Self::Flow,
            "spiffe_id" => Self::SpiffeId,
            "spiffe_trust_domain" => Self::SpiffeTrustDomain,
            "spiffe_path" => Self::SpiffePath,
            "dns_san" => Self::DnsSan,
            "uri_san" => Self::UriSan,
            "sha256" => Self::Sha256,
            "serial" => Self::Serial,
            "issuer_ca_sha256" => Self::IssuerCaSha256,
            _ => {
                if let Some(a) = name.strip_prefix("subject.") {
                    Self::Subject(attribute(a)?)
                } else if let Some(a) = name.strip_prefix("issuer.") {
                    Self::Issuer(attribute(a)?)
                } else {
                    return None;
                }
            }
        })
    }

    /// The fact's name as written in templates.
    pub fn name(&self) -> String {
        match self {
            Self::ClientId => "client_id".into(),
            Self::Flow => "flow".into(),
            Self::SpiffeId => "spiffe_id".into(),
            Self::SpiffeTrustDomain => "spiffe_trust_domain".into(),
            Self::SpiffePath => "spiffe_path".into(),
            Self::DnsSan => "dns_san".into(),
            Self::UriSan => "uri_san".into(),
            Self::Sha256 => "sha256".into(),
            Self::Serial => "serial".into(),
            Self::IssuerCaSha256 => "issuer_ca_sha256".into(),
            Self::Subject(a) => format!("subject.{a}"),
            Self::Issuer(a) => format!("issuer.{a}"),
        }
    }

    /// The fact's value for `client`, if the certificate has it.
    pub fn value<'a>(&self, client: &'a AuthenticatedClient) -> Option<&'a str> {
        let facts = &client.facts;
        match self {
            Self::ClientId => Some(&client.client_id),
            Self::Flow => Some(&client.flow),
            Self::SpiffeId => facts.spiffe_id.as_deref(),
            Self::SpiffeTrustDomain => spiffe_parts(facts).map(|(domain, _)| domain),
            Self::SpiffePath => spiffe_parts(facts).map(|(_, path)| path),
            Self::DnsSan => facts.dns_sans.first().map(String::as_str),
            Self::UriSan => facts.uri_sans.first().map(String::as_str),
            Self::Sha256 => facts.sha256_fingerprint.as_deref(),
            Self::Serial => facts.serial_number.as_deref(),
            Self::IssuerCaSha256 => facts.issuer_ca_sha256.as_deref(),
            Self::Subject(a) => attribute(&facts.subject, a),
            Self::Issuer(a) => attribute(&facts.issuer, a),
        }
    }
}

/// The short name of a DN attribute written in its long form (`commonName` -> `CN`), so both
/// spellings work in conditions and templates.
pub fn short_name(attribute: &str) -> String {
    const LONG: &[(&str, &str)] = &[
        ("commonName", "CN"),
        ("organizationName", "O"),
        ("organizationalUnitName", "OU"),
        ("countryName", "C"),
        ("localityName", "L"),
        ("stateOrProvinceName", "ST"),
        ("domainComponent", "DC"),
        ("emailAddress", "emailAddress"),
        ("serialNumber", "serialNumber"),
    ];
    LONG.iter()
        .find(|(long, _)| long.eq_ignore_ascii_case(attribute))
        .map_or_else(|| attribute.to_owned(), |(_, short)| (*short).to_owned())
}

/// First value of DN attribute `name` (short names compare case-insensitively).
pub fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Trust domain and path of the SPIFFE ID (`spiffe://domain/path`); `None` without one or when
/// it is not a valid SPIFFE ID (`x509::spiffe::parse`, which the certificate flows enforce), so
/// conditions on the parts fail closed.
pub fn spiffe_parts(facts: &CertificateFacts) -> Option<(&str, &str)> {
    let id = crate::x509::spiffe::parse(facts.spiffe_id.as_deref()?).ok()?;
    Some((id.trust_domain(), id.path()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Fact(Fact),
}

/// The fact a template needs and the certificate lacks (`dns_san`, `subject.CN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFact(pub String);

impl std::fmt::Display for MissingFact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a template, as the phrase the policy file's error line ends with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error(
        "template '{template}': '{{' at position {position} is not closed (write '{{{{' for a literal brace)"
    )]
    Unclosed {
        /// The template as written.
        template: String,
        /// 1-based character position of the brace.
        position: usize,
    },
    /// A `{name}` that is not a fact.
    #[error(
        "template '{template}' names an unknown fact '{name}'; known facts: {}",
        FACT_NAMES
    )]
    UnknownFact {
        /// The template as written.
        template: String,
        /// The name between the braces.
        name: String,
    },
    /// A `}` without its `{`.
    #[error(
        "template '{template}': '}}' at position {position} has no opening '{{' (write '}}}}' for a literal brace)"
    )]
    Unopened {
        /// The template as written.
        template: String,
        /// 1-based character position of the brace.
        position: usize,
    },
}

/// A string with `{fact}` placeholders; `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; the error says what is wrong (it becomes part of the policy file's
    /// `FILE:LINE: problem` line).
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(TemplateError::Unclosed {
                            template: source.to_owned(),
                            position: i + 1,
                        });
                    };
                    let name = rest[..end].trim();
                    let fact = Fact::parse(name).ok_or_else(|| TemplateError::UnknownFact {
                        template: source.to_owned(),
                        name: name.to_owned(),
                    })?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Fact(fact));
                    // `end` counts bytes, not characters: skip by byte position up to and
                    // including the closing brace (the name may be padded with Unicode spaces).
                    let close = i + 1 + end;
                    while chars.next_if(|&(j, _)| j <= close).is_some() {}
                }
                '}' => {
                    return Err(TemplateError::Unopened {
                        template: source.to_owned(),
                        position: i + 1,
                    });
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fills in the facts of `client`; fails with the name of a fact the certificate lacks.
    pub fn render(&self, client: &AuthenticatedClient) -> Result<String, MissingFact> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Fact(f) => {
                    let value = f.value(client).ok_or_else(|| MissingFact(f.name()))?;
                    let _ = write!(out, "{value}");
                }
            }
        }
        Ok(out)
    }
}
