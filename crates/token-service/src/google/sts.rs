//! Google's Security Token Service: exchanges our ID token for a federated access token
//! (RFC 8693). No Authorization header is sent: STS authenticates the subject token itself and
//! may reject a request that carries one. Failures come back as [`Failure`]s that say STS
//! refused the exchange, in STS's words.

use super::{Upstream, UpstreamError};
use crate::clock::Deadline;
use crate::error::Failure;

const API: &str = "STS";
const REFUSED: &str = "STS refused the token exchange";

/// What STS returned.
#[derive(Debug, Clone)]
pub struct FederatedToken {
    /// The access token. Never logged.
    pub access_token: String,
    /// Lifetime in seconds.
    pub expires_in: i64,
    /// Scopes, when STS says.
    pub scope: Option<String>,
}

/// An STS client.
#[derive(Debug, Clone)]
pub struct StsClient {
    base: String,
    upstream: Upstream,
}

impl StsClient {
    /// `base` is e.g. `https://sts.googleapis.com`.
    pub fn new(base: String, upstream: Upstream) -> Self {
        Self { base, upstream }
    }

    /// Exchanges `id_token` for an access token of the workload identity pool provider
    /// `audience` (`//iam.googleapis.com/projects/...`).
    pub async fn exchange(
        &self,
        audience: &str,
        scope: &str,
        id_token: &str,
        deadline: Deadline,
    ) -> Result<FederatedToken, Failure> {
        let url = format!("{}/v1/token", self.base);
        let form = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", audience),
            ("scope", scope),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token", id_token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
        ];
        let answer = self
            .upstream
            .retry(API, deadline, |timeout| {
                self.upstream
                    .send_json(API, self.upstream.http().post(&url).form(&form), timeout)
            })
            .await
            .map_err(|e| e.in_context(REFUSED))?;
        let token = answer["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                UpstreamError::Malformed {
                    api: API,
                    message: "no access_token".into(),
                }
                .in_context(REFUSED)
            })?;
        Ok(FederatedToken {
            access_token: token.to_owned(),
            expires_in: answer["expires_in"].as_i64().unwrap_or(3600),
            scope: answer["scope"].as_str().map(str::to_owned),
        })
    }
}
