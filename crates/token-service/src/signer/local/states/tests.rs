//! The key states: the file's metadata lines, which key signs when, the load, check and
//! reload rules, with fixed clocks.

use serde_json::{Map, Value};

use super::super::LocalSigner;
use super::super::keyfile::{self, format_time};
use super::*;
use crate::clock::{Clock, Deadline};
use crate::signer::{Publication, Signer};

const T: i64 = 1_800_000_000;
const RULES: Rules = Rules {
    jwks_max_age: 300,
    longest_lifetime: 600,
};

fn key() -> String {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    keyfile::pem_block(doc.as_ref())
}

fn line(fields: &str) -> String {
    format!("# token-service: {fields}\n")
}

fn at(t: i64) -> String {
    format_time(t)
}

fn signer(pem: &str, now: i64) -> Result<LocalSigner, Vec<String>> {
    LocalSigner::from_pem_with(pem.as_bytes(), RULES, Clock::fixed(now))
}

fn kids(signer: &LocalSigner) -> Vec<String> {
    match signer.publication().unwrap() {
        Publication::Jwks(set) => set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect(),
        Publication::Uri(_) => panic!("local keys are published here"),
    }
}

fn header_kid(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

fn one_problem(result: Result<LocalSigner, Vec<String>>, expected: &str) {
    let problems = result.expect_err("the file is refused");
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "{problems:?} should name {expected:?}"
    );
}

#[test]
fn explanatory_text_between_blocks_is_ignored_and_each_line_describes_the_next_key() {
    let (a, b) = (key(), key());
    let pem = format!(
        "Some notes the operator keeps\n{}{a}\n# kid: whatever\n{}{b}",
        line(&format!("state=retired retired-at={}", at(T - 10))),
        line(&format!("state=active published-at={}", at(T - 1000)))
    );
    let signer = signer(&pem, T).unwrap();
    let published = kids(&signer);
    assert_eq!(published.len(), 2);
    // The second block is the active one, though the first comes first.
    assert_eq!(signer.key_id().unwrap(), published[1]);
    let infos = signer.keys().infos();
    assert_eq!(infos[0].meta.unwrap().state, keyfile::State::Retired);
    assert_eq!(infos[1].meta.unwrap().published_at, Some(T - 1000));
}

#[test]
fn a_plain_file_keeps_its_meaning_the_first_key_signs_and_all_are_published() {
    let pem = format!("{}{}", key(), key());
    let signer = signer(&pem, T).unwrap();
    assert!(signer.keys().schedule().legacy);
    assert_eq!(signer.key_id().unwrap(), kids(&signer)[0]);
}

#[test]
fn a_next_key_appended_to_a_plain_file_is_published_and_the_first_key_still_signs() {
    let pem = format!(
        "{}{}{}",
        key(),
        line(&format!("state=next published-at={}", at(T))),
        key()
    );
    let signer = signer(&pem, T).unwrap();
    let published = kids(&signer);
    assert_eq!(published.len(), 2);
    assert_eq!(signer.key_id().unwrap(), published[0]);
}

/// Two replicas with the same file and clocks either side of `signs-from` sign with the key
/// that retires then, and with the active key.
#[tokio::test]
async fn every_replica_switches_at_signs_from_and_the_retired_key_signs_until_then() {
    let from = T + 60;
    let pem = format!(
        "{}{}{}{}",
        line(&format!("state=retired retired-at={}", at(from))),
        key(),
        line(&format!(
            "state=active published-at={} signs-from={}",
            at(T - 300),
            at(from)
        )),
        key()
    );
    let before = signer(&pem, from - 1).unwrap();
    let after = signer(&pem, from).unwrap();
    let published = kids(&before);
    assert_eq!(published, kids(&after), "both publish both keys");
    let claims = Map::from_iter([("sub".to_owned(), Value::from("x"))]);
    let deadline = Deadline::after(std::time::Duration::from_secs(5));
    let old = before.sign(&claims, deadline).await.unwrap();
    let new = after.sign(&claims, deadline).await.unwrap();
    assert_eq!(header_kid(&old), published[0]);
    assert_eq!(header_kid(&new), published[1]);
}

