//! The `aws_roles` key of allow rules: globs over the role ARNs a client may name with
//! `aws_role_arn` (absent = any, `[]` = none), refused in deny rules, shown by `policy check`.

use super::*;

const ROLE: &str = "arn:aws:iam::123456789012:role/devices-eu";

fn asking(role: &str) -> Requested<'_> {
    Requested {
        aws_role: Some(role),
        ..Requested::default()
    }
}

const FLEET: &str = r#"
[[rule]]
name = "fleet"
decision = "allow"
aws_roles = ["arn:aws:iam::123456789012:role/devices-*"]
"#;

#[test]
fn aws_roles_globs_admit_or_refuse_a_named_role() {
    assert!(matches!(
        decide(FLEET, asking(ROLE)).outcome,
        Outcome::Allow(_)
    ));
    let other = "arn:aws:iam::123456789012:role/admin";
    match decide(FLEET, asking(other)).outcome {
        Outcome::DenyAccess { log, message } => {
            assert!(
                log.contains("rule 'fleet'") && log.contains(other) && log.contains("devices-*"),
                "{log}"
            );
            assert_eq!(
                message,
                format!("This client may not obtain credentials for the AWS role '{other}'")
            );
        }
        other => panic!("{other:?}"),
    }
    // No role asked for: the rule admits as before.
    assert!(matches!(
        decide(FLEET, Requested::default()).outcome,
        Outcome::Allow(_)
    ));
}

#[test]
fn absent_aws_roles_allow_any_role_and_an_empty_list_none() {
    let any = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\n";
    assert!(matches!(
        decide(any, asking(ROLE)).outcome,
        Outcome::Allow(_)
    ));
    let none = "[[rule]]\nname = \"r\"\ndecision = \"allow\"\naws_roles = []\n";
    match decide(none, asking(ROLE)).outcome {
        Outcome::DenyAccess { log, .. } => assert!(log.contains("(none allowed)"), "{log}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn aws_roles_in_a_deny_rule_or_with_a_bad_glob_are_refused_naming_the_line() {
    for (text, line, words) in [
        (
            "[[rule]]\nname = \"d\"\ndecision = \"deny\"\naws_roles = [\"*\"]\n",
            4,
            &["'aws_roles' applies to allow rules only"][..],
        ),
        (
            "[[rule]]\nname = \"a\"\ndecision = \"allow\"\naws_roles = [\"[x\"]\n",
            4,
            &["bad glob"][..],
        ),
    ] {
        let e = Policy::parse(Path::new("policy.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(e.starts_with(&format!("policy.toml:{line}:")), "{e}");
        for w in words {
            assert!(e.contains(w), "{e} (missing {w})");
        }
    }
}

#[test]
fn policy_check_describes_what_a_rule_says_about_aws_roles() {
    assert_eq!(
        policy(FLEET).rules()[0].aws_roles().as_deref(),
        Some("aws_roles 'arn:aws:iam::123456789012:role/devices-*'")
    );
    let plain = policy("[[rule]]\nname = \"r\"\ndecision = \"allow\"\n");
    assert_eq!(plain.rules()[0].aws_roles(), None);
    let none = policy("[[rule]]\nname = \"r\"\ndecision = \"allow\"\naws_roles = []\n");
    assert_eq!(
        none.rules()[0].aws_roles().as_deref(),
        Some("aws_roles none")
    );
}
