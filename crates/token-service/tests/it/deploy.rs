//! The container image and the deployment manifests, checked as far as CI can without Docker or
//! a cluster: the Dockerfile's stages (static build, minimal non-root final image), the YAML of
//! `deploy/kubernetes.yaml` and `deploy/cloud-run.yaml` (kinds, setting names, mounted files,
//! probes, security context), and both manifests' settings run through the real binary:
//! `check-config`, then `serve` answering the manifests' probes and issuing a token, with files
//! from `token-service pki` standing in for the mounted Secrets and the Google API emulator for
//! Cloud Run's metadata server and IAM.

use crate::support as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{BIN, Server, builtin_settings, ec_key_pem, lb_headers};
use gcp_emulator::{Config as EmulatorConfig, Emulator};
use serde::Deserialize as _;
use serde_yaml_ng::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const KUBERNETES: &str = "deploy/kubernetes.yaml";
const CLOUD_RUN: &str = "deploy/cloud-run.yaml";
/// The image's numeric user (Dockerfile `USER`), which `runAsUser` must match.
const IMAGE_UID: u64 = 65532;
/// Liveness and readiness, the paths the service serves for probes.
const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
/// Settings the reference's Cloud Run `app.yaml` set; they must keep working unchanged.
const REFERENCE_ENV: &[&str] = &[
    "AUTH_FLOWS",
    "TOKEN_VALIDITY",
    "WORKLOAD_IDENITY_PROJECT_NUMBER",
    "WORKLOAD_IDENITY_POOL_ID",
    "WORKLOAD_IDENITY_PROVIDER_ID",
    "MTLS_HEADER_CLIENT_ID",
];
/// Environment names Cloud Run sets itself and refuses in a service.
const CLOUD_RUN_RESERVED: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];
/// Values for the placeholders of `deploy/cloud-run.yaml` (filled by `envsubst`).
const CLOUD_RUN_VALUES: &[(&str, &str)] = &[
    ("PROJECT_ID", "demo-project"),
    ("PROJECT_NUMBER", "123456789012"),
    ("REGION", "europe-west1"),
    ("POOL_ID", "devices"),
    ("PUBLIC_FQDN", "tokens.example.com"),
];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse_documents(name: &str, text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
        })
        .collect()
}

fn documents(path: &str) -> Vec<Value> {
    parse_documents(path, &read(path))
}

fn kinds(docs: &[Value]) -> Vec<(String, String)> {
    docs.iter()
        .map(|d| {
            (
                text(&d["apiVersion"]).to_owned(),
                text(&d["kind"]).to_owned(),
            )
        })
        .collect()
}

fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn only_container(pod: &Value) -> &Value {
    let containers = seq(&pod["containers"]);
    assert_eq!(containers.len(), 1, "expected one container");
    &containers[0]
}

/// The container's environment: (name, literal value, or None for `valueFrom`).
fn env(container: &Value) -> Vec<(String, Option<String>)> {
    seq(&container["env"])
        .iter()
        .map(|entry| {
            let name = text(&entry["name"]).to_owned();
            let value = match (&entry["value"], &entry["valueFrom"]) {
                (Value::String(v), Value::Null) => Some(v.clone()),
                (Value::Null, Value::Mapping(_)) => None,
                (other, _) => panic!(
                    "env {name}: the value must be a string (Kubernetes and Cloud Run refuse numbers and booleans; quote them), got {other:?}"
                ),
            };
            (name, value)
        })
        .collect()
}

fn literal(env: &[(String, Option<String>)], name: &str) -> Option<String> {
    env.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.clone())
}

/// Settings whose value is a path the service reads.
fn is_path_setting(name: &str) -> bool {
    name.ends_with("_FILE") || name == "GOOGLE_APPLICATION_CREDENTIALS" || name == "DATA_DIR"
}

