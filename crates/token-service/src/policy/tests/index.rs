//! The rule index keeps the meaning of the plain scan: generated policies (every kind of
//! condition, exact and glob, in random order and combination) against generated certificates
//! that hit and miss them, each decided with the index and by trying every rule in order.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::super::Requested;
use super::super::rules::Policy;
use crate::model::{AuthenticatedClient, CertificateFacts};

/// xorshift64: a seeded generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const FLOWS: [&str; 3] = [
    "mtls-client-credentials",
    "xlb-mtls-client-credentials",
    "forwarded-cert-client-credentials",
];

fn digest(i: usize) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[0] = i as u8;
    bytes[31] = 0x5a;
    bytes
}

/// Fingerprint `i` as a certificate fact (base64), or as a policy writes it (either form).
fn fingerprint(i: usize, hex: bool) -> String {
    let bytes = digest(i);
    if hex {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02X}");
            s
        })
    } else {
        STANDARD_NO_PAD.encode(bytes)
    }
}

fn spiffe_id(rng: &mut Rng) -> String {
    format!(
        "spiffe://td{}.example.org/ns/{}/sa/{}",
        rng.below(3),
        rng.pick(&["a", "b"]),
        rng.pick(&["c", "d"])
    )
}

fn host(rng: &mut Rng) -> String {
    format!(
        "{}{}.td{}.example.org",
        rng.pick(&["h", "H"]),
        rng.below(3),
        rng.below(3)
    )
}

fn list(rng: &mut Rng, make: &mut dyn FnMut(&mut Rng) -> String) -> String {
    let items: Vec<String> = (0..1 + rng.below(2))
        .map(|_| format!("{:?}", make(rng)))
        .collect();
    format!("[{}]", items.join(", "))
}

/// One `match` key (or table) of a rule, of a random kind, exact or a glob.
fn condition(rng: &mut Rng) -> (&'static str, String) {
    let td = |rng: &mut Rng| rng.below(3);
    match rng.below(12) {
        0 => ("flow", list(rng, &mut |r| r.pick(&FLOWS).to_owned())),
        1 => (
            "spiffe_trust_domain",
            list(rng, &mut |r| {
                format!("{}{}.example.org", r.pick(&["td", "TD"]), td(r))
            }),
        ),
        2 | 3 => (
            "spiffe_id",
            list(rng, &mut |r| match r.below(6) {
                0 | 1 => spiffe_id(r),
                2 => format!("spiffe://td{}.example.org/ns/*/sa/*", td(r)),
                3 => format!("spiffe://td{}.example.org/ns/a/**", td(r)),
                4 => format!("spiffe://*/ns/{}/sa/c", r.pick(&["a", "b"])),
                _ => format!("spiffe://td{}.example.org/ns/{{a,b}}/sa/?", td(r)),
            }),
        ),
        4 => (
            "spiffe_path",
            list(rng, &mut |r| {
                r.pick(&["/ns/a/sa/c", "/ns/*/sa/d", "/ns/**", "**/sa/c", "/ns/b/*"])
                    .to_owned()
            }),
        ),
        5 | 6 => (
            "dns_san",
            list(rng, &mut |r| match r.below(6) {
                0 | 1 => host(r),
                2 => format!("*.td{}.example.org", td(r)),
                3 => "**.example.org".to_owned(),
                4 => format!("h?.td{}.EXAMPLE.org", td(r)),
                _ => r
                    .pick(&["*", "**.net", "x.example.net", "[hx]1.td1.example.org"])
                    .to_owned(),
            }),
        ),
        7 => (
            "uri_san",
            list(rng, &mut |r| match r.below(4) {
                0 => format!("https://ids.example.com/devices/{}", r.below(3)),
                1 => "https://ids.example.com/devices/*".to_owned(),
                2 => "https://ids.example.com/**".to_owned(),
                _ => "*://ids.example.com/devices/1".to_owned(),
            }),
        ),
        8 => (
            "sha256_fingerprint",
            list(rng, &mut |r| {
                let hex = r.chance(50);
                fingerprint(r.below(5), hex)
            }),
        ),
        9 => (
            "issuer_ca_sha256",
            list(rng, &mut |r| {
                let hex = r.chance(50);
                fingerprint(10 + r.below(3), hex)
            }),
        ),
        10 => (
            "serial",
            list(rng, &mut |r| {
                r.pick(&["a1:b0", "00:A1:B1", "a1b2", "a1:b3"]).to_owned()
            }),
        ),
        _ => {
            let (table, values): (&str, &[&str]) = if rng.chance(50) {
                (
                    "subject",
                    &[
                        "\"dev-1\"",
                        "\"dev-*\"",
                        "\"*-2\"",
                        "\"[d]ev-?\"",
                        "\"DEV-0\"",
                    ],
                )
            } else {
                ("issuer", &["\"CA 1\"", "\"CA *\"", "\"?A 0\""])
            };
            let value = rng.pick(values);
            (table, format!("CN = {value}"))
        }
    }
}

