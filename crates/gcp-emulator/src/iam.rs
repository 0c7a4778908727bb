//! IAM Service Account Credentials API (`iamcredentials.googleapis.com`):
//! `projects/-/serviceAccounts/{EMAIL}:signJwt` and `:generateAccessToken`,
//! with bearer-token authentication, proto-JSON request checking (unknown
//! field names are rejected as Google does), delegation chains and the IAM
//! permission checks configured in [`crate::Config`].

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{member_matches, strip_member_kind};
use crate::errors::GoogleError;
use crate::keys::json_integer;
use crate::state::{Account, AppState, TokenRecord, now_unix};

const SIGN_JWT_DENIED: &str =
    "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not exist).";
const GET_ACCESS_TOKEN_DENIED: &str =
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).";
const MAX_SIGN_JWT_EXP_SECS: i64 = 12 * 3600;

pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/v1/projects/{project}/serviceAccounts/{resource}",
        post(dispatch),
    )
}

#[derive(Clone, Copy)]
enum Method {
    SignJwt,
    GenerateAccessToken,
}

async fn dispatch(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let Path((project, resource)) = match path {
        Ok(p) => p,
        Err(e) => return GoogleError::invalid_argument(e.body_text()).into_response(),
    };
    let Some((account, method)) = resource.rsplit_once(':') else {
        return GoogleError::not_found(format!(
            "The requested URL /v1/projects/{project}/serviceAccounts/{resource} was not found: \
             expected a custom method such as :signJwt or :generateAccessToken."
        ))
        .into_response();
    };
    let (method, endpoint) = match method {
        "signJwt" => (Method::SignJwt, "iam.signJwt"),
        "generateAccessToken" => (Method::GenerateAccessToken, "iam.generateAccessToken"),
        other => {
            return GoogleError::not_found(format!(
                "Method '{other}' is not emulated (or does not exist) on projects.serviceAccounts."
            ))
            .into_response();
        }
    };
    if let Some(fault) = state.faults.enter(endpoint).await {
        return GoogleError::new(fault.status, fault.message).into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return GoogleError::new(e.status().as_u16(), e.body_text()).into_response(),
    };
    let result = match method {
        Method::SignJwt => sign_jwt(&state, &project, account, &headers, &body),
        Method::GenerateAccessToken => {
            generate_access_token(&state, &project, account, &headers, &body)
        }
    };
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Authenticate the caller by its `Authorization: Bearer` access token.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<TokenRecord, GoogleError> {
    const SEE: &str = "Expected OAuth 2 access token, login cookie or other valid authentication \
                       credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(GoogleError::unauthenticated(format!(
            "Request is missing required authentication credential. {SEE}"
        )));
    };
    let invalid = || {
        GoogleError::unauthenticated(format!(
            "Request had invalid authentication credentials. {SEE}"
        ))
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid());
    }
    let record = state.live_token(token.trim()).ok_or_else(invalid)?;
    let scoped = record
        .scopes
        .iter()
        .any(|s| s == crate::CLOUD_PLATFORM_SCOPE || s == crate::IAM_SCOPE);
    if !scoped {
        return Err(GoogleError::permission_denied(
            "Request had insufficient authentication scopes.",
        ));
    }
    Ok(record)
}

/// Parse a proto-JSON request body, refusing fields the message does not have.
fn parse_body(body: &[u8], fields: &[&str]) -> Result<Map<String, Value>, GoogleError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GoogleError::invalid_argument(format!("Invalid JSON payload received. {e}"))
    })?;
    let Value::Object(map) = value else {
        return Err(GoogleError::invalid_argument(
            "Invalid JSON payload received. Expected a JSON object for the request message.",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(GoogleError::invalid_argument(format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
        )));
    }
    Ok(map)
}

fn type_error(field: &str, value: &Value) -> GoogleError {
    GoogleError::invalid_argument(format!("Invalid value at '{field}' (TYPE_STRING), {value}"))
}

fn string_field(map: &Map<String, Value>, field: &str) -> Result<Option<String>, GoogleError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(type_error(field, other)),
    }
}

