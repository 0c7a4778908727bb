//! The replicas' JWK Sets, fetched from each `--replica URL` at `/.well-known/jwks.json` (or
//! at the URL itself when it names a `.json` file), and what they lack or add against the file.

use std::time::Duration;

use serde_json::Value;

use super::FileArgs;
use crate::signer::local::set::KeyInfo;

/// How long one replica may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWK Set read from a replica.
const MAX_BODY: usize = 1 << 20;

/// The JWK Set URL of a replica's base URL.
pub fn jwks_url(replica: &str) -> String {
    if replica.ends_with(".json") {
        return replica.to_owned();
    }
    format!(
        "{}{}",
        replica.trim_end_matches('/'),
        crate::issuer::JWKS_PATH
    )
}

fn client(args: &FileArgs) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("token-service-keys/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read the CA file '{}': {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "the CA file '{}' is not PEM certificates: {e}",
                ca.display()
            )
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The `kid`s each replica publishes, or why it could not be asked.
pub fn published(args: &FileArgs) -> Vec<(String, Result<Vec<String>, String>)> {
    let fetch = async {
        let http = match client(args) {
            Ok(http) => http,
            Err(e) => {
                return args
                    .replica
                    .iter()
                    .map(|r| (r.clone(), Err(e.clone())))
                    .collect();
            }
        };
        let mut answers = Vec::new();
        for replica in &args.replica {
            answers.push((replica.clone(), kids(&http, &jwks_url(replica)).await));
        }
        answers
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(fetch),
        Err(e) => args
            .replica
            .iter()
            .map(|r| {
                (
                    r.clone(),
                    Err(format!("cannot start the async runtime: {e}")),
                )
            })
            .collect(),
    }
}

async fn kids(http: &reqwest::Client, url: &str) -> Result<Vec<String>, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}"));
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(format!(
                "GET {url} answered more than {MAX_BODY} bytes; a JWK Set is a few KiB"
            ));
        }
    }
    let set: Value =
        serde_json::from_slice(&body).map_err(|e| format!("GET {url} did not answer JSON: {e}"))?;
    let keys = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("GET {url} answered JSON without a \"keys\" array"))?;
    Ok(keys
        .iter()
        .filter_map(|k| k.get("kid").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// One line per key of the file a replica does not publish, per key a replica publishes that
/// the file lacks, and per replica that could not be asked.
pub fn missing(args: &FileArgs, infos: &[KeyInfo]) -> Vec<String> {
    let mut lines = Vec::new();
    for (replica, answer) in published(args) {
        let kids = match answer {
            Ok(kids) => kids,
            Err(e) => {
                lines.push(format!("replica {replica} could not be asked: {e}"));
                continue;
            }
        };
        for info in infos {
            if !kids.contains(&info.kid) {
                let state = info.meta.map_or("published", |m| m.state.name());
                lines.push(format!(
                    "replica {replica} does not publish key {} ({state}): it has not reloaded this file yet; wait for it (TLS_RELOAD_INTERVAL) and check again before the key signs",
                    info.kid
                ));
            }
        }
        for kid in kids.iter().filter(|k| !infos.iter().any(|i| &i.kid == *k)) {
            lines.push(format!(
                "replica {replica} publishes key {kid}, which the file lacks: it serves another version of the file; give every replica the same file"
            ));
        }
    }
    lines
}
