//! Flow `xlb-mtls-client-credentials`: Google Cloud's external Application Load Balancer
//! terminates mutual TLS, verifies the client chain against its trust config and forwards what
//! it learned as request headers. This flow trusts those headers, so the service must only be
//! reachable through the load balancer (optionally proven by a shared-secret header). Uses
//! `model` and `x509` (SPIFFE ID rules); logs nothing.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderName};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Authentication, Declined};
use crate::error::{Failure, StartupError};
use crate::model::{AuthenticatedClient, CertificateFacts, TokenRequest, truncate};

/// Name of this flow in `AUTH_FLOWS` and `amr`.
pub const NAME: &str = "xlb-mtls-client-credentials";

/// Largest accepted certificate header value. Google's load balancer caps SAN lists at 512
/// bytes and all mTLS headers together at 16 KiB; anything larger did not come from it.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Base64 that accepts values with or without padding, as load balancers differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) mod settings;
pub(crate) use settings::SETTINGS;
pub use settings::{ClientIdHeaderError, LbSecret, MIN_LB_SECRET_BYTES, XlbSettings};

impl XlbSettings {
    fn certificate_headers(&self) -> [&HeaderName; 10] {
        [
            &self.present,
            &self.chain_verified,
            &self.error,
            &self.sha256,
            &self.spiffe,
            &self.uri_sans,
            &self.dns_sans,
            &self.serial,
            &self.not_before,
            &self.not_after,
        ]
    }
}

/// The load-balancer header flow.
pub struct XlbMtlsFlow {
    settings: XlbSettings,
}

impl XlbMtlsFlow {
    /// Builds the flow; fails when `MTLS_HEADER_CLIENT_ID` names an unsuitable header.
    pub fn new(settings: XlbSettings) -> Result<Self, StartupError> {
        settings.validate()?;
        Ok(Self { settings })
    }

    fn secret_matches(&self, headers: &HeaderMap) -> bool {
        self.settings
            .lb_secret
            .as_ref()
            .is_none_or(|secret| secret.matches(headers))
    }

    /// Adds every certificate header the request carries to `failure` as log labels
    /// `header/<name>`, so the request's log line shows what the load balancer reported.
    fn with_header_labels(&self, failure: Failure, headers: &HeaderMap) -> Failure {
        let mut failure = failure.with_label("event", "client_certificate_unverified");
        for name in self.settings.certificate_headers() {
            if let Some(v) = headers.get(name) {
                let text = String::from_utf8_lossy(v.as_bytes());
                failure = failure.with_label(format!("header/{name}"), truncate(&text, 512));
            }
        }
        failure
    }

    /// Why the request is not this flow's, when it is not: without the load balancer's secret
    /// no certificate header is read at all and the request is left to the other flows (a
    /// direct-mTLS client never carries the secret); certificate headers without it are
    /// untrusted (403 if no other flow takes the request).
    fn declined(&self, headers: &HeaderMap) -> Option<Declined> {
        let s = &self.settings;
        if let Some(secret) = &s.lb_secret
            && !self.secret_matches(headers)
        {
            let forwarded = s
                .certificate_headers()
                .iter()
                .any(|name| headers.contains_key(*name));
            return Some(if forwarded {
                Declined::untrusted(format!(
                    "load-balancer certificate headers without the load balancer's secret: header '{}' is missing or its value is wrong, so they are not trusted",
                    secret.header
                ))
            } else {
                Declined::missing(format!(
                    "no load-balancer certificate headers with a valid secret (header '{}')",
                    secret.header
                ))
            });
        }
        let name = &s.present;
        match headers.get(name) {
            Some(v) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"true") => None,
            Some(v) => Some(Declined::missing(format!(
                "header {name} holds '{}' rather than 'true': no client certificate was presented to the load balancer",
                truncate(&String::from_utf8_lossy(v.as_bytes()), 64)
            ))),
            None => Some(Declined::missing(format!(
                "no load-balancer certificate headers: header {name} is missing, so the request did not come through an mTLS load balancer"
            ))),
        }
    }

    fn check_validity(&self, headers: &HeaderMap) -> Result<(Option<i64>, Option<i64>), Failure> {
        let s = &self.settings;
        let not_before = header(headers, &s.not_before)?
            .map(|v| parse_time(&s.not_before, v))
            .transpose()?;
        let not_after = header(headers, &s.not_after)?
            .map(|v| parse_time(&s.not_after, v))
            .transpose()?;
        let now = s.clock.now();
        if let Some(nb) = not_before
            && now < nb
        {
            return Err(Failure::unauthorized(format!(
                "The client certificate is not valid before {} (header {})",
                format_time(nb),
                s.not_before
            )));
        }
        if let Some(na) = not_after
            && now > na
        {
            return Err(Failure::unauthorized(format!(
                "The client certificate expired at {} (header {})",
                format_time(na),
                s.not_after
            )));
        }
        Ok((not_before, not_after))
    }
}

#[async_trait]
impl super::Flow for XlbMtlsFlow {
    async fn authenticate(&self, request: &TokenRequest) -> Result<Authentication, Failure> {
        let headers = &request.headers;
        if let Some(declined) = self.declined(headers) {
            return Ok(Authentication::NotMine(declined));
        }
        self.client(headers).map(Authentication::Client)
    }
}

