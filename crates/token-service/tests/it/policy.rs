//! Black-box tests of the client policy (`POLICY_FILE`): the real binary, driven through its
//! `/token` endpoint by the load-balancer header flow, by direct mutual TLS with certificates of
//! the TLS suite's test PKI, and against the Google API emulator for service accounts and
//! scopes. Every kind of decision is checked on the response, on the verified token and on the
//! request's one log line (its `policy_decision`, `policy_rule` and `policy_matched` labels);
//! so are hot reloads and startup with a broken file.

use crate::support as common;
use crate::support::tls as tls_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use common::google::{
    OTHER_SA, TARGET_SA, emulator_config, pool_principals, start_emulator, start_service_process,
};
use common::{AUDIENCE, LB_HASH, SPIFFE, Server};
use gcp_emulator::Emulator;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tls_support::{
    GRANT, Leaf, Pki, TlsService, assert_refused, events, https_client, id_token, log_lines,
    post_token, sha256_b64, write_atomic,
};

/// What a client refused by the policy is told, whatever the reason.
const GENERIC: &str = "The client is not authorized to obtain tokens";
const MTLS: &str = tls_support::FLOW;
const XLB: &str = "xlb-mtls-client-credentials";
const SPIFFE_HEADER: &str = "X-Client-Cert-Spiffe";
const HASH_HEADER: &str = "X-Client-Cert-Hash";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A service with a policy file in a folder of its own (deny lists go next to it).
struct Policed {
    server: Server,
    policy: PathBuf,
    files: tempfile::TempDir,
}