/// The Secret volume and key that hold `path` in this container: (secret name, key).
fn mounted_file(pod: &Value, container: &Value, path: &str) -> Option<(String, String)> {
    let mount = seq(&container["volumeMounts"]).iter().find(|m| {
        let dir = text(&m["mountPath"]).trim_end_matches('/');
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
    })?;
    let dir = text(&mount["mountPath"]).trim_end_matches('/');
    let key = path[dir.len() + 1..].to_owned();
    let volume_name = text(&mount["name"]);
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| text(&v["name"]) == volume_name)
        .unwrap_or_else(|| panic!("volume {volume_name} (mounted at {dir}) is not defined"));
    if volume["secret"].is_null() && !volume["emptyDir"].is_null() {
        // A writable scratch folder (the CRL cache), not a file the service reads.
        return None;
    }
    assert_eq!(
        mount["readOnly"].as_bool(),
        Some(true),
        "the volume mount {dir} must be readOnly"
    );
    let secret = &volume["secret"];
    let secret_name = secret["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("volume {volume_name} must be a Secret"));
    match secret["items"].as_sequence() {
        Some(items) => assert!(
            items
                .iter()
                .any(|i| i["path"].as_str() == Some(key.as_str())),
            "{path}: Secret {secret_name} projects no item {key}"
        ),
        None => assert!(
            !key.contains('/'),
            "{path}: a Secret volume without items holds only top-level keys"
        ),
    }
    Some((secret_name.to_owned(), key))
}

/// The HTTP probes of a container: (probe kind, path, scheme, container port); each path is one
/// the service serves and each port one the container declares.
fn probes(container: &Value) -> Vec<(String, String, String, u64)> {
    let ports = seq(&container["ports"]);
    let mut out = Vec::new();
    for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[kind]["httpGet"];
        if get.is_null() {
            continue;
        }
        let path = text(&get["path"]).to_owned();
        assert!(
            [HEALTHZ, READYZ].contains(&path.as_str()),
            "{kind} requests {path}, which the service does not serve; use {HEALTHZ} or {READYZ}"
        );
        let port = &get["port"];
        let number = ports
            .iter()
            .find(|p| match port {
                Value::String(name) => p["name"].as_str() == Some(name),
                Value::Number(n) => p["containerPort"].as_u64() == n.as_u64(),
                _ => false,
            })
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{kind}: port {port:?} is not a port of the container"));
        let scheme = get["scheme"].as_str().unwrap_or("HTTP").to_owned();
        out.push((kind.to_owned(), path, scheme, number));
    }
    out
}

fn assert_probe(container: &Value, kind: &str, path: &str) {
    assert!(
        probes(container)
            .iter()
            .any(|(k, p, _, _)| k == kind && p == path),
        "expected a {kind} on {path}"
    );
}

/// Checks shared by both manifests: every environment name is a setting, set once; every path
/// setting points into a read-only Secret volume; probes hit served paths, over HTTPS exactly
/// when the service terminates TLS.
fn check_container(pod: &Value, container: &Value) {
    let env = env(container);
    let settings = builtin_settings();
    let known: BTreeSet<&str> = settings.iter().map(|s| s.name).collect();
    let mut seen = BTreeSet::new();
    for (name, value) in &env {
        assert!(
            known.contains(name.as_str()),
            "{name} is not a setting of token_service::config::table"
        );
        assert!(seen.insert(name.clone()), "{name} is set twice");
        if is_path_setting(name) {
            let path = value
                .as_deref()
                .unwrap_or_else(|| panic!("{name} must be a literal path"));
            assert!(
                mounted_file(pod, container, path).is_some(),
                "{name}={path} is not inside a mounted volume"
            );
        }
    }
    let tls = literal(&env, "TLS_CERT_FILE").is_some();
    let admin: Option<u64> = literal(&env, "ADMIN_PORT").map(|p| p.parse().unwrap());
    let probes = probes(container);
    assert!(
        probes.iter().any(|(_, path, _, _)| path == HEALTHZ),
        "no probe on {HEALTHZ}"
    );
    assert!(
        probes.iter().any(|(_, path, _, _)| path == READYZ),
        "no probe on {READYZ}"
    );
    for (kind, _, scheme, port) in &probes {
        // The admin port is plain HTTP; the main one speaks TLS when the service terminates it.
        let expected = if tls && admin != Some(*port) {
            "HTTPS"
        } else {
            "HTTP"
        };
        assert_eq!(scheme, expected, "{kind}: port {port} speaks {expected}");
    }
    let limits = &container["resources"]["limits"];
    assert!(
        !limits["cpu"].is_null() && !limits["memory"].is_null(),
        "resource limits for cpu and memory"
    );
    check_crl_cache(pod, container, &env);
}

