//! The federation rules of Google Cloud workload identity federation, AWS
//! `AssumeRoleWithWebIdentity` and Microsoft Entra federated credentials, as pure checks of
//! what the doctor observed (the issuer URL, the discovery document, the JWK Set, a sample
//! token) at a given time. Each rule yields one [`Finding`] per cloud it concerns, or one for
//! `all` when every cloud demands the same.
//!
//! The limits and their sources (`../shared/research/peers.md` §c6 and
//! `clients-and-clouds.md` §4, which cite the clouds' documentation):
//! - algorithms: Google RS256/ES256 (STS reference, WIF "other providers" how-to); AWS
//!   RS256/384/512 and ES256/384/512 (IAM OIDC provider docs); Entra RS256, the only one
//!   Microsoft tests (workload identity federation considerations);
//! - keys: AWS takes at most 100 RSA and 100 EC keys and needs at least one; Google takes at
//!   most 8 keys in an uploaded JWK Set (no limit on a fetched `jwks_uri`);
//! - issuer: https everywhere; AWS also refuses a port or a query; Entra compares at most 600
//!   characters;
//! - lifetime: Google `exp - iat` ≤ 24 h (WIF how-to; the STS reference says < 48 h). AWS and
//!   Entra document no maximum for the incoming token, so the doctor applies Google's 24 h to
//!   them too, as the bound that works everywhere. Azure's SDK re-reads a federated token
//!   file at most every 600 s, so a token for Entra that lives 600 s or less is a warning;
//! - size: AWS takes a web identity token of at most 20 000 characters;
//! - clock: no cloud documents its skew allowance in the sources read; the doctor's own bound
//!   is 60 s between the token's `iat` (or the server's `Date`) and this machine's clock.

use serde::Serialize;
use serde_json::Value;

use super::jwt;

/// Google's bound on `exp - iat`, also applied to AWS and Entra (see the module notes).
pub const MAX_LIFETIME: i64 = 24 * 3600;
/// Azure's SDK re-reads a federated token file at most this often.
pub const AZURE_REREAD: i64 = 600;
/// The doctor's own bound on clock skew.
pub const MAX_SKEW: i64 = 60;
/// AWS's bound on keys of one type in a JWK Set.
pub const AWS_MAX_KEYS: usize = 100;
/// Google's bound on keys in an uploaded JWK Set.
pub const GOOGLE_MAX_UPLOADED_KEYS: usize = 8;
/// AWS's bound on the web identity token's length.
pub const AWS_MAX_TOKEN_CHARS: usize = 20_000;
/// Entra's bound on the issuer of a federated credential.
pub const ENTRA_MAX_ISSUER_CHARS: usize = 600;

/// The clouds a rule concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Every cloud demands the same.
    #[value(skip)]
    All,
    /// Google Cloud workload identity federation.
    Google,
    /// AWS `AssumeRoleWithWebIdentity`.
    Aws,
    /// Microsoft Entra workload identity federation.
    Entra,
}

impl Cloud {
    /// The name printed and serialized.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Google => "google",
            Self::Aws => "aws",
            Self::Entra => "entra",
        }
    }

    /// The algorithms the cloud accepts.
    pub(super) fn algorithms(self) -> &'static [&'static str] {
        match self {
            Self::Google => &["RS256", "ES256"],
            Self::Aws => &["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"],
            Self::Entra => &["RS256"],
            Self::All => &[],
        }
    }
}

/// What a rule found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The rule holds.
    Pass,
    /// The cloud will refuse: the doctor exits non-zero.
    Fail,
    /// Works, with a caveat.
    Warn,
    /// Could not be checked (the detail says why).
    Skip,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's name, e.g. `issuer-no-port`.
    pub rule: &'static str,
    /// The cloud it concerns.
    pub cloud: Cloud,
    /// Pass, fail, warn or skip.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// How to fix it; empty when it passed.
    pub fix: String,
}

/// Collects findings.
#[derive(Debug, Default)]
pub struct Report(pub Vec<Finding>);

impl Report {
    pub(super) fn add(
        &mut self,
        rule: &'static str,
        cloud: Cloud,
        status: Status,
        detail: String,
        fix: &str,
    ) {
        let fix = if status == Status::Pass {
            String::new()
        } else {
            fix.to_owned()
        };
        self.0.push(Finding {
            rule,
            cloud,
            status,
            detail,
            fix,
        });
    }

    /// Pass when `ok`, else fail; `detail` either way.
    pub(super) fn check(
        &mut self,
        rule: &'static str,
        cloud: Cloud,
        ok: bool,
        detail: String,
        fix: &str,
    ) {
        let status = if ok { Status::Pass } else { Status::Fail };
        self.add(rule, cloud, status, detail, fix);
    }

    pub(super) fn skip(&mut self, rule: &'static str, cloud: Cloud, why: &str) {
        self.add(rule, cloud, Status::Skip, why.to_owned(), "");
    }
}

