//! The GCE metadata server's paths under `/computeMetadata/v1/` that Google's libraries call
//! (research notes §3.1): the service account's token, email, scopes and identity, the
//! `recursive` views, the project, and the `instance` probe of Node's gcp-metadata. Both
//! `default` and the account's email name the account. Unknown paths get 404.

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use super::audiences::AudienceError;
use super::http::{Answer, json_answer, not_found, text, unavailable};
use super::{App, MetadataSettings};
use crate::broker::unix_now;

const PREFIX: &str = "/computeMetadata/v1/";

/// The answer to a request under `/computeMetadata`.
pub async fn answer(app: &App, request: &Request<Incoming>) -> Answer {
    let headers = request.headers();
    if headers.get("metadata-flavor") != Some(&HeaderValue::from_static("Google")) {
        return text(
            StatusCode::FORBIDDEN,
            "Missing required header \"Metadata-Flavor\": \"Google\"\n",
        );
    }
    if headers.contains_key("x-forwarded-for") {
        return text(
            StatusCode::FORBIDDEN,
            "Requests with X-Forwarded-For are refused: the metadata server is for local processes\n",
        );
    }
    let Some(metadata) = &app.metadata else {
        return text(
            StatusCode::NOT_FOUND,
            "The metadata server is off (token-client serve --no-metadata)\n",
        );
    };
    let path = request.uri().path();
    let Some(rest) = path
        .strip_prefix(PREFIX)
        .or_else(|| (path == PREFIX.trim_end_matches('/')).then_some(""))
    else {
        return not_found();
    };
    let query = Query::parse(request.uri().query());
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [""] => text(StatusCode::OK, "instance/\nproject/\n"),
        ["instance"] | ["instance", ""] => text(StatusCode::OK, "service-accounts/\n"),
        ["project"] | ["project", ""] => text(StatusCode::OK, "numeric-project-id\nproject-id\n"),
        ["project", "project-id"] => optional(metadata.project_id.as_deref()),
        ["project", "numeric-project-id"] => optional(metadata.numeric_project_id.as_deref()),
        ["instance", "service-accounts"] | ["instance", "service-accounts", ""] => {
            accounts(metadata, &query)
        }
        ["instance", "service-accounts", account, tail @ ..] => {
            if *account != "default" && *account != metadata.email {
                return not_found();
            }
            account_path(app, metadata, tail, &query).await
        }
        _ => not_found(),
    }
}

async fn account_path(
    app: &App,
    metadata: &MetadataSettings,
    tail: &[&str],
    query: &Query,
) -> Answer {
    match tail {
        [] | [""] if query.recursive() => json_answer(StatusCode::OK, &info(metadata)),
        [] | [""] => text(StatusCode::OK, "aliases\nemail\nidentity\nscopes\ntoken\n"),
        ["email"] => text(StatusCode::OK, &metadata.email),
        ["aliases"] => text(StatusCode::OK, "default\n"),
        ["scopes"] => text(StatusCode::OK, &lines(&metadata.scopes)),
        ["token"] => token(app, query).await,
        ["identity"] => identity(app, query).await,
        _ => not_found(),
    }
}

/// `instance/service-accounts/`: the names, or with `recursive=true` each account's info.
fn accounts(metadata: &MetadataSettings, query: &Query) -> Answer {
    if query.recursive() {
        let info = info(metadata);
        let body = json!({"default": info, metadata.email.clone(): info});
        json_answer(StatusCode::OK, &body)
    } else {
        text(StatusCode::OK, &format!("default/\n{}/\n", metadata.email))
    }
}

fn info(metadata: &MetadataSettings) -> Value {
    json!({"aliases": ["default"], "email": metadata.email, "scopes": metadata.scopes})
}

/// `…/token[?scopes=a,b]`: the broker's access token with at least 300 s left.
async fn token(app: &App, query: &Query) -> Answer {
    let scopes: Vec<String> = query
        .get("scopes")
        .map(|s| {
            s.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let Some(slot) = app.access(&scopes) else {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "token-client serve keeps tokens for at most 8 distinct scope sets; ask for one already in use (see GET /status)\n",
        );
    };
    match slot.get().await {
        Ok(current) => json_answer(
            StatusCode::OK,
            &json!({
                "access_token": current.token,
                "expires_in": current.expires_at.saturating_sub(unix_now()),
                "token_type": "Bearer",
            }),
        ),
        Err(e) => unavailable(&e),
    }
}

/// `…/identity?audience=A[&format=…]`: the broker's ID token for A (any audience the broker
/// allows this device, see [`super::audiences`]). `format` and `licenses` are accepted and
/// ignored (the token has no instance claims). A broker refusal of A answers 403 with the
/// broker's code and message; more audiences than serve keeps, 429.
async fn identity(app: &App, query: &Query) -> Answer {
    let Some(audience) = query.get("audience").filter(|a| !a.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "non-empty audience parameter required\n",
        );
    };
    match app.identity(audience).await {
        Ok(current) => text(StatusCode::OK, &current.token),
        Err(AudienceError::Unavailable(e)) => unavailable(&e),
        Err(e @ AudienceError::TooMany) => text(StatusCode::TOO_MANY_REQUESTS, &format!("{e}\n")),
    }
}

fn optional(value: Option<&str>) -> Answer {
    match value {
        Some(value) => text(StatusCode::OK, value),
        None => not_found(),
    }
}

fn lines(values: &[String]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

/// The decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .and_then(|q| reqwest::Url::parse(&format!("http://metadata/?{q}")).ok())
            .map(|url| url.query_pairs().into_owned().collect())
            .unwrap_or_default();
        Self(pairs)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn recursive(&self) -> bool {
        self.get("recursive")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
}