fn policy_text(rng: &mut Rng, index: usize) -> String {
    let mut text = String::new();
    for r in 0..1 + rng.below(12) {
        let allow = rng.chance(60);
        let _ = writeln!(
            text,
            "[[rule]]\nname = \"r{r}\"\ndecision = \"{}\"",
            if allow { "allow" } else { "deny" }
        );
        if allow && rng.chance(30) {
            text.push_str("service_accounts = [\"a-*@p.iam.gserviceaccount.com\"]\n");
        }
        let mut keys = Vec::new();
        let mut tables = Vec::new();
        let conditions = if rng.chance(4) { 0 } else { 1 + rng.below(3) };
        for _ in 0..conditions {
            let (key, value) = condition(rng);
            if key == "subject" || key == "issuer" {
                if !tables.iter().any(|(k, _)| *k == key) {
                    tables.push((key, value));
                }
            } else if !keys.iter().any(|(k, _)| *k == key) {
                keys.push((key, value));
            }
        }
        text.push_str("[rule.match]\n");
        for (key, value) in keys {
            let _ = writeln!(text, "{key} = {value}");
        }
        for (table, value) in tables {
            let _ = writeln!(text, "[rule.match.{table}]\n{value}");
        }
    }
    let _ = index;
    text
}

fn certificate(rng: &mut Rng) -> AuthenticatedClient {
    let spiffe = match rng.below(5) {
        0 => None,
        1 => Some("spiffe://TD1.example.org/ns/a/sa/c".to_owned()),
        _ => Some(spiffe_id(rng)),
    };
    let dns_sans = (0..rng.below(3))
        .map(|_| match rng.below(5) {
            0 => rng
                .pick(&[
                    "x.example.net",
                    ".td1.example.org",
                    "*.td0.example.org",
                    "example.org",
                ])
                .to_owned(),
            _ => host(rng),
        })
        .collect();
    let uri_sans = (0..rng.below(2))
        .map(|_| format!("https://ids.example.com/devices/{}", rng.below(3)))
        .collect();
    let twin = |rng: &mut Rng, base: usize, n: usize| {
        rng.chance(30)
            .then(|| fingerprint(base + rng.below(n), false))
    };
    let facts = CertificateFacts {
        spiffe_id: spiffe,
        dns_sans,
        uri_sans,
        sha256_fingerprint: rng.chance(90).then(|| fingerprint(rng.below(5), false)),
        sha256_fingerprint_twin: twin(rng, 0, 5),
        serial_number: rng.chance(80).then(|| {
            rng.pick(&["a1:b0", "a1:b1", "A1B2", "00:a1:b3", "ff"])
                .to_owned()
        }),
        subject: vec![(
            "CN".into(),
            format!("{}-{}", rng.pick(&["dev", "DEV"]), rng.below(3)),
        )],
        issuer: vec![("CN".into(), format!("CA {}", rng.below(2)))],
        issuer_ca_sha256: rng
            .chance(70)
            .then(|| fingerprint(10 + rng.below(3), false)),
        issuer_ca_sha256_twin: twin(rng, 10, 3),
        ..CertificateFacts::default()
    };
    AuthenticatedClient {
        flow: rng.pick(&FLOWS).to_owned(),
        client_id: "device".into(),
        facts,
    }
}