/// A response the doctor fetched, or why it could not.
pub type Fetched = Result<Value, String>;

/// Where the sample token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// Requested from the service just now.
    Requested,
    /// Read from `--token FILE`.
    File,
}

/// Everything the doctor observed.
#[derive(Debug)]
pub struct Observed {
    /// The issuer URL as the clouds will be told it.
    pub issuer: String,
    /// The discovery document.
    pub discovery: Fetched,
    /// The server's `Date` header on the discovery response, as Unix seconds.
    pub server_date: Option<i64>,
    /// The JWK Set at the discovery's `jwks_uri`, when there was one to fetch.
    pub jwks: Option<Fetched>,
    /// The JWK Set response's `Cache-Control`, when it had one.
    pub jwks_cache_control: Option<String>,
    /// The sample token (compact JWT), when one was asked for.
    pub token: Option<(TokenOrigin, Result<String, String>)>,
}

/// Every finding about `observed` at `now` (Unix seconds).
pub fn evaluate(observed: &Observed, now: i64) -> Vec<Finding> {
    let mut report = Report::default();
    super::issuer::check(&mut report, &observed.issuer);
    discovery(&mut report, observed);
    server_clock(&mut report, observed.server_date, now);
    let keys = jwks(&mut report, observed);
    if keys.is_some() {
        super::rotation::check(&mut report, observed.jwks_cache_control.as_deref());
    } else {
        report.skip("jwks-cache-max-age", Cloud::All, NO_JWKS);
    }
    super::token::check(&mut report, observed, keys.as_deref(), now);
    report.0
}

const NO_DISCOVERY: &str = "the discovery document could not be fetched";

fn discovery(report: &mut Report, observed: &Observed) {
    let doc = match &observed.discovery {
        Ok(doc) => {
            report.check(
                "discovery-reachable",
                Cloud::All,
                true,
                "fetched".into(),
                "",
            );
            doc
        }
        Err(e) => {
            report.check(
                "discovery-reachable",
                Cloud::All,
                false,
                e.clone(),
                "serve the issuer's /.well-known/openid-configuration publicly over https with a certificate from a public CA (pass --ca to trust a private one here)",
            );
            report.skip("discovery-issuer-matches", Cloud::All, NO_DISCOVERY);
            report.skip("discovery-response-types", Cloud::Aws, NO_DISCOVERY);
            return;
        }
    };
    let published = doc.get("issuer").and_then(Value::as_str);
    report.check(
        "discovery-issuer-matches",
        Cloud::All,
        published == Some(observed.issuer.as_str()),
        format!(
            "discovery says issuer {}, the clouds are told {:?}",
            published.map_or_else(|| "(none)".to_owned(), |i| format!("{i:?}")),
            observed.issuer
        ),
        "set TOKEN_ISSUER to exactly the URL registered with the cloud (same scheme, host, port, path; no trailing slash)",
    );
    let types = doc
        .get("response_types_supported")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    report.check(
        "discovery-response-types",
        Cloud::Aws,
        types.is_some(),
        match types {
            Some(types) => format!("response_types_supported is {}", Value::from(types.clone())),
            None => {
                "no response_types_supported: AWS refused discovery documents without it".into()
            }
        },
        "publish response_types_supported in the discovery document",
    );
}

fn server_clock(report: &mut Report, server_date: Option<i64>, now: i64) {
    match server_date {
        Some(date) => report.check(
            "clock-skew-server",
            Cloud::All,
            (date - now).abs() <= MAX_SKEW,
            format!(
                "the server's Date is {} s from this machine's clock (at most {MAX_SKEW} s)",
                date - now
            ),
            "synchronize the server's clock (NTP)",
        ),
        None => report.skip(
            "clock-skew-server",
            Cloud::All,
            "no response with a readable Date header",
        ),
    }
}

const NO_JWKS: &str = "the JWK Set could not be fetched";

/// The JWK Set's rules; its keys when it was fetched.
fn jwks(report: &mut Report, observed: &Observed) -> Option<Vec<Value>> {
    let uri = observed
        .discovery
        .as_ref()
        .ok()
        .and_then(|d| d.get("jwks_uri"))
        .and_then(Value::as_str);
    match uri {
        _ if observed.discovery.is_err() => {
            report.skip("jwks-uri-https", Cloud::All, NO_DISCOVERY);
        }
        Some(uri) => report.check(
            "jwks-uri-https",
            Cloud::All,
            uri.starts_with("https://"),
            format!("jwks_uri is {uri}"),
            "publish the keys at an https:// URL (JWKS_URI, or TOKEN_ISSUER with https)",
        ),
        None => report.check(
            "jwks-uri-https",
            Cloud::All,
            false,
            "the discovery document names no jwks_uri".into(),
            "publish jwks_uri in the discovery document",
        ),
    }
    let keys = match &observed.jwks {
        Some(Ok(set)) => match set.get("keys").and_then(Value::as_array) {
            Some(keys) => {
                report.check("jwks-reachable", Cloud::All, true, "fetched".into(), "");
                keys.clone()
            }
            None => {
                report.check(
                    "jwks-reachable",
                    Cloud::All,
                    false,
                    "the response is JSON without a \"keys\" array".into(),
                    "serve a JWK Set ({\"keys\": [...]}) at jwks_uri",
                );
                skip_keys(report);
                return None;
            }
        },
        Some(Err(e)) => {
            report.check(
                "jwks-reachable",
                Cloud::All,
                false,
                e.clone(),
                "serve jwks_uri publicly over https with a certificate from a public CA (pass --ca to trust a private one here)",
            );
            skip_keys(report);
            return None;
        }
        None => {
            report.skip("jwks-reachable", Cloud::All, "no jwks_uri to fetch");
            skip_keys(report);
            return None;
        }
    };
    key_rules(report, &keys);
    Some(keys)
}

