//! Settings of the flow `xlb-mtls-client-credentials`: the declarations (the reference's
//! `MTLS_HEADER_*` names, the load balancer's secret) and [`XlbSettings`] and [`LbSecret`],
//! which they fill. Read through `config::reader`; reads no environment.

use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::config::reader::{Reader, Setting};
use crate::config::source::Values;
use crate::error::StartupError;

/// Shorter load-balancer secrets get a warning: 16 random bytes cannot be guessed, and
/// `openssl rand -base64 32` (the deployment's recipe) makes 44.
pub const MIN_LB_SECRET_BYTES: usize = 16;

const fn lb(name: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting::header(name, default, help)
}

/// `MTLS_HEADER_CLIENT_ID`.
pub const CLIENT_ID: Setting = lb(
    "MTLS_HEADER_CLIENT_ID",
    "X-Client-Cert-Spiffe",
    "Header that identifies the client: the SPIFFE, DNS-SAN, URI-SAN or SHA-256 header",
);
/// `MTLS_HEADER_CLIENT_CERT_PRESENT`.
pub const PRESENT: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_PRESENT",
    "X-Client-Cert-Present",
    "Load balancer header: certificate presented",
);
/// `MTLS_HEADER_CLIENT_CERT_CHAIN_VERIFIED`.
pub const CHAIN_VERIFIED: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_CHAIN_VERIFIED",
    "X-Client-Cert-Chain-Verified",
    "Load balancer header: chain verified",
);
/// `MTLS_HEADER_CLIENT_CERT_ERROR`.
pub const ERROR: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_ERROR",
    "X-Client-Cert-Error",
    "Load balancer header: verification error",
);
/// `MTLS_HEADER_CLIENT_CERT_SHA256_FINGERPRINT`.
pub const SHA256: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_SHA256_FINGERPRINT",
    "X-Client-Cert-Hash",
    "Load balancer header: SHA-256 fingerprint",
);
/// `MTLS_HEADER_CLIENT_CERT_SPIFFE_ID`.
pub const SPIFFE: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_SPIFFE_ID",
    "X-Client-Cert-Spiffe",
    "Load balancer header: SPIFFE ID",
);
/// `MTLS_HEADER_CLIENT_CERT_URI_SANS`.
pub const URI_SANS: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_URI_SANS",
    "X-Client-Cert-URI-SANs",
    "Load balancer header: URI SANs (base64)",
);
/// `MTLS_HEADER_CLIENT_CERT_DNSNAME_SANS`.
pub const DNS_SANS: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_DNSNAME_SANS",
    "X-Client-Cert-DNSName-SANs",
    "Load balancer header: DNS SANs (base64)",
);
/// `MTLS_HEADER_CLIENT_CERT_SERIAL_NUMBER`.
pub const SERIAL: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_SERIAL_NUMBER",
    "X-Client-Cert-Serial-Number",
    "Load balancer header: serial number",
);
/// `MTLS_HEADER_CLIENT_CERT_VALID_NOT_BEFORE`.
pub const NOT_BEFORE: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_VALID_NOT_BEFORE",
    "X-Client-Cert-Valid-Not-Before",
    "Load balancer header: start of validity (RFC 3339)",
);
/// `MTLS_HEADER_CLIENT_CERT_VALID_NOT_AFTER`.
pub const NOT_AFTER: Setting = lb(
    "MTLS_HEADER_CLIENT_CERT_VALID_NOT_AFTER",
    "X-Client-Cert-Valid-Not-After",
    "Load balancer header: end of validity (RFC 3339)",
);
/// `MTLS_LB_SECRET_HEADER`.
pub const LB_SECRET_HEADER: Setting = lb(
    "MTLS_LB_SECRET_HEADER",
    "X-Token-Service-LB-Secret",
    "Header carrying MTLS_LB_SECRET",
);
/// `MTLS_LB_SECRET`.
pub const LB_SECRET: Setting = Setting::text(
    "MTLS_LB_SECRET",
    None,
    "Secret the load balancer adds as a custom header; the xlb flow ignores requests without it. Required on a TLS listener; blank is an error; shorter than 16 bytes warns",
)
.secret();

/// Every setting of the flow, in help order.
pub const SETTINGS: &[Setting] = &[
    CLIENT_ID,
    PRESENT,
    CHAIN_VERIFIED,
    ERROR,
    SHA256,
    SPIFFE,
    URI_SANS,
    DNS_SANS,
    SERIAL,
    NOT_BEFORE,
    NOT_AFTER,
    LB_SECRET_HEADER,
    LB_SECRET,
];

/// A header the load balancer adds with a secret value, proving a request passed through it.
#[derive(Clone)]
pub struct LbSecret {
    /// Header name.
    pub header: HeaderName,
    /// Expected value. Never logged.
    pub value: String,
}