/// `TLS_CLIENT_CRL_CACHE_DIR` lies in a writable emptyDir volume (the root file system is
/// read-only), bounded in size, mounted without readOnly.
fn check_crl_cache(pod: &Value, container: &Value, env: &[(String, Option<String>)]) {
    let dir = literal(env, "TLS_CLIENT_CRL_CACHE_DIR")
        .expect("TLS_CLIENT_CRL_CACHE_DIR is set to the writable volume");
    let mount = seq(&container["volumeMounts"])
        .iter()
        .find(|m| {
            let at = text(&m["mountPath"]).trim_end_matches('/');
            dir == at
                || dir
                    .strip_prefix(at)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .unwrap_or_else(|| panic!("TLS_CLIENT_CRL_CACHE_DIR={dir} is not inside a mounted volume"));
    assert_ne!(
        mount["readOnly"].as_bool(),
        Some(true),
        "the CRL cache volume must be writable"
    );
    let name = text(&mount["name"]);
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| text(&v["name"]) == name)
        .unwrap_or_else(|| panic!("volume {name} is not defined"));
    let empty_dir = &volume["emptyDir"];
    assert!(
        !empty_dir.is_null(),
        "the CRL cache volume {name} is an emptyDir"
    );
    assert!(
        empty_dir["sizeLimit"].as_str().is_some(),
        "the CRL cache volume {name} has a sizeLimit"
    );
}

/// The serving port: the first one the container declares.
fn container_port(container: &Value) -> u64 {
    let ports = seq(&container["ports"]);
    assert!(!ports.is_empty(), "expected a container port");
    ports[0]["containerPort"].as_u64().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

/// One `FROM` stage: its base, its name and its instructions (keyword, arguments), with line
/// continuations joined and comments dropped.
struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a.as_str())
            .collect()
    }

    fn one(&self, keyword: &str) -> &str {
        let all = self.all(keyword);
        assert_eq!(
            all.len(),
            1,
            "expected one {keyword} in stage {}",
            self.from
        );
        all[0]
    }
}

fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    logical.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_owned());
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage {
                from: words[0].to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, args));
        }
    }
    stages
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|_| panic!("'{args}' is not the exec (JSON array) form"))
}

