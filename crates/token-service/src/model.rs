//! Domain types that travel between the layers: the token request as the HTTP edge parsed it,
//! the certificate facts a flow established, and the client a policy admitted. Plain data only;
//! this module depends on nothing else of ours.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The OAuth client-credentials grant type (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// A token request as received at `POST /token`, after form parsing.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// `grant_type`, empty when the client sent none.
    pub grant_type: String,
    /// `scope`, when the client asked for an access token.
    pub scope: Option<String>,
    /// `service_account`, when the client asked to impersonate a service account.
    pub service_account: Option<String>,
    /// `audience`, when the client asked for an ID token for an audience of its choice.
    pub audience: Option<String>,
    /// Every other form parameter, for the flow to use as it sees fit.
    pub params: BTreeMap<String, String>,
    /// Request headers (certificate facts from a load balancer arrive here).
    pub headers: http::HeaderMap,
    /// Address of the TCP peer (a proxy or load balancer when one is in front).
    pub remote_addr: Option<SocketAddr>,
    /// DER certificates the TLS peer presented, leaf first, when TLS ended here.
    pub peer_certificates: Option<Arc<Vec<Vec<u8>>>>,
}

/// What is known about a client certificate once a flow has verified (or trusted a verifier of)
/// it. Strings keep the encodings Google's load balancer uses, so claims do not depend on where
/// TLS ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFacts {
    /// SPIFFE ID (the URI SAN with scheme `spiffe`).
    pub spiffe_id: Option<String>,
    /// DNS subject alternative names, in certificate order.
    pub dns_sans: Vec<String>,
    /// URI subject alternative names, in certificate order.
    pub uri_sans: Vec<String>,
    /// Base64 (standard alphabet) SHA-256 fingerprint of the DER certificate.
    pub sha256_fingerprint: Option<String>,
    /// The fingerprint of the certificate's re-signed twin: the same certificate with the other
    /// encoding of its ECDSA signature ((r, s) and (r, n − s) both verify). Deny lists and
    /// fingerprint conditions match either form; never a claim. `None` without an ECDSA
    /// signature or when the flow saw only the load balancer's facts.
    pub sha256_fingerprint_twin: Option<String>,
    /// Serial number as the verifier reported it.
    pub serial_number: Option<String>,
    /// Start of the validity period, seconds since the epoch.
    pub not_before: Option<i64>,
    /// End of the validity period, seconds since the epoch.
    pub not_after: Option<i64>,
    /// Subject distinguished name, when the certificate itself was seen.
    pub subject_dn: Option<String>,
    /// Issuer distinguished name, when the certificate itself was seen.
    pub issuer_dn: Option<String>,
    /// Subject DN attributes as (short name such as `CN`, value), when the certificate was seen.
    pub subject: Vec<(String, String)>,
    /// Issuer DN attributes, likewise.
    pub issuer: Vec<(String, String)>,
    /// Base64 SHA-256 fingerprint of the CA certificate that issued the leaf, when known.
    pub issuer_ca_sha256: Option<String>,
    /// The fingerprint of that CA certificate's re-signed twin (see `sha256_fingerprint_twin`).
    pub issuer_ca_sha256_twin: Option<String>,
    /// The OCSP outcome that let the certificate in (`good`, `unavailable: ...`), when
    /// `TLS_CLIENT_OCSP` asked: for the request's log line, never a claim.
    pub ocsp: Option<String>,
}

/// A client that a flow has authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedClient {
    /// Name of the flow that authenticated it (goes into `amr`): set by the grant from the
    /// flow's registration, so a flow cannot claim another's name.
    pub flow: String,
    /// Client ID the flow derived from the certificate.
    pub client_id: String,
    /// The certificate facts behind that decision.
    pub facts: CertificateFacts,
}

impl AuthenticatedClient {
    /// A client a flow identified as `client_id` from `facts`; the grant fills in the flow.
    pub fn new(client_id: impl Into<String>, facts: CertificateFacts) -> Self {
        Self {
            flow: String::new(),
            client_id: client_id.into(),
            facts,
        }
    }
}

/// A client the policy admitted, with what it may receive.
#[derive(Debug, Clone)]
pub struct Client {
    /// Name of the flow that authenticated it.
    pub flow: String,
    /// Client ID: becomes `sub` and `client_id` of the ID token.
    pub client_id: String,
    /// The certificate facts, for the `client` claim.
    pub facts: CertificateFacts,
    /// Claims the policy adds to the ID token.
    pub extra_claims: Map<String, Value>,
    /// Token lifetime in seconds when the policy overrides the global one.
    pub lifetime_seconds: Option<i64>,
    /// What the policy decided, for the request's log line; `None` from a policy without
    /// rules (the reference policy).
    pub decision: Option<PolicyDecision>,
    /// The audience the client asked for and was admitted for, when it is not the default
    /// audience; `None`: the token is for the default audience.
    pub audience: Option<AudienceGrant>,
}

/// An audience a client asked for (the `/token` parameter `audience`) and was admitted for,
/// with what the policy sets for tokens of that audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceGrant {
    /// `aud` of the ID token.
    pub audience: String,
    /// `sub` of the ID token, when the policy maps this audience to a subject other than the
    /// client ID (`client_id` stays the client's).
    pub subject: Option<String>,
    /// Lifetime in seconds the policy sets for tokens of this audience.
    pub lifetime_seconds: Option<i64>,
}

impl AudienceGrant {
    /// `audience`, with nothing the policy sets for it.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            subject: None,
            lifetime_seconds: None,
        }
    }
}

/// A policy's decision about a client, as the request's one log line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    /// `allow`, `deny` (the client) or `deny_access` (a service account or scope it asked
    /// for).
    pub decision: &'static str,
    /// The rule that decided, a deny list (`deny_lists.serials`) or `(no rule matched)`.
    pub rule: String,
    /// The facts that matched, one phrase each, separated by `; ` (empty when none did).
    pub matched: String,
}

impl PolicyDecision {
    /// The decision as labels of the request's log line: `policy_decision`, `policy_rule`,
    /// `policy_matched`.
    pub fn labels(&self) -> [(&'static str, &str); 3] {
        [
            ("policy_decision", self.decision),
            ("policy_rule", &self.rule),
            ("policy_matched", &self.matched),
        ]
    }
}

/// An issued access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token itself. Never logged.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Scopes it carries (space-separated).
    pub scope: String,
}

/// Temporary credentials of an AWS role (`AssumeRoleWithWebIdentity`). Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `SessionToken`.
    pub session_token: String,
    /// `Expiration`, RFC 3339.
    pub expiration: String,
}

impl std::fmt::Debug for AwsCredentials {
    /// The access key ID and expiration only: the secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// What the shared client-credentials path returns on success.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// The signed ID token. Never logged.
    pub id_token: String,
    /// Its `exp`, seconds since the epoch.
    pub id_token_expires_at: i64,
    /// Its `jti`, which may be logged.
    pub jti: String,
    /// Its `aud`, which may be logged.
    pub audience: String,
    /// The access token, when the request asked for one.
    pub access_token: Option<AccessToken>,
    /// Temporary AWS credentials, when the request named an AWS role.
    pub aws_credentials: Option<AwsCredentials>,
    /// What the policy decided, for the request's log line.
    pub decision: Option<PolicyDecision>,
}

/// Cuts untrusted text for logs and messages, on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
