//! Key rotation across replicas and caches: three replicas behind a real HAProxy (Debian's
//! package, round robin), the emulator's STS validating the tokens through that address (the
//! issuer is the HAProxy URL) and caching discovery and the JWK Set as its responses allow,
//! continuous load (token requests through HAProxy, each token exchanged at the STS) while the
//! keys rotate:
//! - the two-phase rotation of the README (`keys generate` as next, rolled out, `keys check
//!   --replica` until every replica publishes it, `keys activate`, rolled out) with
//!   `JWKS_MAX_AGE=2`: no exchange fails;
//! - the timing-only rotation (each replica in turn gets a plain file whose first key is the new
//!   one) with the old JWK Set in the STS's cache: exchanges fail until the cache expires.
//!
//! BENCHMARKS.md records the counts ("Key rotation under load").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gcp_emulator::{Config as EmulatorConfig, Emulator, Provider};
use serde_json::Value;

use crate::forwarded::ProxyProcess;
use crate::support::{self as common, BIN, Server};

/// Concurrent loops of token request + exchange.
const LOOPS: usize = 4;
const STS_AUDIENCE: &str =
    "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/v";

/// Three replicas with a key file each, HAProxy in front, the emulator's STS trusting the
/// HAProxy URL as the issuer.
struct Fleet {
    replicas: Vec<Server>,
    files: Vec<PathBuf>,
    issuer: String,
    emulator: Emulator,
    haproxy: ProxyProcess,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the fleet with `key_file` copied to each replica and `JWKS_MAX_AGE=max_age`.
    async fn start(key_file: &str, max_age: u64) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let front = common::listener();
        let issuer = format!("http://127.0.0.1:{}", common::port_of(&front));
        let max_age = max_age.to_string();
        let (mut replicas, mut files) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let file = dir.path().join(format!("replica-{i}.pem"));
            replace(&file, key_file);
            let path = file.display().to_string();
            replicas.push(Server::start(&[
                ("TOKEN_ISSUER", &issuer),
                ("SIGNING_KEY_FILE", &path),
                ("JWKS_MAX_AGE", &max_age),
                ("TLS_RELOAD_INTERVAL", "1"),
                ("RATE_LIMIT_PER_CLIENT", "0"),
            ]));
            files.push(file);
        }
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("  server r{i} 127.0.0.1:{}\n", r.port))
            .collect();
        let config = format!(
            "global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend issuer\n  bind fd@0\n  default_backend replicas\nbackend replicas\n  balance roundrobin\n  http-response set-header X-Replica %s\n{servers}"
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let haproxy = ProxyProcess::spawn(
            "haproxy",
            &["-f", &cfg.display().to_string(), "-db"],
            &[],
            vec![dir.path().join("haproxy.out")],
            front,
        );
        let emulator = Emulator::start(
            EmulatorConfig {
                providers: vec![Provider::new("1", "p", "v", issuer.clone())],
                ..EmulatorConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        Fleet {
            replicas,
            files,
            issuer,
            emulator,
            haproxy,
            dir,
        }
    }

    /// Gives replica `i` the key file `text` (written whole, then renamed over its file).
    fn deploy(&self, i: usize, text: &str) {
        replace(&self.files[i], text);
    }

    fn replica_urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.base.clone()).collect()
    }
}

/// Writes `text` to a temporary file next to `path`, then renames it over `path`.
fn replace(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Runs `token-service keys ARGS` with `env`; its standard output, or the failure.
fn keys(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(BIN)
        .arg("keys")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}

/// What the load saw: exchanges that worked, those that failed (with a sample of why), and
/// the `kid`s of the tokens issued.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    reasons: std::sync::Mutex<Vec<String>>,
    kids: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    /// Token answers per replica (HAProxy's `X-Replica`).
    replicas: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

/// One token request through HAProxy and its exchange at the STS.
async fn exchange_once(http: &reqwest::Client, issuer: &str, sts: &str, tally: &Tally) {
    let mut request = http
        .post(format!("{issuer}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials");
    for (k, v) in common::lb_headers(common::SPIFFE) {
        request = request.header(k, v);
    }
    let fail = |why: String| {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        let mut reasons = tally.reasons.lock().unwrap();
        if reasons.len() < 5 {
            reasons.push(why);
        }
    };
    let body: Value = match request.send().await {
        Ok(r) if r.status() == 200 => {
            let replica = r
                .headers()
                .get("x-replica")
                .map_or_else(String::new, |v| v.to_str().unwrap().to_owned());
            *tally.replicas.lock().unwrap().entry(replica).or_default() += 1;
            r.json().await.unwrap()
        }
        Ok(r) => return fail(format!("/token answered {}", r.status())),
        Err(e) => return fail(format!("/token: {e}")),
    };
    let token = body["id_token"].as_str().unwrap().to_owned();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    *tally.kids.lock().unwrap().entry(kid).or_default() += 1;
    let form = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", STS_AUDIENCE),
        ("scope", "https://www.googleapis.com/auth/cloud-platform"),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("subject_token", &token),
    ];
    match http
        .post(format!("{sts}/v1/token"))
        .form(&form)
        .send()
        .await
    {
        Ok(r) if r.status() == 200 => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) => {
            let status = r.status();
            fail(format!(
                "STS answered {status}: {}",
                r.text().await.unwrap_or_default()
            ));
        }
        Err(e) => fail(format!("STS: {e}")),
    }
}

