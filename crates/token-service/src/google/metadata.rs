//! The metadata server of Compute Engine and Cloud Run: the identity the service runs as, its
//! access token and the project.

use std::time::Instant;

use serde_json::Value;

use super::{Upstream, UpstreamError};

const API: &str = "metadata server";

/// A metadata-server client.
#[derive(Debug, Clone)]
pub struct MetadataClient {
    base: String,
    upstream: Upstream,
}

impl MetadataClient {
    /// `base` is `http://HOST[:PORT]`.
    pub fn new(base: String, upstream: Upstream) -> Self {
        Self { base, upstream }
    }

    async fn get_text(&self, path: &str, deadline: Instant) -> Result<String, UpstreamError> {
        let url = format!("{}/computeMetadata/v1/{path}", self.base);
        self.upstream
            .retry(API, deadline, |timeout| {
                let request = self
                    .upstream
                    .http()
                    .get(&url)
                    .header("Metadata-Flavor", "Google");
                self.upstream.send_text(API, request, timeout)
            })
            .await
    }

    /// Email of the attached service account.
    pub async fn email(&self, deadline: Instant) -> Result<String, UpstreamError> {
        Ok(self
            .get_text("instance/service-accounts/default/email", deadline)
            .await?
            .trim()
            .to_owned())
    }

    /// Project ID.
    pub async fn project_id(&self, deadline: Instant) -> Result<String, UpstreamError> {
        Ok(self
            .get_text("project/project-id", deadline)
            .await?
            .trim()
            .to_owned())
    }

    /// An access token of the attached service account and its lifetime in seconds.
    pub async fn token(&self, deadline: Instant) -> Result<(String, u64), UpstreamError> {
        let url = format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            self.base
        );
        let body: Value = self
            .upstream
            .retry(API, deadline, |timeout| {
                let request = self
                    .upstream
                    .http()
                    .get(&url)
                    .header("Metadata-Flavor", "Google");
                self.upstream.send_json(API, request, timeout)
            })
            .await?;
        token_fields(API, &body, "access_token", "expires_in")
    }
}

/// Reads an OAuth-style token response.
pub(crate) fn token_fields(
    api: &'static str,
    body: &Value,
    token: &str,
    expires: &str,
) -> Result<(String, u64), UpstreamError> {
    let malformed = |m: &str| UpstreamError::Malformed {
        api,
        message: m.to_owned(),
    };
    let access = body[token]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed(&format!("no {token}")))?;
    let lifetime = body[expires]
        .as_u64()
        .ok_or_else(|| malformed(&format!("no {expires}")))?;
    Ok((access.to_owned(), lifetime))
}
