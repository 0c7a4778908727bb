//! The README's "On the device" section as a contract: it names every broker setting, and its
//! laptop walkthrough runs as written: the demo broker with a pool, the emulator trusting the
//! demo's CA, then on the device `token-client token`, the executable source with Python's
//! google-auth, `serve` with a curl of the metadata endpoint and google-auth through
//! `GCE_METADATA_HOST`, the file and URL sources, and the curl executable command of "Without
//! the binary". Replaced: the fixed ports (by free ones),
//! `cargo run`/`cargo build` (by the built binaries; `./target/release/token-client` is a link
//! to the test's binary), `python3` (by the Python with google-auth) and HOME (a temporary
//! folder).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::*;

const SECTION: &str = "## On the device: token-client";

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// The device section, up to the next `## ` heading.
fn section(readme: &str) -> &str {
    let start = readme.find(SECTION).expect("README has no device section");
    let rest = &readme[start + SECTION.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The section's `sh` block that contains `marker`.
fn block(section: &str, marker: &str) -> String {
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|b| b.strip_prefix("sh\n"))
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("the device section has no sh block with {marker:?}"))
        .to_owned()
}

/// `text` with each `from` replaced by its `to`; every `from` must occur.
fn substitute(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in pairs {
        assert!(text.contains(from), "{from:?} is not in:\n{text}");
        text = text.replace(from, to);
    }
    text
}

/// The README's device section names every broker setting (the subcommands' are in
/// `token-client --help`, checked by a unit test).
#[test]
fn readme_lists_every_broker_setting() {
    use clap::CommandFactory as _;
    let readme = readme();
    let section = section(&readme);
    let command = token_client::settings::Cli::command();
    let global: Vec<_> = command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .collect();
    assert_eq!(global.len(), 7);
    for arg in global {
        let env = arg.get_env().unwrap().to_string_lossy().into_owned();
        assert!(section.contains(&format!("`{env}`")), "README lacks {env}");
        assert!(section.contains(&format!("`--{}`", arg.get_long().unwrap())));
    }
    for shared in [
        "TOKEN_CLIENT_LISTEN",
        "TOKEN_CLIENT_TOKEN_FILE",
        "TOKEN_CLIENT_TOKEN_AUDIENCE",
        "TOKEN_CLIENT_AUDIENCE_TOKEN_FILE",
        "TOKEN_CLIENT_AWS_ROLE_ARN",
        "TOKEN_CLIENT_AWS_ROLE_SESSION_NAME",
        "TOKEN_CLIENT_AWS_DURATION_SECONDS",
        "TOKEN_CLIENT_AWS_AUTHORIZATION_TOKEN_FILE",
    ] {
        assert!(
            section.contains(&format!("`{shared}`")),
            "README lacks {shared}"
        );
    }
}

/// The walkthrough's folder, the addresses that replace the README's fixed ports (each learnt
/// from a listener bound to port 0, never taken by binding and releasing), and the Python.
struct Walkthrough {
    dir: tempfile::TempDir,
    demo: String,
    emulator: String,
    serve: String,
    python: String,
}

