use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use rustls_pki_types::UnixTime;

use super::*;
use crate::x509::{Trust, TrustSettings, fingerprint};

/// A CA with a key for `ca_alg`, the trust material that holds it, and a leaf it signed.
struct Signed {
    trust: Trust,
    leaf: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn signed(ca_alg: &'static SignatureAlgorithm) -> Signed {
    let ca_key = KeyPair::generate_for(ca_alg).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(
        "spiffe://example.org/twin".try_into().unwrap(),
    )];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let trust = Trust::load(
        TrustSettings {
            ca_file,
            crl_file: None,
            reload_interval: Duration::from_secs(60),
            revocation: Default::default(),
            fetch: Default::default(),
        },
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    )
    .unwrap();
    Signed {
        trust,
        leaf: leaf.der().to_vec(),
        _dir: dir,
    }
}

impl Signed {
    fn verify(&self, der: &[u8]) -> Result<(), crate::x509::Refusal> {
        self.trust.verify(&[der.to_vec()], UnixTime::now())
    }
}

/// The three top-level fields of a certificate as whole TLVs.
fn fields(der: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let (certificate, _) = tlv(der, SEQUENCE).unwrap();
    let (tbs, rest) = tlv_whole(certificate, SEQUENCE).unwrap();
    let (algorithm, rest) = tlv_whole(rest, SEQUENCE).unwrap();
    (tbs, algorithm, rest)
}

#[test]
fn the_twin_of_an_ecdsa_signature_verifies_and_is_its_own_inverse() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ECDSA_P521_SHA256,
        &rcgen::PKCS_ECDSA_P521_SHA512,
    ] {
        // Several certificates per curve, so that s and n − s each take every DER length.
        for _ in 0..8 {
            let signed = signed(alg);
            let twin = twin(&signed.leaf).unwrap_or_else(|| panic!("no twin for {alg:?}"));
            assert_ne!(twin, signed.leaf);
            assert_ne!(fingerprint(&twin), fingerprint(&signed.leaf));
            assert_eq!(
                fields(&twin).0,
                fields(&signed.leaf).0,
                "same TBSCertificate"
            );
            assert_eq!(fields(&twin).1, fields(&signed.leaf).1, "same algorithm");
            assert_eq!(super::twin(&twin).as_deref(), Some(signed.leaf.as_slice()));
            signed.verify(&signed.leaf).unwrap();
            signed
                .verify(&twin)
                .unwrap_or_else(|e| panic!("the twin of a {alg:?} signature: {e}"));
        }
    }
}

#[test]
fn rsa_and_ed25519_signatures_have_no_twin() {
    for alg in [&rcgen::PKCS_RSA_SHA256, &rcgen::PKCS_ED25519] {
        let signed = signed(alg);
        signed.verify(&signed.leaf).unwrap();
        assert_eq!(twin(&signed.leaf), None, "{alg:?}");
    }
}

/// Re-encodes the ECDSA signature of `der` with `edit` applied to its (r, s) contents.
fn with_signature(der: &[u8], edit: impl Fn(&[u8], &[u8]) -> Vec<u8>) -> Vec<u8> {
    let (tbs, algorithm, bits) = fields(der);
    let (bits, _) = tlv(bits, BIT_STRING).unwrap();
    let (value, _) = tlv(&bits[1..], SEQUENCE).unwrap();
    let (r, rest) = tlv(value, INTEGER).unwrap();
    let (s, _) = tlv(rest, INTEGER).unwrap();
    let mut bits = vec![0];
    bits.extend(edit(r, s));
    let mut certificate = tbs.to_vec();
    certificate.extend_from_slice(algorithm);
    certificate.extend(encode(BIT_STRING, &bits));
    encode(SEQUENCE, &certificate)
}