fn string_list(map: &Map<String, Value>, field: &str) -> Result<Vec<String>, GoogleError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(type_error(field, other)),
            })
            .collect(),
        Some(other) => Err(type_error(field, other)),
    }
}

/// `projects/-/serviceAccounts/X` → the account X (which must exist).
fn resolve_delegates(state: &AppState, delegates: &[String]) -> Result<Vec<Account>, GoogleError> {
    delegates
        .iter()
        .map(|d| {
            let Some(id) = d.strip_prefix("projects/-/serviceAccounts/") else {
                return Err(GoogleError::invalid_argument(format!(
                    "Invalid form of delegate {d:?}: expected projects/-/serviceAccounts/{{ACCOUNT_EMAIL_OR_UNIQUEID}}; \
                     the - wildcard character is required."
                )));
            };
            state.account(id).ok_or_else(|| not_found(id))
        })
        .collect()
}

fn not_found(email: &str) -> GoogleError {
    GoogleError::not_found(format!("Not found; Gaia id not found for email {email}"))
}

/// Common prologue: authenticate, check the `-` project, parse the body and
/// find the target service account and the delegation chain.
struct Prepared {
    caller: TokenRecord,
    target: Account,
    delegates: Vec<Account>,
    body: Map<String, Value>,
}

fn prepare(
    state: &AppState,
    project: &str,
    account: &str,
    headers: &HeaderMap,
    body: &[u8],
    fields: &[&str],
) -> Result<Prepared, GoogleError> {
    let caller = authenticate(state, headers)?;
    if project != "-" {
        return Err(GoogleError::invalid_argument(format!(
            "Invalid resource name projects/{project}/serviceAccounts/{account}: the - wildcard \
             character is required in place of the project ID (projects/-/serviceAccounts/{account})."
        )));
    }
    let body = parse_body(body, fields)?;
    let delegates = string_list(&body, "delegates")?;
    let target = state.account(account).ok_or_else(|| not_found(account))?;
    let delegates = resolve_delegates(state, &delegates)?;
    Ok(Prepared {
        caller,
        target,
        delegates,
        body,
    })
}

/// Walk caller → delegates[0] → … → target, checking each hop with `allowed`.
fn check_chain(
    prepared: &Prepared,
    allowed: impl Fn(&str, &str) -> bool,
    denied: &str,
) -> Result<(), GoogleError> {
    let mut principal = prepared.caller.principal.clone();
    for hop in prepared
        .delegates
        .iter()
        .chain(std::iter::once(&prepared.target))
    {
        if !allowed(&hop.email, &principal) {
            return Err(GoogleError::permission_denied(denied));
        }
        principal = hop.email.clone();
    }
    Ok(())
}

fn may_sign(state: &AppState, target: &str, caller: &str) -> bool {
    let config = &state.config;
    (config.self_sign_allowed && strip_member_kind(caller).eq_ignore_ascii_case(target))
        || config.token_creators.iter().any(|(t, c)| {
            strip_member_kind(t).eq_ignore_ascii_case(target) && member_matches(c, caller)
        })
}

fn may_impersonate(state: &AppState, target: &str, caller: &str) -> bool {
    state.config.impersonation.iter().any(|(sa, member)| {
        strip_member_kind(sa).eq_ignore_ascii_case(target) && member_matches(member, caller)
    })
}

