//! Token Service with one more flow: clients from a static table authenticate with
//! `client_id` and `client_secret` (RFC 6749 §2.3.1, `client_secret_post`). The README's
//! "Writing a custom flow" is this file; `tests/it/custom_flow.rs` runs it as the real server.
//!
//! `STATIC_CLIENT_SECRETS=batch-job=pw-123 AUTH_FLOWS=static-client-credentials
//! TOKEN_AUDIENCE=aud cargo run --example custom_flow -- serve`

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use subtle::ConstantTimeEq as _;
use token_service::config::reader::{Reader, Setting};
use token_service::flows::{
    Authentication, Declined, Failure, Flow, FlowRegistry, FlowSettings, FlowSpec,
};
use token_service::model::{AuthenticatedClient, TokenRequest};

const NAME: &str = "static-client-credentials";

/// The flow's one setting: listed in `--help` and `check-config` (redacted), accepted in
/// `--config` files.
const SECRETS: Setting = Setting::list(
    "STATIC_CLIENT_SECRETS",
    "",
    "Clients of static-client-credentials: client-id=secret pairs, comma-separated",
)
.secret();

/// The registration: name, authentication method, settings, and the factory that reads the
/// settings (every problem becomes a startup error) and builds the flow.
fn static_clients() -> FlowSpec {
    FlowSpec::new(
        NAME,
        "client_secret_post",
        &[SECRETS],
        |r: &mut Reader<'_>| {
            let mut clients = BTreeMap::new();
            for (n, pair) in r.list(&SECRETS).iter().enumerate() {
                match pair.split_once('=') {
                    Some((id, secret)) => clients.insert(id.to_owned(), secret.to_owned()),
                    None => {
                        let problem = format!("entry {} is not client-id=secret", n + 1);
                        r.fail(SECRETS.name, problem);
                        None
                    }
                };
            }
            let flow: Arc<dyn Flow> = Arc::new(StaticClients { clients });
            move |_shared: &FlowSettings| Ok(Arc::clone(&flow))
        },
    )
}

struct StaticClients {
    clients: BTreeMap<String, String>,
}

#[async_trait]
impl Flow for StaticClients {
    async fn authenticate(&self, request: &TokenRequest) -> Result<Authentication, Failure> {
        let (Some(id), Some(secret)) = (
            request.params.get("client_id"),
            request.params.get("client_secret"),
        ) else {
            return Ok(Authentication::NotMine(Declined::missing(
                "no client_id and client_secret parameters",
            )));
        };
        let known = self
            .clients
            .get(id)
            .map_or(b"".as_slice(), |s| s.as_bytes());
        if self.clients.contains_key(id) && bool::from(known.ct_eq(secret.as_bytes())) {
            Ok(Authentication::Client(AuthenticatedClient {
                flow: NAME.into(),
                client_id: id.clone(),
                facts: Default::default(),
            }))
        } else {
            Err(Failure::unauthorized(
                "Unknown client or wrong client secret",
            ))
        }
    }
}

fn main() -> std::process::ExitCode {
    token_service::cli::main_with(FlowRegistry::builtin().with(static_clients()))
}
