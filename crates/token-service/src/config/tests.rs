use std::io::Write as _;

use super::source::{Origin, Values, read_file};
use super::*;

/// The built-in flows and one without settings, as an embedder would register it.
fn registry() -> FlowRegistry {
    let mut registry = FlowRegistry::builtin();
    registry.register("other-flow", "client_secret_post", |_| {
        Err(crate::error::StartupError::other(
            "other-flow is never built in these tests",
        ))
    });
    registry
}

/// The table of the service with the built-in flows.
fn builtin_table() -> Vec<Setting> {
    table(&FlowRegistry::builtin())
}

fn values(pairs: &[(&str, &str)]) -> Values {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ((*v).to_owned(), Origin::Env)))
        .collect()
}

fn ok(pairs: &[(&str, &str)]) -> Config {
    load(values(pairs), &registry()).unwrap()
}

fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
    let errors = load(values(pairs), &registry()).unwrap_err();
    errors.iter().map(ToString::to_string).collect()
}

const AUD: (&str, &str) = ("TOKEN_AUDIENCE", "https://aud.example");

#[test]
fn defaults_need_only_an_audience() {
    let c = ok(&[AUD]);
    assert_eq!(c.port, 8080);
    assert_eq!(c.bind_address.to_string(), "127.0.0.1");
    assert_eq!(c.flows, vec!["xlb-mtls-client-credentials"]);
    assert_eq!(c.validity_seconds, 300);
    assert!(matches!(c.issuer, IssuerSource::FromHost));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("TOKEN_ISSUER is not set"))
    );
    assert!(matches!(
        c.signer,
        SignerConfig::Local { key_file: None, .. }
    ));
}

#[test]
fn cloud_run_binds_all_interfaces_and_defaults_to_the_iam_signer() {
    let c = ok(&[AUD, ("K_SERVICE", "svc")]);
    assert!(matches!(
        c.signer,
        SignerConfig::Iam {
            service_account: None
        }
    ));
    assert_eq!(
        c.google.endpoints.metadata,
        "http://metadata.google.internal"
    );
    assert_eq!(c.google.endpoints.sts, "https://sts.googleapis.com");
    assert_eq!(
        c.google.endpoints.iam_credentials,
        "https://iamcredentials.googleapis.com"
    );
    assert_eq!(c.google.timeout.as_secs(), 10);
    assert!(c.google.cache);
    let c = ok(&[AUD, ("K_SERVICE", "svc"), ("SIGNER", "local")]);
    assert_eq!(c.bind_address.to_string(), "0.0.0.0");
}

#[test]
fn auth_flows_ignores_whitespace_and_refuses_unknown_or_empty_lists() {
    let c = ok(&[
        AUD,
        ("AUTH_FLOWS", " other-flow , xlb-mtls-client-credentials "),
    ]);
    assert_eq!(c.flows, vec!["other-flow", "xlb-mtls-client-credentials"]);
    let e = errors(&[AUD, ("AUTH_FLOWS", "xlb-mtls-client-credentials,nope")]);
    assert_eq!(
        e,
        vec![
            "AUTH_FLOWS: unknown flow 'nope'; known flows: forwarded-cert-client-credentials, mtls-client-credentials, other-flow, xlb-mtls-client-credentials"
        ]
    );
    for blank in [" , ", "", "  "] {
        let e = errors(&[AUD, ("AUTH_FLOWS", blank)]);
        assert!(
            e[0].starts_with("AUTH_FLOWS: the list is empty") && e[0].contains("other-flow"),
            "{e:?}"
        );
    }
}

#[test]
fn token_validity_must_be_minutes_from_1_to_60() {
    assert_eq!(ok(&[AUD, ("TOKEN_VALIDITY", "60")]).validity_seconds, 3600);
    assert_eq!(ok(&[AUD, ("TOKEN_VALIDITY", "1")]).validity_seconds, 60);
    for bad in ["0", "61", "5m", "-1", "2.5"] {
        let e = errors(&[AUD, ("TOKEN_VALIDITY", bad)]);
        assert_eq!(
            e,
            vec![format!(
                "TOKEN_VALIDITY: '{bad}' is not valid; expected whole minutes from 1 to 60"
            )]
        );
    }
}

