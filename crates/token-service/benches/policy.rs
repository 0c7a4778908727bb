//! Client policy costs: loading a deny list of one million fingerprints (the fleet size the
//! policy issue names), and deciding a request against a policy with such lists and a few rules;
//! at fleet scale (issue 15), deciding with policies of 10, 1,000 and 100,000 rules (one per
//! device, exact SPIFFE IDs or the issue's per-trust-domain globs) with the matching rule first,
//! in the middle, last or absent, the plain scan for comparison, and compiling them (time, and
//! the growth of the process's resident memory for the compiled policy, printed once).
//! Run: `cargo bench -p token-service --bench policy` (`-- scale` for the fleet-scale part).
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: its fixtures are made here and cannot fail but by a bug"
)]

use std::hint::black_box;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use token_service::model::{AuthenticatedClient, CertificateFacts};
use token_service::testing::policy::Requested;
use token_service::testing::policy::deny_list::{DenyList, Kind};
use token_service::testing::policy::rules::Policy;

const ENTRIES: u32 = 1_000_000;

fn fingerprint(i: u32) -> String {
    STANDARD_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &i.to_be_bytes(),
    ))
}

fn bench(c: &mut Criterion) {
    let mut text = String::with_capacity(ENTRIES as usize * 44);
    for i in 0..ENTRIES {
        text.push_str(&fingerprint(i));
        text.push('\n');
    }
    let mut group = c.benchmark_group("deny_list");
    group.sample_size(10);
    group.bench_function("load_1m_fingerprints", |b| {
        b.iter(|| {
            DenyList::parse(Kind::Fingerprints, Path::new("fp.txt"), black_box(&text)).unwrap()
        })
    });
    group.finish();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fp.txt"), &text).unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        r#"
[deny_lists]
sha256_fingerprints = "fp.txt"

[[rule]]
name = "staging"
decision = "deny"
[rule.match]
spiffe_trust_domain = "staging.example.org"

[[rule]]
name = "batch"
decision = "allow"
client_id = "{spiffe_id}"
service_accounts = ["batch-*@p.iam.gserviceaccount.com"]
[rule.match]
spiffe_trust_domain = "prod.example.org"
spiffe_path = "/ns/batch/**"
[rule.claims]
workload_class = "batch"
"#,
    )
    .unwrap();
    let policy = Policy::load(&dir.path().join("policy.toml")).unwrap();
    let client = AuthenticatedClient {
        flow: "mtls-client-credentials".into(),
        client_id: "spiffe://prod.example.org/ns/batch/sa/etl".into(),
        facts: CertificateFacts {
            spiffe_id: Some("spiffe://prod.example.org/ns/batch/sa/etl".into()),
            sha256_fingerprint: Some(fingerprint(ENTRIES + 1)),
            serial_number: Some("01:02".into()),
            ..CertificateFacts::default()
        },
    };
    c.bench_function("policy_decide_allow_with_1m_deny_list", |b| {
        b.iter(|| {
            policy.decide(
                black_box(&client),
                Requested {
                    scope: Some("https://www.googleapis.com/auth/cloud-platform"),
                    service_account: Some("batch-1@p.iam.gserviceaccount.com"),
                    audience: None,
                    aws_role: None,
                    azure_client: None,
                },
            )
        })
    });
}

/// One rule per device: an exact SPIFFE ID, or the issue's `spiffe://tdN.example.org/ns/*/sa/*`.
fn fleet(rules: usize, exact: bool) -> String {
    let mut text = String::with_capacity(rules * 110);
    for i in 0..rules {
        let id = device(i, exact);
        text.push_str(&format!(
            "[[rule]]\nname = \"device-{i}\"\ndecision = \"allow\"\n[rule.match]\nspiffe_id = \"{id}\"\n"
        ));
    }
    text
}

/// The SPIFFE ID rule `i` names (exact) or a SPIFFE ID its glob matches.
fn device(i: usize, exact: bool) -> String {
    if exact {
        format!("spiffe://fleet.example.org/device/{i}")
    } else {
        format!("spiffe://td{i}.example.org/ns/*/sa/*")
    }
}

fn client_of(spiffe_id: String) -> AuthenticatedClient {
    AuthenticatedClient {
        flow: "xlb-mtls-client-credentials".into(),
        client_id: spiffe_id.clone(),
        facts: CertificateFacts {
            spiffe_id: Some(spiffe_id),
            sha256_fingerprint: Some(fingerprint(7)),
            serial_number: Some("01:02".into()),
            ..CertificateFacts::default()
        },
    }
}

/// Resident memory of this process, in KiB (`VmRSS` of /proc/self/status; 0 where unknown).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn scale(c: &mut Criterion) {
    let path = Path::new("policy.toml");
    for (kind, exact) in [("exact", true), ("glob", false)] {
        let mut group = c.benchmark_group(format!("policy_scale_{kind}"));
        group.warm_up_time(std::time::Duration::from_millis(500));
        group.measurement_time(std::time::Duration::from_secs(2));
        for rules in [10, 1_000, 100_000] {
            let text = fleet(rules, exact);
            let before = rss_kib();
            let policy = Policy::parse(path, &text).unwrap();
            eprintln!(
                "policy_scale_{kind}/{rules}: the compiled policy grew RSS by {} KiB",
                rss_kib().saturating_sub(before)
            );
            for (at, id) in [
                ("first", device(0, exact)),
                ("middle", device(rules / 2, exact)),
                ("last", device(rules - 1, exact)),
                ("absent", device(rules + 1, exact)),
            ] {
                let id = id.replace("/ns/*/sa/*", "/ns/a/sa/b");
                let client = client_of(id);
                group.bench_function(format!("decide/{rules}/{at}"), |b| {
                    b.iter(|| policy.decide(black_box(&client), Requested::default()))
                });
                if at == "last" && rules > 10 {
                    group.bench_function(format!("scan/{rules}/{at}"), |b| {
                        b.iter(|| policy.decide_by_scan(black_box(&client), Requested::default()))
                    });
                }
            }
            drop(policy);
            if rules == 100_000 {
                group.sample_size(10);
            }
            group.bench_function(format!("compile/{rules}"), |b| {
                b.iter(|| Policy::parse(path, black_box(&text)).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench, scale);
criterion_main!(benches);
