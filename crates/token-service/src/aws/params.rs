//! The `/token` parameters of the AWS exchange, checked before any token is issued:
//! `aws_role_arn` (an IAM role ARN of the `aws`, `aws-cn` or `aws-us-gov` partition),
//! `aws_role_session_name` (AWS's `[\w+=,.@-]{2,64}`) and `aws_duration_seconds` (900 to
//! 43200); and the session name derived from the client ID when none is given.

use std::collections::BTreeMap;

use crate::error::Failure;
use crate::model::truncate;

/// `aws_role_arn`.
pub const ROLE_ARN: &str = "aws_role_arn";
/// `aws_role_session_name`.
pub const SESSION_NAME: &str = "aws_role_session_name";
/// `aws_duration_seconds`.
pub const DURATION: &str = "aws_duration_seconds";
/// Bounds of `DurationSeconds` STS accepts (the role's maximum may be lower).
pub const DURATION_BOUNDS: std::ops::RangeInclusive<u32> = 900..=43_200;
/// Bounds of a `RoleSessionName`'s length.
const SESSION_NAME_LENGTH: std::ops::RangeInclusive<usize> = 2..=64;

/// What a request asks of AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsRequest<'r> {
    /// The role to assume.
    pub role_arn: &'r str,
    /// `RoleSessionName`, when the client chose one.
    pub session_name: Option<&'r str>,
    /// `DurationSeconds`, when the client chose one.
    pub duration_seconds: Option<u32>,
}

/// The AWS parameters of a request: `None` without `aws_role_arn` (and then neither of the
/// others may be given); each one checked, refused with 400 naming it.
pub fn aws_request(params: &BTreeMap<String, String>) -> Result<Option<AwsRequest<'_>>, Failure> {
    let given = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let Some(role_arn) = given(ROLE_ARN) else {
        if let Some(name) = [SESSION_NAME, DURATION]
            .into_iter()
            .find(|n| given(n).is_some())
        {
            return Err(Failure::invalid_request(format!(
                "The parameter '{name}' needs 'aws_role_arn': name the AWS role to assume, or remove '{name}'"
            )));
        }
        return Ok(None);
    };
    check_role_arn(role_arn)?;
    let session_name = given(SESSION_NAME);
    if let Some(name) = session_name
        && !is_session_name(name)
    {
        return Err(Failure::invalid_request(format!(
            "The parameter 'aws_role_session_name' ('{}') is not valid: use 2 to 64 characters of A-Z, a-z, 0-9 and +=,.@_-, or leave it out to derive it from the client ID",
            truncate(name, 80)
        )));
    }
    let duration_seconds = given(DURATION).map(duration).transpose()?;
    Ok(Some(AwsRequest {
        role_arn,
        session_name,
        duration_seconds,
    }))
}

/// AWS's session length when a request gives no `DurationSeconds`.
pub const DEFAULT_DURATION: u32 = 3600;

/// The `DurationSeconds` to ask for, so the session does not outlive the client certificate:
/// the client's choice (or AWS's default) while the certificate lasts longer, else the
/// certificate's remaining seconds; a certificate that expires within AWS's shortest session
/// (900 s) is refused.
pub fn duration_within_certificate(
    asked: Option<u32>,
    client: &crate::model::Client,
    now: i64,
) -> Result<Option<u32>, Failure> {
    let Some(not_after) = client.facts.not_after else {
        return Ok(asked);
    };
    let left = not_after.saturating_sub(now);
    if i64::from(asked.unwrap_or(DEFAULT_DURATION)) <= left {
        return Ok(asked);
    }
    let shortest = *DURATION_BOUNDS.start();
    crate::issuer::certificate_lasts(
        client,
        now,
        i64::from(shortest),
        "AWS's shortest session (DurationSeconds 900)",
    )?;
    Ok(Some(u32::try_from(left).unwrap_or(shortest)))
}

fn duration(raw: &str) -> Result<u32, Failure> {
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|d| DURATION_BOUNDS.contains(d))
        .ok_or_else(|| {
            Failure::invalid_request(format!(
                "The parameter 'aws_duration_seconds' ('{}') is not valid: use whole seconds from {} to {} (the role's MaxSessionDuration may allow less), or leave it out for AWS's default of 3600",
                truncate(raw, 32),
                DURATION_BOUNDS.start(),
                DURATION_BOUNDS.end()
            ))
        })
}

/// Whether `c` may appear in a `RoleSessionName` (`[\w+=,.@-]`).
fn session_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

/// Whether `name` is a valid `RoleSessionName`.
pub fn is_session_name(name: &str) -> bool {
    SESSION_NAME_LENGTH.contains(&name.len()) && name.chars().all(session_char)
}