#[test]
fn dockerfile_builds_a_static_binary_into_a_minimal_non_root_image() {
    let stages = dockerfile_stages(&read("Dockerfile"));
    assert!(stages.len() >= 2, "a multi-stage build");
    let build = stages
        .iter()
        .find(|s| s.name.as_deref() == Some("build"))
        .expect("a stage named build");
    let runs = build.all("RUN").join("\n");
    let env = build.all("ENV").join("\n");
    assert!(
        env.contains("RUSTFLAGS") && env.contains("target-feature=+crt-static"),
        "the build stage links statically (RUSTFLAGS=-C target-feature=+crt-static)"
    );
    assert!(
        runs.contains("cargo build --release --locked --target")
            && runs.contains("-unknown-linux-musl"),
        "the build stage compiles a release binary for a musl target"
    );
    assert!(
        runs.contains("program interpreter"),
        "the build stage refuses a dynamically linked binary"
    );
    assert!(
        runs.contains("/etc/ssl/certs/ca-certificates.crt"),
        "the image carries the CA certificates that outbound TLS to Google verifies against"
    );
    assert!(
        runs.contains(&format!("-o {IMAGE_UID} -g {IMAGE_UID}")),
        "DATA_DIR belongs to the image's user"
    );

    let last = stages.last().unwrap();
    assert!(
        last.from == "scratch" || last.from.starts_with("gcr.io/distroless/static"),
        "the final image is minimal, not {}",
        last.from
    );
    assert!(
        last.all("RUN").is_empty(),
        "the final stage has no shell to RUN"
    );
    assert!(last.one("COPY").starts_with("--from=build "));
    let user = last.one("USER");
    let ids: Vec<u64> = user
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("USER {user}: numeric IDs"))
        })
        .collect();
    assert_eq!(
        ids,
        [IMAGE_UID, IMAGE_UID],
        "USER is the numeric non-root user"
    );
    assert_eq!(last.one("EXPOSE"), "8080");
    assert_eq!(
        exec_form(last.one("ENTRYPOINT")),
        ["/usr/local/bin/token-service"]
    );
    assert_eq!(exec_form(last.one("CMD")), ["serve"]);
    let settings = builtin_settings();
    let known: BTreeSet<&str> = settings.iter().map(|s| s.name).collect();
    let env = last.one("ENV");
    for pair in env.split_whitespace() {
        let (name, _) = pair.split_once('=').expect("ENV NAME=VALUE");
        assert!(known.contains(name), "ENV {name} is not a setting");
    }
    assert!(env.contains("BIND_ADDRESS=0.0.0.0"));

    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .map(str::to_owned)
        .collect();
    for path in ["target/", ".git/"] {
        assert!(
            ignored.iter().any(|l| l == path),
            ".dockerignore leaves out {path}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

#[test]
fn kubernetes_manifest_is_a_hardened_deployment_with_a_service() {
    let docs = documents(KUBERNETES);
    assert_eq!(
        kinds(&docs),
        [
            ("apps/v1".to_owned(), "Deployment".to_owned()),
            ("v1".to_owned(), "Service".to_owned())
        ]
    );
    let (deployment, service) = (&docs[0], &docs[1]);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);

    let pod = pod_spec(deployment);
    let container = only_container(pod);
    check_container(pod, container);

    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod_security["runAsUser"].as_u64(), Some(IMAGE_UID));
    assert_eq!(
        pod_security["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(
        seq(&security["capabilities"]["drop"]),
        [Value::String("ALL".into())]
    );
    let resources = &container["resources"];
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !resources[kind][resource].is_null(),
                "resources.{kind}.{resource}"
            );
        }
    }
    // SIGTERM closes the listener and drains open TLS connections for up to 10 s, after the
    // preStop pause.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        grace >= pause + 10,
        "terminationGracePeriodSeconds {grace} < preStop {pause} s + 10 s drain"
    );

    let env = env(container);
    assert_eq!(
        literal(&env, "AUTH_FLOWS").as_deref(),
        Some("mtls-client-credentials")
    );
    assert_eq!(literal(&env, "BIND_ADDRESS").as_deref(), Some("0.0.0.0"));
    assert_eq!(
        literal(&env, "PORT"),
        Some(container_port(container).to_string())
    );
    // The container declares exactly the serving port and the admin port.
    let declared: Vec<String> = seq(&container["ports"])
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap().to_string())
        .collect();
    assert_eq!(
        declared,
        [
            literal(&env, "PORT").unwrap(),
            literal(&env, "ADMIN_PORT").unwrap()
        ]
    );
    for name in [
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "TLS_CLIENT_CA_FILE",
        "SIGNING_KEY_FILE",
    ] {
        assert!(literal(&env, name).is_some(), "{name} is set");
    }
    assert_probe(container, "readinessProbe", READYZ);
    assert_probe(container, "livenessProbe", HEALTHZ);

    let port_name = text(&seq(&container["ports"])[0]["name"]);
    let service_ports = seq(&service["spec"]["ports"]);
    assert_eq!(service_ports.len(), 1);
    assert_eq!(service_ports[0]["targetPort"].as_str(), Some(port_name));

    // The header tells how to create every Secret the manifest references.
    let text = read(KUBERNETES);
    for volume in seq(&pod["volumes"]) {
        let Some(secret) = volume["secret"]["secretName"].as_str() else {
            assert!(
                !volume["emptyDir"].is_null(),
                "a volume is a Secret or an emptyDir"
            );
            continue;
        };
        assert!(
            text.lines()
                .any(|l| l.contains("kubectl create secret") && l.contains(secret)),
            "no `kubectl create secret` line for {secret}"
        );
    }
}

fn run(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(n, _)| n != name);
    env.push((name.to_owned(), value.to_owned()));
}

