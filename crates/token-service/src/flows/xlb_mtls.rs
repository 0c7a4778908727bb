//! Flow `xlb-mtls-client-credentials`: Google Cloud's external Application Load Balancer
//! terminates mutual TLS, verifies the client chain against its trust config and forwards what
//! it learned as request headers. This flow trusts those headers, so the service must only be
//! reachable through the load balancer (optionally proven by a shared-secret header).

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{FlowError, TLS_CLIENT_AUTH};
use crate::model::{
    AuthenticatedClient, CLIENT_CREDENTIALS, CertificateFacts, TokenRequest, truncate,
};

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
pub use settings::{LbSecret, MIN_LB_SECRET_BYTES, XlbSettings};

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
    pub fn new(settings: XlbSettings) -> Result<Self, String> {
        settings.validate()?;
        Ok(Self { settings })
    }

    fn secret_matches(&self, headers: &HeaderMap) -> bool {
        self.settings
            .lb_secret
            .as_ref()
            .is_none_or(|secret| secret.matches(headers))
    }

    /// Every certificate header the request carries, as log labels `header/<name>`.
    fn header_labels(&self, headers: &HeaderMap) -> Value {
        let mut labels = Map::new();
        for name in self.settings.certificate_headers() {
            if let Some(v) = headers.get(name) {
                let text = String::from_utf8_lossy(v.as_bytes());
                labels.insert(
                    format!("header/{name}"),
                    Value::String(truncate(&text, 512)),
                );
            }
        }
        Value::Object(labels)
    }

    fn check_validity(&self, headers: &HeaderMap) -> Result<(Option<i64>, Option<i64>), FlowError> {
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
            return Err(FlowError::Unauthorized(format!(
                "The client certificate is not valid before {} (header {})",
                format_time(nb),
                s.not_before
            )));
        }
        if let Some(na) = not_after
            && now > na
        {
            return Err(FlowError::Unauthorized(format!(
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
    fn name(&self) -> &str {
        NAME
    }

    fn grant_type(&self) -> &str {
        CLIENT_CREDENTIALS
    }

    fn auth_method(&self) -> &str {
        TLS_CLIENT_AUTH
    }

    fn can_handle(&self, request: &TokenRequest) -> bool {
        // Without the load balancer's secret no certificate header is read at all, and the
        // request is left to the other flows: a direct-mTLS client never carries the secret.
        self.secret_matches(&request.headers)
            && request
                .headers
                .get(&self.settings.present)
                .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"true"))
    }

    fn declined(&self, request: &TokenRequest) -> FlowError {
        let s = &self.settings;
        let headers = &request.headers;
        if let Some(secret) = &s.lb_secret
            && !self.secret_matches(headers)
        {
            let forwarded = s
                .certificate_headers()
                .iter()
                .any(|name| headers.contains_key(*name));
            return if forwarded {
                FlowError::Unauthorized(format!(
                    "load-balancer certificate headers without the load balancer's secret: header '{}' is missing or its value is wrong, so they are not trusted",
                    secret.header
                ))
            } else {
                FlowError::InvalidRequest(format!(
                    "no load-balancer certificate headers with a valid secret (header '{}')",
                    secret.header
                ))
            };
        }
        let name = &s.present;
        match headers.get(name) {
            Some(v) => FlowError::InvalidRequest(format!(
                "header {name} holds '{}' rather than 'true': no client certificate was presented to the load balancer",
                truncate(&String::from_utf8_lossy(v.as_bytes()), 64)
            )),
            None => FlowError::InvalidRequest(format!(
                "no load-balancer certificate headers: header {name} is missing, so the request did not come through an mTLS load balancer"
            )),
        }
    }

    async fn authenticate(&self, request: &TokenRequest) -> Result<AuthenticatedClient, FlowError> {
        let s = &self.settings;
        let headers = &request.headers;
        if !self.secret_matches(headers) {
            let header = s
                .lb_secret
                .as_ref()
                .map(|l| l.header.as_str())
                .unwrap_or("");
            return Err(FlowError::Unauthorized(format!(
                "The request lacks the load balancer's secret header '{header}' or its value is wrong"
            )));
        }
        let present = header(headers, &s.present)?.unwrap_or("");
        if !present.trim().eq_ignore_ascii_case("true") {
            return Err(FlowError::Unauthorized(format!(
                "No client certificate was presented (header {} is not 'true')",
                s.present
            )));
        }
        let verified = header(headers, &s.chain_verified)?.unwrap_or("");
        if !verified.trim().eq_ignore_ascii_case("true") {
            let lb_error = header(headers, &s.error).ok().flatten().unwrap_or("");
            tracing::error!(
                event = "client_certificate_unverified",
                flow = NAME,
                labels = %self.header_labels(headers),
                "the load balancer could not verify the client certificate chain"
            );
            let detail = if lb_error.is_empty() {
                String::new()
            } else {
                format!(": {}", truncate(lb_error, 256))
            };
            return Err(FlowError::Unauthorized(format!(
                "The client certificate chain could not be verified (header {} is not 'true'){detail}",
                s.chain_verified
            )));
        }
        let raw_id = header(headers, &s.client_id)?.unwrap_or("").trim();
        if raw_id.is_empty() {
            return Err(FlowError::Unauthorized(format!(
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
            return Err(FlowError::Unauthorized(format!(
                "Header {} holds no SAN: the client certificate lacks the attribute that identifies clients",
                s.client_id
            )));
        };
        let text = |name: &HeaderName| -> Result<Option<String>, FlowError> {
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
            return Err(FlowError::Unauthorized(format!(
                "Header {} holds '{}', which is not a valid SPIFFE ID: {why}",
                s.spiffe,
                crate::x509::spiffe::printable(id, 256)
            )));
        }
        Ok(AuthenticatedClient {
            flow: NAME.to_owned(),
            client_id,
            facts: CertificateFacts {
                spiffe_id,
                dns_sans,
                uri_sans,
                sha256_fingerprint: text(&s.sha256)?,
                serial_number: text(&s.serial)?,
                not_before,
                not_after,
                ..CertificateFacts::default()
            },
        })
    }
}

/// Reads a header as text. A header given twice is refused: a load balancer sets each header
/// once, so a second copy means someone upstream appended instead of overwriting.
fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, FlowError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(FlowError::InvalidRequest(format!(
            "Header {name} appears more than once"
        )));
    }
    if value.len() > MAX_HEADER_BYTES {
        return Err(FlowError::InvalidRequest(format!(
            "Header {name} exceeds {} KiB",
            MAX_HEADER_BYTES / 1024
        )));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| FlowError::InvalidRequest(format!("Header {name} is not printable ASCII")))
}

fn san_header(headers: &HeaderMap, name: &HeaderName) -> Result<Vec<String>, FlowError> {
    match header(headers, name)? {
        None => Ok(Vec::new()),
        Some(v) => {
            decode_san_list(v).map_err(|e| FlowError::InvalidRequest(format!("Header {name}: {e}")))
        }
    }
}

/// Decodes a load-balancer SAN header: a comma-separated list in base64. Google's documentation
/// reads both as "the whole list base64-encoded" (what the reference assumed) and as "each entry
/// base64-encoded"; both are accepted. Base64 has no comma, so a comma in the raw value means
/// per-entry encoding. Entries are trimmed; empty ones are dropped.
pub fn decode_san_list(value: &str) -> Result<Vec<String>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let decode = |part: &str| -> Result<String, String> {
        let bytes = BASE64
            .decode(part.trim())
            .map_err(|_| format!("'{}' is not valid base64", truncate(part.trim(), 64)))?;
        String::from_utf8(bytes).map_err(|_| "a decoded SAN is not valid UTF-8".to_owned())
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

fn parse_time(name: &HeaderName, value: &str) -> Result<i64, FlowError> {
    OffsetDateTime::parse(value.trim(), &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            FlowError::Unauthorized(format!(
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
