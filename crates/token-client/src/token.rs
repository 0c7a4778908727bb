//! `token-client token`: one request to the broker; prints the ID token, the access token or
//! both as JSON on stdout. Errors go to stderr, exit code 1 (broker) or 2 (settings).

use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::broker::{Broker, Query, Tokens, unix_now};
use crate::settings::{BrokerArgs, Output, TokenArgs};

/// Runs `token`.
pub async fn run(args: &BrokerArgs, token: &TokenArgs) -> ExitCode {
    let settings = match args.resolve() {
        Ok(settings) => settings,
        Err(e) => return fail(&e, 2),
    };
    if token.output == Output::AccessToken && args.scope().is_none() {
        eprintln!(
            "--output access-token needs a scope: pass --scope SCOPES or set TOKEN_CLIENT_SCOPE"
        );
        return ExitCode::from(2);
    }
    let audience = token.audience();
    if audience.is_some() && args.scope().is_some() {
        eprintln!(
            "--audience asks for an ID token for another audience, but a scope is set too: the access token needs the broker's default audience (the broker refuses the pair); drop --scope or unset TOKEN_CLIENT_SCOPE, or drop --audience"
        );
        return ExitCode::from(2);
    }
    let query = Query {
        audience: audience.map(str::to_owned),
        ..query(args)
    };
    match Broker::new(settings).fetch(&query).await {
        Ok(tokens) => {
            println!("{}", render(&tokens, token.output));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, 1),
    }
}

/// The query the settings ask for: scope and service account (the latter only with a
/// scope, as the broker wants it).
pub fn query(args: &BrokerArgs) -> Query {
    let scope = args.scope().map(str::to_owned);
    Query {
        service_account: scope
            .as_ref()
            .and(args.service_account().map(str::to_owned)),
        scope,
        audience: None,
        aws: None,
    }
}

fn fail(e: &dyn std::error::Error, code: u8) -> ExitCode {
    eprintln!("token-client: {e}");
    ExitCode::from(code)
}

/// What `--output` prints.
pub fn render(tokens: &Tokens, output: Output) -> String {
    match (output, &tokens.access_token) {
        (Output::IdToken, _) => tokens.id_token.clone(),
        (Output::AccessToken, Some(access)) => access.token.clone(),
        (Output::AccessToken, None) => String::new(),
        (Output::Json, _) => json(tokens).to_string(),
    }
}

/// `{"id_token", "id_token_expires_at"[, "access_token", "token_type", "expires_in",
/// "access_token_expires_at", "scope"]}`; expiries in unix seconds.
pub fn json(tokens: &Tokens) -> Value {
    let mut body = Map::new();
    body.insert("id_token".into(), tokens.id_token.clone().into());
    body.insert(
        "id_token_expires_at".into(),
        tokens.id_token_expires_at.into(),
    );
    if let Some(access) = &tokens.access_token {
        body.insert("access_token".into(), access.token.clone().into());
        body.insert("token_type".into(), "Bearer".into());
        body.insert(
            "expires_in".into(),
            access.expires_at.saturating_sub(unix_now()).into(),
        );
        body.insert("access_token_expires_at".into(), access.expires_at.into());
        body.insert("scope".into(), access.scope.clone().into());
    }
    Value::Object(body)
}
