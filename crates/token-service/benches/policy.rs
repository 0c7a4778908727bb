//! Client policy costs: loading a deny list of one million fingerprints (the fleet size the
//! policy issue names), and deciding a request against a policy with such lists and a few rules.
//! Run: `cargo bench -p token-service --bench policy`.
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

criterion_group!(benches, bench);
criterion_main!(benches);
