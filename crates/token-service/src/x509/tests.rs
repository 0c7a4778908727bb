use super::*;

#[test]
fn client_id_attribute_parses_its_four_names() {
    for (text, attribute) in [
        ("spiffe", ClientIdAttribute::Spiffe),
        ("DNS_SAN", ClientIdAttribute::DnsSan),
        ("uri_san", ClientIdAttribute::UriSan),
        (" sha256 ", ClientIdAttribute::Sha256),
    ] {
        assert_eq!(ClientIdAttribute::parse(text), Some(attribute));
        assert_eq!(ClientIdAttribute::parse(attribute.name()), Some(attribute));
    }
    assert_eq!(ClientIdAttribute::parse("cn"), None);
}

#[test]
fn facts_refuse_garbage() {
    assert!(facts(b"not a certificate").is_err());
    assert!(facts(&[]).is_err());
}

/// Issue 11, point 2: verifying a chain (and listing expired CRLs for `/readyz`) is a
/// predicate. A CRL that expires after the load is neither logged nor counted by the requests
/// that use it; the expiry watcher notes it (log, metric).
#[test]
fn verify_notes_no_expired_crl_and_readiness_does() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    let at = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = params.self_signed(&key).unwrap();
    let issuer = Issuer::new(params, key);
    let crl = CertificateRevocationListParams {
        this_update: at("2026-01-01T00:00:00Z"),
        next_update: at("4000-01-01T00:00:00Z"),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name.push(DnType::CommonName, "leaf");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf
        .signed_by(&KeyPair::generate().unwrap(), &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, crl_file) = (dir.path().join("ca.pem"), dir.path().join("crl.pem"));
    std::fs::write(&ca_file, root.pem()).unwrap();
    std::fs::write(&crl_file, crl.pem().unwrap()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let settings = TrustSettings {
        ca_file,
        crl_file: Some(crl_file),
        reload_interval: std::time::Duration::from_millis(10),
        revocation: RevocationPolicy::default(),
        fetch: Default::default(),
    };
    let trust = Trust::load(settings, metrics.clone()).unwrap();
    let gauge = |n: u32| format!("token_service_client_crls_expired {n}");
    let has = |line: &str| metrics.render().lines().any(|l| l == line);
    assert!(has(&gauge(0)), "{}", metrics.render());
    // A day after the CRL's nextUpdate (4000-01-01), long before the leaf's notAfter (4096).
    let after_expiry: i64 = 64_060_588_800 + 86_400;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(after_expiry).unwrap(),
    ));
    trust.verify(&[leaf.der().to_vec()], now).unwrap();
    assert!(has(&gauge(0)), "{}", metrics.render());
    let details = trust.readiness_details(after_expiry);
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(has(&gauge(0)), "{}", metrics.render());
    // The expiry watcher notes it within an interval, with the clock it is given.
    let trust = Arc::new(trust);
    let background = crate::tasks::Background::new();
    trust.watch_expiry(&background, crate::clock::Clock::fixed(after_expiry));
    let noted = crate::clock::Deadline::after(std::time::Duration::from_secs(10));
    while !has(&gauge(1)) && !noted.is_past() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(has(&gauge(1)), "{}", metrics.render());
    assert_eq!(background.running(), 1);
}

fn settings_of(ca_file: std::path::PathBuf, crl_file: Option<std::path::PathBuf>) -> TrustSettings {
    TrustSettings {
        ca_file,
        crl_file,
        reload_interval: std::time::Duration::from_secs(5),
        revocation: RevocationPolicy::default(),
        fetch: Default::default(),
    }
}

/// Issue 11, point 1: a refused file is a typed error that prints as it always has
/// (`SETTING: problem`) and becomes the startup error of the setting the file came from.
#[test]
fn refused_trust_files_name_their_setting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let metrics = Arc::new(Metrics::new());
    let e = Trust::load(settings_of(missing.clone(), None), metrics.clone()).unwrap_err();
    let text = e.to_string();
    let prefix = format!("TLS_CLIENT_CA_FILE: cannot read '{}': ", missing.display());
    assert!(text.starts_with(&prefix), "{text}");
    let startup = crate::error::StartupError::from(e);
    assert_eq!(startup.setting.as_deref(), Some("TLS_CLIENT_CA_FILE"));
    assert_eq!(startup.to_string(), text);

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = Trust::load(settings_of(empty.clone(), None), metrics.clone()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "TLS_CLIENT_CA_FILE: '{}' holds no PEM certificate",
            empty.display()
        )
    );

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let crl = dir.path().join("crl.pem");
    std::fs::write(&crl, "").unwrap();
    let e = Trust::load(settings_of(ca.clone(), Some(crl.clone())), metrics.clone()).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("TLS_CLIENT_CRL_FILE: '"), "{text}");
    let startup = crate::error::StartupError::from(e);
    assert_eq!(startup.setting.as_deref(), Some("TLS_CLIENT_CRL_FILE"));
    assert_eq!(startup.to_string(), text);
}