/// The claims of a JWT, unverified.
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn https_client(ca_pem: &[u8], identity: Option<Vec<u8>>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()]);
    if let Some(pem) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn kubernetes_settings_pass_check_config_and_answer_probes_without_a_client_certificate() {
    let docs = documents(KUBERNETES);
    let pod = pod_spec(&docs[0]);
    let container = only_container(pod);
    let dir = tempfile::tempdir().unwrap();

    // The development PKI stands in for the real certificates: a CA, a server certificate for
    // 127.0.0.1 and a client certificate.
    let spiffe = "spiffe://token-service.local/ns/demo/sa/device-2";
    let generated = dir.path().join("generated");
    let pki = run(
        &["pki", "client", "--name", "device-2", "--spiffe-id", spiffe],
        &[("DATA_DIR".into(), generated.display().to_string())],
    );
    assert!(
        pki.status.success(),
        "{}",
        String::from_utf8_lossy(&pki.stderr)
    );
    let pki = generated.join("pki");
    let file = |name: &str| std::fs::read(pki.join(name)).unwrap();
    // What each referenced Secret key holds (as the header's kubectl commands create them).
    let secret = |name: &str, key: &str| -> Vec<u8> {
        match (name, key) {
            ("token-service-tls", "tls.crt") => file("server.pem"),
            ("token-service-tls", "tls.key") => file("server.key"),
            ("token-service-client-ca", "ca.crt") => file("ca.pem"),
            ("token-service-signing-key", "signing-key.pem") => ec_key_pem().into_bytes(),
            _ => panic!("no stand-in for key {key} of Secret {name}"),
        }
    };

    // The manifest's environment, its mounted files placed under the temporary folder.
    let root = dir.path().join("root");
    let mut settings: Vec<(String, String)> = Vec::new();
    for (name, value) in env(container) {
        let value = value.unwrap_or_else(|| panic!("{name}: expected a literal value"));
        match mounted_file(pod, container, &value) {
            Some((secret_name, key)) => {
                let path: PathBuf = root.join(value.trim_start_matches('/'));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, secret(&secret_name, &key)).unwrap();
                // As the kubelet writes them: the manifest's defaultMode.
                assert!(read(KUBERNETES).contains("defaultMode: 0440"));
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o440),
                )
                .unwrap();
                settings.push((name, path.display().to_string()));
            }
            None => settings.push((name, value)),
        }
    }
    let issuer = literal(&env(container), "TOKEN_ISSUER").unwrap();

    let out = run(&["check-config"], &settings);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("warning: SIGNING_KEY_FILE"),
        "the manifest's key file mode passes silently: {stderr}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("effective flows")
            && l.trim_end().ends_with("mtls-client-credentials")),
        "{stdout}"
    );

    // The same settings serve; only the ports (picked by the kernel, read from the log) and
    // the address are the test's own.
    let manifest_admin: Option<u64> =
        literal(&env(container), "ADMIN_PORT").map(|p| p.parse().unwrap());
    set(&mut settings, "PORT", "0");
    set(&mut settings, "BIND_ADDRESS", "127.0.0.1");
    if manifest_admin.is_some() {
        set(&mut settings, "ADMIN_PORT", "0");
    }
    let server = Server::spawn(&["serve"], settings, dir);
    let base = server.base.clone();
    let ca = file("ca.pem");

    // Like the kubelet: no client certificate; HTTP on the admin port, else HTTPS.
    let anonymous = https_client(&ca, None);
    for (kind, path, scheme, probe_port) in probes(container) {
        let url = if Some(probe_port) == manifest_admin {
            assert_eq!(scheme, "HTTP");
            server.admin_url(&path)
        } else {
            format!("{base}{path}")
        };
        let response = anonymous.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{kind} {path}: {}", server.logs());
    }
    if manifest_admin.is_some() {
        let metrics = anonymous
            .get(server.admin_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
    }
    let discovery: serde_json::Value = anonymous
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());

    // A client with its certificate gets a token.
    let mut identity = file("device-2.pem");
    identity.extend(file("device-2.key"));
    let response = https_client(&ca, Some(identity))
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", server.logs());
    let body: serde_json::Value = response.json().await.unwrap();
    let claims = claims(body["id_token"].as_str().unwrap());
    assert_eq!(claims["client_id"], spiffe);
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(
        claims["aud"],
        "https://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/devices/providers/token-service"
    );
}

// ---------------------------------------------------------------------------------------------
// Cloud Run
// ---------------------------------------------------------------------------------------------

/// `deploy/cloud-run.yaml` with its placeholders filled, as `envsubst` does.
fn cloud_run_text() -> String {
    let mut text = read(CLOUD_RUN);
    for (name, value) in CLOUD_RUN_VALUES {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(
        !text.contains("${"),
        "{CLOUD_RUN} has a placeholder other than {CLOUD_RUN_VALUES:?}"
    );
    text
}

#[test]
fn cloud_run_manifest_deploys_like_the_reference() {
    let raw = read(CLOUD_RUN);
    let export = raw
        .lines()
        .find(|l| l.contains("export "))
        .expect("the header exports the placeholders");
    for (name, _) in CLOUD_RUN_VALUES {
        assert!(
            export.contains(&format!("{name}=")),
            "the header's export line names {name}"
        );
    }
    let docs = parse_documents(CLOUD_RUN, &cloud_run_text());
    assert_eq!(
        kinds(&docs),
        [("serving.knative.dev/v1".to_owned(), "Service".to_owned())]
    );
    let service = &docs[0];
    assert_eq!(
        service["metadata"]["annotations"]["run.googleapis.com/ingress"].as_str(),
        Some("internal-and-cloud-load-balancing"),
        "only the load balancer (and internal traffic) may reach the service"
    );
    let pod = pod_spec(service);
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some("token-service@demo-project.iam.gserviceaccount.com")
    );
    assert!(pod["containerConcurrency"].as_u64().unwrap() > 1);
    assert!(pod["timeoutSeconds"].as_u64().is_some());
    let container = only_container(pod);
    check_container(pod, container);
    assert_eq!(
        container_port(container),
        8080,
        "the image's EXPOSE and default PORT"
    );

    let env = env(container);
    for name in CLOUD_RUN_RESERVED {
        assert!(
            env.iter().all(|(n, _)| n != name),
            "Cloud Run sets {name} itself"
        );
    }
    for name in REFERENCE_ENV {
        assert!(
            env.iter().any(|(n, _)| n == name),
            "the reference's {name} is kept"
        );
    }
    assert_eq!(
        literal(&env, "AUTH_FLOWS").as_deref(),
        Some("xlb-mtls-client-credentials")
    );
    assert_eq!(literal(&env, "SIGNER").as_deref(), Some("iam"));
    assert!(
        env.iter()
            .any(|(n, v)| n == "MTLS_LB_SECRET" && v.is_none()),
        "MTLS_LB_SECRET comes from Secret Manager, not from the file"
    );
    assert_probe(container, "startupProbe", READYZ);
    assert_probe(container, "livenessProbe", HEALTHZ);
}

