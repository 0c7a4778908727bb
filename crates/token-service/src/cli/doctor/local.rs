//! The rules the service's own settings answer, beside what the clouds see: where revocation
//! of client certificates comes from (`client-revocation`) and whether the signing keys keep
//! the rotation rules (`signing-keys`, as `token-service keys check` does, without asking the
//! replicas). Both concern every cloud.

use super::rules::{Cloud, Report, Status};
use crate::config::reader::Reader;
use crate::config::source::Values;
use crate::x509::crl_fetch::settings as fetch;
use crate::x509::ocsp::settings as ocsp;
use crate::x509::settings as trust;

/// Adds `client-revocation` and `signing-keys` for the settings `values` at `now`.
pub fn check(report: &mut Report, values: &Values, now: i64) {
    revocation(report, values);
    signing_keys(report, values, now);
}

/// Which revocation sources the certificate-verifying flows have.
fn revocation(report: &mut Report, values: &Values) {
    const RULE: &str = "client-revocation";
    let mut r = Reader::new(values);
    let ca_file = r.path(&trust::CA_FILE);
    let crl_file = r.path(&trust::CRL_FILE);
    let urls = r.list(&fetch::CRL_URLS);
    let follow = r.choice(&fetch::CRL_FOLLOW_CDP) == Some("true");
    let mode = r.choice(&ocsp::MODE).unwrap_or("off");
    let required = r.choice(&trust::CRL_REQUIRED) == Some("true");
    drop(r.finish());
    if ca_file.is_none() {
        report.add(
            RULE,
            Cloud::All,
            Status::Skip,
            "no TLS_CLIENT_CA_FILE: no flow verifies certificates here; behind Google's load balancer its trust config decides revocation".into(),
            "",
        );
        return;
    }
    let mut sources = Vec::new();
    if let Some(file) = crl_file {
        sources.push(format!("CRL file '{}'", file.display()));
    }
    if !urls.is_empty() {
        sources.push(format!("{} CRL URL(s)", urls.len()));
    }
    if follow {
        sources.push("CRL distribution points".to_owned());
    }
    if mode != "off" {
        sources.push(format!("OCSP ({mode})"));
    }
    if sources.is_empty() {
        report.add(
            RULE,
            Cloud::All,
            Status::Warn,
            "no revocation source: a revoked client certificate gets tokens until it expires".into(),
            "set TLS_CLIENT_CRL_URLS, TLS_CLIENT_CRL_FOLLOW_CDP=true, TLS_CLIENT_CRL_FILE or TLS_CLIENT_OCSP (README: Revocation)",
        );
        return;
    }
    let missing = if required {
        "a CA without a CRL is refused (TLS_CLIENT_CRL_REQUIRED=true)"
    } else {
        "a CA without a CRL in force counts as not revoked (TLS_CLIENT_CRL_REQUIRED=false)"
    };
    report.add(
        RULE,
        Cloud::All,
        Status::Pass,
        format!("{}; {missing}", sources.join(", ")),
        "",
    );
}

/// Whether `SIGNING_KEY_FILE`'s keys keep the rules of the key states.
fn signing_keys(report: &mut Report, values: &Values, now: i64) {
    const RULE: &str = "signing-keys";
    let fix = "run `token-service keys check` and follow its lines; rotate with `token-service keys generate` (appended to the file as a next key), `keys activate`, `keys prune` (README: Rotating a local signing key)";
    let settings = match super::super::keys::settings(values) {
        Ok(settings) => settings,
        Err(problems) => {
            report.add(RULE, Cloud::All, Status::Fail, problems.join("; "), fix);
            return;
        }
    };
    let Some(path) = settings.file else {
        report.add(
            RULE,
            Cloud::All,
            Status::Skip,
            "no SIGNING_KEY_FILE: IAM signJwt (Google rotates the keys) or the development key signs".into(),
            "",
        );
        return;
    };
    let shown = path.display();
    let problems = match std::fs::read(&path) {
        Err(e) => vec![format!("cannot read '{shown}': {e}")],
        Ok(pem) => match super::super::keys::judge(&pem, now, &settings.rules) {
            Err(found) => found,
            Ok((set, broken)) if broken.is_empty() => {
                let summary = format!("'{shown}': {}", set.summary(now));
                report.add(RULE, Cloud::All, Status::Pass, summary, "");
                return;
            }
            Ok((_, broken)) => broken,
        },
    };
    report.add(
        RULE,
        Cloud::All,
        Status::Fail,
        format!("'{shown}': {}", problems.join("; ")),
        fix,
    );
}