#[test]
fn issuer_loses_trailing_slash_and_http_gets_a_warning() {
    let c = ok(&[AUD, ("TOKEN_ISSUER", "https://tokens.example.com/")]);
    assert!(matches!(&c.issuer, IssuerSource::Fixed(i) if i == "https://tokens.example.com"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = ok(&[AUD, ("TOKEN_ISSUER", "http://localhost:8080")]);
    assert!(c.warnings.iter().any(|w| w.contains("http://")));
    for bad in ["tokens.example.com", "ftp://x", "https://x?a=b", "https://"] {
        let e = errors(&[AUD, ("TOKEN_ISSUER", bad)]);
        assert!(e[0].starts_with("TOKEN_ISSUER:"), "{bad}: {e:?}");
    }
}

#[test]
fn audience_comes_from_either_pool_spelling() {
    let pool = [
        ("PROJECT_NUMBER", "123456"),
        ("POOL_ID", "my-pool"),
        ("PROVIDER_ID", "my-provider"),
    ];
    for prefix in ["WORKLOAD_IDENITY_", "WORKLOAD_IDENTITY_"] {
        let names: Vec<(String, &str)> = pool
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), *v))
            .collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let c = ok(&pairs);
        assert_eq!(
            c.audience,
            "https://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/my-pool/providers/my-provider"
        );
    }
    let c = ok(&[
        AUD,
        ("WORKLOAD_IDENITY_PROJECT_NUMBER", "1"),
        ("WORKLOAD_IDENTITY_POOL_ID", "p"),
        ("WORKLOAD_IDENTITY_PROVIDER_ID", "v"),
    ]);
    assert_eq!(c.audience, "https://aud.example");
    assert!(c.pool.is_some());
}

#[test]
fn both_spellings_with_different_values_stop_startup() {
    let e = errors(&[
        AUD,
        ("WORKLOAD_IDENITY_POOL_ID", "a"),
        ("WORKLOAD_IDENTITY_POOL_ID", "b"),
    ]);
    assert!(
        e.iter()
            .any(|e| e
                .contains("WORKLOAD_IDENTITY_POOL_ID ('b') and WORKLOAD_IDENITY_POOL_ID ('a')")),
        "{e:?}"
    );
}

#[test]
fn missing_audience_names_both_options() {
    let e = errors(&[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("TOKEN_AUDIENCE")
            && e[0].contains("WORKLOAD_IDENTITY_POOL_ID")
            && e[0].contains("WORKLOAD_IDENITY_")
    );
    let e = errors(&[("WORKLOAD_IDENTITY_POOL_ID", "p")]);
    assert!(
        e[0].contains("incomplete") && e[0].contains("WORKLOAD_IDENTITY_PROJECT_NUMBER"),
        "{e:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = errors(&[
        ("PORT", "eighty"),
        ("TOKEN_VALIDITY", "0"),
        ("LOG_FORMAT", "xml"),
        ("MTLS_HEADER_CLIENT_ID", "x-client-cert-serial-number"),
    ]);
    let starts: Vec<&str> = e.iter().map(|l| l.split(':').next().unwrap()).collect();
    for name in [
        "PORT",
        "TOKEN_VALIDITY",
        "LOG_FORMAT",
        "MTLS_HEADER_CLIENT_ID",
        "TOKEN_AUDIENCE is not set and no workload identity pool is configured",
    ] {
        assert!(starts.contains(&name), "{name} missing in {e:?}");
    }
}

#[test]
fn header_settings_are_validated_and_used() {
    let c = ok(&[AUD, ("MTLS_HEADER_CLIENT_CERT_PRESENT", "X-Mtls-Present")]);
    assert_eq!(
        c.resolved("MTLS_HEADER_CLIENT_CERT_PRESENT"),
        Some("x-mtls-present")
    );
    let e = errors(&[
        AUD,
        ("MTLS_HEADER_CLIENT_CERT_HASH", "x"),
        ("MTLS_HEADER_CLIENT_CERT_ERROR", "bad header"),
    ]);
    assert!(e[0].starts_with("MTLS_HEADER_CLIENT_CERT_ERROR:"), "{e:?}");
}

#[test]
fn lb_secret_is_redacted_in_the_description() {
    let c = ok(&[AUD, ("MTLS_LB_SECRET", "hunter2")]);
    let d = c.describe();
    assert!(
        d.contains("MTLS_LB_SECRET") && d.contains("<redacted>") && !d.contains("hunter2"),
        "{d}"
    );
    let e = errors(&[AUD, ("MTLS_LB_SECRET_HEADER", "x-secret")]);
    assert!(e[0].starts_with("MTLS_LB_SECRET_HEADER"), "{e:?}");
}

