//! Policy files (`Policy::parse`): TOML rules with globs, templates, fingerprints, serials and
//! deny lists; then `decide` and `explain` for a few clients, as the token endpoint does with
//! the facts a flow took from the network.
//!
//! `[deny_lists]` names files that `Policy::parse` reads relative to the policy's folder. So
//! that the fuzzer cannot make it read `/dev/zero` or other files of the machine, an input
//! whose deny-list values are anything but `fingerprints.txt` or `serials.txt` (two small
//! lists this target writes to a folder of its own) is skipped.
//!
//! Properties: nothing panics; `explain` reaches the same decision as `decide`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use token_service::model::{AuthenticatedClient, CertificateFacts};
use token_service::testing::policy::Requested;
use token_service::testing::policy::rules::{Outcome, Policy};

const LIST_FILES: [&str; 2] = ["fingerprints.txt", "serials.txt"];

fn folder() -> &'static PathBuf {
    static FOLDER: OnceLock<PathBuf> = OnceLock::new();
    FOLDER.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("token-service-fuzz-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the deny-list folder");
        std::fs::write(
            dir.join("fingerprints.txt"),
            "# revoked\nq83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80\n",
        )
        .expect("write fingerprints.txt");
        std::fs::write(dir.join("serials.txt"), "01:02\nabcdef # old\n")
            .expect("write serials.txt");
        dir
    })
}

/// Whether `[deny_lists]` is absent or names only the two lists of `folder()`.
fn deny_lists_are_safe(text: &str) -> bool {
    let Ok(table) = text.parse::<toml::Table>() else {
        return true; // Policy::parse refuses it before reading any file.
    };
    match table.get("deny_lists") {
        None => true,
        Some(toml::Value::Table(lists)) => lists.values().all(|v| match v {
            toml::Value::String(s) => LIST_FILES.contains(&s.as_str()),
            _ => true, // not a string: a type error before any file is read
        }),
        Some(_) => true,
    }
}

fn clients() -> Vec<AuthenticatedClient> {
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    vec![
        AuthenticatedClient {
            flow: "xlb-mtls-client-credentials".into(),
            client_id: "spiffe://example.org/ns/prod/sa/api".into(),
            facts: CertificateFacts {
                spiffe_id: Some("spiffe://example.org/ns/prod/sa/api".into()),
                dns_sans: vec!["api.prod.example.com".into()],
                uri_sans: vec!["https://example.com/api".into()],
                sha256_fingerprint: Some("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80".into()),
                sha256_fingerprint_twin: Some("3q2+796tvu/erb7v3q2+796tvu/erb7v3q2+796tvu8".into()),
                serial_number: Some("01:02".into()),
                issuer_ca_sha256: Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into()),
                subject: pairs(&[("CN", "api"), ("O", "Example")]),
                issuer: pairs(&[("CN", "Example CA")]),
                ..CertificateFacts::default()
            },
        },
        AuthenticatedClient {
            flow: "mtls-client-credentials".into(),
            client_id: "device-17.fleet.example.net".into(),
            facts: CertificateFacts {
                dns_sans: vec!["device-17.fleet.example.net".into()],
                serial_number: Some("ab:cd:ef".into()),
                ..CertificateFacts::default()
            },
        },
        AuthenticatedClient {
            flow: "x".into(),
            client_id: "x".into(),
            facts: CertificateFacts::default(),
        },
    ]
}

fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Allow(x), Outcome::Allow(y)) => {
            x.client_id == y.client_id
                && x.extra_claims == y.extra_claims
                && x.lifetime_seconds == y.lifetime_seconds
        }
        (Outcome::DenyClient(x), Outcome::DenyClient(y)) => x == y,
        (
            Outcome::DenyAccess { log: a, message: b },
            Outcome::DenyAccess { log: c, message: d },
        ) => a == c && b == d,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !deny_lists_are_safe(text) {
        return;
    }
    let Ok(policy) = Policy::parse(&folder().join("policy.toml"), text) else {
        return;
    };
    let _ = policy.summary();
    let requests = [
        Requested::default(),
        Requested {
            scope: Some("https://www.googleapis.com/auth/cloud-platform openid"),
            service_account: Some("sa@project.iam.gserviceaccount.com"),
            audience: None,
            aws_role: None,
        },
        Requested {
            audience: Some("api://AzureADTokenExchange"),
            ..Requested::default()
        },
    ];
    for client in clients() {
        for requested in requests {
            let verdict = policy.decide(&client, requested);
            let (_trace, explained) = policy.explain(&client, requested);
            assert_eq!(verdict.rule, explained.rule);
            assert!(same(&verdict.outcome, &explained.outcome));
        }
    }
});
