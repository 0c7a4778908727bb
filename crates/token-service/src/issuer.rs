//! ID-token issuance: builds the claims for an admitted client and has the signer sign them;
//! also builds the OIDC discovery document. Uses `model`, `clock`, `error`, `readiness` and the
//! `signer` trait; the request's deadline is passed on to the signer.

pub(crate) mod settings;
pub use settings::{AudienceSettings, WorkloadIdentityPool};

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::clock::{Clock, Deadline};
use crate::error::Failure;
use crate::model::{Client, truncate};
use crate::readiness::{NotReady, RETRY_AFTER};
use crate::signer::{Publication, Signer};

/// Path where this service serves its JWK Set (local signer).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/token";

/// Settings of the issuer.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// `aud` of every ID token whose request names no other audience (`TOKEN_AUDIENCE`).
    pub audience: String,
    /// Token lifetime in seconds (`TOKEN_VALIDITY` minutes).
    pub validity_seconds: i64,
    /// Published `jwks_uri` when it overrides what the signer says (`JWKS_URI`).
    pub jwks_uri: Option<String>,
    /// The shortest token issued for a client whose certificate's notAfter caps it
    /// (`TOKEN_MIN_LIFETIME`, seconds): a certificate that expires sooner is refused.
    pub min_lifetime_seconds: i64,
    /// Whether ID tokens carry `cnf: {"x5t#S256": …}` (RFC 8705) when the flow knows the
    /// certificate's SHA-256 fingerprint (`TOKEN_CERTIFICATE_BOUND`).
    pub certificate_bound: bool,
}

/// A signed ID token and the facts worth logging about it.
#[derive(Debug, Clone)]
pub struct IdToken {
    /// Compact JWT. Never logged.
    pub token: String,
    /// `iat`, seconds since the epoch.
    pub issued_at: i64,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// `jti`.
    pub jti: String,
    /// `aud`.
    pub audience: String,
}

/// Issues ID tokens.
pub struct IdTokenIssuer {
    settings: IssuerSettings,
    audiences: AudienceSettings,
    signer: Arc<dyn Signer>,
    clock: Clock,
    jwks_max_age: u64,
}

impl IdTokenIssuer {
    /// Creates an issuer.
    pub fn new(settings: IssuerSettings, signer: Arc<dyn Signer>, clock: Clock) -> Self {
        Self {
            settings,
            audiences: AudienceSettings::default(),
            signer,
            clock,
            jwks_max_age: settings::DEFAULT_JWKS_MAX_AGE,
        }
    }

    /// Lets verifiers cache discovery and the JWK Set for `seconds` (`JWKS_MAX_AGE`).
    #[must_use]
    pub fn with_jwks_max_age(mut self, seconds: u64) -> Self {
        self.jwks_max_age = seconds;
        self
    }

    /// How long verifiers may cache discovery and the JWK Set, in seconds (`JWKS_MAX_AGE`).
    pub fn jwks_max_age(&self) -> u64 {
        self.jwks_max_age
    }

    /// Lets clients ask for the audiences of `audiences` (`TOKEN_AUDIENCES`), with their
    /// lifetimes (`TOKEN_AUDIENCE_VALIDITY`).
    #[must_use]
    pub fn with_audiences(mut self, audiences: AudienceSettings) -> Self {
        self.audiences = audiences;
        self
    }

