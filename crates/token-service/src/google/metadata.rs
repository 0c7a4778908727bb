//! The metadata server of Compute Engine and Cloud Run: the identity the service runs as, its
//! access token and the project.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::{Upstream, UpstreamError};
use crate::clock::Deadline;
use crate::error::Failure;
use crate::tasks::Background;

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

    async fn get_text(&self, path: &str, deadline: Deadline) -> Result<String, Failure> {
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
            .map_err(Failure::from)
    }

    /// Email of the attached service account.
    pub async fn email(&self, deadline: Deadline) -> Result<String, Failure> {
        Ok(self
            .get_text("instance/service-accounts/default/email", deadline)
            .await?
            .trim()
            .to_owned())
    }

    /// Project ID.
    pub async fn project_id(&self, deadline: Deadline) -> Result<String, Failure> {
        Ok(self
            .get_text("project/project-id", deadline)
            .await?
            .trim()
            .to_owned())
    }

    /// Looks the project up in the background (one try, `UPSTREAM_TIMEOUT` from its start) and
    /// stores it in `project` unless something else set it first: the trace links of the logs
    /// need it, no request waits for it.
    pub fn publish_project(&self, project: Arc<OnceLock<String>>, background: &Background) {
        let client = self.clone();
        background.spawn(async move {
            let deadline = Deadline::after(client.upstream.timeout());
            if let Ok(id) = client.project_id(deadline).await {
                let _ = project.set(id);
            }
        });
    }

    /// An access token of the attached service account and its lifetime in seconds.
    pub(crate) async fn token(&self, deadline: Deadline) -> Result<(String, u64), UpstreamError> {
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