#[test]
fn config_file_accepts_known_settings_in_any_case_and_refuses_unknown_ones() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "token_audience = \"https://file.example\"\nTOKEN_VALIDITY = 10\nAUTH_FLOWS = [\"other-flow\"]").unwrap();
    let v = read_file(f.path(), &builtin_table()).unwrap();
    assert_eq!(v["TOKEN_VALIDITY"], ("10".to_owned(), Origin::File));
    assert_eq!(v["AUTH_FLOWS"].0, "other-flow");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "TOKEN_VALIDTY = 10").unwrap();
    let e = read_file(f.path(), &builtin_table()).unwrap_err();
    assert!(
        e[0].to_string().contains("unknown setting 'TOKEN_VALIDTY'"),
        "{e:?}"
    );
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "TOKEN_VALIDITY = ").unwrap();
    assert!(
        read_file(f.path(), &builtin_table()).unwrap_err()[0]
            .to_string()
            .starts_with("--config")
    );
}

#[test]
fn google_settings_are_validated() {
    let c = ok(&[
        AUD,
        ("SIGNER", "iam"),
        ("SERVICE_ACCOUNT", "ts@p.iam.gserviceaccount.com"),
        ("GCE_METADATA_HOST", "127.0.0.1:9090"),
        ("UPSTREAM_TIMEOUT", "3s"),
        ("UPSTREAM_MAX_CONNECTIONS", "16"),
        ("ACCESS_TOKEN_CACHE", "off"),
        ("STS_ENDPOINT", "http://127.0.0.1:9090/"),
    ]);
    assert!(
        matches!(&c.signer, SignerConfig::Iam { service_account: Some(sa) } if sa == "ts@p.iam.gserviceaccount.com")
    );
    assert_eq!(c.google.endpoints.metadata, "http://127.0.0.1:9090");
    assert_eq!(c.google.endpoints.sts, "http://127.0.0.1:9090");
    assert_eq!(c.google.timeout.as_secs(), 3);
    assert_eq!(c.google.max_connections, 16);
    assert_eq!(ok(&[AUD]).google.max_connections, 256);
    assert!(!c.google.cache);
    for bad in ["0", "65537", "many"] {
        let e = errors(&[AUD, ("UPSTREAM_MAX_CONNECTIONS", bad)]);
        assert!(
            e.iter().any(|l| l
                == &format!("UPSTREAM_MAX_CONNECTIONS: '{bad}' is not valid; expected a whole number from 1 to 65536")),
            "{e:?}"
        );
    }
    let e = errors(&[
        AUD,
        ("SIGNER", "kms"),
        ("UPSTREAM_TIMEOUT", "0"),
        ("ACCESS_TOKEN_CACHE", "maybe"),
        ("SERVICE_ACCOUNT", "not-an-email"),
        ("GCE_METADATA_HOST", "http://x/y"),
    ]);
    for name in [
        "SIGNER",
        "UPSTREAM_TIMEOUT",
        "ACCESS_TOKEN_CACHE",
        "SERVICE_ACCOUNT",
        "GCE_METADATA_HOST",
    ] {
        assert!(
            e.iter().any(|l| l.starts_with(&format!("{name}:"))),
            "{name} in {e:?}"
        );
    }
}

#[test]
fn forwarded_settings_refuse_a_chain_header_the_format_cannot_have_and_map_ipv4_in_ipv6() {
    let c = ok(&[
        AUD,
        (
            "TRUSTED_PROXIES",
            "::ffff:10.0.0.0/104, 192.168.1.7, fd00::/8",
        ),
    ]);
    let proxies: Vec<String> = c
        .limits
        .caller
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
    for format in ["xfcc", "nginx", "traefik"] {
        let e = errors(&[
            AUD,
            ("FORWARDED_CERT_FORMAT", format),
            ("FORWARDED_CERT_CHAIN_HEADER", "X-Chain"),
        ]);
        assert!(
            e.iter()
                .any(|m| m.starts_with("FORWARDED_CERT_CHAIN_HEADER:") && m.contains(format)),
            "{e:?}"
        );
    }
    let c = ok(&[
        AUD,
        ("FORWARDED_CERT_FORMAT", "haproxy"),
        ("FORWARDED_CERT_CHAIN_HEADER", "X-Chain"),
    ]);
    assert_eq!(c.resolved("FORWARDED_CERT_CHAIN_HEADER"), Some("x-chain"));
}