#[test]
fn files_that_break_the_rules_are_refused_with_the_rule_named() {
    let two_active = format!(
        "{}{}{}{}",
        line("state=active"),
        key(),
        line("state=active"),
        key()
    );
    one_problem(signer(&two_active, T), "exactly one key signs");
    // signs-from sooner than JWKS_MAX_AGE after publication.
    let early = format!(
        "{}{}{}{}",
        line(&format!("state=retired retired-at={}", at(T + 100))),
        key(),
        line(&format!(
            "state=active published-at={} signs-from={}",
            at(T),
            at(T + 100)
        )),
        key()
    );
    one_problem(signer(&early, T), "JWKS_MAX_AGE=300 s");
    // A future signs-from with no key to sign until then.
    let gap = format!(
        "{}{}",
        line(&format!(
            "state=active published-at={} signs-from={}",
            at(T - 1000),
            at(T + 100)
        )),
        key()
    );
    one_problem(signer(&gap, T), "no retired key has retired-at");
    one_problem(
        signer(&format!("{}{}", line("state=retired"), key()), T),
        "retired without retired-at",
    );
    one_problem(
        signer(&format!("{}{}", line("state=active colour=red"), key()), T),
        "unknown field 'colour'",
    );
    one_problem(
        signer(&format!("{}{}", key(), line("state=next")), T),
        "followed by no key",
    );
    one_problem(
        signer(&format!("{}{}", line("state=next"), key()), T),
        "no key has state=active",
    );
}

#[test]
fn check_also_wants_the_publication_time_of_a_next_key() {
    let entries = [
        Entry {
            kid: "a",
            meta: Some(keyfile::parse_meta("state=active").unwrap()),
        },
        Entry {
            kid: "b",
            meta: Some(keyfile::parse_meta("state=next").unwrap()),
        },
    ];
    assert!(schedule(&entries, T, &RULES).is_ok());
    let problems = check(&entries, T, &RULES);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("next without published-at"),
        "{problems:?}"
    );
}

#[test]
fn a_reload_that_breaks_a_rule_keeps_the_keys_in_force() {
    let (a, b) = (key(), key());
    let first = format!("{}{a}", line("state=active"));
    let signer = signer(&first, T).unwrap();
    let kid = signer.key_id().unwrap();
    // A new key that would sign at once, never published here before.
    let jump = format!(
        "{}{a}{}{b}",
        line(&format!("state=retired retired-at={}", at(T))),
        line("state=active")
    );
    let problems = signer.reload(jump.as_bytes()).unwrap_err();
    assert!(problems[0].contains("sign at once"), "{problems:?}");
    assert_eq!(signer.key_id().unwrap(), kid);
    assert_eq!(kids(&signer).len(), 1);
    // Garbage, and dropping the key that signs.
    assert!(signer.reload(b"not a key").is_err());
    let dropped = format!("{}{b}", line("state=active"));
    let problems = signer.reload(dropped.as_bytes()).unwrap_err();
    assert!(
        problems.iter().any(|p| p.contains("which signs now")),
        "{problems:?}"
    );
    // The two-phase way: first published as next...
    let next = format!(
        "{first}{}{b}",
        line(&format!("state=next published-at={}", at(T)))
    );
    signer.reload(next.as_bytes()).unwrap();
    assert_eq!(kids(&signer).len(), 2);
    assert_eq!(signer.key_id().unwrap(), kid);
}

#[test]
fn a_retired_key_may_leave_the_file_only_when_no_token_it_signed_can_be_presented() {
    let (a, b) = (key(), key());
    let retired_at = T - 100;
    let both = format!(
        "{}{a}{}{b}",
        line(&format!("state=retired retired-at={}", at(retired_at))),
        line(&format!(
            "state=active published-at={} signs-from={}",
            at(retired_at - 300),
            at(retired_at)
        ))
    );
    let only_new = format!(
        "{}{b}",
        line(&format!(
            "state=active published-at={} signs-from={}",
            at(retired_at - 300),
            at(retired_at)
        ))
    );
    let now = signer(&both, T).unwrap();
    let problems = now.reload(only_new.as_bytes()).unwrap_err();
    let until = retired_at + RULES.longest_lifetime + RULES.jwks_max_age;
    assert!(
        problems[0].contains(&format!("before {}", at(until))),
        "{problems:?}"
    );
    let later = signer(&both, until).unwrap();
    later.reload(only_new.as_bytes()).unwrap();
    assert_eq!(kids(&later).len(), 1);
}

