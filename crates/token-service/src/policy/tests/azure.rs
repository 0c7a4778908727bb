//! The `azure_clients` key of allow rules: globs over the Entra app client IDs a client may
//! name with `azure_client_id` (absent = any, `[]` = none), refused in deny rules, shown by
//! `policy check`.

use super::*;

const APP: &str = "11111111-2222-3333-4444-555555555555";

fn asking(app: &str) -> Requested<'_> {
    Requested {
        azure_client: Some(app),
        ..Requested::default()
    }
}

const FLEET: &str = r#"
[[rule]]
name = "fleet"
decision = "allow"
azure_clients = ["11111111-2222-3333-4444-*"]
"#;

#[test]
fn azure_clients_globs_admit_or_refuse_a_named_app() {
    assert!(matches!(
        decide(FLEET, asking(APP)).outcome,
        Outcome::Allow(_)
    ));
    let other = "99999999-2222-3333-4444-555555555555";
    match decide(FLEET, asking(other)).outcome {
        Outcome::DenyAccess { log, message } => {
            assert!(
                log.contains("rule 'fleet'")
                    && log.contains(other)
                    && log.contains("11111111-2222-3333-4444-*"),
                "{log}"
            );
            assert_eq!(
                message,
                format!("This client may not obtain access tokens for the Entra app '{other}'")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decide(FLEET, Requested::default()).outcome,
        Outcome::Allow(_)
    ));
}

#[test]
fn absent_azure_clients_allow_any_app_and_an_empty_list_none() {
    let any = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\n";
    assert!(matches!(
        decide(any, asking(APP)).outcome,
        Outcome::Allow(_)
    ));
    let none = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\nazure_clients = []\n";
    match decide(none, asking(APP)).outcome {
        Outcome::DenyAccess { log, .. } => assert!(log.contains("(none allowed)"), "{log}"),
        other => panic!("{other:?}"),
    }
    // aws_roles says nothing about Entra apps.
    let aws_only = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\naws_roles = []\n";
    assert!(matches!(
        decide(aws_only, asking(APP)).outcome,
        Outcome::Allow(_)
    ));
}

#[test]
fn azure_clients_in_a_deny_rule_or_with_a_bad_glob_are_refused_naming_the_line() {
    for (text, words) in [
        (
            "[[rule]]\nname = \"d\"\ndecision = \"deny\"\nazure_clients = [\"*\"]\n",
            &["'azure_clients' applies to allow rules only"][..],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\nazure_clients = [\"[x\"]\n",
            &["bad glob"][..],
        ),
    ] {
        let e = Policy::parse(Path::new("policy.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(e.starts_with("policy.toml:4:"), "{e}");
        for w in words {
            assert!(e.contains(w), "{e} (missing {w})");
        }
    }
}

#[test]
fn policy_check_describes_what_a_rule_says_about_azure_clients() {
    assert_eq!(
        policy(FLEET).rules()[0].azure_clients().as_deref(),
        Some("azure_clients '11111111-2222-3333-4444-*'")
    );
    let plain = policy("[[rule]]\nname = \"r\"\ndecision = \"allow\"\n");
    assert_eq!(plain.rules()[0].azure_clients(), None);
    let none = policy("[[rule]]\nname = \"r\"\ndecision = \"allow\"\nazure_clients = []\n");
    assert_eq!(
        none.rules()[0].azure_clients().as_deref(),
        Some("azure_clients none")
    );
}