#[test]
fn limits_have_safe_defaults_and_refuse_bad_values() {
    let c = ok(&[AUD]);
    assert_eq!(c.limits.max_concurrent_requests, 2048);
    assert_eq!(c.limits.request_timeout.as_secs(), 30);
    assert!(c.limits.global.is_none());
    let per_client = c.limits.per_client.unwrap();
    assert_eq!(
        (per_client.per_second.get(), per_client.burst.get()),
        (10, 50)
    );
    assert_eq!(c.server.max_connections, 4096);
    assert_eq!(c.server.grace_period.as_secs(), 8);
    assert!(c.admin.is_none());
    let off = ok(&[AUD, ("RATE_LIMIT_PER_CLIENT", "0")]);
    assert!(off.limits.per_client.is_none());
    let e = errors(&[
        AUD,
        ("REQUEST_TIMEOUT", "5"),
        ("UPSTREAM_TIMEOUT", "10"),
        ("MAX_CONNECTIONS", "lots"),
        ("ADMIN_PORT", "99999"),
    ]);
    for name in ["REQUEST_TIMEOUT:", "MAX_CONNECTIONS:", "ADMIN_PORT:"] {
        assert!(e.iter().any(|m| m.starts_with(name)), "{name} in {e:?}");
    }
}

/// The line of `check-config` for a setting.
fn described<'a>(description: &'a str, name: &str) -> Option<&'a str> {
    description
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn description_shows_resolved_values_not_the_help_text() {
    let d = ok(&[AUD, ("K_SERVICE", "svc"), ("RATE_LIMIT_GLOBAL", "7")]).describe();
    // Defaults that depend on other settings show what they resolved to.
    let bind = described(&d, "BIND_ADDRESS").unwrap();
    assert!(
        bind.contains("0.0.0.0") && bind.contains("(default)"),
        "{bind}"
    );
    assert!(!d.contains("when K_SERVICE is set"), "{d}");
    assert!(described(&d, "SIGNER").unwrap().contains(" iam "), "{d}");
    assert!(
        described(&d, "RATE_LIMIT_GLOBAL_BURST")
            .unwrap()
            .contains(" 7 "),
        "{d}"
    );
    // Plain defaults are the typed ones.
    let header = described(&d, "HEADER_READ_TIMEOUT").unwrap();
    assert!(
        header.contains(" 10 ") && header.contains("(default)"),
        "{header}"
    );
    let given = ok(&[AUD, ("HEADER_READ_TIMEOUT", "12s")]).describe();
    let header = described(&given, "HEADER_READ_TIMEOUT").unwrap();
    assert!(
        header.contains(" 12 ") && header.contains("(environment)"),
        "{header}"
    );
    // Unset settings without a value are left out.
    assert!(described(&d, "TLS_CERT_FILE").is_none(), "{d}");
}

#[test]
fn unknown_variables_with_our_prefixes_are_warned_about_with_the_closest_name() {
    let c = ok(&[
        AUD,
        ("TOKEN_VALIDTY", "10"),
        ("RATE_LIMIT_PER_CLIENTS", "3"),
        ("TOKEN_CLIENT_CERT_FILE", "/x"),
        ("HOME", "/root"),
    ]);
    let warned = |needle: &str| c.warnings.iter().find(|w| w.contains(needle)).cloned();
    let typo = warned("TOKEN_VALIDTY").unwrap();
    assert!(typo.contains("did you mean TOKEN_VALIDITY?"), "{typo}");
    let plural = warned("RATE_LIMIT_PER_CLIENTS").unwrap();
    assert!(
        plural.contains("did you mean RATE_LIMIT_PER_CLIENT?"),
        "{plural}"
    );
    // The device-side client's variables and other software's are not ours.
    assert!(warned("TOKEN_CLIENT_").is_none(), "{:?}", c.warnings);
    assert!(warned("HOME").is_none(), "{:?}", c.warnings);
    // The value is ignored: the default stays.
    assert_eq!(c.validity_seconds, 300);
}

#[test]
fn an_embedders_flow_setting_is_known_and_not_warned_about() {
    const SECRETS: Setting = Setting::text("TOKEN_STATIC_SECRETS", None, "test");
    let mut registry = registry();
    registry.add(crate::flows::FlowSpec::new(
        "static",
        "client_secret_post",
        &[SECRETS],
        |r| {
            let secrets = r.text(&SECRETS);
            move |_: &FlowSettings| Err(crate::error::StartupError::other(format!("{secrets:?}")))
        },
    ));
    let c = load(
        values(&[
            AUD,
            ("AUTH_FLOWS", "static"),
            ("TOKEN_STATIC_SECRETS", "a=b"),
        ]),
        &registry,
    )
    .unwrap();
    assert!(
        c.warnings.iter().all(|w| !w.contains("TOKEN_STATIC")),
        "{:?}",
        c.warnings
    );
    assert!(c.describe().contains("TOKEN_STATIC_SECRETS"));
    assert!(
        table(&registry)
            .iter()
            .any(|s| s.name == "TOKEN_STATIC_SECRETS")
    );
}

