//! IAM Credentials API: `signJwt` (the keyless signer) and `generateAccessToken`
//! (service-account impersonation). Answers come back as [`Failure`]s, classified once in
//! `google.rs`; only what an answer means for this method (a 404 for an unknown or hidden
//! service account) is decided here.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;

use super::{Upstream, UpstreamError};
use crate::clock::Deadline;
use crate::error::Failure;

/// Characters of an email address that stay as they are in the resource path.
const EMAIL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'+');

const SIGN_JWT: &str = "IAM Credentials signJwt";
const GENERATE: &str = "IAM Credentials generateAccessToken";
const IMPERSONATION_FAILED: &str = "Impersonating the service account failed";

/// An IAM Credentials client.
#[derive(Debug, Clone)]
pub struct IamCredentialsClient {
    base: String,
    upstream: Upstream,
}

impl IamCredentialsClient {
    /// `base` is e.g. `https://iamcredentials.googleapis.com`.
    pub fn new(base: String, upstream: Upstream) -> Self {
        Self { base, upstream }
    }

    fn url(&self, email: &str, method: &str) -> String {
        let email = utf8_percent_encode(email, EMAIL);
        format!(
            "{}/v1/projects/-/serviceAccounts/{email}:{method}",
            self.base
        )
    }

    /// Signs `payload` (a JSON claims set) as `email`; returns the compact JWT.
    pub async fn sign_jwt(
        &self,
        email: &str,
        payload: &str,
        bearer: &str,
        deadline: Deadline,
    ) -> Result<String, Failure> {
        let url = self.url(email, "signJwt");
        let body = json!({ "payload": payload });
        let answer = self
            .upstream
            .retry(SIGN_JWT, deadline, |timeout| {
                self.upstream.send_json(
                    SIGN_JWT,
                    self.upstream
                        .http()
                        .post(&url)
                        .bearer_auth(bearer)
                        .json(&body),
                    timeout,
                )
            })
            .await?;
        answer["signedJwt"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                UpstreamError::Malformed {
                    api: SIGN_JWT,
                    message: "no signedJwt".into(),
                }
                .into()
            })
    }

    /// Impersonates `email` with the caller's `bearer` token; returns the token and its expiry
    /// (RFC 3339). A 401, 403 or 404 means the account may not be impersonated (or, to us, does
    /// not exist, which Google does not tell apart): access denied, naming the account.
    pub async fn generate_access_token(
        &self,
        email: &str,
        scopes: &[&str],
        lifetime_seconds: i64,
        bearer: &str,
        deadline: Deadline,
    ) -> Result<(String, String), Failure> {
        let url = self.url(email, "generateAccessToken");
        let body = json!({ "scope": scopes, "lifetime": format!("{lifetime_seconds}s") });
        let answer = self
            .upstream
            .retry(GENERATE, deadline, |timeout| {
                self.upstream.send_json(
                    GENERATE,
                    self.upstream
                        .http()
                        .post(&url)
                        .bearer_auth(bearer)
                        .json(&body),
                    timeout,
                )
            })
            .await
            .map_err(|e| match e.status() {
                Some(401 | 403 | 404) => Failure::access_denied(format!(
                    "Access to service account '{email}' was denied: {}",
                    e.message()
                )),
                _ => e.in_context(IMPERSONATION_FAILED),
            })?;
        let malformed = |m: &str| {
            UpstreamError::Malformed {
                api: GENERATE,
                message: m.into(),
            }
            .in_context(IMPERSONATION_FAILED)
        };
        let token = answer["accessToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("no accessToken"))?;
        let expiry = answer["expireTime"]
            .as_str()
            .ok_or_else(|| malformed("no expireTime"))?;
        Ok((token.to_owned(), expiry.to_owned()))
    }
}
