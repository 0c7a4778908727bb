#![expect(
    clippy::too_many_lines,
    reason = "a test builds its PKI and its cases in one place"
)]

use super::*;
use crate::x509::TrustSettings;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

struct TestCa {
    der: Vec<u8>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str, parent: Option<&TestCa>) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = match parent {
        Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    TestCa {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(name: &str, issuer: &TestCa) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names.push(SanType::URI(
        format!("spiffe://example.org/{name}").try_into().unwrap(),
    ));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
        .signed_by(&key, &issuer.issuer)
        .unwrap()
        .der()
        .to_vec()
}

fn lengths(chains: &VerifiedChains) -> (usize, usize) {
    (
        chains.accepted.lock().unwrap().len(),
        chains.refused.lock().unwrap().len(),
    )
}

fn trust_of(root: &TestCa, dir: &std::path::Path) -> Arc<Trust> {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &root.pem).unwrap();
    Arc::new(
        Trust::load(
            TrustSettings {
                ca_file,
                crl_file: None,
                reload_interval: Duration::from_secs(5),
                revocation: Default::default(),
                fetch: Default::default(),
            },
            Arc::new(crate::metrics::Metrics::new()),
        )
        .unwrap(),
    )
}

/// Issue 11, no ambient state: the verification permits belong to each trust material (so to
/// each application), so one application using all of its own leaves another's untouched.
#[tokio::test]
async fn two_trust_instances_have_independent_verification_permits() {
    let root = ca("Root", None);
    let dir = tempfile::tempdir().unwrap();
    let (busy, idle) = (trust_of(&root, dir.path()), trust_of(&root, dir.path()));
    let all = u32::try_from(concurrency()).unwrap();
    assert_eq!(busy.verifications().available_permits(), concurrency());
    let _held = busy
        .verifications()
        .clone()
        .try_acquire_many_owned(all)
        .unwrap();
    assert_eq!(busy.verifications().available_permits(), 0);
    assert_eq!(idle.verifications().available_permits(), concurrency());
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        VerifiedChains::default().authenticate(
            &idle,
            &Clock::system(),
            ClientIdAttribute::Spiffe,
            &[leaf("idle", &root)],
        ),
    )
    .await
    .expect("the idle application verifies while the other holds all of its permits")
    .unwrap();
    assert_eq!(client.client_id, "spiffe://example.org/idle");
    let waiting = tokio::time::timeout(
        Duration::from_millis(200),
        VerifiedChains::default().authenticate(
            &busy,
            &Clock::system(),
            ClientIdAttribute::Spiffe,
            &[leaf("busy", &root)],
        ),
    )
    .await;
    assert!(
        waiting.is_err(),
        "the busy application waits for its own permits"
    );
}

/// Finding 8 (issue 10): padding or reordering a chain with unrelated certificates finds the
/// same verdict, so it neither adds entries nor evicts another client's.
#[tokio::test]
async fn padded_or_reordered_chains_share_one_verdict_and_evict_nobody() {
    let root = ca("Root", None);
    let intermediate = ca("Intermediate", Some(&root));
    let stranger = ca("Stranger", None);
    let strangers_child = ca("Stranger child", Some(&stranger));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &root.pem).unwrap();
    let trust = Arc::new(
        Trust::load(
            TrustSettings {
                ca_file,
                crl_file: None,
                reload_interval: Duration::from_secs(5),
                revocation: Default::default(),
                fetch: Default::default(),
            },
            Arc::new(crate::metrics::Metrics::new()),
        )
        .unwrap(),
    );
    let clock = Clock::system();
    let chains = VerifiedChains::default();
    let spiffe = ClientIdAttribute::Spiffe;
    let (a, b) = (leaf("a", &intermediate), leaf("b", &root));
    let chain_a = vec![a.clone(), intermediate.der.clone()];
    let client = chains
        .authenticate(&trust, &clock, spiffe, &chain_a)
        .await
        .unwrap();
    assert_eq!(client.client_id, "spiffe://example.org/a");
    chains
        .authenticate(&trust, &clock, spiffe, std::slice::from_ref(&b))
        .await
        .unwrap();
    assert_eq!(lengths(&chains), (2, 0));
    let paddings = [
        vec![a.clone(), stranger.der.clone(), intermediate.der.clone()],
        vec![
            a.clone(),
            intermediate.der.clone(),
            intermediate.der.clone(),
        ],
        vec![
            a.clone(),
            strangers_child.der.clone(),
            intermediate.der.clone(),
        ],
        vec![
            a.clone(),
            root.der.clone(),
            intermediate.der.clone(),
            a.clone(),
        ],
    ];
    for padded in &paddings {
        let again = chains
            .authenticate(&trust, &clock, spiffe, padded)
            .await
            .unwrap();
        assert_eq!(again.client_id, client.client_id);
    }
    assert_eq!(lengths(&chains), (2, 0));
    let version = trust.current().version;
    let key_b = normalise(std::slice::from_ref(&b)).unwrap().key;
    let leaf_b = leaf_key(std::slice::from_ref(&b), key_b);
    assert!(
        chains
            .accepted(&leaf_b, &key_b, version, clock.now())
            .is_some()
    );
    let alone = std::slice::from_ref(&a);
    assert_eq!(
        leaf_key(alone, normalise(alone).unwrap().key),
        leaf_key(&chain_a, normalise(&chain_a).unwrap().key),
        "a leaf has one key whether it comes alone or with its chain"
    );

    // A look-alike CA (the intermediate's name and key identifier, another issuer and key)
    // survives the name-based reduction and the chain still verifies through the real
    // intermediate: it must neither add an entry, nor evict one, nor make the issuer
    // ambiguous (which would blank issuer_ca_sha256 and skip a deny rule on it).
    let ski = {
        let (_, cert) = X509Certificate::from_der(&intermediate.der).unwrap();
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    };
    let lookalike = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ski);
        params
            .signed_by(&key, &stranger.issuer)
            .unwrap()
            .der()
            .to_vec()
    };
    for padded in [
        vec![a.clone(), lookalike.clone(), intermediate.der.clone()],
        vec![a.clone(), intermediate.der.clone(), lookalike.clone()],
    ] {
        let again = chains
            .authenticate(&trust, &clock, spiffe, &padded)
            .await
            .unwrap();
        assert_eq!(
            again.facts.issuer_ca_sha256.as_deref(),
            Some(crate::x509::fingerprint(&intermediate.der).as_str()),
            "the issuer is the CA whose key signed the leaf"
        );
    }
    assert_eq!(lengths(&chains), (2, 0), "one entry per certificate");

    // A refused chain, padded in different ways, is one refusal too.
    let outsider = leaf("outsider", &stranger);
    for padded in [
        vec![outsider.clone()],
        vec![outsider.clone(), intermediate.der.clone()],
        vec![outsider.clone(), stranger.der.clone(), root.der.clone()],
    ] {
        let refused = chains
            .authenticate(&trust, &clock, spiffe, &padded)
            .await
            .unwrap_err();
        assert!(
            refused.kind() == crate::error::Kind::UnauthorizedClient
                && refused.message().contains("unknown issuer")
                && refused.labels().iter().any(|(k, _)| k == "cert/serial"),
            "{refused:?}"
        );
    }
    assert_eq!(lengths(&chains), (2, 1));

    // A reload is a new version: the old verdicts no longer count (and are replaced in
    // place, not added).
    trust.reload().unwrap();
    chains
        .authenticate(&trust, &clock, spiffe, &paddings[0])
        .await
        .unwrap();
    assert_eq!(lengths(&chains), (2, 1));
}