#[test]
fn edit_distance_counts_insertions_deletions_and_substitutions() {
    assert_eq!(edit_distance("", ""), 0);
    assert_eq!(edit_distance("PORT", "PORT"), 0);
    assert_eq!(edit_distance("PORT", "PROT"), 2);
    assert_eq!(edit_distance("TOKEN_VALIDTY", "TOKEN_VALIDITY"), 1);
    assert_eq!(edit_distance("ABC", ""), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

#[test]
fn every_declared_default_is_valid_and_every_name_unique() {
    let empty = Values::new();
    let mut r = reader::Reader::new(&empty);
    let settings = builtin_table();
    for setting in &settings {
        if let reader::Kind::Header {
            default: Some(default),
        } = setting.kind
        {
            assert!(
                http::HeaderName::from_bytes(default.as_bytes()).is_ok(),
                "{}: {default}",
                setting.name
            );
            r.header(setting, None);
        }
        let twice = settings.iter().filter(|s| s.name == setting.name).count();
        assert_eq!(twice, 1, "{} is declared twice", setting.name);
    }
    assert!(!r.has_errors());
}

#[test]
fn help_default_text_is_derived_from_the_typed_default() {
    let settings = builtin_table();
    let text = |name: &str| {
        settings
            .iter()
            .find(|s| s.name == name)
            .map(Setting::default_text)
            .unwrap()
    };
    assert_eq!(text("HEADER_READ_TIMEOUT"), "10");
    assert_eq!(text("TOKEN_VALIDITY"), "5");
    assert_eq!(text("PORT"), "8080");
    assert_eq!(text("ACCESS_TOKEN_CACHE"), "on");
    assert_eq!(
        text("MTLS_HEADER_CLIENT_CERT_PRESENT"),
        "X-Client-Cert-Present"
    );
    assert_eq!(
        text("BIND_ADDRESS"),
        "127.0.0.1; 0.0.0.0 when K_SERVICE is set"
    );
    assert_eq!(text("ADMIN_PORT"), "");
    assert_eq!(
        crate::server::ServerSettings::default()
            .header_read_timeout
            .as_secs(),
        10
    );
}

#[test]
fn token_audiences_and_their_lifetimes_are_read_within_token_validitys_bounds() {
    let c = ok(&[AUD]);
    assert_eq!(c.audiences, crate::issuer::AudienceSettings::default());
    let c = ok(&[
        AUD,
        (
            "TOKEN_AUDIENCES",
            "api://AzureADTokenExchange, sts.amazonaws.com",
        ),
        ("TOKEN_AUDIENCE_VALIDITY", "api://AzureADTokenExchange=15"),
    ]);
    assert_eq!(
        c.audiences.allowed,
        vec!["api://AzureADTokenExchange", "sts.amazonaws.com"]
    );
    assert_eq!(
        c.audiences.lifetimes.get("api://AzureADTokenExchange"),
        Some(&900)
    );
    assert_eq!(
        c.resolved.get("TOKEN_AUDIENCES").map(String::as_str),
        Some("api://AzureADTokenExchange,sts.amazonaws.com")
    );
    let listed = ("TOKEN_AUDIENCES", "api://AzureADTokenExchange");
    for (value, problem) in [
        (
            "api://AzureADTokenExchange=61",
            "TOKEN_AUDIENCE_VALIDITY: 'api://AzureADTokenExchange=61' is not valid; expected whole minutes from 1 to 60 after '=' (the bounds of TOKEN_VALIDITY)",
        ),
        (
            "api://AzureADTokenExchange=0",
            "TOKEN_AUDIENCE_VALIDITY: 'api://AzureADTokenExchange=0' is not valid; expected whole minutes from 1 to 60 after '=' (the bounds of TOKEN_VALIDITY)",
        ),
        (
            "api://AzureADTokenExchange",
            "TOKEN_AUDIENCE_VALIDITY: 'api://AzureADTokenExchange' is not valid; expected AUDIENCE=MINUTES, e.g. api://AzureADTokenExchange=15",
        ),
        (
            "sts.amazonaws.com=10",
            "TOKEN_AUDIENCE_VALIDITY: 'sts.amazonaws.com' is not one of TOKEN_AUDIENCES; add it to TOKEN_AUDIENCES or remove it here",
        ),
        (
            "https://aud.example=10",
            "TOKEN_AUDIENCE_VALIDITY: 'https://aud.example' is the default audience, whose lifetime is TOKEN_VALIDITY; set TOKEN_VALIDITY instead",
        ),
    ] {
        assert_eq!(
            errors(&[AUD, listed, ("TOKEN_AUDIENCE_VALIDITY", value)]),
            vec![problem],
            "{value}"
        );
    }
}