impl Walkthrough {
    fn new() -> Walkthrough {
        let python = libraries::python()
            .get_program()
            .to_string_lossy()
            .into_owned();
        Walkthrough {
            dir: tempfile::tempdir().unwrap(),
            demo: String::new(),
            emulator: String::new(),
            serve: String::new(),
            python,
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `script` in the walkthrough's folder with only PATH and HOME from here, stopped
    /// after two minutes.
    fn bash(&self, script: &str) -> Command {
        let mut command = Command::new("timeout");
        command.args(["120", "bash", "-euo", "pipefail", "-c", script]);
        self.clean(command)
    }

    /// A server's `script` (`exec`s it, so that its process is the server).
    fn server(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command.args(["-c", &format!("exec env {}", script.trim())]);
        self.clean(command)
    }

    fn clean(&self, mut command: Command) -> Command {
        command
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", env_setting("PATH").unwrap_or_default())
            .env("HOME", self.home());
        command
    }

    /// The ports and the Python of the walkthrough in `text` (where they occur).
    fn ports(&self, text: &str) -> String {
        text.replace("127.0.0.1:8443", &self.demo)
            .replace("127.0.0.1:9090", &self.emulator)
            .replace("127.0.0.1:8954", &self.serve)
            .replace("python3 -c", &format!("{} -c", self.python))
    }
}

async fn run(command: Command) -> Output {
    let mut command = command;
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn assert_ok(output: &Output, script: &str) -> Vec<String> {
    assert!(
        output.status.success(),
        "{script}\nstdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
    stdout(output).lines().map(str::to_owned).collect()
}

/// The demo broker with the pool and the emulator, from the README's two terminals. Each
/// names the other: the demo starts on port 0 with the emulator's address held by a relay
/// bound to port 0, and the relay forwards to the emulator once it has started on port 0.
async fn start_brokers(w: &mut Walkthrough, section: &str) -> (Process, Process, Relay) {
    let relay = Relay::bind().await;
    w.emulator = relay.address.to_string();
    let demo = block(section, "cargo run --release -- demo");
    let demo = substitute(
        &w.ports(&demo),
        &[("cargo run --release --", broker_bin().to_str().unwrap())],
    );
    let demo = Process::start(w.server(&format!("PORT=0 {demo}")), "listening on ");
    w.demo = address_of(&demo.url);
    let emulator = block(section, "cargo run --release -p gcp-emulator");
    let emulator_port = "0";
    let emulator = substitute(
        &emulator,
        &[
            (
                "cargo run --release -p gcp-emulator --",
                emulator_bin().to_str().unwrap(),
            ),
            ("--port 9090", &format!("--port {emulator_port}")),
        ],
    );
    let emulator = Process::start(w.server(&w.ports(&emulator)), "listening on ");
    relay.start_tcp(&address_of(&emulator.url));
    (demo, emulator, relay)
}

/// `host:port` of a `scheme://host:port[/…]` URL.
fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Checks the device block's two lines of output: the ID token and the JSON with the
/// impersonated access token.
fn check_token_output(lines: &[String]) {
    assert_eq!(lines.len(), 2, "{lines:?}");
    let claims = crate::serve::claims(&lines[0]);
    assert_eq!(
        claims["sub"], "spiffe://token-service.local/ns/demo/sa/device-1",
        "{claims}"
    );
    let json: Value = serde_json::from_str(&lines[1]).unwrap();
    assert!(
        json["access_token"].as_str().unwrap().starts_with("ya29."),
        "{json}"
    );
    assert!(json["expires_in"].as_u64().unwrap() >= 3000, "{json}");
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_device_walkthrough_runs_as_written() {
    let readme = readme();
    let section = section(&readme);
    let mut w = Walkthrough::new();
    std::fs::create_dir(w.home()).unwrap();
    let (demo, emulator, relay) = start_brokers(&mut w, section).await;
    let release = w.dir.path().join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::os::unix::fs::symlink(CLIENT, release.join("token-client")).unwrap();

    let device = block(section, "cargo build --release -p token-client");
    let device = substitute(&device, &[("cargo build --release -p token-client\n", "")]);
    let device = w.ports(&device);
    let exports: String = device
        .lines()
        .filter(|l| l.starts_with("export "))
        .map(|l| format!("{l}\n"))
        .collect();
    let output = run(w.bash(&device)).await;
    check_token_output(&assert_ok(&output, &device));
    check_curl_command(&w, section).await;

    let executable = w.ports(&block(section, "--source executable"));
    let script = format!("{exports}{executable}");
    let lines = assert_ok(&run(w.bash(&script)).await, &script);
    assert!(lines.last().unwrap().starts_with("ya29."), "{lines:?}");
    let cache = w.home().join(".cache/token-client/google-executable.json");
    assert_eq!(mode(&cache), 0o600);

    // The block's first line starts serve in the background (`&`): the test starts that line
    // itself on port 0 (TOKEN_CLIENT_LISTEN, which the URL source reads too), runs the rest
    // of the block and the sources' block, asks Python for a token with the URL-sourced
    // configuration, and stops serve.
    let serve = block(section, "token-client serve");
    let (serve_line, rest) = serve.split_once('\n').unwrap();
    let serve_line = serve_line.trim().strip_suffix('&').unwrap().trim();
    let mut agent = Command::new("bash");
    agent.args([
        "-euo",
        "pipefail",
        "-c",
        &format!("{exports}export TOKEN_CLIENT_LISTEN=127.0.0.1:0\nexec {serve_line}"),
    ]);
    let mut agent = Process::start(w.clean(agent), "listening on ");
    w.serve = address_of(&agent.url);
    let serve = w.ports(rest);
    let sources = w.ports(&block(section, "--source file"));
    let url_config = w
        .home()
        .join(".config/token-client/google-url-credentials.json");
    let python_line = sources
        .lines()
        .find(|l| l.contains(" -c "))
        .unwrap()
        .to_owned();
    let script = format!(
        "export TOKEN_CLIENT_LISTEN={}\n{exports}{serve}{sources}GOOGLE_APPLICATION_CREDENTIALS={} {python_line}\n",
        w.serve,
        url_config.display()
    );
    let output = run(w.bash(&script)).await;
    let lines = assert_ok(&output, &script);
    check_serve_output(&lines, &output);
    assert!(agent.terminate().success());
    assert!(
        agent.logs().contains("SIGTERM received"),
        "{}",
        agent.logs()
    );
    check_audience_token_files(&w, section, &exports).await;
    drop((demo, emulator, relay));
}

/// The "Other audiences" block: a second `serve` keeps token files for AWS's and Entra's
/// audiences (the demo lists them in TOKEN_AUDIENCES); the test waits for the files its
/// exports name, prints their tokens and stops that `serve`.
async fn check_audience_token_files(w: &Walkthrough, section: &str, exports: &str) {
    let block = block(section, "--audience-token-file");
    let block = substitute(&w.ports(&block), &[("127.0.0.1:8955", "127.0.0.1:0")]);
    let check = r#"serve=$!
for _ in $(seq 100); do
  [ -s "$AWS_WEB_IDENTITY_TOKEN_FILE" ] && [ -s "$AZURE_FEDERATED_TOKEN_FILE" ] && break
  sleep 0.1
done
cat "$AWS_WEB_IDENTITY_TOKEN_FILE"; echo; cat "$AZURE_FEDERATED_TOKEN_FILE"; echo
kill "$serve"
"#;
    let script = format!("{exports}{block}{check}");
    let output = run(w.bash(&script)).await;
    let lines = assert_ok(&output, &script);
    assert_eq!(lines.len(), 2, "{lines:?}\n{}", stderr(&output));
    let aws = crate::serve::claims(&lines[0]);
    let entra = crate::serve::claims(&lines[1]);
    assert_eq!(aws["aud"], "sts.amazonaws.com", "{aws}");
    assert_eq!(entra["aud"], "api://AzureADTokenExchange", "{entra}");
    let lifetime = |c: &Value| c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert_eq!(lifetime(&entra), 900, "TOKEN_AUDIENCE_VALIDITY: {entra}");
    for file in ["aws.jwt", "entra.jwt"] {
        assert_eq!(
            mode(&w.home().join(".cache/token-client").join(file)),
            0o600
        );
    }
}

/// The curl's metadata token, google-auth's tokens through the metadata server, the token
/// file and the URL source, and the URL configuration's export line.
fn check_serve_output(lines: &[String], output: &Output) {
    let context = || format!("{lines:?}\n{}", stderr(output));
    assert_eq!(lines.len(), 5, "{}", context());
    let metadata: Value =
        serde_json::from_str(&lines[0]).unwrap_or_else(|_| panic!("{}", context()));
    assert_eq!(metadata["token_type"], "Bearer", "{metadata}");
    assert!(
        metadata["expires_in"].as_u64().unwrap() >= 300,
        "{metadata}"
    );
    assert_eq!(
        lines[1],
        metadata["access_token"].as_str().unwrap(),
        "{}",
        context()
    );
    assert!(lines[2].starts_with("ya29."), "{}", context());
    assert!(
        lines[3].starts_with("export GOOGLE_APPLICATION_CREDENTIALS="),
        "{}",
        context()
    );
    assert!(lines[4].starts_with("ya29."), "{}", context());
}

/// The "without the binary" curl command, as the library runs it (no shell, any folder),
/// with the demo's files, address and CA (`CURL_CA_BUNDLE`) substituted: the executable
/// response on stdout, nothing on stderr, exit 0.
async fn check_curl_command(w: &Walkthrough, section: &str) {
    let gcloud = block(section, "create-cred-config");
    let start = gcloud.find("--executable-command='").unwrap() + "--executable-command='".len();
    let command = &gcloud[start..];
    let command = &command[..command.find('\'').unwrap()];
    let pki = w.dir.path().join(".token-service/pki");
    let command = substitute(
        command,
        &[
            (
                "/ABSOLUTE/PATH/client.pem",
                pki.join("client.pem").to_str().unwrap(),
            ),
            (
                "/ABSOLUTE/PATH/client.key",
                pki.join("client.key").to_str().unwrap(),
            ),
            ("YOUR-DOMAIN", &w.demo),
        ],
    );
    let words: Vec<&str> = command.split(' ').collect();
    let mut curl = Command::new(words[0]);
    curl.args(&words[1..])
        .current_dir("/")
        .env_clear()
        .env("CURL_CA_BUNDLE", pki.join("ca.pem"));
    let output = run(curl).await;
    assert_eq!(output.status.code(), Some(0), "{command}");
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    let body: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    assert!(body["expiration_time"].is_u64(), "{body}");
}
