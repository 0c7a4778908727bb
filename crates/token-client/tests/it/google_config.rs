//! `token-client google-config` for the executable, file and URL sources.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

async fn google_config(f: &Fixture, args: &[&str]) -> (Value, Vec<String>) {
    let config = f.path("config.json");
    let mut all = vec![
        "google-config",
        "--audience",
        POOL_AUDIENCE,
        "--config-file",
        config.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let output = run_client(&all, &f.client_env()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = stdout(&output).lines().map(str::to_owned).collect();
    let document = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    (document, lines)
}

fn assert_common(document: &Value, sts: &str) {
    assert_eq!(document["type"], "external_account");
    assert_eq!(document["audience"], POOL_AUDIENCE);
    assert_eq!(
        document["subject_token_type"],
        "urn:ietf:params:oauth:token-type:id_token"
    );
    assert_eq!(document["token_url"], sts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executable_configuration_runs_as_written() {
    let f = Fixture::start().await;
    let cache = f.path("cache.json");
    let (document, lines) = google_config(
        &f,
        &[
            "--source",
            "executable",
            "--executable-output-file",
            cache.to_str().unwrap(),
            "--executable-timeout-millis",
            "20000",
        ],
    )
    .await;
    assert_common(&document, "https://sts.googleapis.com/v1/token");
    assert!(document.get("service_account_impersonation_url").is_none());
    let executable = &document["credential_source"]["executable"];
    assert_eq!(executable["timeout_millis"], 20000);
    assert_eq!(executable["output_file"], cache.to_str().unwrap());
    let command = executable["command"].as_str().unwrap();
    let words: Vec<&str> = command.split(' ').collect();
    assert_eq!(words[0], CLIENT);
    assert_eq!(words.last(), Some(&"executable"));
    assert!(
        command.contains(&format!("--cert {}", f.cert.display())),
        "{command}"
    );
    assert_eq!(
        lines,
        [
            format!(
                "export GOOGLE_APPLICATION_CREDENTIALS='{}'",
                f.path("config.json").display()
            ),
            "export GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1".to_owned(),
        ]
    );
    // Split on single spaces, as Java does, with an empty environment: the command carries
    // every setting itself.
    let output = Command::new(words[0])
        .args(&words[1..])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.stderr.is_empty());
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["success"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_url_configurations_and_impersonation() {
    let f = Fixture::start().await;
    let base = f.emulator.base_url();
    let (file, lines) = google_config(
        &f,
        &[
            "--source",
            "file",
            "--token-file",
            f.path("token.jwt").to_str().unwrap(),
            "--service-account",
            TARGET_SA,
            "--sts-url",
            &format!("{base}/v1/token"),
            "--iam-credentials-endpoint",
            &base,
        ],
    )
    .await;
    assert_common(&file, &format!("{base}/v1/token"));
    assert_eq!(
        file["service_account_impersonation_url"],
        format!("{base}/v1/projects/-/serviceAccounts/{TARGET_SA}:generateAccessToken")
    );
    assert_eq!(
        file["credential_source"]["file"],
        f.path("token.jwt").to_str().unwrap()
    );
    assert_eq!(file["credential_source"]["format"]["type"], "text");
    assert_eq!(lines.len(), 1, "{lines:?}");

    let (url, _) = google_config(&f, &["--source", "url", "--listen", "127.0.0.1:9123"]).await;
    assert_common(&url, "https://sts.googleapis.com/v1/token");
    let source = &url["credential_source"];
    assert_eq!(source["url"], "http://127.0.0.1:9123/token");
    assert_eq!(source["format"]["type"], "json");
    assert_eq!(source["format"]["subject_token_field_name"], "id_token");
    let (default_url, _) = google_config(&f, &["--source", "url"]).await;
    assert_eq!(
        default_url["credential_source"]["url"],
        format!(
            "http://{}/token",
            token_client::settings::DEFAULT_SERVE_ADDRESS
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_config_names_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.json");
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_client(&args, &[]).await
    };
    let base = |audience: &str, source: &str| {
        vec![
            "google-config".to_owned(),
            "--config-file".into(),
            config.display().to_string(),
            "--audience".into(),
            audience.into(),
            "--source".into(),
            source.into(),
        ]
    };
    let bad_audience = run(base("https://example.com", "url")).await;
    assert_eq!(bad_audience.status.code(), Some(2));
    assert!(stderr(&bad_audience).contains("workloadIdentityPools/POOL"));
    let no_file = run(base(POOL_AUDIENCE, "file")).await;
    assert!(
        stderr(&no_file).contains("--token-file"),
        "{}",
        stderr(&no_file)
    );
    let mut spaced = base(POOL_AUDIENCE, "executable");
    spaced.extend(
        [
            "--broker",
            "https://b",
            "--cert",
            "/a b/c.pem",
            "--key",
            "/k",
        ]
        .map(String::from),
    );
    let spaced = run(spaced).await;
    assert!(
        stderr(&spaced).contains("whitespace"),
        "{}",
        stderr(&spaced)
    );
    assert!(!config.exists());
}

/// One environment drives `serve` and `google-config`: TOKEN_CLIENT_LISTEN is the URL
/// source's address, and of serve's comma-separated TOKEN_CLIENT_TOKEN_FILE the file
/// source reads the first (and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_config_reads_serves_variables() {
    let f = Fixture::start().await;
    let (first, second) = (f.path("a.jwt"), f.path("b.jwt"));
    let mut env = f.client_env();
    env.push(("TOKEN_CLIENT_LISTEN".into(), "127.0.0.1:9124".into()));
    env.push((
        "TOKEN_CLIENT_TOKEN_FILE".into(),
        format!("{},{}", first.display(), second.display()),
    ));
    let config = f.path("shared.json");
    let config = config.to_str().unwrap();
    for source in ["file", "url"] {
        let args = [
            "google-config",
            "--audience",
            POOL_AUDIENCE,
            "--config-file",
            config,
            "--source",
            source,
        ];
        let output = run_client(&args, &env).await;
        assert!(output.status.success(), "{}", stderr(&output));
        let document: Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
        let source_json = &document["credential_source"];
        if source == "file" {
            assert_eq!(source_json["file"], first.to_str().unwrap());
            assert!(
                stderr(&output).contains("reads the first"),
                "{}",
                stderr(&output)
            );
        } else {
            assert_eq!(source_json["url"], "http://127.0.0.1:9124/token");
        }
    }
}