fn sign_jwt(
    state: &AppState,
    project: &str,
    account: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, GoogleError> {
    let prepared = prepare(
        state,
        project,
        account,
        headers,
        body,
        &["name", "delegates", "payload"],
    )?;
    let payload = string_field(&prepared.body, "payload")?.ok_or_else(|| {
        GoogleError::invalid_argument(
            "Missing required field: payload (the JWT claim set as a JSON string).",
        )
    })?;
    check_chain(&prepared, |t, c| may_sign(state, t, c), SIGN_JWT_DENIED)?;

    let mut claims = match serde_json::from_str::<Value>(&payload) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(GoogleError::invalid_argument(
                "Invalid payload: the payload must be a JSON object (a JWT claim set) serialized as a string.",
            ));
        }
    };
    let now = now_unix();
    match claims.get("exp") {
        None => {
            claims.insert("exp".to_owned(), json!(now + 3600));
        }
        Some(exp) => {
            let exp = json_integer(exp).ok_or_else(|| {
                GoogleError::invalid_argument(
                    "Invalid payload: the exp claim must be an integer timestamp.",
                )
            })?;
            if exp < now {
                return Err(GoogleError::invalid_argument(format!(
                    "Invalid payload: the exp claim ({exp}) is in the past."
                )));
            }
            if exp > now + MAX_SIGN_JWT_EXP_SECS {
                return Err(GoogleError::invalid_argument(format!(
                    "Invalid payload: the exp claim ({exp}) is more than 12 hours in the future; \
                     signJwt only signs tokens that expire within 12 hours."
                )));
            }
        }
    }
    let key = prepared
        .target
        .system_key()
        .ok_or_else(|| GoogleError::internal("the service account has no key"))?;
    let signed = key.sign_jwt(&Value::Object(claims))?;
    Ok(json!({"keyId": key.kid(), "signedJwt": signed}))
}

/// Parse a proto `Duration` string (`"3600s"`, `"1.5s"`) into whole seconds
/// after checking it lies in `1..=max`.
pub(crate) fn parse_lifetime(raw: &str, max: u64) -> Result<u64, String> {
    let bad = || {
        format!(
            "Invalid value for lifetime {raw:?}: it must be a duration in seconds such as \"3600s\", \
             between 1s and {max}s."
        )
    };
    let digits = raw.strip_suffix('s').ok_or_else(bad)?;
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(bad());
    }
    let frac_nonzero = frac.is_some_and(|f| f.bytes().any(|b| b != b'0'));
    let secs: u64 = whole.parse().map_err(|_| bad())?;
    if secs == 0 || secs > max || (secs == max && frac_nonzero) {
        return Err(format!(
            "The lifetime requested ({raw}) is invalid or exceeds the maximum allowed: it must be \
             between 1s and {max}s."
        ));
    }
    Ok(secs)
}

fn generate_access_token(
    state: &AppState,
    project: &str,
    account: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, GoogleError> {
    let prepared = prepare(
        state,
        project,
        account,
        headers,
        body,
        &["name", "delegates", "scope", "lifetime"],
    )?;
    let scope = string_list(&prepared.body, "scope")?;
    if scope.is_empty() || scope.iter().any(|s| s.trim().is_empty()) {
        return Err(GoogleError::invalid_argument(
            "Missing required field: scope must list at least one OAuth scope.",
        ));
    }
    let max = state.config.max_impersonation_lifetime_secs;
    let lifetime = match string_field(&prepared.body, "lifetime")? {
        None => 3600.min(max),
        Some(raw) => parse_lifetime(&raw, max).map_err(GoogleError::invalid_argument)?,
    };
    check_chain(
        &prepared,
        |t, c| may_impersonate(state, t, c),
        GET_ACCESS_TOKEN_DENIED,
    )?;

    let lifetime = i64::try_from(lifetime).unwrap_or(3600);
    let (token, expires_at) = state.issue_token(&prepared.target.email, scope, lifetime);
    let expire_time = OffsetDateTime::from_unix_timestamp(expires_at)
        .map_err(|e| GoogleError::internal(e.to_string()))?
        .format(&Rfc3339)
        .map_err(|e| GoogleError::internal(e.to_string()))?;
    Ok(json!({"accessToken": token, "expireTime": expire_time}))
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("3600s", 3600), Ok(3600));
        assert_eq!(parse_lifetime("1s", 3600), Ok(1));
        assert_eq!(parse_lifetime("1.5s", 3600), Ok(1));
        assert_eq!(parse_lifetime("3600.0s", 3600), Ok(3600));
        for bad in [
            "3601s",
            "0s",
            "0.5s",
            "3600",
            "s",
            "-1s",
            "1.s",
            "3600.5s",
            "1e3s",
            " 1s",
            "99999999999999999999999s",
        ] {
            assert!(parse_lifetime(bad, 3600).is_err(), "{bad}");
        }
    }
}