#[test]
fn plain_files_reload_as_before() {
    let (a, b) = (key(), key());
    let signer = signer(&a, T).unwrap();
    signer.reload(format!("{b}{a}").as_bytes()).unwrap();
    assert_eq!(signer.key_id().unwrap(), kids(&signer)[0]);
}

/// A reload that schedules a key this replica has not published yet to sign sooner than
/// `JWKS_MAX_AGE` from now: its `published-at` says the file had it, not that this replica's
/// JWK Set did, and caches that fetched this replica's set may miss it at `signs-from`.
#[test]
fn a_reload_may_not_schedule_a_key_to_sign_before_this_replica_published_it_for_the_max_age() {
    let (a, b) = (key(), key());
    let first = format!("{}{a}", line("state=active"));
    let signer = signer(&first, T).unwrap();
    let kid = signer.key_id().unwrap();
    let from = T + 10;
    let soon = format!(
        "{}{a}{}{b}",
        line(&format!("state=retired retired-at={}", at(from))),
        line(&format!(
            "state=active published-at={} signs-from={}",
            at(T - 1000),
            at(from)
        ))
    );
    let problems = signer.reload(soon.as_bytes()).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("has not published it for JWKS_MAX_AGE")),
        "{problems:?}"
    );
    assert_eq!(signer.key_id().unwrap(), kid);
    assert_eq!(kids(&signer).len(), 1);
    // Published here first, the same activation JWKS_MAX_AGE later is taken.
    let next = format!(
        "{first}{}{b}",
        line(&format!("state=next published-at={}", at(T)))
    );
    signer.reload(next.as_bytes()).unwrap();
    let later = T + RULES.jwks_max_age;
    let scheduled = format!(
        "{}{a}{}{b}",
        line(&format!("state=retired retired-at={}", at(later))),
        line(&format!(
            "state=active published-at={} signs-from={}",
            at(T),
            at(later)
        ))
    );
    signer.reload(scheduled.as_bytes()).unwrap();
    assert_eq!(
        signer.key_id().unwrap(),
        kid,
        "the old key signs until then"
    );
}

/// A key this replica signed with may not leave the file while tokens it signed here can be
/// presented, whatever `retired-at` the file writes for it: retired "long ago" in one version,
/// dropped in the next, it would take its tokens' key away.
#[test]
fn a_key_that_signed_here_stays_until_its_tokens_expire_whatever_its_retired_at_says() {
    use super::super::set::KeySet;
    let (a, b) = (key(), key());
    let start = format!(
        "{}{a}{}{b}",
        line("state=active"),
        line(&format!("state=next published-at={}", at(T - 1000)))
    );
    let set = KeySet::parse(start.as_bytes(), T, &RULES).unwrap();
    let switched = T + RULES.jwks_max_age + 100;
    let active_b = line(&format!(
        "state=active published-at={} signs-from={}",
        at(T - 1000),
        at(T - 700)
    ));
    let rewound = format!(
        "{}{a}{active_b}{b}",
        line(&format!("state=retired retired-at={}", at(T - 50_000)))
    );
    let set = set.reloaded(rewound.as_bytes(), switched, &RULES).unwrap();
    let only_b = format!("{active_b}{b}");
    let problems = set
        .reloaded(only_b.as_bytes(), switched + 1, &RULES)
        .err()
        .expect("key A signed here until the switch");
    let until = switched + RULES.longest_lifetime + RULES.jwks_max_age;
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("before {}", at(until)))),
        "{problems:?}"
    );
    set.reloaded(only_b.as_bytes(), until, &RULES).unwrap();
}
