//! `token-client serve` under test: starting it, and GETs to it.

use std::process::Command;

use super::{CLIENT, Process};

/// `token-client serve` on a free loopback port with only `env`, and `args`.
pub fn start_serve(env: &[(String, String)], args: &[&str]) -> Process {
    let mut command = Command::new(CLIENT);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .envs(env.iter().cloned());
    Process::start(command, "listening on ")
}

/// One GET to `serve`: status, headers and body.
pub async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// The metadata header.
pub const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}
