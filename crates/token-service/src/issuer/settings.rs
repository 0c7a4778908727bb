//! Settings of the ID tokens: issuer, audience (or the workload identity pool it is derived
//! from), the further audiences a client may ask for and their lifetimes, lifetime and
//! published `jwks_uri`. The declarations and [`TokenSettings`], which they fill. Read through
//! `config::reader`; reads no environment.

use std::collections::BTreeMap;

use crate::config::reader::{Reader, Setting};
use crate::http::IssuerSource;

/// `TOKEN_ISSUER`.
pub const ISSUER: Setting = Setting::url(
    "TOKEN_ISSUER",
    None,
    "Issuer URL (iss); http:// only for local development",
)
.noted("https:// + Host header");
/// `TOKEN_AUDIENCE`.
pub const AUDIENCE: Setting = Setting::text("TOKEN_AUDIENCE", None, "Audience (aud) of ID tokens")
    .noted("the workload identity pool provider URL");
/// `WORKLOAD_IDENTITY_PROJECT_NUMBER`.
pub const PROJECT_NUMBER: Setting = Setting::text(
    "WORKLOAD_IDENTITY_PROJECT_NUMBER",
    None,
    "Project number of the workload identity pool (also spelled WORKLOAD_IDENITY_*)",
);
/// `WORKLOAD_IDENTITY_POOL_ID`.
pub const POOL_ID: Setting = Setting::text(
    "WORKLOAD_IDENTITY_POOL_ID",
    None,
    "Workload identity pool ID",
);
/// `WORKLOAD_IDENTITY_PROVIDER_ID`.
pub const PROVIDER_ID: Setting = Setting::text(
    "WORKLOAD_IDENTITY_PROVIDER_ID",
    None,
    "Workload identity pool provider ID",
);
/// The reference's spelling of `WORKLOAD_IDENTITY_PROJECT_NUMBER`.
pub const PROJECT_NUMBER_TYPO: Setting = Setting::text(
    "WORKLOAD_IDENITY_PROJECT_NUMBER",
    None,
    "Reference spelling of WORKLOAD_IDENTITY_PROJECT_NUMBER",
);
/// The reference's spelling of `WORKLOAD_IDENTITY_POOL_ID`.
pub const POOL_ID_TYPO: Setting = Setting::text(
    "WORKLOAD_IDENITY_POOL_ID",
    None,
    "Reference spelling of WORKLOAD_IDENTITY_POOL_ID",
);
/// The reference's spelling of `WORKLOAD_IDENTITY_PROVIDER_ID`.
pub const PROVIDER_ID_TYPO: Setting = Setting::text(
    "WORKLOAD_IDENITY_PROVIDER_ID",
    None,
    "Reference spelling of WORKLOAD_IDENTITY_PROVIDER_ID",
);
/// The bounds of `TOKEN_VALIDITY` in minutes, which per-rule lifetimes of the policy share.
pub const VALIDITY_MINUTES: (u64, u64) = (1, 60);
/// `TOKEN_VALIDITY`.
pub const VALIDITY: Setting = Setting::minutes(
    "TOKEN_VALIDITY",
    5,
    VALIDITY_MINUTES.0..=VALIDITY_MINUTES.1,
    "ID token lifetime in minutes, 1 to 60",
);
/// `TOKEN_AUDIENCES`.
pub const AUDIENCES: Setting = Setting::list(
    "TOKEN_AUDIENCES",
    "",
    "Further audiences a client may ask for with the /token parameter 'audience', comma-separated",
);
/// `TOKEN_AUDIENCE_VALIDITY`.
pub const AUDIENCE_VALIDITY: Setting = Setting::list(
    "TOKEN_AUDIENCE_VALIDITY",
    "",
    "ID token lifetime per audience of TOKEN_AUDIENCES, AUDIENCE=MINUTES (1 to 60), comma-separated",
)
.noted("TOKEN_VALIDITY");
/// `TOKEN_MIN_LIFETIME`.
pub const MIN_LIFETIME: Setting = Setting::seconds(
    "TOKEN_MIN_LIFETIME",
    60,
    1..=3600,
    "No token outlives the client certificate (ID token exp, impersonated access token and AWS session capped by its notAfter); a certificate expiring within this many seconds is refused (1 to 3600)",
);
/// `TOKEN_CERTIFICATE_BOUND`.
pub const CERTIFICATE_BOUND: Setting = Setting::flag(
    "TOKEN_CERTIFICATE_BOUND",
    false,
    "on: ID tokens carry cnf.x5t#S256, the client certificate's SHA-256 thumbprint (RFC 8705), and discovery says tls_client_certificate_bound_access_tokens",
);
/// The default of `JWKS_MAX_AGE`, in seconds.
pub const DEFAULT_JWKS_MAX_AGE: u64 = 300;
/// `JWKS_MAX_AGE`.
pub const JWKS_MAX_AGE: Setting = Setting::seconds(
    "JWKS_MAX_AGE",
    DEFAULT_JWKS_MAX_AGE,
    0..=86_400,
    "Seconds verifiers may cache discovery and the JWK Set (Cache-Control max-age), 0 to 86400; a key is published this long before it signs",
);
/// `JWKS_URI`.
pub const JWKS_URI: Setting = Setting::url("JWKS_URI", None, "jwks_uri published in discovery")
    .noted("issuer + /.well-known/jwks.json");