#[test]
fn the_index_decides_as_the_plain_scan_over_ten_thousand_generated_pairs() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut pairs, mut matched, mut shadowed) = (0, 0, 0);
    for p in 0..1_000 {
        let text = policy_text(&mut rng, p);
        let policy = Policy::parse(Path::new("policy.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let unreachable: Vec<&str> = policy
            .shadowed()
            .iter()
            .map(|s| policy.rules()[s.rule].name.as_str())
            .collect();
        shadowed += unreachable.len();
        for _ in 0..10 {
            let client = certificate(&mut rng);
            let service_account = rng.chance(30).then_some("b-1@p.iam.gserviceaccount.com");
            let requested = Requested {
                service_account,
                ..Requested::default()
            };
            let indexed = policy.decide(&client, requested);
            let scanned = policy.decide_by_scan(&client, requested);
            assert_eq!(
                format!("{indexed:?}"),
                format!("{scanned:?}"),
                "policy:\n{text}\nclient: {client:?}"
            );
            let (trace, explained) = policy.explain(&client, requested);
            assert_eq!(format!("{explained:?}"), format!("{scanned:?}"));
            assert!(
                trace
                    .iter()
                    .all(|t| t.skipped_by.is_none() || t.result.is_err())
            );
            // What `policy check` calls unreachable never decides.
            assert!(!unreachable.contains(&scanned.rule.as_str()), "{text}");
            pairs += 1;
            matched += usize::from(scanned.rule != super::NO_RULE);
        }
    }
    assert!(pairs >= 10_000);
    assert!(
        shadowed > 10,
        "the generated policies have unreachable rules: {shadowed}"
    );
    // The generated certificates hit rules and miss them, both often.
    assert!(
        matched > pairs / 5 && matched < pairs * 4 / 5,
        "{matched} of {pairs}"
    );
}

#[test]
fn explain_names_the_index_that_skipped_each_rule() {
    let mut text = String::new();
    for i in 0..1_000 {
        let _ = writeln!(
            text,
            "[[rule]]\nname = \"device-{i}\"\ndecision = \"allow\"\n[rule.match]\nspiffe_id = \"spiffe://fleet.example.org/device/{i}\""
        );
    }
    text.push_str("[[rule]]\nname = \"last\"\ndecision = \"deny\"\n");
    let policy = Policy::parse(Path::new("policy.toml"), &text).unwrap();
    let client = AuthenticatedClient {
        flow: FLOWS[0].into(),
        client_id: "device".into(),
        facts: CertificateFacts {
            spiffe_id: Some("spiffe://fleet.example.org/device/999".into()),
            ..CertificateFacts::default()
        },
    };
    let (trace, verdict) = policy.explain(&client, Requested::default());
    assert_eq!(verdict.rule, "device-999");
    assert_eq!(trace.len(), 1_000);
    let skipped = trace.iter().filter(|t| t.skipped_by.is_some()).count();
    assert_eq!(skipped, 999, "only the matching rule is evaluated");
    let first = &trace[0];
    assert_eq!(first.skipped_by.as_deref(), Some("the spiffe_id index"));
    assert_eq!(
        first.result.as_ref().unwrap_err().0,
        "spiffe_id 'spiffe://fleet.example.org/device/999' matches none of 'spiffe://fleet.example.org/device/0'"
    );
    assert!(trace[999].skipped_by.is_none() && trace[999].result.is_ok());
    // A rule without conditions is never skipped: a certificate no indexed rule matches
    // reaches it.
    let other = AuthenticatedClient {
        facts: CertificateFacts::default(),
        ..client
    };
    let (trace, verdict) = policy.explain(&other, Requested::default());
    assert_eq!(verdict.rule, "last");
    assert_eq!(
        trace.iter().filter(|t| t.skipped_by.is_some()).count(),
        1_000
    );
}

#[test]
fn rules_an_earlier_rule_with_the_same_exact_keys_always_beats_are_reported() {
    let rule = |name: &str, conditions: &str| {
        format!("[[rule]]\nname = \"{name}\"\ndecision = \"allow\"\n[rule.match]\n{conditions}\n")
    };
    let id = "spiffe_id = \"spiffe://fleet.example.org/device/1\"";
    let text = [
        rule("first", id),
        // The same ID again, with a further condition: matches only clients `first` takes.
        rule("again", &format!("{id}\nflow = \"mtls-client-credentials\"")),
        // Narrower than a list of fingerprints in both forms.
        rule("fps", &format!("sha256_fingerprint = [\"{}\", \"{}\"]", fingerprint(1, false), fingerprint(2, true))),
        rule("fp", &format!("sha256_fingerprint = \"{}\"", fingerprint(2, false))),
        // A glob proves nothing, nor does a different key, nor a broader list.
        rule("glob", "spiffe_id = \"spiffe://fleet.example.org/device/*\""),
        rule("other", "spiffe_id = \"spiffe://fleet.example.org/device/2\""),
        rule("broader", "spiffe_id = [\"spiffe://fleet.example.org/device/2\", \"spiffe://fleet.example.org/device/3\"]"),
        rule("dns", "dns_san = \"Host.example.org\""),
        rule("dns-again", "dns_san = [\"host.EXAMPLE.org\"]\nspiffe_trust_domain = \"x.org\""),
        rule("catch-all", ""),
        rule("after-all", "flow = \"mtls-client-credentials\""),
    ]
    .concat();
    let policy = Policy::parse(Path::new("policy.toml"), &text).unwrap();
    let names = |i: usize| policy.rules()[i].name.clone();
    let found: Vec<(String, String)> = policy
        .shadowed()
        .into_iter()
        .map(|s| (names(s.rule), names(s.by)))
        .collect();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        found,
        [
            pair("again", "first"),
            pair("fp", "fps"),
            pair("dns-again", "dns"),
            pair("after-all", "catch-all"),
        ]
    );
}