fn skip_keys(report: &mut Report) {
    report.skip("jwks-keys-kid", Cloud::All, NO_JWKS);
    report.skip("jwks-keys-use-sig", Cloud::All, NO_JWKS);
    report.skip("jwks-key-count", Cloud::Aws, NO_JWKS);
    report.skip("jwks-key-count", Cloud::Google, NO_JWKS);
    for cloud in CLOUDS {
        report.skip("jwks-algorithms", cloud, NO_JWKS);
    }
}

/// The three clouds, in report order.
pub const CLOUDS: [Cloud; 3] = [Cloud::Google, Cloud::Aws, Cloud::Entra];

fn key_rules(report: &mut Report, keys: &[Value]) {
    let field = |k: &Value, f: &str| k.get(f).and_then(Value::as_str).map(str::to_owned);
    let without_kid = keys.iter().filter(|k| field(k, "kid").is_none()).count();
    report.check(
        "jwks-keys-kid",
        Cloud::All,
        without_kid == 0,
        if without_kid == 0 {
            format!("every key has a kid ({} keys)", keys.len())
        } else {
            format!("{without_kid} of {} keys have no kid", keys.len())
        },
        "give every published key a kid (the clouds look keys up by the token's kid)",
    );
    let not_sig: Vec<String> = keys
        .iter()
        .filter(|k| field(k, "use").as_deref() != Some("sig"))
        .map(|k| field(k, "use").map_or_else(|| "(no use)".into(), |u| format!("{u:?}")))
        .collect();
    report.check(
        "jwks-keys-use-sig",
        Cloud::All,
        not_sig.is_empty(),
        if not_sig.is_empty() {
            format!("every key has use \"sig\" ({} keys)", keys.len())
        } else {
            format!("{} keys have use {}", not_sig.len(), not_sig.join(", "))
        },
        "publish every key with \"use\": \"sig\" (Entra requires it)",
    );
    counts(report, keys);
    for cloud in CLOUDS {
        let refused: Vec<String> = keys
            .iter()
            .map(|k| jwt::key_algorithm(k).unwrap_or_else(|| "(unknown)".into()))
            .filter(|alg| !cloud.algorithms().contains(&alg.as_str()))
            .collect();
        report.check(
            "jwks-algorithms",
            cloud,
            refused.is_empty(),
            if refused.is_empty() {
                format!("every key's algorithm is one of {}", cloud.algorithms().join(", "))
            } else {
                format!(
                    "keys for {} are not accepted; accepted: {}",
                    refused.join(", "),
                    cloud.algorithms().join(", ")
                )
            },
            "sign with an algorithm the cloud accepts: an RSA key (RS256) works with every cloud (SIGNING_KEY_FILE)",
        );
    }
}

fn counts(report: &mut Report, keys: &[Value]) {
    let of = |kty: &str| {
        keys.iter()
            .filter(|k| k.get("kty").and_then(Value::as_str) == Some(kty))
            .count()
    };
    let (rsa, ec) = (of("RSA"), of("EC"));
    report.check(
        "jwks-key-count",
        Cloud::Aws,
        !keys.is_empty() && rsa <= AWS_MAX_KEYS && ec <= AWS_MAX_KEYS,
        format!(
            "{rsa} RSA and {ec} EC keys (AWS: at least 1, at most {AWS_MAX_KEYS} of each type)"
        ),
        "publish fewer keys: drop retired keys from the set",
    );
    let status = if keys.is_empty() {
        Status::Fail
    } else if keys.len() > GOOGLE_MAX_UPLOADED_KEYS {
        Status::Warn
    } else {
        Status::Pass
    };
    report.add(
        "jwks-key-count",
        Cloud::Google,
        status,
        format!(
            "{} key(s) (an uploaded JWK Set takes at most {GOOGLE_MAX_UPLOADED_KEYS}; a fetched jwks_uri has no limit)",
            keys.len()
        ),
        "publish at least one key, and at most 8 if the JWK Set is uploaded to the pool provider",
    );
}