/// Issuer, audience, pool and lifetime, in help order.
pub const TOKENS: &[Setting] = &[
    ISSUER,
    AUDIENCE,
    PROJECT_NUMBER,
    POOL_ID,
    PROVIDER_ID,
    PROJECT_NUMBER_TYPO,
    POOL_ID_TYPO,
    PROVIDER_ID_TYPO,
    VALIDITY,
    AUDIENCES,
    AUDIENCE_VALIDITY,
    MIN_LIFETIME,
    CERTIFICATE_BOUND,
];
/// The published key location.
pub const PUBLICATION: &[Setting] = &[JWKS_URI, JWKS_MAX_AGE];

/// A workload identity pool provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentityPool {
    /// Project number.
    pub project_number: String,
    /// Pool ID.
    pub pool_id: String,
    /// Provider ID.
    pub provider_id: String,
}

impl WorkloadIdentityPool {
    /// The provider's resource name without scheme: `iam.googleapis.com/projects/...`.
    pub fn resource(&self) -> String {
        format!(
            "iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            self.project_number, self.pool_id, self.provider_id
        )
    }
}

/// What the ID tokens say about their issuer and audience, and how long they live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `TOKEN_ISSUER`, or the Host header.
    pub issuer: IssuerSource,
    /// `TOKEN_AUDIENCE`, or the pool provider's URL.
    pub audience: String,
    /// The pool, when configured.
    pub pool: Option<WorkloadIdentityPool>,
    /// `TOKEN_VALIDITY`, in seconds.
    pub validity_seconds: i64,
    /// `TOKEN_AUDIENCES` and `TOKEN_AUDIENCE_VALIDITY`.
    pub audiences: AudienceSettings,
    /// `JWKS_URI`.
    pub jwks_uri: Option<String>,
    /// `TOKEN_MIN_LIFETIME`, in seconds.
    pub min_lifetime_seconds: i64,
    /// `TOKEN_CERTIFICATE_BOUND`.
    pub certificate_bound: bool,
    /// `JWKS_MAX_AGE`, in seconds.
    pub jwks_max_age: u64,
}

/// The audiences a client may ask for besides the default one, and their lifetimes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudienceSettings {
    /// `TOKEN_AUDIENCES`: the audiences a client may name with the parameter `audience`.
    pub allowed: Vec<String>,
    /// `TOKEN_AUDIENCE_VALIDITY`: ID-token lifetime in seconds per audience.
    pub lifetimes: BTreeMap<String, i64>,
}

impl TokenSettings {
    /// Reads issuer, audience, pool, lifetime and `JWKS_URI`.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let issuer = match r.url(&ISSUER) {
            Some(iss) => {
                if iss.starts_with("http://") {
                    r.warn(format!("TOKEN_ISSUER '{iss}' uses http://: fine for local development, but cloud verifiers require https"));
                }
                IssuerSource::Fixed(iss)
            }
            None => {
                r.warn("TOKEN_ISSUER is not set: the issuer is derived per request as https:// + the Host header; set TOKEN_ISSUER to pin it");
                IssuerSource::FromHost
            }
        };
        let (audience, pool) = read_audience(r);
        let validity = r.seconds(&VALIDITY);
        let audiences = read_audiences(r, &audience);
        Self {
            issuer,
            audience,
            pool,
            validity_seconds: i64::try_from(validity.as_secs()).unwrap_or(i64::MAX),
            audiences,
            jwks_uri: r.url(&JWKS_URI),
            min_lifetime_seconds: i64::try_from(r.seconds(&MIN_LIFETIME).as_secs())
                .unwrap_or(i64::MAX),
            certificate_bound: r.flag(&CERTIFICATE_BOUND),
            jwks_max_age: r.seconds(&JWKS_MAX_AGE).as_secs(),
        }
    }
}