/// Runs [`LOOPS`] exchange loops until `stop` is set.
fn load(fleet: &Fleet, stop: &Arc<AtomicBool>) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let tasks = (0..LOOPS)
        .map(|_| {
            let (tally, stop) = (tally.clone(), stop.clone());
            let (issuer, sts) = (fleet.issuer.clone(), fleet.emulator.base_url());
            tokio::spawn(async move {
                let http = common::client();
                while !stop.load(Ordering::Relaxed) {
                    exchange_once(&http, &issuer, &sts, &tally).await;
                    // A steady load, not a flood: the machine is shared.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    (tally, tasks)
}

/// Stops the load and returns what it saw.
async fn finish(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
}

fn report(what: &str, tally: &Tally) -> String {
    format!(
        "{what}: {} exchanges ok, {} failed; tokens per kid {:?}, per replica {:?}; first failures {:?}",
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.kids.lock().unwrap(),
        tally.replicas.lock().unwrap(),
        tally.reasons.lock().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_rotation_under_load_fails_no_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("keys.pem");
    let master_path = master.display().to_string();
    let env = [
        ("SIGNING_KEY_FILE", master_path.as_str()),
        ("JWKS_MAX_AGE", "2"),
    ];
    let (ok, first) = keys(&["generate", "--ec", "--active"], &env);
    assert!(ok, "{first}");
    std::fs::write(&master, &first).unwrap();
    let fleet = Fleet::start(&first, 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, tasks) = load(&fleet, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 1: the new key is published as next on every replica, one after the other.
    let (ok, next) = keys(&["generate", "--ec"], &env);
    assert!(ok, "{next}");
    let text = format!("{first}{next}");
    std::fs::write(&master, &text).unwrap();
    for i in 0..3 {
        fleet.deploy(i, &text);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut check = vec!["check".to_owned()];
    for url in fleet.replica_urls() {
        check.extend(["--replica".to_owned(), url]);
    }
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out) = keys(&check, &env);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas never published the next key: {out}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Phase 2: the next key signs from a time every replica reads alike.
    let (ok, out) = keys(&["activate", "--in", "3", "--write"], &env);
    assert!(ok, "{out}");
    let activated = std::fs::read_to_string(&master).unwrap();
    for i in 0..3 {
        fleet.deploy(i, &activated);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Past signs-from, and long enough for every cache to have turned over.
    tokio::time::sleep(Duration::from_secs(5)).await;
    finish(&stop, tasks).await;

    let summary = report("two-phase rotation, JWKS_MAX_AGE=2", &tally);
    eprintln!("{summary}");
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "{summary}");
    let kids = tally.kids.lock().unwrap();
    assert_eq!(kids.len(), 2, "both keys signed during the run: {summary}");
    assert!(tally.ok.load(Ordering::Relaxed) > 20, "{summary}");
    drop(kids);
    let served = tally.replicas.lock().unwrap();
    assert_eq!(
        served.keys().cloned().collect::<Vec<_>>(),
        ["r0", "r1", "r2"],
        "HAProxy spread the load over the three replicas: {summary}"
    );
    drop(served);
    assert!(
        !fleet.haproxy.log().contains("ALERT"),
        "{}",
        fleet.haproxy.log()
    );
    drop(fleet.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_only_rotation_fails_exchanges_while_the_sts_caches_the_old_set() {
    let (old, new) = (common::ec_key_pem(), common::ec_key_pem());
    // JWKS_MAX_AGE=30: the STS keeps the set it fetched at the start for the whole run.
    let fleet = Fleet::start(&old, 30).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, tasks) = load(&fleet, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Today's procedure without waiting: each replica in turn gets the new key first (it
    // signs) and the old one after it (published).
    let text = format!("{new}{old}");
    for i in 0..3 {
        fleet.deploy(i, &text);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    finish(&stop, tasks).await;

    let summary = report("timing-only rotation, JWKS_MAX_AGE=30", &tally);
    eprintln!("{summary}");
    assert!(tally.failed.load(Ordering::Relaxed) > 0, "{summary}");
    let reasons = tally.reasons.lock().unwrap().join("\n");
    assert!(reasons.contains("was not found in the JWKS"), "{reasons}");
    drop(fleet.dir);
}

/// Runs the binary with `args` and exactly `env`: exit code, stdout, stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = std::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_shows_the_key_states_and_refuses_a_file_that_breaks_a_rule() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.pem");
    let path = file.display().to_string();
    let env = [
        ("SIGNING_KEY_FILE", path.as_str()),
        ("TOKEN_AUDIENCE", "aud"),
        ("TOKEN_ISSUER", "https://issuer.example"),
        ("DATA_DIR", "/nonexistent"),
    ];
    let (ok, active) = keys(&["generate", "--ec", "--active"], &env);
    assert!(ok, "{active}");
    let (ok, next) = keys(&["generate", "--ec"], &env);
    assert!(ok, "{next}");
    std::fs::write(&file, format!("{active}{next}")).unwrap();
    let (code, out, err) = run(&["check-config"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signing keys: ES256 key "), "{out}");
    assert!(out.contains("): active, published-at "), "{out}");
    assert!(out.contains("): next, published-at "), "{out}");
    assert!(out.contains("JWKS_MAX_AGE"), "{out}");

    // Two active keys: refused at startup, naming the setting, one line per problem.
    std::fs::write(
        &file,
        format!("{active}{}", next.replace("state=next", "state=active")),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config"], &env);
    assert_eq!(code, 2, "{out}{err}");
    let line = err
        .lines()
        .find(|l| l.contains("exactly one key signs"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.starts_with(&format!("error: SIGNING_KEY_FILE: '{path}': ")),
        "{line}"
    );

    // keys check: exit 1, one line per broken rule.
    let (code, out, _) = run(&["keys", "check"], &env);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("exactly one key signs"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_jwks_may_be_cached_for_jwks_max_age_and_keys_check_asks_the_replicas() {
    let server = Server::start(&[("JWKS_MAX_AGE", "7")]);
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ] {
        let response = common::client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=7",
            "{path}"
        );
    }
    // The replica publishes the harness's key; a file with another key is not published there.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.pem");
    let path = file.display().to_string();
    std::fs::write(&file, common::ec_key_pem()).unwrap();
    let base = server.base.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(&["keys", "check", "--file", &path, "--replica", &base], &[])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("does not publish key"), "{out}");
    assert!(out.contains("which the file lacks"), "{out}");
}

/// The README's code block that contains `marker`.
fn readme_block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    readme
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.trim_start_matches("sh").trim().to_owned())
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("README has no code block with {marker:?}"))
}

/// Runs `script` with bash in `dir`, `token-service` on the PATH, and `env`; fails on the first
/// failing command.
fn bash(script: &str, dir: &Path, env: &[(&str, &str)]) -> String {
    let bin_dir = Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let output = std::process::Command::new("timeout")
        .args(["60", "bash", "-c", &format!("set -euo pipefail\n{script}")])
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{script}\n---\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_rotation_commands_run_as_written_against_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.pem");
    let path = file.display().to_string();
    let env = [("SIGNING_KEY_FILE", path.as_str()), ("JWKS_MAX_AGE", "1")];
    let start = readme_block("keys generate --active");
    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking({
        let (cwd, env) = (cwd.clone(), env.map(|(k, v)| (k.to_owned(), v.to_owned())));
        move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            bash(&start, &cwd, &env)
        }
    })
    .await
    .unwrap();
    assert!(out.contains("as active"), "{out}");
    let replica = Server::start(&[
        ("SIGNING_KEY_FILE", &path),
        ("JWKS_MAX_AGE", "1"),
        ("TLS_RELOAD_INTERVAL", "1"),
    ]);
    let first = replica.key_id_published().await;
    assert_eq!(first.len(), 1);

    let rotation = readme_block("keys activate --write");
    let rotation = rotation
        .replace(
            "--replica https://replica-1:8443 --replica https://replica-2:8443",
            &format!("--replica {}", replica.base),
        )
        .replace("sleep 5", "sleep 1");
    assert!(
        rotation.contains(&format!("--replica {}", replica.base)),
        "{rotation}"
    );
    let out = tokio::task::spawn_blocking({
        let env = env.map(|(k, v)| (k.to_owned(), v.to_owned()));
        move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            bash(&rotation, &cwd, &env)
        }
    })
    .await
    .unwrap();
    assert!(out.contains("the keys keep every rule"), "{out}");
    assert!(
        out.contains("retired*"),
        "the old key signs until signs-from: {out}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("state=retired") && text.contains("signs-from="),
        "{text}"
    );
    // The replica reloaded the file: it publishes both keys.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while replica.key_id_published().await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never published the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Server {
    /// The `kid`s of this server's JWK Set.
    async fn key_id_published(&self) -> Vec<String> {
        let set: Value = common::client()
            .get(self.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// The real process reloads its key file: a broken version is logged and the keys in force
/// stay; a good one is logged and published, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_reloads_its_key_file_and_keeps_its_keys_when_a_version_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.pem");
    let path = file.display().to_string();
    let env = [("SIGNING_KEY_FILE", path.as_str())];
    let (ok, first) = keys(&["generate", "--ec", "--active"], &env);
    assert!(ok, "{first}");
    std::fs::write(&file, &first).unwrap();
    let server =
        Server::start_process(&[("SIGNING_KEY_FILE", &path), ("TLS_RELOAD_INTERVAL", "1")]);
    let before = server.key_id_published().await;
    let event = |name: &str| {
        let name = name.to_owned();
        move |server: &Server| {
            server
                .json_logs()
                .iter()
                .filter(|l| l["logging.googleapis.com/labels"]["event"] == name.as_str())
                .count()
        }
    };
    let wait_for = |count: &dyn Fn(&Server) -> usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count(&server) == 0 {
            assert!(std::time::Instant::now() < deadline, "{}", server.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // A second active key: refused, logged, the old set stays.
    let (_, other) = keys(&["generate", "--ec", "--active"], &env);
    replace(&file, &format!("{first}{other}"));
    let failed = event("signing_keys_reload_failed");
    wait_for(&failed);
    assert!(
        server.logs().contains("exactly one key signs"),
        "{}",
        server.logs()
    );
    // Tried again every interval, logged once.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(failed(&server), 1, "{}", server.logs());
    assert_eq!(server.key_id_published().await, before);
    // A next key: reloaded, published.
    let (_, next) = keys(&["generate", "--ec"], &env);
    replace(&file, &format!("{first}{next}"));
    wait_for(&event("signing_keys_reloaded"));
    let after = server.key_id_published().await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before[0]);
}

/// The `kid` of the key `token_service_signing_key_info` names.
async fn metric_kid(server: &Server) -> String {
    let text = common::client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("token_service_signing_key_info{"))
        .unwrap_or_else(|| panic!("{text}"));
    let at = line.find("kid=\"").unwrap() + 5;
    line[at..].split('"').next().unwrap().to_owned()
}

/// The `kid` in the header of a freshly issued token.
async fn token_kid(server: &Server) -> String {
    let response = common::token(server, "grant_type=client_credentials", &[]).await;
    let body: Value = response.json().await.unwrap();
    let header = jsonwebtoken::decode_header(body["id_token"].as_str().unwrap()).unwrap();
    header.kid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_metric_follows_a_scheduled_switch() {
    let rfc3339 = |unix: i64| {
        time::OffsetDateTime::from_unix_timestamp(unix)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let switch = rfc3339(now + 3);
    let text = format!(
        "# token-service: state=retired retired-at={switch}\n{}# token-service: state=active published-at={} signs-from={switch}\n{}",
        common::ec_key_pem(),
        rfc3339(now - 60),
        common::ec_key_pem()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.pem");
    std::fs::write(&file, text).unwrap();
    let path = file.display().to_string();
    let server = Server::start(&[("SIGNING_KEY_FILE", &path), ("JWKS_MAX_AGE", "30")]);
    let old = token_kid(&server).await;
    assert_eq!(metric_kid(&server).await, old);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let new = token_kid(&server).await;
    assert_ne!(new, old, "the scheduled key did not start signing");
    assert_eq!(metric_kid(&server).await, new);
}

#[test]
fn a_key_file_rewritten_with_write_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.pem");
    let path = file.display().to_string();
    let env = [("SIGNING_KEY_FILE", path.as_str()), ("JWKS_MAX_AGE", "0")];
    let (ok, first) = keys(&["generate", "--ec", "--active"], &env);
    assert!(ok, "{first}");
    let (ok, next) = keys(&["generate", "--ec"], &env);
    assert!(ok, "{next}");
    std::fs::write(&file, format!("{first}{next}")).unwrap();
    // Group-readable, as for a service user in the file's group (README).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, out) = keys(&["activate", "--in", "5", "--write"], &env);
    assert!(ok, "{out}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the rewrite changed the mode to {mode:o}");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("signs-from=")
    );
}

#[tokio::test]
async fn discovery_lists_the_algorithm_of_every_published_key_the_signing_one_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.pem");
    let path = file.display().to_string();
    let env = [("SIGNING_KEY_FILE", path.as_str())];
    let (ok, active) = keys(&["generate", "--ec", "--active"], &env);
    assert!(ok, "{active}");
    let (ok, next) = keys(&["generate"], &env);
    assert!(ok, "{next}");
    std::fs::write(&file, format!("{active}{next}")).unwrap();
    let server = Server::start(&[("SIGNING_KEY_FILE", &path)]);
    let discovery: Value = common::client()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A verifier that holds to this list still accepts the RSA key's tokens once it signs.
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "RS256"])
    );
}