impl LbSecret {
    /// Whether `headers` carry exactly one value of the secret header and it is the secret
    /// (compared in constant time).
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.header).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => bool::from(v.as_bytes().ct_eq(self.value.as_bytes())),
            _ => false,
        }
    }

    /// `MTLS_LB_SECRET` and its header, when set. Present but blank is an error, not "unset":
    /// an empty secret mount must not turn the check off. The value is never shown.
    pub fn read(r: &mut Reader<'_>) -> Option<Self> {
        let Some(raw) = r.raw(LB_SECRET.name) else {
            if r.get(LB_SECRET_HEADER.name).is_some() {
                r.fail_other("MTLS_LB_SECRET_HEADER is set but MTLS_LB_SECRET is not; set the secret value too, or neither");
            }
            return None;
        };
        let value = raw.trim();
        if value.is_empty() {
            r.fail(LB_SECRET.name, "is set but blank (an empty secret mount?); set it to the value the load balancer sends in MTLS_LB_SECRET_HEADER, or unset it");
            return None;
        }
        if http::HeaderValue::from_str(value).is_err() {
            r.fail(LB_SECRET.name, "holds characters an HTTP header cannot carry (control characters or non-ASCII), so no request could match it; use printable ASCII, e.g. `openssl rand -base64 32`");
            return None;
        }
        if value.len() < MIN_LB_SECRET_BYTES {
            r.warn(format!(
                "MTLS_LB_SECRET is only {} bytes long: use at least {MIN_LB_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 32`) so that it cannot be guessed",
                value.len()
            ));
        }
        Some(Self {
            header: r.header(&LB_SECRET_HEADER, None),
            value: value.to_owned(),
        })
    }
}

impl std::fmt::Debug for LbSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LbSecret {{ header: {}, value: <redacted> }}",
            self.header
        )
    }
}

/// Header names (configurable with the reference's `MTLS_HEADER_*` variables) and options.
#[derive(Debug, Clone)]
pub struct XlbSettings {
    /// Header whose value identifies the client (`MTLS_HEADER_CLIENT_ID`).
    pub client_id: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_PRESENT`.
    pub present: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_CHAIN_VERIFIED`.
    pub chain_verified: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_ERROR`.
    pub error: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_SHA256_FINGERPRINT`.
    pub sha256: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_SPIFFE_ID`.
    pub spiffe: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_URI_SANS`.
    pub uri_sans: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_DNSNAME_SANS`.
    pub dns_sans: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_SERIAL_NUMBER`.
    pub serial: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_VALID_NOT_BEFORE`.
    pub not_before: HeaderName,
    /// `MTLS_HEADER_CLIENT_CERT_VALID_NOT_AFTER`.
    pub not_after: HeaderName,
    /// Optional shared-secret header set by the load balancer.
    pub lb_secret: Option<LbSecret>,
    /// Clock for the validity-window check.
    pub clock: Clock,
}

impl Default for XlbSettings {
    /// The declared header names, no secret, the system clock.
    fn default() -> Self {
        Self::read(&mut Reader::new(&Values::new()))
    }
}

impl XlbSettings {
    /// Reads the header names and the secret; the clock is the system's.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let lb_secret = LbSecret::read(r);
        Self {
            client_id: r.header(&CLIENT_ID, None),
            present: r.header(&PRESENT, None),
            chain_verified: r.header(&CHAIN_VERIFIED, None),
            error: r.header(&ERROR, None),
            sha256: r.header(&SHA256, None),
            spiffe: r.header(&SPIFFE, None),
            uri_sans: r.header(&URI_SANS, None),
            dns_sans: r.header(&DNS_SANS, None),
            serial: r.header(&SERIAL, None),
            not_before: r.header(&NOT_BEFORE, None),
            not_after: r.header(&NOT_AFTER, None),
            lb_secret,
            clock: Clock::system(),
        }
    }

    /// Checks that the client-ID header is one of the headers that identify a certificate.
    pub fn validate(&self) -> Result<(), ClientIdHeaderError> {
        let allowed = [&self.spiffe, &self.dns_sans, &self.uri_sans, &self.sha256];
        if allowed.contains(&&self.client_id) {
            Ok(())
        } else {
            Err(ClientIdHeaderError {
                client_id: self.client_id.clone(),
                allowed: Box::new(allowed.map(Clone::clone)),
            })
        }
    }
}

/// `MTLS_HEADER_CLIENT_ID` names a header that does not identify a certificate (e.g. the
/// serial number's); the four that do are named in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{client_id}' must name the SPIFFE ({}), DNS-SAN ({}), URI-SAN ({}) or SHA-256 ({}) header",
    allowed[0], allowed[1], allowed[2], allowed[3]
)]
pub struct ClientIdHeaderError {
    /// The configured client-ID header.
    pub client_id: HeaderName,
    /// The headers that would do: SPIFFE ID, DNS SANs, URI SANs, SHA-256 fingerprint (boxed:
    /// an error is rare and a `Result` stays small).
    pub allowed: Box<[HeaderName; 4]>,
}

impl From<ClientIdHeaderError> for StartupError {
    /// `MTLS_HEADER_CLIENT_ID: '…' must name …`.
    fn from(e: ClientIdHeaderError) -> Self {
        StartupError::setting(CLIENT_ID.name, e.to_string())
    }
}
