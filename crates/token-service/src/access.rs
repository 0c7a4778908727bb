//! Optional access tokens, obtained after the ID token is issued (the Google backend issue
//! implements this: STS exchange, then service-account impersonation). Backends fail with the
//! service's [`Failure`] (upstream clients classify their answers once) and give up at the
//! request's [`Deadline`]. Uses `model`, `clock`, `error` and the cloud clients; nothing of the
//! HTTP edge.

pub mod google;

use async_trait::async_trait;

use crate::clock::Deadline;
use crate::error::Failure;
use crate::model::{AccessToken, Client};

/// A backend that turns an ID token into an access token.
#[async_trait]
pub trait AccessTokenBackend: Send + Sync {
    /// Obtains an access token for `scope` (and, when given, as `service_account`), by
    /// `deadline`.
    async fn access_token(
        &self,
        client: &Client,
        id_token: &str,
        scope: &str,
        service_account: Option<&str>,
        deadline: Deadline,
    ) -> Result<AccessToken, Failure>;
}
