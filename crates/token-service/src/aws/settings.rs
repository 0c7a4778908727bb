//! Settings of the AWS exchange: the audience of the ID tokens the broker presents to AWS STS
//! and the STS endpoint. The declarations and [`AwsConfig`], which they fill. Read through
//! `config::reader`; reads no environment.

use crate::config::reader::{Reader, Setting};

/// `AWS_AUDIENCE`.
pub const AUDIENCE: Setting = Setting::text(
    "AWS_AUDIENCE",
    Some("sts.amazonaws.com"),
    "Audience (aud) of the ID token exchanged at AWS STS for a request with 'aws_role_arn'; allowed like any requested audience (TOKEN_AUDIENCE or TOKEN_AUDIENCES, and the policy's 'audiences')",
);
/// `AWS_STS_ENDPOINT`.
pub const STS_ENDPOINT: Setting = Setting::url(
    "AWS_STS_ENDPOINT",
    Some("https://sts.amazonaws.com"),
    "AWS STS base URL for AssumeRoleWithWebIdentity (a regional endpoint, or an emulator)",
);

/// Every setting of the AWS exchange, in help order.
pub const SETTINGS: &[Setting] = &[AUDIENCE, STS_ENDPOINT];

/// How Token Service reaches AWS STS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// `AWS_AUDIENCE`.
    pub audience: String,
    /// `AWS_STS_ENDPOINT`, without a trailing `/`.
    pub sts_endpoint: String,
}

impl AwsConfig {
    /// Reads the audience and the endpoint.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let audience = r.text(&AUDIENCE).unwrap_or_default();
        if audience.trim().is_empty() {
            r.fail(
                AUDIENCE.name,
                "the audience is empty; leave AWS_AUDIENCE unset for sts.amazonaws.com, or name the client ID of the IAM OIDC provider",
            );
        }
        let sts_endpoint = r.url(&STS_ENDPOINT).unwrap_or_default();
        Self {
            audience,
            sts_endpoint: sts_endpoint.trim_end_matches('/').to_owned(),
        }
    }
}