#[tokio::test]
async fn cloud_run_settings_pass_check_config_and_become_ready_with_the_iam_signer() {
    let docs = parse_documents(CLOUD_RUN, &cloud_run_text());
    let pod = pod_spec(&docs[0]);
    let container = only_container(pod);
    let lb_secret = "value-from-secret-manager";
    let mut settings: Vec<(String, String)> = env(container)
        .into_iter()
        .map(|(name, value)| {
            let value = value.unwrap_or_else(|| {
                assert_eq!(name, "MTLS_LB_SECRET", "unexpected valueFrom");
                lb_secret.to_owned()
            });
            (name, value)
        })
        .collect();
    // What Cloud Run sets.
    set(&mut settings, "K_SERVICE", "token-service");
    set(
        &mut settings,
        "PORT",
        &container_port(container).to_string(),
    );

    let out = run(&["check-config"], &settings);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check-config failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["SIGNER", "iam"])),
        "{stdout}"
    );
    assert!(!stdout.contains(lb_secret), "the secret is redacted");

    // The emulator plays the metadata server and IAM Credentials of the service account the
    // manifest runs as.
    let emulator = Emulator::start(EmulatorConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some(EmulatorConfig::default().service_account.as_str())
    );
    set(&mut settings, "PORT", "0");
    set(&mut settings, "BIND_ADDRESS", "127.0.0.1");
    set(
        &mut settings,
        "GCE_METADATA_HOST",
        emulator.base_url().trim_start_matches("http://"),
    );
    set(
        &mut settings,
        "IAM_CREDENTIALS_ENDPOINT",
        &emulator.base_url(),
    );
    let server = Server::spawn(&["serve"], settings, tempfile::tempdir().unwrap());
    let http = common::client();

    // The startup probe passes within its budget once the signer knows its account.
    let startup = &container["startupProbe"];
    let budget =
        startup["periodSeconds"].as_u64().unwrap() * startup["failureThreshold"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(budget.min(30));
    let path = text(&startup["httpGet"]["path"]);
    loop {
        let status = http.get(server.url(path)).send().await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{path} answered {status}: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let liveness = text(&container["livenessProbe"]["httpGet"]["path"]);
    let status = http
        .get(server.url(liveness))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // The load balancer's request, with and without the shared secret.
    let request = |with_secret: bool| {
        let mut request = http
            .post(server.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials");
        for (name, value) in lb_headers(common::SPIFFE) {
            request = request.header(name, value);
        }
        if with_secret {
            request = request.header("X-Token-Service-LB-Secret", lb_secret);
        }
        request
    };
    let refused = request(false).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let response = request(true).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", server.logs());
    let body: serde_json::Value = response.json().await.unwrap();
    let claims = claims(body["id_token"].as_str().unwrap());
    let hash = lb_headers(common::SPIFFE)
        .into_iter()
        .find(|(name, _)| name == "X-Client-Cert-Hash")
        .unwrap()
        .1;
    assert_eq!(claims["client_id"], hash.as_str(), "MTLS_HEADER_CLIENT_ID");
    assert_eq!(claims["iss"], "https://tokens.example.com");
    assert_eq!(
        claims["aud"],
        "https://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/devices/providers/token-service"
    );
}
