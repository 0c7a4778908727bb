use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};

use super::*;

fn at(text: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
}

/// A CA (DER) and its issuer; `crl_sign` decides whether its keyUsage allows cRLSign.
fn ca(name: &str, crl_sign: bool) -> (Vec<u8>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    if crl_sign {
        params.key_usages.push(KeyUsagePurpose::CrlSign);
    }
    let cert = params.self_signed(&key).unwrap();
    // rcgen signs CRLs only for issuers with cRLSign: the certificate says what we test.
    params.key_usages.push(KeyUsagePurpose::CrlSign);
    (cert.der().to_vec(), Issuer::new(params, key))
}

fn crl(issuer: &Issuer<'static, KeyPair>, number: u64, this_update: &str) -> Vec<u8> {
    CertificateRevocationListParams {
        this_update: at(this_update),
        next_update: at("2099-01-01T00:00:00Z"),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
    .der()
    .to_vec()
}

#[test]
fn a_configured_crl_must_carry_the_signature_of_a_bundle_ca_that_may_sign_crls() {
    let (root, issuer) = ca("Root", true);
    let (_, forger) = ca("Root", true);
    let (no_crl_sign, weak) = ca("Weak", false);
    let bundle = vec![root.clone(), no_crl_sign.clone()];
    let good = crl(&issuer, 1, "2026-01-01T00:00:00Z");
    let info = check(Origin::Configured, &[], &good, &bundle).unwrap();
    assert_eq!(info.number.map(|n| n.to_string()).as_deref(), Some("1"));
    let forged = crl(&forger, 2, "2026-01-01T00:00:00Z");
    let e = check(Origin::Configured, &[], &forged, &bundle).unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");
    let e = check(
        Origin::Configured,
        &[],
        &crl(&weak, 1, "2026-01-01T00:00:00Z"),
        &bundle,
    )
    .unwrap_err();
    assert!(e.contains("lacks cRLSign"), "{e}");
    let (_, stranger) = ca("Stranger", true);
    let e = check(
        Origin::Configured,
        &[],
        &crl(&stranger, 1, "2026-01-01T00:00:00Z"),
        &bundle,
    )
    .unwrap_err();
    assert!(e.contains("not in TLS_CLIENT_CA_FILE"), "{e}");
    // A distribution point's CRL is checked against the issuer path, not the whole bundle.
    assert!(check(Origin::Cdp, &[root], &good, &bundle).is_ok());
    assert!(check(Origin::Cdp, &[no_crl_sign], &good, &bundle).is_err());
    assert!(check(Origin::Cdp, &[], &good, &bundle).is_err());
    assert!(check(Origin::Configured, &[], b"not a CRL", &bundle).is_err());
}

#[test]
fn the_higher_crl_number_wins_and_on_a_tie_the_later_this_update() {
    let (_, issuer) = ca("Root", true);
    let info = |number, this_update| info_of(&crl(&issuer, number, this_update)).unwrap();
    let (old, new) = (
        info(5, "2026-02-01T00:00:00Z"),
        info(6, "2026-01-01T00:00:00Z"),
    );
    assert!(new.newer_than(&old) && !old.newer_than(&new));
    let (early, late) = (
        info(7, "2026-01-01T00:00:00Z"),
        info(7, "2026-01-02T00:00:00Z"),
    );
    assert!(late.newer_than(&early) && !early.newer_than(&late));
    assert!(!early.newer_than(&early));
    assert_eq!(
        old.scope, new.scope,
        "one issuer, no issuingDistributionPoint: one scope"
    );
}

#[test]
fn the_cache_keeps_one_file_per_url_and_skips_files_not_named_by_their_url() {
    let dir = tempfile::tempdir().unwrap();
    let (root, issuer) = ca("Root", true);
    let entry = cache::Cached {
        url: "http://crl.example/root.crl".to_owned(),
        origin: Origin::Cdp,
        der: crl(&issuer, 1, "2026-01-01T00:00:00Z"),
        issuers: vec![root],
    };
    cache::store(dir.path(), &entry).unwrap();
    cache::store(dir.path(), &entry).unwrap();
    let (found, skipped) = cache::load(dir.path(), 16, 1 << 20);
    assert_eq!((found, skipped.len()), (vec![entry.clone()], 0));
    // Copied under another name (another URL's file): skipped, with a reason.
    let name = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::copy(&name, dir.path().join("0123.json")).unwrap();
    std::fs::write(dir.path().join("broken.json"), b"{").unwrap();
    let (found, skipped) = cache::load(dir.path(), 16, 1 << 20);
    assert_eq!(found, vec![entry]);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    let (found, _) = cache::load(&dir.path().join("missing"), 16, 1 << 20);
    assert!(found.is_empty());
}

#[test]
fn only_http_and_https_distribution_points_are_taken() {
    let (_, issuer) = ca("Root", true);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![
            "ldap://ldap.example/cn=Root".to_owned(),
            "http://crl.example/root.crl".to_owned(),
            "https://crl.example/root.crl".to_owned(),
            "http://user@crl.example/root.crl".to_owned(),
            "ftp://crl.example/root.crl".to_owned(),
        ],
    }];
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let (_, parsed) = X509Certificate::from_der(leaf.der()).unwrap();
    assert_eq!(
        cdp::urls(&parsed, 16),
        [
            "http://crl.example/root.crl",
            "https://crl.example/root.crl"
        ]
    );
    assert_eq!(cdp::urls(&parsed, 1), ["http://crl.example/root.crl"]);
}