#[test]
fn a_full_map_forgets_only_its_oldest_entry() {
    let mut map = Bounded::new(3);
    for i in 0..3u8 {
        map.insert([i; 32], i);
    }
    map.insert([1; 32], 10);
    assert_eq!(map.len(), 3);
    map.insert([7; 32], 7);
    assert_eq!(map.len(), 3);
    assert_eq!(map.get(&[0; 32]), None);
    assert_eq!(map.get(&[1; 32]), Some(&10));
    assert_eq!(map.get(&[2; 32]), Some(&2));
    assert_eq!(map.get(&[7; 32]), Some(&7));
    map.remove(&[2; 32]);
    map.insert([8; 32], 8);
    map.insert([9; 32], 9);
    assert_eq!(map.len(), 3);
    assert_eq!(map.get(&[1; 32]), None);
    assert_eq!(map.get(&[7; 32]), Some(&7));
}

/// A CA certificate presented as the client's own is refused with a sentence that says what
/// to present instead, never webpki's programmer name for the case (issue 11).
#[tokio::test]
async fn a_ca_presented_as_the_leaf_is_refused_with_a_sentence() {
    let root = ca("Root", None);
    let intermediate = ca("Intermediate", Some(&root));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &root.pem).unwrap();
    let trust = Arc::new(
        Trust::load(
            TrustSettings {
                ca_file,
                crl_file: None,
                reload_interval: Duration::from_secs(5),
                revocation: Default::default(),
                fetch: Default::default(),
            },
            Arc::new(crate::metrics::Metrics::new()),
        )
        .unwrap(),
    );
    let refused = VerifiedChains::default()
        .authenticate(
            &trust,
            &Clock::system(),
            ClientIdAttribute::Spiffe,
            std::slice::from_ref(&intermediate.der),
        )
        .await
        .unwrap_err();
    let message = refused.message();
    assert!(message.contains("is a CA certificate"), "{message}");
    assert!(!message.contains("CaUsedAsEndEntity"), "{message}");
    assert!(!message.contains("Other("), "{message}");
}

/// Only a refusal for want of a usable CRL is one a distribution point's CRL could change.
#[test]
fn only_refusals_for_want_of_a_crl_await_one() {
    let policy = RevocationPolicy::default();
    let awaits =
        |e: CertificateError| describe(&rustls::Error::InvalidCertificate(e), policy).awaits_crl();
    assert!(awaits(CertificateError::UnknownRevocationStatus));
    assert!(awaits(CertificateError::ExpiredRevocationList));
    for settled in [
        CertificateError::UnknownIssuer,
        CertificateError::Expired,
        CertificateError::BadSignature,
        CertificateError::InvalidPurpose,
    ] {
        assert!(!awaits(settled));
    }
}