    /// The audience a request names with the parameter `audience`, when this service issues
    /// tokens for it: `None` for the default audience (also when named), the audience when
    /// `TOKEN_AUDIENCES` lists it; any other is refused with 403 `access_denied`. A policy may
    /// restrict a listed audience further.
    pub fn requested_audience<'r>(&self, audience: &'r str) -> Result<Option<&'r str>, Failure> {
        if audience == self.settings.audience {
            return Ok(None);
        }
        if self.audiences.allowed.iter().any(|a| a == audience) {
            return Ok(Some(audience));
        }
        Err(Failure::access_denied(format!(
            "The audience '{}' is not allowed: the parameter 'audience' must name this service's default audience or one of its TOKEN_AUDIENCES; leave 'audience' out for a token for the default audience, or have the audience added to TOKEN_AUDIENCES",
            truncate(audience, 200)
        ))
        .with_detail(format!(
            "audience '{}' is neither TOKEN_AUDIENCE nor one of TOKEN_AUDIENCES",
            truncate(audience, 200)
        )))
    }

    /// `aud` of this client's token: the audience it was admitted for, else the default.
    pub fn audience<'c>(&'c self, client: &'c Client) -> &'c str {
        client
            .audience
            .as_ref()
            .map_or(self.settings.audience.as_str(), |a| a.audience.as_str())
    }

    /// The settings.
    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    /// The signer.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    /// Token lifetime for this client, in seconds: the most specific wins, the policy's for
    /// the client's audience, then `TOKEN_AUDIENCE_VALIDITY`'s for it, then the policy's for
    /// the client, then `TOKEN_VALIDITY`.
    pub fn lifetime(&self, client: &Client) -> i64 {
        let audience = client.audience.as_ref();
        audience
            .and_then(|a| a.lifetime_seconds)
            .or_else(|| audience.and_then(|a| self.audiences.lifetimes.get(&a.audience).copied()))
            .or(client.lifetime_seconds)
            .unwrap_or(self.settings.validity_seconds)
    }

    /// [`Self::lifetime`] capped by the client certificate's notAfter where the flow knows it,
    /// so no ID token outlives the certificate it was issued for (never negative).
    pub fn capped_lifetime(&self, client: &Client, now: i64) -> i64 {
        let lifetime = self.lifetime(client);
        match client.facts.not_after {
            Some(not_after) => lifetime.min(not_after.saturating_sub(now).max(0)),
            None => lifetime,
        }
    }

    /// Refuses a client whose certificate expires within `TOKEN_MIN_LIFETIME` of `now`: its
    /// token would live too short to be of use (401, like an expired certificate).
    pub fn check_certificate_lifetime(&self, client: &Client, now: i64) -> Result<(), Failure> {
        certificate_lasts(
            client,
            now,
            self.settings.min_lifetime_seconds,
            "TOKEN_MIN_LIFETIME",
        )
    }

    /// Builds the claims of an ID token for `client`, issued by `iss` at `now` (bound to the
    /// certificate when [`Self::binding`] has a thumbprint).
    pub fn claims(&self, iss: &str, client: &Client, now: i64, jti: &str) -> Map<String, Value> {
        let cnf = self.binding(client).ok().flatten();
        self.claims_with(iss, client, now, jti, cnf)
    }

    /// [`Self::claims`] with the `x5t#S256` thumbprint already derived.
    fn claims_with(
        &self,
        iss: &str,
        client: &Client,
        now: i64,
        jti: &str,
        cnf: Option<String>,
    ) -> Map<String, Value> {
        let facts = &client.facts;
        let first = |v: &[String]| v.first().cloned().unwrap_or_default();
        let mut claims = Map::new();
        // Extra claims first, so that a policy can never override the registered ones.
        for (k, v) in &client.extra_claims {
            claims.insert(k.clone(), v.clone());
        }
        let fixed = json!({
            "iss": iss,
            "sub": client
                .audience
                .as_ref()
                .and_then(|a| a.subject.as_deref())
                .unwrap_or(&client.client_id),
            "aud": self.audience(client),
            "iat": now,
            "exp": now + self.capped_lifetime(client, now),
            "jti": jti,
            "amr": [client.flow],
            "client_id": client.client_id,
            "client": {
                "x5_spiffe": facts.spiffe_id.clone().unwrap_or_default(),
                "x5_dnssan": first(&facts.dns_sans),
                "x5_urisan": first(&facts.uri_sans),
                "x5_sha256": facts.sha256_fingerprint.clone().unwrap_or_default(),
                "x5_serial": facts.serial_number.clone().unwrap_or_default(),
            },
        });
        if let Value::Object(fixed) = fixed {
            claims.extend(fixed);
        }
        if let Some(thumbprint) = cnf {
            claims.insert("cnf".into(), json!({ "x5t#S256": thumbprint }));
        }
        claims
    }

    /// The `x5t#S256` to bind the token to with `TOKEN_CERTIFICATE_BOUND` (`None` without it);
    /// a client whose certificate fingerprint is missing or is not a SHA-256 digest gets no
    /// token: an unbound token where a bound one is expected would fail open.
    fn binding(&self, client: &Client) -> Result<Option<String>, Failure> {
        if !self.settings.certificate_bound {
            return Ok(None);
        }
        match client.facts.sha256_fingerprint.as_deref() {
            Some(fingerprint) => x5t_s256(fingerprint).map(Some).ok_or_else(|| {
                Failure::unauthorized(format!(
                "The client certificate's fingerprint '{}' is not a base64 SHA-256 digest, so the token cannot be bound to the certificate (TOKEN_CERTIFICATE_BOUND=true); check the fingerprint header the proxy sends",
                    truncate(fingerprint, 64)
                ))
            }),
            None => Err(Failure::unauthorized(
                "This flow does not know the client certificate's fingerprint, so the token cannot be bound to the certificate (TOKEN_CERTIFICATE_BOUND=true); use a flow that sees the certificate or its SHA-256 fingerprint",
            )),
        }
    }

    /// Issues and signs an ID token; a signer that calls upstream gives up at `deadline`.
    pub async fn issue(
        &self,
        iss: &str,
        client: &Client,
        deadline: Deadline,
    ) -> Result<IdToken, Failure> {
        let now = self.clock.now();
        self.check_certificate_lifetime(client, now)?;
        let cnf = self.binding(client)?;
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = self.claims_with(iss, client, now, &jti, cnf);
        let token = self.signer.sign(&claims, deadline).await?;
        Ok(IdToken {
            token,
            issued_at: now,
            expires_at: now + self.capped_lifetime(client, now),
            jti,
            audience: self.audience(client).to_owned(),
        })
    }

    /// The `jwks_uri` to publish for issuer `iss`; `None` while the signer does not know yet.
    pub fn jwks_uri(&self, iss: &str) -> Option<String> {
        if let Some(uri) = &self.settings.jwks_uri {
            return Some(uri.clone());
        }
        match self.signer.publication()? {
            Publication::Uri(uri) => Some(uri),
            Publication::Jwks(_) => Some(format!("{iss}{JWKS_PATH}")),
        }
    }

    /// The JWK Set this service serves, when the signer's keys are local.
    pub fn jwks(&self) -> Option<Arc<Value>> {
        match self.signer.publication()? {
            Publication::Jwks(set) => Some(set),
            Publication::Uri(_) => None,
        }
    }
}