/// Over plain http anyone on the path can answer a configured URL with the CRL of another CA
/// of the bundle (validly signed, with a higher CRL number): taking it would drop the CRL of
/// the URL's own CA from the material, so its revoked certificates would pass.
#[test]
fn a_configured_url_keeps_serving_the_crl_of_its_own_ca() {
    let (one, one_issuer) = ca("CA one", true);
    let (two, two_issuer) = ca("CA two", true);
    let bundle = vec![one, two];
    let in_force = crl(&one_issuer, 5, "2026-01-01T00:00:00Z");
    let other = crl(&two_issuer, 900, "2026-06-01T00:00:00Z");
    let e =
        checked_download(Origin::Configured, &[], &other, &bundle, Some(&in_force)).unwrap_err();
    assert!(e.contains("CA one"), "{e}");
    // Its own CA's newer CRL is taken; the first download of a URL may be any bundle CA's.
    let newer = crl(&one_issuer, 6, "2026-02-01T00:00:00Z");
    assert!(checked_download(Origin::Configured, &[], &newer, &bundle, Some(&in_force)).is_ok());
    assert!(checked_download(Origin::Configured, &[], &other, &bundle, None).is_ok());
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len();
    let mut out = vec![tag];
    if n < 128 {
        out.push(u8::try_from(n).unwrap());
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap());
        out.extend(bytes);
    }
    out.extend_from_slice(body);
    out
}

/// The length of the TLV header at the start of `input`, and of its content.
fn tlv_lengths(input: &[u8]) -> (usize, usize) {
    let first = usize::from(input[1]);
    if first < 128 {
        return (2, first);
    }
    let count = first & 0x7f;
    let len = input[2..2 + count]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    (2 + count, len)
}

/// The first TLV of `input` and what follows it.
fn split_tlv(input: &[u8]) -> (&[u8], &[u8]) {
    let (header, len) = tlv_lengths(input);
    input.split_at(header + len)
}

/// A CRL that its CA signed and x509-parser reads, but that the chain verifier refuses
/// (rustls-webpki knows no reason code 7): taken in, it would make every rebuild of the trust
/// material fail, so file and bundle reloads and every other fetched CRL would stop applying,
/// and a restart would find it in the cache. It is refused like a bad download.
#[test]
fn a_crl_the_chain_verifier_cannot_use_is_refused() {
    let key = KeyPair::generate().unwrap();
    let signer = KeyPair::from_pem(&key.serialize_pem()).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = params.self_signed(&key).unwrap().der().to_vec();
    let issuer = Issuer::new(params, key);
    let der = CertificateRevocationListParams {
        this_update: at("2026-01-01T00:00:00Z"),
        next_update: at("2099-01-01T00:00:00Z"),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: SerialNumber::from(7u64),
            revocation_time: at("2026-01-01T00:00:00Z"),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .der()
    .to_vec();
    let bundle = vec![root.clone()];
    assert!(checked_download(Origin::Configured, &[], &der, &bundle, None).is_ok());
    // The same CRL with reason code 7 (unused in RFC 5280), signed again by its CA.
    let body = &der[tlv_lengths(&der).0..];
    let (tbs, rest) = split_tlv(body);
    let (algorithm, _) = split_tlv(rest);
    let reason = [0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01, 0x01];
    let at_reason = tbs.windows(reason.len()).position(|w| w == reason).unwrap();
    let mut tbs = tbs.to_vec();
    tbs[at_reason + reason.len() - 1] = 7;
    let signature = rcgen::SigningKey::sign(&signer, &tbs).unwrap();
    let mut bits = vec![0u8];
    bits.extend(signature);
    let patched = der_tlv(
        0x30,
        &[tbs, algorithm.to_vec(), der_tlv(0x03, &bits)].concat(),
    );
    // The premise: x509-parser and the signature check take it, the verifier does not.
    assert!(check(Origin::Configured, &[], &patched, &bundle).is_ok());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.into()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let built = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
        .with_crls(vec![CertificateRevocationListDer::from(patched.clone())])
        .build();
    assert!(built.is_err(), "the verifier refuses it");
    let e = checked_download(Origin::Configured, &[], &patched, &bundle, None).unwrap_err();
    assert!(e.contains("chain verifier"), "{e}");
}