/// The `RoleSessionName` for a client that chose none: its client ID with every character
/// outside `[A-Za-z0-9+=,.@_-]` replaced by `-`, cut to 64 characters, padded with `-` to 2.
pub fn session_name_for(client_id: &str) -> String {
    let mut name: String = client_id
        .chars()
        .map(|c| if session_char(c) { c } else { '-' })
        .take(*SESSION_NAME_LENGTH.end())
        .collect();
    while name.len() < *SESSION_NAME_LENGTH.start() {
        name.push('-');
    }
    name
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`: partition `aws`, `aws-cn` or `aws-us-gov`,
/// a 12-digit account, path segments of printable ASCII, a name of 1 to 64 of
/// `[\w+=,.@-]`; at most 2048 characters. Refused with 400 naming `aws_role_arn`.
pub fn check_role_arn(arn: &str) -> Result<(), Failure> {
    if role_arn_ok(arn) {
        return Ok(());
    }
    Err(Failure::invalid_request(format!(
        "The parameter 'aws_role_arn' ('{}') is not an IAM role ARN: expected arn:aws:iam::<12-digit account>:role/<path/name> (partition aws, aws-cn or aws-us-gov)",
        truncate(arn, 200)
    )))
}

fn role_arn_ok(arn: &str) -> bool {
    if arn.len() > 2048 {
        return false;
    }
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
    {
        return false;
    }
    let Some(path) = resource.strip_prefix("role/") else {
        return false;
    };
    let (folders, name) = path.rsplit_once('/').unwrap_or(("", path));
    let name_ok = (1..=64).contains(&name.len()) && name.chars().all(session_char);
    let folders_ok = folders.is_empty()
        || folders
            .split('/')
            .all(|s| !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    name_ok && folders_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_session_name_is_the_client_id_made_valid() {
        assert_eq!(
            session_name_for("spiffe://example.org/ns/prod/sa/workload-1"),
            "spiffe---example.org-ns-prod-sa-workload-1"
        );
        assert_eq!(
            session_name_for("device-1@fleet+a=b,c"),
            "device-1@fleet+a=b,c"
        );
        assert_eq!(session_name_for("é"), "--");
        assert_eq!(session_name_for("a"), "a-");
        assert_eq!(session_name_for(""), "--");
        let long = "x".repeat(100);
        assert_eq!(session_name_for(&long), "x".repeat(64));
        assert_eq!(session_name_for(&"ü".repeat(70)), "-".repeat(64));
        for id in ["spiffe://a/b", "a", &long, "ü ü"] {
            assert!(is_session_name(&session_name_for(id)), "{id}");
        }
    }

    #[test]
    fn role_arns_of_the_three_partitions_with_paths_are_accepted_others_refused() {
        for good in [
            "arn:aws:iam::123456789012:role/devices",
            "arn:aws-cn:iam::123456789012:role/path/to/devices",
            "arn:aws-us-gov:iam::123456789012:role/a+=,.@_-b",
        ] {
            assert!(check_role_arn(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "devices",
            "arn:aws:iam::12345678901:role/devices",
            "arn:aws:iam::1234567890123:role/devices",
            "arn:aws:iam::12345678901a:role/devices",
            "arn:aws:iam:us-east-1:123456789012:role/devices",
            "arn:aws:sts::123456789012:role/devices",
            "arn:azure:iam::123456789012:role/devices",
            "arn:aws:iam::123456789012:user/devices",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/path//devices",
            "arn:aws:iam::123456789012:role/bad name",
            "arn:aws:iam::123456789012:role/path with space/devices",
        ] {
            let e = check_role_arn(bad).unwrap_err();
            assert!(e.message().contains("'aws_role_arn'"), "{bad}: {e}");
        }
        let long_name = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
        assert!(check_role_arn(&long_name).is_err());
        let long_path = format!("arn:aws:iam::123456789012:role/{}/n", "p".repeat(2048));
        assert!(check_role_arn(&long_path).is_err());
    }

    #[test]
    fn the_parameters_are_checked_each_refusal_naming_its_parameter() {
        assert_eq!(aws_request(&params(&[])).unwrap(), None);
        let role = ("aws_role_arn", "arn:aws:iam::123456789012:role/devices");
        let given = params(&[
            role,
            ("aws_role_session_name", "device-1"),
            ("aws_duration_seconds", "900"),
        ]);
        let asked = aws_request(&given).unwrap().unwrap();
        assert_eq!(asked.session_name, Some("device-1"));
        assert_eq!(asked.duration_seconds, Some(900));
        let refused = |pairs: &[(&str, &str)], parameter: &str| {
            let e = aws_request(&params(pairs)).unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::InvalidRequest);
            assert!(e.message().contains(parameter), "{pairs:?}: {e}");
        };
        for d in ["899", "43201", "-1", "1h", "3600.0"] {
            refused(
                &[role, ("aws_duration_seconds", d)],
                "'aws_duration_seconds'",
            );
        }
        assert!(aws_request(&params(&[role, ("aws_duration_seconds", "43200")])).is_ok());
        for n in ["a", "has space", "slash/no", &"x".repeat(65)] {
            refused(
                &[role, ("aws_role_session_name", n)],
                "'aws_role_session_name'",
            );
        }
        refused(
            &[("aws_role_session_name", "device-1")],
            "needs 'aws_role_arn'",
        );
        refused(&[("aws_duration_seconds", "900")], "needs 'aws_role_arn'");
        refused(
            &[("aws_role_arn", "arn:aws:iam::1:role/x")],
            "'aws_role_arn'",
        );
    }

    #[test]
    fn the_duration_ends_with_the_certificate_and_no_session_is_shorter_than_awss() {
        let mut client = crate::model::Client {
            flow: "mtls".into(),
            client_id: "device".into(),
            facts: crate::model::CertificateFacts::default(),
            extra_claims: serde_json::Map::new(),
            lifetime_seconds: None,
            decision: None,
            audience: None,
        };
        let now = 1_000_000;
        assert_eq!(
            duration_within_certificate(None, &client, now).unwrap(),
            None
        );
        client.facts.not_after = Some(now + 7200);
        assert_eq!(
            duration_within_certificate(None, &client, now).unwrap(),
            None
        );
        assert_eq!(
            duration_within_certificate(Some(1800), &client, now).unwrap(),
            Some(1800)
        );
        assert_eq!(
            duration_within_certificate(Some(10_800), &client, now).unwrap(),
            Some(7200)
        );
        client.facts.not_after = Some(now + 1000);
        assert_eq!(
            duration_within_certificate(None, &client, now).unwrap(),
            Some(1000)
        );
        client.facts.not_after = Some(now + 899);
        let refused = duration_within_certificate(None, &client, now).unwrap_err();
        assert!(
            refused.message().contains("in 899 s"),
            "{}",
            refused.message()
        );
    }
}