#[test]
fn the_verifier_refuses_every_other_re_encoding_and_none_has_a_twin() {
    let signed = signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let leaf = &signed.leaf;
    let sequence = |value: Vec<u8>| encode(SEQUENCE, &value);
    let cat = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "s with a redundant leading zero",
            with_signature(leaf, |r, s| {
                sequence(cat(
                    encode(INTEGER, r),
                    encode(INTEGER, &[&[0], s].concat()),
                ))
            }),
        ),
        (
            "r with a redundant leading zero",
            with_signature(leaf, |r, s| {
                sequence(cat(
                    encode(INTEGER, &[&[0], r].concat()),
                    encode(INTEGER, s),
                ))
            }),
        ),
        (
            "the signature SEQUENCE with a long-form length",
            with_signature(leaf, |r, s| {
                let value = cat(encode(INTEGER, r), encode(INTEGER, s));
                [&[SEQUENCE, 0x81, value.len() as u8][..], &value].concat()
            }),
        ),
        (
            "s negated (two's complement)",
            with_signature(leaf, |r, s| {
                let negated: Vec<u8> = s.iter().map(|b| !b).collect();
                sequence(cat(encode(INTEGER, r), encode(INTEGER, &negated)))
            }),
        ),
        (
            "a byte after the signature value",
            with_signature(leaf, |r, s| {
                let mut value = sequence(cat(encode(INTEGER, r), encode(INTEGER, s)));
                value.push(0);
                value
            }),
        ),
        (
            "a byte after the certificate",
            [leaf.as_slice(), &[0]].concat(),
        ),
    ];
    // The outer length in long form with one byte more than needed.
    let (certificate, _) = tlv(leaf, SEQUENCE).unwrap();
    let len = certificate.len();
    assert!(len < 0x10000);
    cases.push((
        "the certificate SEQUENCE with a non-minimal length",
        [
            &[SEQUENCE, 0x83, 0, (len >> 8) as u8, len as u8][..],
            certificate,
        ]
        .concat(),
    ));
    // The outer signatureAlgorithm differing from the TBSCertificate's.
    let (tbs, _, bits) = fields(leaf);
    cases.push((
        "ecdsa-with-SHA384 outside, -SHA256 inside",
        sequence([tbs, ECDSA_ALGORITHMS[1], bits].concat()),
    ));
    // Unused bits in the signature BIT STRING.
    let mut unused = bits.to_vec();
    let header = unused.len() - tlv(bits, BIT_STRING).unwrap().0.len();
    unused[header] = 1;
    cases.push((
        "one unused bit in the BIT STRING",
        sequence([tbs, ECDSA_ALGORITHMS[0], &unused].concat()),
    ));
    signed.verify(leaf).unwrap();
    for (what, der) in &cases {
        assert_ne!(der, leaf, "{what}");
        assert!(signed.verify(der).is_err(), "the verifier accepted {what}");
        assert_eq!(twin(der), None, "{what}");
    }
}

#[test]
fn out_of_range_signatures_and_garbage_have_no_twin() {
    let signed = signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let with_s = |s: Vec<u8>| {
        with_signature(&signed.leaf, |r, _| {
            encode(SEQUENCE, &[encode(INTEGER, r), s.clone()].concat())
        })
    };
    assert_eq!(twin(&with_s(encode(INTEGER, &[0]))), None, "s = 0");
    assert_eq!(twin(&with_s(integer(&P256_ORDER))), None, "s = n");
    assert!(twin(&with_s(integer(&[1]))).is_some(), "s = 1");
    for garbage in [
        &b""[..],
        b"\x30",
        b"\x30\x00",
        b"\x30\x80",
        b"\x30\x84\xff\xff\xff\xff",
    ] {
        assert_eq!(twin(garbage), None);
    }
}

#[test]
fn subtraction_and_integer_encoding() {
    assert_eq!(subtract(&[0x01, 0x00], &[0x01]), vec![0x00, 0xff]);
    assert_eq!(subtract(&P256_ORDER, &[1]).last(), Some(&0x50));
    assert_eq!(integer(&[0x00, 0x7f]), vec![INTEGER, 1, 0x7f]);
    assert_eq!(integer(&[0x80]), vec![INTEGER, 2, 0, 0x80]);
    assert_eq!(encode(SEQUENCE, &[0; 0x80])[..3], [SEQUENCE, 0x81, 0x80]);
    assert_eq!(encode(SEQUENCE, &[0; 0x100])[..4], [SEQUENCE, 0x82, 1, 0]);
}
