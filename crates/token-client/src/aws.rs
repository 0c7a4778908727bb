//! AWS outputs: temporary credentials of an IAM role, which the broker obtains with
//! `AssumeRoleWithWebIdentity` when a `/token` request has `aws_role_arn`.
//!
//! - [`AwsRole`]: the role part of a [`crate::broker::Query`] (form parameters `aws_role_arn`,
//!   `aws_role_session_name`, `aws_duration_seconds`).
//! - [`AwsCredentials`]: the broker's `aws_credentials` (`Debug` redacts the secrets), in the
//!   shapes AWS SDKs read: [`AwsCredentials::credential_process`] (`credential_process`
//!   output) and [`AwsCredentials::container`] (the container credential provider's answer).
//! - [`run`]: `token-client credential-process`, the command of an AWS config file's
//!   `credential_process`: the JSON on stdout; on failure exit 1 (2 for settings) and one line
//!   on stderr, which AWS SDKs show (never a secret).

use std::process::ExitCode;

use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::broker::{Broker, Query};
use crate::settings::BrokerArgs;

/// The role to assume, sent with the `/token` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AwsRole {
    pub role_arn: String,
    /// Unset: the broker derives it from the client ID.
    pub session_name: Option<String>,
    /// Unset: AWS's default (3600).
    pub duration_seconds: Option<u32>,
}

/// The role settings shared by `credential-process` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct AwsRoleArgs {
    /// AWS IAM role to assume with the broker's ID token (arn:aws:iam::ACCOUNT:role/NAME):
    /// the broker calls AssumeRoleWithWebIdentity and returns the role's credentials.
    #[arg(long, env = "TOKEN_CLIENT_AWS_ROLE_ARN", value_name = "ARN")]
    pub aws_role_arn: Option<String>,
    /// The role session name (2 to 64 of [A-Za-z0-9+=,.@_-]); unset: the broker derives it
    /// from the client ID.
    #[arg(long, env = "TOKEN_CLIENT_AWS_ROLE_SESSION_NAME", value_name = "NAME")]
    pub aws_role_session_name: Option<String>,
    /// Seconds the role's credentials last (900 to 43200, within the role's maximum); unset:
    /// AWS's default, 3600.
    #[arg(
        long,
        env = "TOKEN_CLIENT_AWS_DURATION_SECONDS",
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u32).range(900..=43_200)
    )]
    pub aws_duration_seconds: Option<u32>,
}

impl AwsRoleArgs {
    /// The role, when an ARN is set and not blank.
    pub fn role(&self) -> Option<AwsRole> {
        let arn = self.aws_role_arn.as_deref().map(str::trim)?;
        if arn.is_empty() {
            return None;
        }
        Some(AwsRole {
            role_arn: arn.to_owned(),
            session_name: self
                .aws_role_session_name
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            duration_seconds: self.aws_duration_seconds,
        })
    }
}

/// `--aws-role-arn` is needed and missing.
pub const NO_ROLE: &str = "--aws-role-arn is not set: pass --aws-role-arn arn:aws:iam::123456789012:role/NAME or set TOKEN_CLIENT_AWS_ROLE_ARN";

/// Temporary credentials of a role. `Debug` shows only the key ID and the expiry.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// ISO 8601, as AWS gives it (e.g. `2026-12-03T20:00:00Z`).
    pub expiration: String,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

impl AwsCredentials {
    /// The expiration in unix seconds, when it is an RFC 3339 UTC time.
    pub fn expires_at(&self) -> Option<u64> {
        rfc3339(&self.expiration)
    }

    /// What a `credential_process` prints.
    pub fn credential_process(&self) -> Value {
        json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration,
        })
    }

    /// The answer of the AWS container credential provider's endpoint.
    pub fn container(&self) -> Value {
        json!({
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": self.expiration,
        })
    }
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)`.
pub fn rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't'])?;
    let time = time
        .strip_suffix(['Z', 'z'])
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(str::parse::<i64>);
    let (hour, minute, second) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// The arguments of `credential-process`.
#[derive(Debug, Args)]
pub struct CredentialProcessArgs {
    #[command(flatten)]
    pub role: AwsRoleArgs,
}

/// Runs `credential-process`.
pub async fn run(args: &BrokerArgs, process: &CredentialProcessArgs) -> ExitCode {
    let Some(role) = process.role.role() else {
        return fail(NO_ROLE, 2);
    };
    let settings = match args.resolve() {
        Ok(settings) => settings,
        Err(e) => return fail(&e.to_string(), 2),
    };
    let query = Query {
        aws: Some(role),
        ..Query::default()
    };
    match Broker::new(settings).fetch(&query).await {
        Ok(tokens) => match tokens.aws_credentials {
            Some(credentials) => {
                println!("{}", credentials.credential_process());
                ExitCode::SUCCESS
            }
            None => fail(
                "The broker's answer holds no aws_credentials; check that TOKEN_CLIENT_BROKER is a Token Service with AWS support",
                1,
            ),
        },
        Err(e) => fail(&e.to_string(), 1),
    }
}

/// One line on stderr (line breaks in a message become spaces).
fn fail(message: &str, code: u8) -> ExitCode {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("token-client credential-process: {line}");
    ExitCode::from(code)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_are_read_as_utc() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339("2026-12-03T20:00:00Z"), Some(1_796_328_000));
        assert_eq!(
            rfc3339("2026-12-03T20:00:00.123+00:00"),
            Some(1_796_328_000)
        );
        assert_eq!(rfc3339("2026-12-03 20:00:00"), None);
        assert_eq!(rfc3339("2026-12-03T20:00:00+02:00"), None);
    }

    #[test]
    fn shapes_and_debug() {
        let c = AwsCredentials {
            access_key_id: "ASIAX".into(),
            secret_access_key: "secret-key".into(),
            session_token: "secret-token".into(),
            expiration: "2026-12-03T20:00:00Z".into(),
        };
        assert_eq!(c.credential_process()["Version"], 1);
        assert_eq!(c.credential_process()["SessionToken"], "secret-token");
        assert_eq!(c.container()["Token"], "secret-token");
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret-"), "{shown}");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