/// `TOKEN_AUDIENCES`, and `TOKEN_AUDIENCE_VALIDITY`'s `AUDIENCE=MINUTES` items: each audience
/// one of `TOKEN_AUDIENCES` (the default's lifetime is `TOKEN_VALIDITY`), each lifetime within
/// `TOKEN_VALIDITY`'s bounds.
fn read_audiences(r: &mut Reader<'_>, default: &str) -> AudienceSettings {
    let allowed = r.list(&AUDIENCES);
    let (min, max) = VALIDITY_MINUTES;
    let mut lifetimes = BTreeMap::new();
    for item in r.list(&AUDIENCE_VALIDITY) {
        // The minutes follow the last '=', so an audience may hold one.
        let Some((audience, minutes)) = item.rsplit_once('=') else {
            r.fail(AUDIENCE_VALIDITY.name, format!("'{item}' is not valid; expected AUDIENCE=MINUTES, e.g. api://AzureADTokenExchange=15"));
            continue;
        };
        let (audience, minutes) = (audience.trim(), minutes.trim());
        let Some(minutes) = minutes
            .parse::<u64>()
            .ok()
            .filter(|m| (min..=max).contains(m))
        else {
            r.fail(AUDIENCE_VALIDITY.name, format!("'{item}' is not valid; expected whole minutes from {min} to {max} after '=' (the bounds of TOKEN_VALIDITY)"));
            continue;
        };
        if audience == default {
            r.fail(AUDIENCE_VALIDITY.name, format!("'{audience}' is the default audience, whose lifetime is TOKEN_VALIDITY; set TOKEN_VALIDITY instead"));
        } else if !allowed.iter().any(|a| a == audience) {
            r.fail(AUDIENCE_VALIDITY.name, format!("'{audience}' is not one of TOKEN_AUDIENCES; add it to TOKEN_AUDIENCES or remove it here"));
        } else {
            lifetimes.insert(
                audience.to_owned(),
                i64::try_from(minutes * 60).unwrap_or(i64::MAX),
            );
        }
    }
    AudienceSettings { allowed, lifetimes }
}

fn read_audience(r: &mut Reader<'_>) -> (String, Option<WorkloadIdentityPool>) {
    let parts = [
        (
            &PROJECT_NUMBER,
            pool_part(r, &PROJECT_NUMBER, &PROJECT_NUMBER_TYPO),
        ),
        (&POOL_ID, pool_part(r, &POOL_ID, &POOL_ID_TYPO)),
        (&PROVIDER_ID, pool_part(r, &PROVIDER_ID, &PROVIDER_ID_TYPO)),
    ];
    let missing: Vec<&str> = parts
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(s, _)| s.name)
        .collect();
    let pool = match &parts {
        [(_, Some(n)), (_, Some(p)), (_, Some(v))] => {
            if !n.bytes().all(|b| b.is_ascii_digit()) {
                r.fail(PROJECT_NUMBER.name, format!("'{n}' is not valid; expected the numeric project number, not the project ID"));
            }
            for (setting, id) in [(&POOL_ID, p), (&PROVIDER_ID, v)] {
                let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
                if !id.bytes().all(valid) {
                    r.fail(
                        setting.name,
                        format!("'{id}' is not valid; expected lowercase letters, digits and '-'"),
                    );
                }
            }
            Some(WorkloadIdentityPool {
                project_number: n.clone(),
                pool_id: p.clone(),
                provider_id: v.clone(),
            })
        }
        _ => {
            if missing.len() < 3 {
                r.fail_other(format!(
                    "the workload identity pool settings are incomplete: {} not set",
                    missing.join(", ")
                ));
            }
            None
        }
    };
    let audience = match (r.text(&AUDIENCE), &pool) {
        (Some(aud), _) => aud,
        (None, Some(pool)) => format!("https://{}", pool.resource()),
        (None, None) => {
            if missing.len() == 3 {
                r.fail_other("TOKEN_AUDIENCE is not set and no workload identity pool is configured: set TOKEN_AUDIENCE, or WORKLOAD_IDENTITY_PROJECT_NUMBER, WORKLOAD_IDENTITY_POOL_ID and WORKLOAD_IDENTITY_PROVIDER_ID (the reference's spelling WORKLOAD_IDENITY_* works too)");
            }
            String::new()
        }
    };
    r.resolve(&AUDIENCE, &audience);
    (audience, pool)
}

/// A pool setting under either spelling; both set to different values is an error.
fn pool_part(r: &mut Reader<'_>, right: &Setting, typo: &Setting) -> Option<String> {
    match (r.text(right), r.text(typo)) {
        (Some(a), Some(b)) if a != b => {
            r.fail_other(format!(
                "{} ('{a}') and {} ('{b}') are both set, to different values; set only one of them",
                right.name, typo.name
            ));
            None
        }
        (a, b) => a.or(b),
    }
}
