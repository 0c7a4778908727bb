//! Optional access tokens, obtained after the ID token is issued (the Google backend issue
//! implements this: STS exchange, then service-account impersonation). Uses `model` only.

pub mod google;

use async_trait::async_trait;

use crate::model::{AccessToken, Client};

/// Why an access token could not be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    /// The upstream refused the request as malformed. 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// The upstream denied access. 403 `access_denied`.
    #[error("{0}")]
    AccessDenied(String),
    /// The upstream is unavailable or slow; try again later. 503 `temporarily_unavailable`.
    #[error("{message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// Seconds the client should wait.
        retry_after: u64,
    },
    /// Anything else. 500 `server_error`.
    #[error("{0}")]
    Server(String),
}

/// A backend that turns an ID token into an access token.
#[async_trait]
pub trait AccessTokenBackend: Send + Sync {
    /// Obtains an access token for `scope` (and, when given, as `service_account`).
    async fn access_token(
        &self,
        client: &Client,
        id_token: &str,
        scope: &str,
        service_account: Option<&str>,
    ) -> Result<AccessToken, AccessError>;
}