/// Refuses `client` when its certificate's notAfter (where the flow knows it) is less than
/// `min_seconds` after `now`; `setting` names the minimum in the sentence.
pub fn certificate_lasts(
    client: &Client,
    now: i64,
    min_seconds: i64,
    setting: &str,
) -> Result<(), Failure> {
    let Some(not_after) = client.facts.not_after else {
        return Ok(());
    };
    let left = not_after.saturating_sub(now);
    if left >= min_seconds {
        return Ok(());
    }
    let at = time::OffsetDateTime::from_unix_timestamp(not_after)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| not_after.to_string());
    Err(Failure::unauthorized(format!(
        "The client certificate expires at {at}, in {} s, sooner than {setting} ({min_seconds} s): no token may outlive the certificate, so renew it first",
        left.max(0)
    )))
}

/// RFC 8705's `x5t#S256` (base64url without padding) of a certificate whose SHA-256
/// fingerprint is `fingerprint` in base64 (standard or URL-safe, padded or not); `None` when it
/// is not 32 bytes.
pub fn x5t_s256(fingerprint: &str) -> Option<String> {
    use base64::Engine as _;
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let digest = GeneralPurpose::new(&STANDARD, lenient)
        .decode(fingerprint)
        .or_else(|_| GeneralPurpose::new(&URL_SAFE, lenient).decode(fingerprint))
        .ok()
        .filter(|d| d.len() == 32)?;
    Some(URL_SAFE_NO_PAD.encode(digest))
}

/// What discovery needs to know about the enabled flows.
#[derive(Debug, Clone, Default)]
pub struct FlowSummary {
    /// Distinct grant types, in flow order.
    pub grant_types: Vec<String>,
    /// Distinct token-endpoint authentication methods, in flow order.
    pub auth_methods: Vec<String>,
}

/// Why discovery cannot name the signing keys yet; discovery answers 503 with it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeysNotKnown {
    /// The signer is not ready (its Google identity is still being checked...).
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// The signer is ready but does not say where its keys are.
    #[error("the signing keys are not known yet")]
    Unpublished,
}

impl From<KeysNotKnown> for Failure {
    /// 503, retry shortly: "The signing keys are not available yet: REASON".
    fn from(reason: KeysNotKnown) -> Self {
        Failure::unavailable(
            format!("The signing keys are not available yet: {reason}"),
            RETRY_AFTER,
        )
    }
}

/// Builds the OIDC discovery document for issuer `iss`; fails with the signer's readiness
/// problem while the signing keys cannot be named.
pub fn discovery_document(
    iss: &str,
    issuer: &IdTokenIssuer,
    flows: &FlowSummary,
) -> Result<Value, KeysNotKnown> {
    let token_endpoint = format!("{iss}{TOKEN_PATH}");
    let Some(jwks_uri) = issuer.jwks_uri(iss) else {
        issuer.signer().readiness()?;
        return Err(KeysNotKnown::Unpublished);
    };
    Ok(json!({
        "issuer": iss,
        "authorization_endpoint": token_endpoint,
        "token_endpoint": token_endpoint,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["none"],
        "grant_types_supported": flows.grant_types,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": issuer.signer().algorithms(),
        "token_endpoint_auth_methods_supported": flows.auth_methods,
        "claims_supported": claims_supported(issuer.settings.certificate_bound),
        "tls_client_certificate_bound_access_tokens": issuer.settings.certificate_bound,
    }))
}

/// The claims discovery lists: `cnf` when tokens are bound to certificates.
fn claims_supported(certificate_bound: bool) -> Vec<&'static str> {
    let mut claims = vec![
        "iss",
        "sub",
        "aud",
        "iat",
        "exp",
        "jti",
        "amr",
        "client_id",
        "client",
    ];
    if certificate_bound {
        claims.push("cnf");
    }
    claims
}

#[cfg(test)]
mod tests;
