//! The audience keys of allow rules: `audiences` globs and `[rule.audience."AUD"]` tables.

use super::*;

const ENTRA: &str = "api://AzureADTokenExchange";
const AWS: &str = "sts.amazonaws.com";

fn asking(audience: Option<&str>) -> Requested<'_> {
    Requested {
        audience,
        ..Requested::default()
    }
}

const FLEET: &str = r#"
[[rule]]
name = "fleet"
decision = "allow"
token_lifetime = 300
audiences = ["api://AzureAD*", "https://*.example.com"]

[rule.audience."api://AzureADTokenExchange"]
sub = "device-class-{subject.O}"
token_lifetime = 900
"#;

#[test]
fn audiences_globs_admit_or_refuse_a_named_audience() {
    let ask = |audience| decide(FLEET, asking(Some(audience))).outcome;
    assert!(matches!(ask(ENTRA), Outcome::Allow(_)));
    assert!(matches!(ask("https://api.example.com"), Outcome::Allow(_)));
    match ask(AWS) {
        Outcome::DenyAccess { log, message } => {
            assert!(
                log.contains("rule 'fleet'") && log.contains(AWS) && log.contains("api://AzureAD*"),
                "{log}"
            );
            assert!(
                message.contains(&format!("'{AWS}'"))
                    && message.contains("parameter 'audience'")
                    && !message.contains("AzureAD*"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Without a named audience (the default audience) the rule admits as before.
    match decide(FLEET, asking(None)).outcome {
        Outcome::Allow(client) => {
            assert_eq!(client.audience, None);
            assert_eq!(client.lifetime_seconds, Some(300));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn absent_audiences_allow_any_listed_audience_and_an_empty_list_none() {
    let any = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\n";
    match decide(any, asking(Some(AWS))).outcome {
        Outcome::Allow(client) => {
            let grant = client.audience.expect("the audience is granted");
            assert_eq!(grant.audience, AWS);
            assert_eq!((grant.subject, grant.lifetime_seconds), (None, None));
        }
        other => panic!("{other:?}"),
    }
    let none = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\naudiences = []\n";
    assert!(matches!(
        decide(none, asking(Some(AWS))).outcome,
        Outcome::DenyAccess { log, .. } if log.contains("(none allowed but the default)")
    ));
    assert!(matches!(
        decide(none, asking(None)).outcome,
        Outcome::Allow(_)
    ));
}

#[test]
fn an_audience_table_sets_sub_and_lifetime_for_that_audience_only() {
    match decide(FLEET, asking(Some(ENTRA))).outcome {
        Outcome::Allow(client) => {
            let grant = client.audience.expect("granted");
            assert_eq!(grant.audience, ENTRA);
            assert_eq!(grant.subject.as_deref(), Some("device-class-Example Corp"));
            assert_eq!(grant.lifetime_seconds, Some(900));
            // The client ID stays the client's; the rule's own lifetime stays for the rest.
            assert_eq!(
                client.client_id,
                "spiffe://prod.example.org/ns/batch/sa/etl"
            );
            assert_eq!(client.lifetime_seconds, Some(300));
        }
        other => panic!("{other:?}"),
    }
    match decide(FLEET, asking(Some("https://api.example.com"))).outcome {
        Outcome::Allow(client) => {
            let grant = client.audience.expect("granted");
            assert_eq!((grant.subject, grant.lifetime_seconds), (None, None));
        }
        other => panic!("{other:?}"),
    }
    // A sub template the certificate cannot fill denies the client, naming the fact.
    let lacking = format!(
        "[[rule]]\nname = \"r\"\ndecision = \"allow\"\n[rule.audience.\"{ENTRA}\"]\nsub = \"class-{{subject.OU}}\"\n"
    );
    assert!(matches!(
        decide(&lacking, asking(Some(ENTRA))).outcome,
        Outcome::DenyClient(r) if r.contains("subject.OU") && r.contains(ENTRA)
    ));
}

#[test]
fn bad_audience_keys_are_refused_with_line_and_reason() {
    let table: &[(&str, usize, &[&str])] = &[
        (
            "[[rule]]\nname = \"a\"\ndecision = \"deny\"\naudiences = [\"x\"]\n",
            4,
            &["'audiences' applies to allow rules only"],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"deny\"\n[rule.audience.\"x\"]\nsub = \"s\"\n",
            4,
            &["'audience' applies to allow rules only"],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.audience.\"x\"]\ntoken_lifetime = 30\n",
            5,
            &[
                "audience.\"x\"",
                "token_lifetime 30 is out of bounds",
                "60 to 3600",
            ],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.audience.\"x\"]\ntoken_lifetime = 3601\n",
            5,
            &["out of bounds"],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.audience.\"x\"]\nsub = \"{nope}\"\n",
            5,
            &["audience.\"x\": sub:", "nope"],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\n[rule.audience.\"x\"]\nsubject = \"s\"\n",
            5,
            &["subject"],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\naudiences = [\"api://*\"]\n[rule.audience.\"sts.amazonaws.com\"]\nsub = \"s\"\n",
            5,
            &[
                "matches none of the rule's audiences",
                "'api://*'",
                "could never apply",
            ],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\naudiences = [\"[x\"]\n",
            4,
            &["audiences: bad glob"],
        ),
    ];
    for (text, line, words) in table {
        let e = Policy::parse(Path::new("policy.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(
            e.starts_with(&format!("policy.toml:{line}:")),
            "{text}\n=> {e}"
        );
        for w in *words {
            assert!(e.contains(w), "{text}\n=> {e} (missing {w})");
        }
    }
}

#[test]
fn policy_check_describes_what_a_rule_says_about_audiences() {
    let fleet = policy(FLEET);
    assert_eq!(
        fleet.rules()[0].audiences().as_deref(),
        Some(
            "audiences 'api://AzureAD*', 'https://*.example.com'; 'api://AzureADTokenExchange': sub 'device-class-{subject.O}', token_lifetime 900 s"
        )
    );
    let plain = policy("[[rule]]\nname = \"r\"\ndecision = \"allow\"\n");
    assert_eq!(plain.rules()[0].audiences(), None);
    let none = policy("[[rule]]\nname = \"r\"\ndecision = \"allow\"\naudiences = []\n");
    assert_eq!(
        none.rules()[0].audiences().as_deref(),
        Some("audiences none but the default")
    );
}