impl Policed {
    /// Starts the default service (flow `xlb-mtls-client-credentials` on plain HTTP) with this
    /// policy, deny-list files (name, contents) and extra settings.
    fn start(policy: &str, lists: &[(&str, &str)], extra: &[(&str, &str)]) -> Policed {
        let files = tempfile::tempdir().unwrap();
        for (name, contents) in lists {
            common::temp_file(&files, name, contents);
        }
        let path = common::temp_file(&files, "policy.toml", policy);
        let file = path.display().to_string();
        let mut env: Vec<(&str, &str)> = vec![("POLICY_FILE", &file)];
        env.extend_from_slice(extra);
        // The real binary: most of these tests read the decision's log line.
        let server = Server::start_process(&env);
        Policed {
            server,
            policy: path,
            files,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// POSTs the grant with load-balancer headers (some overridden); status and JSON body.
    async fn token(&self, overrides: &[(&str, &str)]) -> (u16, Value) {
        json_of(common::token(&self.server, GRANT, overrides).await).await
    }

    /// The request of a client whose SPIFFE ID is `spiffe`.
    async fn token_as(&self, spiffe: &str) -> (u16, Value) {
        self.token(&[(SPIFFE_HEADER, spiffe)]).await
    }
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    json_of(request.send().await.unwrap()).await
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// Writes a policy file in its own folder (for services started by other helpers).
fn policy_in(dir: &tempfile::TempDir, text: &str) -> String {
    common::temp_file(dir, "policy.toml", text)
        .display()
        .to_string()
}

/// Waits (the log is read from a pipe) until the newest log line with `event` carries these
/// labels; returns its labels.
fn wait_for_line(server: &Server, event: &str, labels: &[(&str, &str)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let newest = events(server, event).pop();
        if let Some(line) = &newest
            && labels.iter().all(|(k, v)| line[*k] == *v)
        {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the newest '{event}' line is {newest:?}, expected {labels:?}; logs:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A 403 `unauthorized_client` with the generic message, none of `secrets` in the body.
fn assert_denied(status: u16, body: &Value, secrets: &[&str]) {
    assert_refused(status, body, GENERIC);
    let text = body.to_string();
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "'{secret}' reached the client: {text}"
        );
    }
}

/// A 403 `access_denied` with exactly `description`.
fn assert_access_denied(status: u16, body: &Value, description: &str) {
    assert_eq!(status, 403, "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(body["error"], "access_denied", "{body}");
    assert_eq!(body["error_description"], description, "{body}");
}

/// Checks the policy's decision on the newest token-request line that shows one: decision,
/// rule, client ID, flow; returns all its labels.
fn assert_decision(
    server: &Server,
    decision: &str,
    rule: &str,
    client_id: &str,
    flow: &str,
) -> Value {
    let want = [
        ("policy_decision", decision),
        ("policy_rule", rule),
        ("client_id", client_id),
        ("flow", flow),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let newest = decided(server).pop();
        if let Some(line) = &newest
            && want.iter().all(|(k, v)| line[*k] == *v)
        {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the newest line with a policy decision is {newest:?}, expected {want:?}; logs:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The labels of the log lines that show a policy decision.
fn decided(server: &Server) -> Vec<Value> {
    log_lines(server)
        .into_iter()
        .map(|l| l["logging.googleapis.com/labels"].clone())
        .filter(|labels| labels["policy_decision"].is_string())
        .collect()
}

/// The matched facts of a decision, one phrase each.
fn matched(line: &Value) -> Vec<String> {
    line["policy_matched"]
        .as_str()
        .unwrap()
        .split("; ")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Uppercase hex with colons, as `openssl x509 -fingerprint -sha256` prints.
fn openssl_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sha256(der: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .to_vec()
}

/// Polls until the request with `overrides` gets `want`; returns the body.
async fn wait_for_status(p: &Policed, overrides: &[(&str, &str)], want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = p.token(overrides).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} ({body}) rather than {want}; logs:\n{}",
            p.server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until more than `before` log lines carry `event`; returns the newest one's labels.
async fn wait_for_event(server: &Server, event: &str, before: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = events(server, event);
        if lines.len() > before {
            return lines.last().unwrap().clone();
        }
        assert!(
            Instant::now() < deadline,
            "no new '{event}' log line; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests a token over mutual TLS with `leaf`.
async fn mtls_token(service: &TlsService, pki: &Pki, leaf: &Leaf) -> (u16, Value) {
    post_token(&https_client(&pki.root.pem, Some(leaf)), service).await
}

/// Verifies an ID token of a TLS service as a relying party would.
async fn verify_tls(service: &TlsService, pki: &Pki, token: &str) -> Value {
    common::verify_with(
        &https_client(&pki.root.pem, None),
        token,
        &service.base,
        AUDIENCE,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// 1. Allow: client ID template, extra claims, token lifetime
// ---------------------------------------------------------------------------------------------

const ALLOW_POLICY: &str = r#"
# The intermediate's certificates keep the flow's client ID and the global lifetime.
[[rule]]
name = "intermediate-default"
decision = "allow"
[rule.match.issuer]
CN = "Test Intermediate CA"

[[rule]]
name = "devices"
decision = "allow"
client_id = "device-{dns_san}"
token_lifetime = 120
[rule.match]
flow = "mtls-client-credentials"
dns_san = "*.EXAMPLE.org"
[rule.match.subject]
O = "Token Service TLS tests"
[rule.claims]
tier = 2
beta = true
ratio = 1.5
groups = ["a", "b"]
limits = { rps = 5, burst = [1, 2], since = 2024-02-29, note = "{{literal}} for {subject.CN}" }
since = 1979-05-27T07:32:00Z
cn = "{subject.CN}"
workload = "{spiffe_path}"
domain = "{spiffe_trust_domain}"
ca = "{issuer_ca_sha256}"
literal = "{{not a fact}} {serial}"

# Matches the certificate without a DNS SAN, whose template then lacks its fact.
[[rule]]
name = "needs-dns"
decision = "allow"
client_id = "device-{dns_san}"
[rule.match]
spiffe_path = "/ns/prod/sa/no-dns"
"#;

#[tokio::test]
async fn allow_rule_templates_client_id_adds_claims_and_overrides_token_lifetime() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_in(&dir, ALLOW_POLICY);
    let service = TlsService::start_process(&pki, &pki.root.pem, None, &[("POLICY_FILE", &policy)]);

    let (status, body) = mtls_token(&service, &pki, &pki.valid).await;
    let claims = verify_tls(&service, &pki, &id_token(status, &body)).await;
    assert_eq!(claims["sub"], "device-valid.example.org", "{claims}");
    assert_eq!(claims["client_id"], "device-valid.example.org", "{claims}");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120,
        "{claims}"
    );
    assert_eq!(claims["tier"], 2);
    assert_eq!(claims["beta"], true);
    assert_eq!(claims["ratio"], 1.5);
    assert_eq!(claims["groups"], json!(["a", "b"]));
    // Strings nested in arrays and tables are templates too.
    assert_eq!(
        claims["limits"],
        json!({"rps": 5, "burst": [1, 2], "since": "2024-02-29", "note": "{literal} for valid"})
    );
    assert_eq!(claims["since"], "1979-05-27T07:32:00Z", "{claims}");
    assert_eq!(claims["cn"], "valid");
    assert_eq!(claims["workload"], "/ns/prod/sa/valid");
    assert_eq!(claims["domain"], "example.org");
    assert_eq!(claims["ca"], sha256_b64(&pki.root.der));
    assert_eq!(claims["literal"], "{not a fact} 10:01");
    // The registered claims are still the service's own.
    assert_eq!(claims["amr"], json!([MTLS]));
    assert_eq!(claims["client"]["x5_spiffe"], pki.valid.spiffe());
    let line = assert_decision(
        &service.server,
        "allow",
        "devices",
        "device-valid.example.org",
        MTLS,
    );
    assert_eq!(
        matched(&line),
        [
            "flow 'mtls-client-credentials' is listed",
            "dns_san 'valid.example.org' matches '*.EXAMPLE.org'",
            "subject.O 'Token Service TLS tests' matches 'Token Service TLS tests'",
        ],
        "{line}"
    );
    wait_for_line(
        &service.server,
        "token_issued",
        &[("client_id", "device-valid.example.org")],
    );

    // No client_id, no token_lifetime, no claims: the flow's ID and TOKEN_VALIDITY (5 min).
    let (status, body) = mtls_token(&service, &pki, &pki.via_intermediate).await;
    let claims = verify_tls(&service, &pki, &id_token(status, &body)).await;
    let spiffe = pki.via_intermediate.spiffe();
    assert_eq!(claims["sub"], spiffe);
    assert_eq!(claims["client_id"], spiffe);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    for extra in ["tier", "cn", "workload", "since"] {
        assert!(claims.get(extra).is_none(), "{claims}");
    }
    assert_decision(
        &service.server,
        "allow",
        "intermediate-default",
        spiffe,
        MTLS,
    );

    // A template over a fact the certificate lacks denies, rather than issuing a broken ID.
    let (status, body) = mtls_token(&service, &pki, &pki.no_dns).await;
    assert_denied(status, &body, &["dns_san", "needs-dns"]);
    let line = assert_decision(
        &service.server,
        "deny",
        "needs-dns",
        pki.no_dns.spiffe(),
        MTLS,
    );
    assert_eq!(
        line["reason"],
        "rule 'needs-dns': the client_id template needs the fact 'dns_san', which this certificate lacks"
    );
}

// ---------------------------------------------------------------------------------------------
// 2-3. Deny rules and no matching rule
// ---------------------------------------------------------------------------------------------

const DENY_POLICY: &str = r#"
[[rule]]
name = "quarantined-lab"
decision = "deny"
reason = "lab devices are quarantined until firmware 4.2"
[rule.match]
spiffe_trust_domain = "EXAMPLE.org"
spiffe_path = "/ns/lab/**"

[[rule]]
name = "legacy"
decision = "deny"
[rule.match]
spiffe_id = "spiffe://example.org/ns/legacy/*"

[[rule]]
name = "prod"
decision = "allow"
[rule.match]
spiffe_path = "/ns/prod/**"
"#;

#[tokio::test]
async fn deny_rule_refuses_with_the_generic_message_and_logs_rule_reason_and_facts() {
    let p = Policed::start(DENY_POLICY, &[], &[]);
    let lab = "spiffe://example.org/ns/lab/sa/probe-7";
    let (status, body) = p.token_as(lab).await;
    assert_denied(
        status,
        &body,
        &["quarantined", "firmware", "lab", "rule", "example.org"],
    );
    let line = assert_decision(&p.server, "deny", "quarantined-lab", lab, XLB);
    assert_eq!(
        line["reason"],
        "lab devices are quarantined until firmware 4.2"
    );
    assert_eq!(
        matched(&line),
        [
            "spiffe_trust_domain 'example.org' is listed",
            "spiffe_path '/ns/lab/sa/probe-7' matches '/ns/lab/**'",
        ]
    );
    wait_for_line(
        &p.server,
        "authentication_failed",
        &[
            ("outcome", "unauthorized_client"),
            ("client_id", lab),
            ("reason", "lab devices are quarantined until firmware 4.2"),
        ],
    );

    // Without a reason, the log says which rule denied.
    let legacy = "spiffe://example.org/ns/legacy/old-gateway";
    let (status, body) = p.token_as(legacy).await;
    assert_denied(status, &body, &["legacy"]);
    let line = assert_decision(&p.server, "deny", "legacy", legacy, XLB);
    assert_eq!(line["reason"], "denied by rule 'legacy'");
    assert_eq!(
        matched(&line),
        [
            "spiffe_id 'spiffe://example.org/ns/legacy/old-gateway' matches 'spiffe://example.org/ns/legacy/*'"
        ]
    );

    let (status, body) = p.token_as(SPIFFE).await;
    assert_eq!(status, 200, "{body}");
    assert_decision(&p.server, "allow", "prod", SPIFFE, XLB);
    wait_for_line(&p.server, "token_issued", &[("client_id", SPIFFE)]);
    assert_eq!(events(&p.server, "token_issued").len(), 1);
}

#[tokio::test]
async fn no_matching_rule_denies_and_logs_no_rule_matched() {
    let p = Policed::start(DENY_POLICY, &[], &[]);
    for spiffe in [
        "spiffe://example.org/ns/dev/sa/x",
        // The lab path in another trust domain: the lab rule needs both.
        "spiffe://other.example/ns/lab/sa/probe-7",
        // `*` stays within one path segment: not caught by the legacy rule.
        "spiffe://example.org/ns/legacy/a/b",
    ] {
        let (status, body) = p.token_as(spiffe).await;
        assert_denied(status, &body, &["no rule", "matched"]);
        let line = assert_decision(&p.server, "deny", "(no rule matched)", spiffe, XLB);
        assert_eq!(line["reason"], "no rule of the policy matches this client");
        assert_eq!(line["policy_matched"], "");
    }

    // A policy without rules is valid and admits nobody.
    let empty = Policed::start("# nothing yet\n", &[], &[]);
    let (status, body) = empty.token(&[]).await;
    assert_denied(status, &body, &[]);
    assert_decision(&empty.server, "deny", "(no rule matched)", SPIFFE, XLB);
}

/// A policed token request writes one log line, the request's, which says how the policy
/// decided: no separate policy line, for an allow and for a deny.
#[tokio::test]
async fn a_policed_token_request_writes_exactly_one_log_line() {
    let p = Policed::start(DENY_POLICY, &[], &[]);
    // Whatever the service logs while it starts is written before its first answer.
    let (status, body) = p.token_as("spiffe://example.org/ns/dev/sa/warm-up").await;
    assert_eq!(status, 403, "{body}");
    wait_for_line(&p.server, "authentication_failed", &[]);
    let legacy = "spiffe://example.org/ns/legacy/old-gateway";
    for (client_id, want, event, decision, rule) in [
        (SPIFFE, 200, "token_issued", "allow", "prod"),
        (legacy, 403, "authentication_failed", "deny", "legacy"),
    ] {
        let before = log_lines(&p.server).len();
        let (status, body) = p.token_as(client_id).await;
        assert_eq!(status, want, "{body}");
        let line = assert_decision(&p.server, decision, rule, client_id, XLB);
        assert_eq!(line["event"], event, "{line}");
        // A line written beside the request's would come before it, so it is in by now.
        let new = log_lines(&p.server).split_off(before);
        assert_eq!(new.len(), 1, "{decision}: {new:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Rule order
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_first_matching_rule_decides() {
    let p = Policed::start(
        r#"
[[rule]]
name = "deny-canaries"
decision = "deny"
[rule.match]
spiffe_path = "/ns/prod/sa/canary-*"

[[rule]]
name = "allow-prod"
decision = "allow"
[rule.match]
spiffe_path = "/ns/prod/**"

[[rule]]
name = "allow-staging-probe"
decision = "allow"
client_id = "probe"
[rule.match]
spiffe_id = "spiffe://example.org/ns/staging/sa/probe"

[[rule]]
name = "deny-staging"
decision = "deny"
[rule.match]
spiffe_path = "/ns/staging/**"
"#,
        &[],
        &[],
    );
    // A deny before an allow that also matches.
    let canary = "spiffe://example.org/ns/prod/sa/canary-3";
    let (status, body) = p.token_as(canary).await;
    assert_denied(status, &body, &[]);
    assert_decision(&p.server, "deny", "deny-canaries", canary, XLB);
    let (status, body) = p.token_as(SPIFFE).await;
    assert_eq!(status, 200, "{body}");
    assert_decision(&p.server, "allow", "allow-prod", SPIFFE, XLB);
    // An allow before a deny that also matches.
    let (status, body) = p.token_as("spiffe://example.org/ns/staging/sa/probe").await;
    let claims = common::verify(&id_token(status, &body), &p.server.base, AUDIENCE).await;
    assert_eq!(claims["sub"], "probe");
    assert_decision(&p.server, "allow", "allow-staging-probe", "probe", XLB);
    let other = "spiffe://example.org/ns/staging/sa/web";
    let (status, body) = p.token_as(other).await;
    assert_denied(status, &body, &[]);
    assert_decision(&p.server, "deny", "deny-staging", other, XLB);
}

// ---------------------------------------------------------------------------------------------
// 5. Deny lists
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deny_lists_refuse_listed_fingerprints_and_serials_before_any_rule() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    // The no-dns certificate by its fingerprint as openssl prints it; another one in base64.
    common::temp_file(
        &dir,
        "revoked-fingerprints.txt",
        &format!(
            "# revoked\n\n{}  # no-dns, stolen laptop\n{}\n",
            openssl_hex(&sha256(&pki.no_dns.der)),
            sha256_b64(&pki.expired.der),
        ),
    );
    // The intermediate's leaf has serial 00:80:02:ab in DER; listed without the leading zero.
    common::temp_file(
        &dir,
        "revoked-serials.txt",
        "20:99\n80:02:AB # via-intermediate\n",
    );
    let policy = policy_in(
        &dir,
        r#"
[deny_lists]
sha256_fingerprints = "revoked-fingerprints.txt"
serials = "revoked-serials.txt"

[[rule]]
name = "everyone"
decision = "allow"
"#,
    );
    let service = TlsService::start_process(&pki, &pki.root.pem, None, &[("POLICY_FILE", &policy)]);

    let (status, body) = mtls_token(&service, &pki, &pki.no_dns).await;
    assert_denied(status, &body, &["revoked", "deny"]);
    let line = assert_decision(
        &service.server,
        "deny",
        "deny_lists.sha256_fingerprints",
        pki.no_dns.spiffe(),
        MTLS,
    );
    let fingerprint = sha256_b64(&pki.no_dns.der);
    assert_eq!(
        line["policy_matched"],
        format!("sha256_fingerprint '{fingerprint}' is listed")
    );
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains(&fingerprint) && reason.contains("revoked-fingerprints.txt"),
        "{line}"
    );

    let (status, body) = mtls_token(&service, &pki, &pki.via_intermediate).await;
    assert_denied(status, &body, &["revoked", "serial"]);
    let line = assert_decision(
        &service.server,
        "deny",
        "deny_lists.serials",
        pki.via_intermediate.spiffe(),
        MTLS,
    );
    assert_eq!(line["policy_matched"], "serial '00:80:02:ab' is listed");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("revoked-serials.txt"),
        "{line}"
    );

    // Everyone else still gets tokens.
    let (status, body) = mtls_token(&service, &pki, &pki.valid).await;
    id_token(status, &body);
    assert_decision(
        &service.server,
        "allow",
        "everyone",
        pki.valid.spiffe(),
        MTLS,
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Service accounts and scopes, with the Google API emulator
// ---------------------------------------------------------------------------------------------

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEVSTORAGE_RO: &str = "https://www.googleapis.com/auth/devstorage.read_only";
const BIGQUERY: &str = "https://www.googleapis.com/auth/bigquery";

/// The service with SIGNER=iam and the pool, against a fresh emulator, with this policy. The
/// pool may impersonate both accounts: only the policy keeps the client from the admin.
async fn google_service(policy: &str) -> (Emulator, Server, tempfile::TempDir) {
    let front = common::listener();
    let mut config = emulator_config(common::port_of(&front));
    config
        .impersonation
        .push((OTHER_SA.into(), pool_principals()));
    let emulator = start_emulator(config).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_in(&dir, policy);
    // The real binary: the test reads the decision's log line.
    let server = start_service_process(front, &emulator, &[("POLICY_FILE", &policy)]).await;
    (emulator, server, dir)
}

fn form(scope: Option<&str>, sa: Option<&str>) -> String {
    let mut f = GRANT.to_owned();
    if let Some(s) = scope {
        f.push_str(&format!(
            "&scope={}",
            utf8_percent_encode(s, NON_ALPHANUMERIC)
        ));
    }
    if let Some(sa) = sa {
        f.push_str(&format!(
            "&service_account={}",
            utf8_percent_encode(sa, NON_ALPHANUMERIC)
        ));
    }
    f
}

const DEV: &str = "spiffe://example.org/ns/dev/sa/tool";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_and_scopes_are_restricted_per_rule() {
    let (emulator, server, _dir) = google_service(
        r#"
[[rule]]
name = "storage-readers"
decision = "allow"
service_accounts = ["storage-*@demo-project.iam.gserviceaccount.com"]
scopes = ["https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/devstorage.*"]
[rule.match]
spiffe_path = "/ns/prod/**"

[[rule]]
name = "no-impersonation"
decision = "allow"
service_accounts = []
[rule.match]
spiffe_path = "/ns/dev/**"
"#,
    )
    .await;
    let request = |scope: Option<&str>, sa: Option<&str>, spiffe: &str| {
        common::token_request(&server, &form(scope, sa), &[(SPIFFE_HEADER, spiffe)])
    };

    // Allowed service account and scope: an impersonated access token.
    let (status, body) = send(request(Some(CLOUD_PLATFORM), Some(TARGET_SA), SPIFFE)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        emulator
            .token_principal(body["access_token"].as_str().unwrap())
            .unwrap(),
        TARGET_SA
    );
    assert_decision(&server, "allow", "storage-readers", SPIFFE, XLB);
    // A scope matched by a glob, without a service account: the federated token.
    let (status, body) = send(request(Some(DEVSTORAGE_RO), None, SPIFFE)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], DEVSTORAGE_RO);

    // A service account outside the rule's globs: names the account, not the rule.
    let (status, body) = send(request(Some(CLOUD_PLATFORM), Some(OTHER_SA), SPIFFE)).await;
    assert_access_denied(
        status,
        &body,
        &format!("This client may not obtain tokens for the service account '{OTHER_SA}'"),
    );
    assert!(!body.to_string().contains("storage-"), "{body}");
    let line = assert_decision(&server, "deny_access", "storage-readers", SPIFFE, XLB);
    assert_eq!(
        line["reason"],
        format!(
            "rule 'storage-readers': service account '{OTHER_SA}' matches none of 'storage-*@demo-project.iam.gserviceaccount.com'"
        )
    );
    // That is the request's one line: its outcome, and the reason the log keeps (more than
    // the client is told).
    assert_eq!(line["event"], "authentication_failed", "{line}");
    assert_eq!(line["outcome"], "access_denied", "{line}");

    // One scope outside the globs among allowed ones.
    let (status, body) = send(request(
        Some(&format!("{CLOUD_PLATFORM} {BIGQUERY}")),
        Some(TARGET_SA),
        SPIFFE,
    ))
    .await;
    assert_access_denied(
        status,
        &body,
        &format!("This client may not obtain the scope '{BIGQUERY}'"),
    );
    assert!(!body.to_string().contains("storage-readers"), "{body}");
    let line = assert_decision(&server, "deny_access", "storage-readers", SPIFFE, XLB);
    assert!(
        line["reason"].as_str().unwrap().contains(BIGQUERY),
        "{line}"
    );

    // `service_accounts = []`: no impersonation at all, while scopes stay open.
    let (status, body) = send(request(Some(CLOUD_PLATFORM), Some(TARGET_SA), DEV)).await;
    assert_access_denied(
        status,
        &body,
        &format!("This client may not obtain tokens for the service account '{TARGET_SA}'"),
    );
    let line = assert_decision(&server, "deny_access", "no-impersonation", DEV, XLB);
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .ends_with("matches none of (none allowed)"),
        "{line}"
    );
    let (status, body) = send(request(Some(BIGQUERY), None, DEV)).await;
    assert_eq!(status, 200, "{body}");

    // Refused requests never reached Google: one impersonation, three ID tokens signed.
    assert_eq!(emulator.calls("iam.generateAccessToken"), 1);
    assert_eq!(emulator.calls("iam.signJwt"), 3);
}

// ---------------------------------------------------------------------------------------------
// 7. Conditions over the facts of different flows
// ---------------------------------------------------------------------------------------------

const FLOWS_POLICY: &str = r#"
[[rule]]
name = "retired-by-subject"
decision = "deny"
reason = "no-dns certificates are retired"
[rule.match.subject]
CN = "no-dns"

[[rule]]
name = "issued-by-root"
decision = "allow"
client_id = "root/{subject.CN}"
[rule.match]
flow = "mtls-client-credentials"
issuer_ca_sha256 = "ROOT_HEX"
[rule.match.subject]
O = "Token Service TLS tests"
[rule.claims]
ca = "{issuer_ca_sha256}"

[[rule]]
name = "issued-by-intermediate"
decision = "allow"
client_id = "intermediate/{subject.CN}"
[rule.match]
flow = "mtls-client-credentials"
issuer_ca_sha256 = ["ROOT_B64", "INTERMEDIATE_B64"]
[rule.match.issuer]
CN = "Test Intermediate CA"
[rule.claims]
issuer_cn = "{issuer.CN}"
ca = "{issuer_ca_sha256}"

# The load balancer's headers carry no subject DN: this can never hold for that flow.
[[rule]]
name = "lb-by-subject"
decision = "allow"
client_id = "never"
[rule.match]
flow = "xlb-mtls-client-credentials"
[rule.match.subject]
CN = "*"

# Nor is the issuing CA known there.
[[rule]]
name = "lb-by-issuer-ca"
decision = "allow"
client_id = "never-either"
[rule.match]
issuer_ca_sha256 = ["ROOT_HEX", "INTERMEDIATE_B64"]

[[rule]]
name = "lb-by-spiffe"
decision = "allow"
client_id = "lb/{dns_san}"
[rule.match]
flow = ["xlb-mtls-client-credentials"]
spiffe_id = "spiffe://example.org/ns/prod/sa/*"
dns_san = "*.example.org"
"#;

#[tokio::test]
async fn conditions_hold_on_the_facts_each_flow_has_and_fail_closed_on_absent_ones() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = FLOWS_POLICY
        .replace("ROOT_HEX", &openssl_hex(&sha256(&pki.root.der)))
        .replace("ROOT_B64", &sha256_b64(&pki.root.der))
        .replace("INTERMEDIATE_B64", &sha256_b64(&pki.intermediate.der));
    let policy = policy_in(&dir, &policy);
    let service = TlsService::start_process(
        &pki,
        &pki.root.pem,
        None,
        &[
            ("AUTH_FLOWS", &format!("{MTLS},{XLB}")),
            ("POLICY_FILE", &policy),
            // Required for the xlb flow on a TLS listener.
            ("MTLS_LB_SECRET", "a-load-balancer-secret-0123456789"),
        ],
    );

    // Direct mTLS, leaf issued by the root.
    let (status, body) = mtls_token(&service, &pki, &pki.valid).await;
    let claims = verify_tls(&service, &pki, &id_token(status, &body)).await;
    assert_eq!(claims["sub"], "root/valid");
    assert_eq!(claims["ca"], sha256_b64(&pki.root.der));
    assert_eq!(claims["amr"], json!([MTLS]));
    let line = assert_decision(
        &service.server,
        "allow",
        "issued-by-root",
        "root/valid",
        MTLS,
    );
    assert_eq!(
        matched(&line),
        [
            "flow 'mtls-client-credentials' is listed",
            "subject.O 'Token Service TLS tests' matches 'Token Service TLS tests'",
            &format!("issuer_ca_sha256 '{}' is listed", sha256_b64(&pki.root.der)),
        ]
    );

    // Leaf issued by the intermediate (which the client sends): its issuing CA is the
    // intermediate, not the root the chain ends at.
    let (status, body) = mtls_token(&service, &pki, &pki.via_intermediate).await;
    let claims = verify_tls(&service, &pki, &id_token(status, &body)).await;
    assert_eq!(claims["sub"], "intermediate/via-intermediate");
    assert_eq!(claims["issuer_cn"], "Test Intermediate CA");
    assert_eq!(claims["ca"], sha256_b64(&pki.intermediate.der));
    assert_decision(
        &service.server,
        "allow",
        "issued-by-intermediate",
        "intermediate/via-intermediate",
        MTLS,
    );

    // A subject condition on a deny rule, through mTLS.
    let (status, body) = mtls_token(&service, &pki, &pki.no_dns).await;
    assert_denied(status, &body, &["retired"]);
    let line = assert_decision(
        &service.server,
        "deny",
        "retired-by-subject",
        pki.no_dns.spiffe(),
        MTLS,
    );
    assert_eq!(
        line["policy_matched"],
        "subject.CN 'no-dns' matches 'no-dns'"
    );

    // The load balancer's flow on the same listener (no client certificate in the handshake):
    // the subject and issuing-CA conditions fail for lack of facts, the SPIFFE ID one holds.
    let lb = |spiffe: &str| {
        let mut headers = common::lb_headers(spiffe);
        headers.retain(|(_, v)| !v.is_empty());
        let mut request = https_client(&pki.root.pem, None)
            .post(service.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "X-Token-Service-LB-Secret",
                "a-load-balancer-secret-0123456789",
            )
            .body(GRANT);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request
    };
    let (status, body) = send(lb(SPIFFE)).await;
    let claims = verify_tls(&service, &pki, &id_token(status, &body)).await;
    assert_eq!(claims["sub"], "lb/device-1.example.org");
    assert_eq!(claims["amr"], json!([XLB]));
    let line = assert_decision(
        &service.server,
        "allow",
        "lb-by-spiffe",
        "lb/device-1.example.org",
        XLB,
    );
    assert_eq!(
        matched(&line),
        [
            "flow 'xlb-mtls-client-credentials' is listed",
            &format!("spiffe_id '{SPIFFE}' matches 'spiffe://example.org/ns/prod/sa/*'"),
            "dns_san 'device-1.example.org' matches '*.example.org'",
        ]
    );
    // Outside the SPIFFE glob nothing else matches: the subject rule does not admit it.
    let other = "spiffe://example.org/ns/prod/sa/team/web";
    let (status, body) = send(lb(other)).await;
    assert_denied(status, &body, &[]);
    assert_decision(&service.server, "deny", "(no rule matched)", other, XLB);
}

// ---------------------------------------------------------------------------------------------
// 8. Hot reload
// ---------------------------------------------------------------------------------------------

const RELOAD_DENY: &str = r#"[deny_lists]
sha256_fingerprints = "revoked.txt"

[[rule]]
name = "maintenance"
decision = "deny"
reason = "maintenance window"
"#;

const RELOAD_ALLOW: &str = r#"[deny_lists]
sha256_fingerprints = "revoked.txt"

[[rule]]
name = "open"
decision = "allow"
"#;

/// RELOAD_ALLOW with an unterminated string on line 6.
const RELOAD_BROKEN: &str = r#"[deny_lists]
sha256_fingerprints = "revoked.txt"

[[rule]]
name = "open"
decision = "allow
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_deny_lists_reload_and_a_broken_file_keeps_the_previous_policy() {
    let p = Policed::start(
        RELOAD_DENY,
        &[("revoked.txt", "# nothing revoked\n")],
        &[("POLICY_RELOAD_INTERVAL", "1")],
    );
    let other_hash = STANDARD_NO_PAD.encode([7u8; 32]);
    let other: &[(&str, &str)] = &[(HASH_HEADER, &other_hash)];
    let (status, body) = p.token(&[]).await;
    assert_denied(status, &body, &["maintenance"]);
    assert_decision(&p.server, "deny", "maintenance", SPIFFE, XLB);
    assert_eq!(events(&p.server, "policy_loaded").len(), 1);

    // Deny -> allow.
    let reloaded = events(&p.server, "policy_reloaded").len();
    write_atomic(&p.policy, RELOAD_ALLOW.as_bytes());
    wait_for_status(&p, &[], 200).await;
    assert_decision(&p.server, "allow", "open", SPIFFE, XLB);
    wait_for_event(&p.server, "policy_reloaded", reloaded).await;

    // A deny list changes, the policy file does not: the listed certificate is refused.
    let listed = openssl_hex(&STANDARD_NO_PAD.decode(LB_HASH).unwrap()).to_lowercase();
    write_atomic(
        &p.path("revoked.txt"),
        format!("# revoked\n{listed}\n").as_bytes(),
    );
    wait_for_status(&p, &[], 403).await;
    let line = assert_decision(
        &p.server,
        "deny",
        "deny_lists.sha256_fingerprints",
        SPIFFE,
        XLB,
    );
    assert_eq!(
        line["policy_matched"],
        format!("sha256_fingerprint '{LB_HASH}' is listed")
    );
    let (status, body) = p.token(other).await;
    assert_eq!(status, 200, "{body}");

    // A broken file is refused, naming the file and line; the previous policy keeps deciding.
    let failed = events(&p.server, "policy_reload_failed").len();
    write_atomic(&p.policy, RELOAD_BROKEN.as_bytes());
    let line = wait_for_event(&p.server, "policy_reload_failed", failed).await;
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("{}:6: ", p.policy.display()))
            && reason.contains("invalid basic string"),
        "{line}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = p.token(other).await;
    assert_eq!(status, 200, "{body}");
    assert_decision(&p.server, "allow", "open", SPIFFE, XLB);
    let (status, body) = p.token(&[]).await;
    assert_denied(status, &body, &[]);
    assert_decision(
        &p.server,
        "deny",
        "deny_lists.sha256_fingerprints",
        SPIFFE,
        XLB,
    );

    // While the policy file is broken, a deny-list change still applies: the previous rules
    // stay, their deny lists are read again (revocations must not wait for a policy fix).
    let refreshed = events(&p.server, "policy_deny_lists_reloaded").len();
    write_atomic(&p.path("revoked.txt"), b"# nothing revoked any more\n");
    wait_for_event(&p.server, "policy_deny_lists_reloaded", refreshed).await;
    let (status, body) = p.token(&[]).await;
    assert_eq!(status, 200, "{body}");
    assert_decision(&p.server, "allow", "open", SPIFFE, XLB);

    // Fixed: reloaded, with the current deny list.
    let reloaded = events(&p.server, "policy_reloaded").len();
    write_atomic(&p.policy, RELOAD_ALLOW.as_bytes());
    wait_for_event(&p.server, "policy_reloaded", reloaded).await;
    let (status, body) = p.token(&[]).await;
    assert_eq!(status, 200, "{body}");
    assert_decision(&p.server, "allow", "open", SPIFFE, XLB);

    // And back to denying.
    write_atomic(&p.policy, RELOAD_DENY.as_bytes());
    wait_for_status(&p, other, 403).await;
    assert_decision(&p.server, "deny", "maintenance", SPIFFE, XLB);
}

// ---------------------------------------------------------------------------------------------
// 9. Startup with a broken policy
// ---------------------------------------------------------------------------------------------

/// Runs `serve` with this policy file; `timeout` guards against a case that starts serving.
fn serve_with_policy(dir: &tempfile::TempDir, policy: &Path) -> Output {
    let key = common::temp_file(dir, "key.pem", &common::ec_key_pem());
    Command::new("timeout")
        .arg("20")
        .arg(common::BIN)
        .arg("serve")
        .env_clear()
        .envs([
            ("PORT", "0".to_owned()),
            ("TOKEN_AUDIENCE", AUDIENCE.to_owned()),
            ("SIGNING_KEY_FILE", key.display().to_string()),
            ("DATA_DIR", dir.path().join("data").display().to_string()),
            ("POLICY_FILE", policy.display().to_string()),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap()
}

#[test]
fn startup_with_a_broken_policy_exits_nonzero_naming_the_file_line_and_reason() {
    // (policy, line, expected reason)
    let cases: &[(&str, usize, &str)] = &[
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\nclientid = \"x\"\n",
            4,
            "unknown field `clientid`",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.match]\nspiffe_domain = \"x\"\n",
            5,
            "unknown field `spiffe_domain`",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.match]\ndns_san = \"[a\"\n",
            5,
            "match.dns_san: bad glob '[a'",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\nservice_accounts = [\"ok@x\", \"[a\"]\n",
            4,
            "rule 'a': bad glob '[a'",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n\nclient_id = \"device-{subjectCN}\"\n",
            5,
            "rule 'a': template 'device-{subjectCN}' names an unknown fact 'subjectCN'; known facts: client_id, flow,",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.claims]\nowner = \"{owner}\"\n",
            5,
            "rule 'a': claim 'owner': template '{owner}' names an unknown fact 'owner'",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\ntoken_lifetime = 30\n",
            4,
            "rule 'a': token_lifetime 30 is out of bounds; expected seconds from 60 to 3600",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\ntoken_lifetime = 7200\n",
            4,
            "rule 'a': token_lifetime 7200 is out of bounds; expected seconds from 60 to 3600",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.claims]\nsub = \"admin\"\n",
            5,
            "rule 'a': claim 'sub' is set by Token Service itself and cannot be overridden",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.claims]\nweight = nan\n",
            5,
            "rule 'a': claim 'weight': NaN cannot be written in JSON",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"permit\"\n",
            3,
            "rule 'a': decision 'permit' is not valid; expected \"allow\" or \"deny\"",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"deny\"\ntoken_lifetime = 120\n",
            4,
            "rule 'a': 'token_lifetime' applies to allow rules only; this rule denies",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\n",
            3,
            "invalid basic string",
        ),
        (
            "# lists\n[deny_lists]\nserials = \"missing.txt\"\n",
            3,
            "deny_lists.serials: ",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n\n[[rule]]\nname = \"a\"\ndecision = \"deny\"\n",
            5,
            "rule name 'a' is already used by the rule at line 1; names must be unique",
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"deny\"\nreason = \"r\"\n[rule.match]\nflow = \"mtls\"\n",
            1,
            "rule 'a': match.flow: 'mtls' is not a flow; known flows: forwarded-cert-client-credentials, ",
        ),
    ];
    for (policy, line, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = common::temp_file(&dir, "policy.toml", policy);
        let out = serve_with_policy(&dir, &path);
        let err = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{policy}\nstderr: {err}\nstdout: {stdout}"
        );
        let prefix = format!("POLICY_FILE: {}:{line}: ", path.display());
        assert!(
            err.contains(&format!("{prefix}{reason}")),
            "{policy}\nexpected {prefix}{reason} in {err}"
        );
        assert!(!stdout.contains("listening"), "{stdout}");
        assert!(!err.contains("panicked"), "{err}");
    }

    // A deny list with a bad entry names the list's own file and line.
    let dir = tempfile::tempdir().unwrap();
    common::temp_file(&dir, "fps.txt", "# ok\n\nnot-a-fingerprint\n");
    let path = common::temp_file(
        &dir,
        "policy.toml",
        "[deny_lists]\nsha256_fingerprints = \"fps.txt\"\n",
    );
    let out = serve_with_policy(&dir, &path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "POLICY_FILE: {}:2: deny_lists.sha256_fingerprints: {}:3: 'not-a-fingerprint' is not a SHA-256 fingerprint",
            path.display(),
            dir.path().join("fps.txt").display()
        )),
        "{err}"
    );

    // A missing policy file.
    let missing = dir.path().join("nope.toml");
    let out = serve_with_policy(&dir, &missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("POLICY_FILE: {}: cannot read", missing.display())),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Re-signed certificates (issue 10, finding 1) and SPIFFE ID letter case (finding 12)
// ---------------------------------------------------------------------------------------------

/// The order n of the P-256 group, big-endian (SEC 2 §2.4.2), the curve rcgen's default keys use.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// A DER TLV: (header + contents, contents, rest). Lengths up to 0xffff.
fn der_tlv(input: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let (len, header) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(input[2]), 3),
        0x82 => (usize::from(input[2]) << 8 | usize::from(input[3]), 4),
        n => panic!("length form {n:#x}"),
    };
    (
        &input[..header + len],
        &input[header..header + len],
        &input[header + len..],
    )
}

fn der_encode(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = vec![tag];
    match len {
        0..0x80 => out.push(len as u8),
        0x80..0x100 => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// What a holder of a P-256-signed certificate can do without any key: replace the signature
/// (r, s) by (r, n - s). Same TBSCertificate, still verifies, new bytes.
fn re_signed(der: &[u8]) -> Vec<u8> {
    let (_, certificate, _) = der_tlv(der);
    let (tbs, _, rest) = der_tlv(certificate);
    let (algorithm, _, rest) = der_tlv(rest);
    let (_, bits, _) = der_tlv(rest);
    assert_eq!(bits[0], 0);
    let (_, value, _) = der_tlv(&bits[1..]);
    let (r, _, rest) = der_tlv(value);
    let (_, s, _) = der_tlv(rest);
    let s: Vec<u8> = s.iter().copied().skip_while(|b| *b == 0).collect();
    let mut s_padded = vec![0u8; 32 - s.len()];
    s_padded.extend(&s);
    // n - s, byte by byte from the right, with a borrow.
    let mut twin = [0u8; 32];
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let d = 0x100 + u16::from(P256_N[i]) - u16::from(s_padded[i]) - borrow;
        twin[i] = d as u8;
        borrow = u16::from(d < 0x100);
    }
    let mut twin: Vec<u8> = twin.iter().copied().skip_while(|b| *b == 0).collect();
    if twin[0] & 0x80 != 0 {
        twin.insert(0, 0);
    }
    let value = der_encode(0x30, &[r, &der_encode(0x02, &twin)].concat());
    let bits = der_encode(0x03, &[&[0][..], &value].concat());
    let copy = der_encode(0x30, &[tbs, algorithm, &bits].concat());
    assert_ne!(copy, der);
    copy
}

/// `leaf` presented with its signature re-encoded (and the intermediates it sends unchanged).
fn re_signed_leaf(leaf: &Leaf) -> Leaf {
    let der = re_signed(&leaf.der);
    let pem = common::pem("CERTIFICATE", &der);
    let mut chain_der = leaf.chain_der.clone();
    chain_der[0] = der.clone();
    Leaf {
        chain_pem: leaf.chain_pem.replacen(&leaf.pem, &pem, 1),
        der,
        pem,
        chain_der,
        ..leaf.clone()
    }
}

/// `leaf` sending these intermediates (DER) instead of its own.
fn with_intermediates(leaf: &Leaf, intermediates: &[&[u8]]) -> Leaf {
    let mut chain_pem = leaf.pem.clone();
    let mut chain_der = vec![leaf.der.clone()];
    for der in intermediates {
        chain_pem.push_str(&common::pem("CERTIFICATE", der));
        chain_der.push(der.to_vec());
    }
    Leaf {
        chain_pem,
        chain_der,
        ..leaf.clone()
    }
}

const RE_SIGNED_POLICY: &str = r#"
[deny_lists]
sha256_fingerprints = "revoked.txt"

[[rule]]
name = "paused-intermediate"
decision = "deny"
reason = "the intermediate CA is paused"
[rule.match]
issuer_ca_sha256 = "INTERMEDIATE"

[[rule]]
name = "everyone"
decision = "allow"
"#;

/// A deny list holding `valid` as issued and `no_dns` as re-signed (the fingerprints a user
/// copies from tokens and logs), and a deny rule on the intermediate's fingerprint.
fn re_signed_files(pki: &Pki) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    common::temp_file(
        &dir,
        "revoked.txt",
        &format!(
            "{}\n{}\n",
            sha256_b64(&pki.valid.der),
            sha256_b64(&re_signed(&pki.no_dns.der))
        ),
    );
    let policy = policy_in(
        &dir,
        &RE_SIGNED_POLICY.replace("INTERMEDIATE", &sha256_b64(&pki.intermediate.der)),
    );
    (dir, policy)
}

#[tokio::test]
async fn a_re_signed_certificate_stays_denied_over_mtls() {
    let pki = Pki::new();
    let (_dir, policy) = re_signed_files(&pki);
    // The intermediate is not in TLS_CLIENT_CA_FILE: its fingerprint comes from the client.
    let service = TlsService::start_process(&pki, &pki.root.pem, None, &[("POLICY_FILE", &policy)]);
    let intermediate = pki.intermediate.der.as_slice();
    let intermediate_twin = re_signed(intermediate);

    for (what, leaf, rule) in [
        (
            "listed, as issued",
            pki.valid.clone(),
            "deny_lists.sha256_fingerprints",
        ),
        (
            "listed, re-signed",
            re_signed_leaf(&pki.valid),
            "deny_lists.sha256_fingerprints",
        ),
        (
            "listed re-signed, as issued",
            pki.no_dns.clone(),
            "deny_lists.sha256_fingerprints",
        ),
        (
            "listed re-signed, re-signed",
            re_signed_leaf(&pki.no_dns),
            "deny_lists.sha256_fingerprints",
        ),
        (
            "paused CA, as issued",
            pki.via_intermediate.clone(),
            "paused-intermediate",
        ),
        (
            "paused CA re-signed",
            with_intermediates(&pki.via_intermediate, &[&intermediate_twin]),
            "paused-intermediate",
        ),
        (
            "paused CA in both encodings",
            with_intermediates(&pki.via_intermediate, &[&intermediate_twin, intermediate]),
            "paused-intermediate",
        ),
    ] {
        let (status, body) = mtls_token(&service, &pki, &leaf).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert_denied(status, &body, &[]);
        let line = assert_decision(&service.server, "deny", rule, leaf.spiffe(), MTLS);
        let presented = sha256_b64(&leaf.der);
        if rule.starts_with("deny_lists") {
            assert!(
                line["policy_matched"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("sha256_fingerprint '{presented}' is listed")),
                "{what}: {line}"
            );
        }
        if what == "paused CA re-signed" {
            // Only the twin of the presented intermediate is listed; the log says so. (With
            // both encodings sent, the chain is reduced to a fixed order first, so which one
            // counts as presented is not the client's choice.)
            assert!(
                line["policy_matched"]
                    .as_str()
                    .unwrap()
                    .contains("other ECDSA signature encoding"),
                "{what}: {line}"
            );
        }
    }

    // A re-signed certificate that is not listed gets its token; x5_sha256 is the hash of the
    // bytes presented. (No CRL is loaded here: `revoked` is an ordinary certificate.)
    let copy = re_signed_leaf(&pki.revoked);
    let (status, body) = mtls_token(&service, &pki, &copy).await;
    let claims = verify_tls(&service, &pki, &id_token(status, &body)).await;
    assert_eq!(
        claims["client"]["x5_sha256"],
        sha256_b64(&copy.der),
        "{claims}"
    );
    assert_eq!(claims["sub"], copy.spiffe(), "{claims}");
}

/// RFC 9440 byte sequence: `:base64:`.
fn sf_binary(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

#[tokio::test]
async fn a_re_signed_certificate_stays_denied_through_the_forwarded_certificate_flow() {
    let pki = Pki::new();
    let (dir, policy) = re_signed_files(&pki);
    let ca = common::temp_file(&dir, "client-ca.pem", &pki.root.pem)
        .display()
        .to_string();
    // Clients named by fingerprint: the client ID too is the hash of the bytes presented.
    let server = Server::start_process(&[
        ("AUTH_FLOWS", "forwarded-cert-client-credentials"),
        ("TLS_CLIENT_CA_FILE", &ca),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("MTLS_CLIENT_ID_ATTRIBUTE", "sha256"),
        ("POLICY_FILE", &policy),
    ]);
    let intermediate_twin = re_signed(&pki.intermediate.der);
    let post = |leaf: Vec<u8>, chain: Option<Vec<u8>>| {
        let mut request = common::client()
            .post(server.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("Client-Cert", sf_binary(&leaf))
            .body(GRANT);
        if let Some(chain) = chain {
            request = request.header("Client-Cert-Chain", sf_binary(&chain));
        }
        send(request)
    };
    for (what, leaf, chain, rule) in [
        (
            "listed, re-signed",
            re_signed(&pki.valid.der),
            None,
            "deny_lists.sha256_fingerprints",
        ),
        (
            "listed re-signed, as issued",
            pki.no_dns.der.clone(),
            None,
            "deny_lists.sha256_fingerprints",
        ),
        (
            "paused CA re-signed",
            pki.via_intermediate.der.clone(),
            Some(intermediate_twin.clone()),
            "paused-intermediate",
        ),
    ] {
        let client_id = sha256_b64(&leaf);
        let (status, body) = post(leaf, chain).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert_denied(status, &body, &[]);
        assert_decision(
            &server,
            "deny",
            rule,
            &client_id,
            "forwarded-cert-client-credentials",
        );
    }

    let copy = re_signed(&pki.revoked.der);
    let (status, body) = post(copy.clone(), None).await;
    let claims = common::verify(&id_token(status, &body), &server.base, AUDIENCE).await;
    assert_eq!(claims["sub"], sha256_b64(&copy), "{claims}");
    assert_eq!(claims["client"]["x5_sha256"], sha256_b64(&copy), "{claims}");
}

#[tokio::test]
async fn letter_case_does_not_walk_around_a_spiffe_id_deny_glob() {
    let policy = r#"
[[rule]]
name = "no-admin"
decision = "deny"
reason = "admin is not a workload"
[rule.match]
spiffe_id = "spiffe://example.org/ns/prod/sa/admin*"

[[rule]]
name = "everyone"
decision = "allow"
"#;
    // The load balancer's header flow: the SPIFFE ID it reports is validated too.
    let p = Policed::start(policy, &[], &[]);
    let (status, body) = p.token_as("spiffe://example.org/ns/prod/sa/admin").await;
    assert_denied(status, &body, &[]);
    for (id, why) in [
        (
            "spiffe://EXAMPLE.org/ns/prod/sa/admin",
            "the trust domain must be lowercase",
        ),
        (
            "SPIFFE://example.org/ns/prod/sa/admin",
            "the scheme must be written in lowercase ('spiffe://')",
        ),
        (
            "spiffe://example.org/ns/prod/sa/x/../admin",
            "the path has a '..' segment",
        ),
        (
            "spiffe://example.org/ns/prod/sa%2Fadmin",
            "it must not contain percent-encoding ('%')",
        ),
    ] {
        let (status, body) = p.token_as(id).await;
        assert_refused(
            status,
            &body,
            &format!(
                "Header x-client-cert-spiffe holds '{id}', which is not a valid SPIFFE ID: {why}"
            ),
        );
    }
    let (status, body) = p.token_as("spiffe://example.org/ns/prod/sa/web").await;
    id_token(status, &body);

    // Direct mutual TLS with certificates that carry such IDs.
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let service = TlsService::start(
        &pki,
        &pki.root.pem,
        None,
        &[("POLICY_FILE", &policy_in(&dir, policy))],
    );
    let issue = |spiffe: &str| {
        pki.root.issue(tls_support::Spec {
            spiffe: Some(spiffe.to_owned()),
            ..tls_support::Spec::client("admin", &[0x30, 0x01])
        })
    };
    let (status, body) = mtls_token(
        &service,
        &pki,
        &issue("spiffe://example.org/ns/prod/sa/admin"),
    )
    .await;
    assert_denied(status, &body, &[]);
    let id = "spiffe://Example.ORG/ns/prod/sa/admin";
    let (status, body) = mtls_token(&service, &pki, &issue(id)).await;
    assert_refused(
        status,
        &body,
        &format!(
            "The client certificate's SPIFFE ID '{id}' is not valid: the trust domain must be lowercase"
        ),
    );
}