impl XlbMtlsFlow {
    /// The client of a request that came through the load balancer with a certificate.
    fn client(&self, headers: &HeaderMap) -> Result<AuthenticatedClient, Failure> {
        let s = &self.settings;
        // Refuses a repeated header (the claim above looked at the first value only).
        header(headers, &s.present)?;
        let verified = header(headers, &s.chain_verified)?.unwrap_or("");
        if !verified.trim().eq_ignore_ascii_case("true") {
            let lb_error = header(headers, &s.error).ok().flatten().unwrap_or("");
            let detail = if lb_error.is_empty() {
                String::new()
            } else {
                format!(": {}", truncate(lb_error, 256))
            };
            let refusal = Failure::unauthorized(format!(
                "The client certificate chain could not be verified (header {} is not 'true'){detail}",
                s.chain_verified
            ));
            return Err(self.with_header_labels(refusal, headers));
        }
        let raw_id = header(headers, &s.client_id)?.unwrap_or("").trim();
        if raw_id.is_empty() {
            return Err(Failure::unauthorized(format!(
                "Header {} is empty or missing: the client certificate lacks the attribute that identifies clients",
                s.client_id
            )));
        }
        let dns_sans = san_header(headers, &s.dns_sans)?;
        let uri_sans = san_header(headers, &s.uri_sans)?;
        let (not_before, not_after) = self.check_validity(headers)?;
        let client_id = if s.client_id == s.dns_sans {
            dns_sans.first().cloned()
        } else if s.client_id == s.uri_sans {
            uri_sans.first().cloned()
        } else {
            Some(raw_id.to_owned())
        };
        let Some(client_id) = client_id else {
            return Err(Failure::unauthorized(format!(
                "Header {} holds no SAN: the client certificate lacks the attribute that identifies clients",
                s.client_id
            )));
        };
        let text = |name: &HeaderName| -> Result<Option<String>, Failure> {
            Ok(header(headers, name)?
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned))
        };
        // The SPIFFE ID the load balancer reports is held to the same rules as one read from
        // a certificate (it may also be the client ID).
        let spiffe_id = text(&s.spiffe)?;
        if let Some(id) = &spiffe_id
            && let Err(why) = crate::x509::spiffe::parse(id)
        {
            return Err(Failure::unauthorized(format!(
                "Header {} holds '{}', which is not a valid SPIFFE ID: {why}",
                s.spiffe,
                crate::x509::spiffe::printable(id, 256)
            )));
        }
        Ok(AuthenticatedClient::new(
            client_id,
            CertificateFacts {
                spiffe_id,
                dns_sans,
                uri_sans,
                sha256_fingerprint: text(&s.sha256)?,
                serial_number: text(&s.serial)?,
                not_before,
                not_after,
                ..CertificateFacts::default()
            },
        ))
    }
}

/// Reads a header as text. A header given twice is refused: a load balancer sets each header
/// once, so a second copy means someone upstream appended instead of overwriting.
fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, Failure> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Failure::invalid_request(format!(
            "Header {name} appears more than once"
        )));
    }
    if value.len() > MAX_HEADER_BYTES {
        return Err(Failure::invalid_request(format!(
            "Header {name} exceeds {} KiB",
            MAX_HEADER_BYTES / 1024
        )));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| Failure::invalid_request(format!("Header {name} is not printable ASCII")))
}

fn san_header(headers: &HeaderMap, name: &HeaderName) -> Result<Vec<String>, Failure> {
    match header(headers, name)? {
        None => Ok(Vec::new()),
        Some(v) => {
            decode_san_list(v).map_err(|e| Failure::invalid_request(format!("Header {name}: {e}")))
        }
    }
}

/// Decodes a load-balancer SAN header: a comma-separated list in base64. Google's documentation
/// reads both as "the whole list base64-encoded" (what the reference assumed) and as "each entry
/// base64-encoded"; both are accepted. Base64 has no comma, so a comma in the raw value means
/// per-entry encoding. Entries are trimmed; empty ones are dropped.
pub fn decode_san_list(value: &str) -> Result<Vec<String>, SanListError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let decode = |part: &str| -> Result<String, SanListError> {
        let bytes = BASE64
            .decode(part.trim())
            .map_err(|_| SanListError::NotBase64(truncate(part.trim(), 64)))?;
        String::from_utf8(bytes).map_err(|_| SanListError::NotUtf8)
    };
    let entries: Vec<String> = if value.contains(',') {
        value
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(decode)
            .collect::<Result<_, _>>()?
    } else {
        decode(value)?.split(',').map(str::to_owned).collect()
    };
    Ok(entries
        .into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect())
}

/// Why a SAN header cannot be decoded; the flow prefixes the header's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SanListError {
    /// An entry (shown truncated) is not base64.
    #[error("'{0}' is not valid base64")]
    NotBase64(String),
    /// An entry decodes to bytes that are not UTF-8.
    #[error("a decoded SAN is not valid UTF-8")]
    NotUtf8,
}

fn parse_time(name: &HeaderName, value: &str) -> Result<i64, Failure> {
    OffsetDateTime::parse(value.trim(), &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            Failure::unauthorized(format!(
                "Header {name} holds '{}', which is not an RFC 3339 time",
                truncate(value, 64)
            ))
        })
}

fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests;
