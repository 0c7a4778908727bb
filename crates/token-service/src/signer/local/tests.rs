use std::os::unix::fs::PermissionsExt as _;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::jwk::thumbprint_of;
use super::*;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn ec_pem() -> String {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    pem("PRIVATE KEY", doc.as_ref())
}

fn rsa_pem() -> String {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    pem("PRIVATE KEY", pair.as_der().unwrap().as_ref())
}

fn keys(signer: &LocalSigner) -> Vec<Value> {
    match signer.publication().unwrap() {
        Publication::Jwks(set) => set["keys"].as_array().unwrap().clone(),
        Publication::Uri(_) => panic!("local signer publishes a JWK Set"),
    }
}

#[test]
fn thumbprint_matches_rfc7638_example() {
    // RFC 7638 §3.1: the example RSA key and its thumbprint.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let members = vec![
        ("e", "AQAB".to_owned()),
        ("kty", "RSA".to_owned()),
        ("n", n.to_owned()),
    ];
    assert_eq!(
        thumbprint_of(members),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn ec_key_signs_es256_and_publishes_p256_jwk() {
    let signer = LocalSigner::from_pem(ec_pem().as_bytes(), "test").unwrap();
    assert_eq!(signer.algorithm(), "ES256");
    let jwk = &keys(&signer)[0];
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kid"], signer.key_id().unwrap());
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["y"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
}

#[test]
fn every_key_is_published_and_the_first_signs() {
    let file = format!("{}{}", rsa_pem(), ec_pem());
    let signer = LocalSigner::from_pem(file.as_bytes(), "test").unwrap();
    assert_eq!(signer.algorithm(), "RS256");
    let published = keys(&signer);
    assert_eq!(published.len(), 2);
    assert_eq!(published[0]["kid"], signer.key_id().unwrap());
    assert_eq!(published[0]["kty"], "RSA");
    assert_eq!(published[1]["kty"], "EC");
}

#[test]
fn any_rsa_key_starts_the_rsa_threads() {
    let (rsa, ec) = (rsa_pem(), ec_pem());
    let certificate = pem("CERTIFICATE", b"not a key");
    assert!(any_key_is_rsa(format!("{certificate}{rsa}{ec}").as_bytes()));
    assert!(any_key_is_rsa(format!("{ec}{rsa}").as_bytes()));
    assert!(!any_key_is_rsa(format!("{ec}{certificate}").as_bytes()));
    assert!(!any_key_is_rsa(b"no PEM here"));
}

#[tokio::test]
async fn signed_token_has_header_with_alg_kid_typ_and_the_claims() {
    let signer = LocalSigner::from_pem(ec_pem().as_bytes(), "test").unwrap();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!("x"));
    let jwt = signer
        .sign(
            &claims,
            crate::clock::Deadline::after(std::time::Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"alg": "ES256", "kid": signer.key_id().unwrap(), "typ": "JWT"})
    );
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload, json!({"sub": "x"}));
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
}

#[test]
fn pkcs1_key_is_refused_with_conversion_hint() {
    let e = LocalSigner::from_pem(
        pem("RSA PRIVATE KEY", b"\x30\x00").as_bytes(),
        "SIGNING_KEY_FILE 'k.pem'",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("SIGNING_KEY_FILE 'k.pem'"), "{e}");
    assert!(e.contains("openssl pkcs8 -topk8"), "{e}");
}

/// `openssl ecparam -genkey` writes an `EC PARAMETERS` block before the key: a block the PEM
/// reader skips, which the key file skips too (it loaded before key states came in).
#[test]
fn blocks_that_are_no_keys_are_skipped_and_sec1_keys_get_the_conversion_hint() {
    let params = pem("EC PARAMETERS", b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07");
    let signer = LocalSigner::from_pem(format!("{params}{}", ec_pem()).as_bytes(), "test");
    assert!(signer.is_ok(), "{:?}", signer.err().map(|e| e.to_string()));
    let e = LocalSigner::from_pem(
        format!("{params}{}", pem("EC PRIVATE KEY", b"\x30\x00")).as_bytes(),
        "SIGNING_KEY_FILE 'k.pem'",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("openssl pkcs8 -topk8"), "{e}");
    let e = LocalSigner::from_pem(
        format!("# token-service: state=active\n{params}{}", ec_pem()).as_bytes(),
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'EC PARAMETERS' block, which is no key"), "{e}");
}

#[test]
fn file_without_keys_or_with_garbage_is_refused() {
    let e = LocalSigner::from_pem(b"hello", "SIGNING_KEY_FILE 'k.pem'")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no 'PRIVATE KEY'"), "{e}");
    let e = LocalSigner::from_pem(pem("PRIVATE KEY", b"garbage").as_bytes(), "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("neither an RSA"), "{e}");
}

#[test]
fn generated_key_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (first, path, generated) = LocalSigner::load_or_generate(&data).unwrap();
    assert!(generated);
    assert_eq!(first.algorithm(), "RS256");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (second, _, generated) = LocalSigner::load_or_generate(&data).unwrap();
    assert!(!generated);
    assert_eq!(first.key_id(), second.key_id());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn write_atomic_leaves_the_whole_file_or_none_and_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").join("file.pem");
    write_atomic(&path, b"first", "X").unwrap();
    write_atomic(&path, b"second", "X").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["file.pem"], "no temporary file is left");
    // A write that fails (here: the target is a folder) leaves the old state and no
    // temporary file behind, and names the file.
    let folder = dir.path().join("new").join("taken");
    std::fs::create_dir(&folder).unwrap();
    let error = write_atomic(&folder, b"x", "X").unwrap_err();
    let e = error.to_string();
    let startup = StartupError::from(error);
    assert_eq!(startup.setting.as_deref(), Some("X"));
    assert_eq!(
        startup.to_string(),
        e,
        "a startup error prints as the write error"
    );
    assert!(
        e.starts_with("X: cannot write '") && e.contains("taken"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_start_interrupted_while_writing_the_key_recovers_or_names_the_file_to_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o700);
    // What a crash during the atomic write leaves: a temporary file, no key. It is ignored
    // (and removed once stale), and the key is generated.
    let temporary = data.join(".signing-key.pem.tmp-1234-5678");
    std::fs::write(&temporary, "-----BEGIN PRIVATE KEY-----\nMIIE").unwrap();
    let old = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(
            u64::try_from(crate::clock::Clock::system().now()).unwrap() - 3600,
        );
    std::fs::File::options()
        .write(true)
        .open(&temporary)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (_, path, generated) = LocalSigner::load_or_generate(&data).unwrap();
    assert!(generated);
    assert!(!temporary.exists(), "the stale temporary file is removed");
    // What a crash during the old, direct write left: a truncated key. Not provably ours, so
    // not replaced: the error names the exact file to delete.
    let pem = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &pem[..pem.len() / 2]).unwrap();
    chmod(&path, 0o600);
    let e = LocalSigner::load_or_generate(&data)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("delete '{}'", path.display())), "{e}");
    assert!(path.exists(), "the file is left alone");
}

#[test]
fn data_dir_writable_by_others_and_loose_generated_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for loose in [0o777, 0o770, 0o722] {
        chmod(&data, loose);
        let e = LocalSigner::load_or_generate(&data)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("DATA_DIR: '")
                && e.contains("can be written by other users")
                && e.contains(&format!("chmod 700 {}", data.display())),
            "{loose:o}: {e}"
        );
        assert!(
            !data.join(GENERATED_KEY_FILE).exists(),
            "no key is generated"
        );
    }
    // World-writable with the sticky bit (like /tmp): other users cannot replace our files.
    chmod(&data, 0o1777);
    let (_, path, _) = LocalSigner::load_or_generate(&data).unwrap();
    chmod(&data, 0o700);
    for loose in [0o640, 0o604, 0o660, 0o644] {
        chmod(&path, loose);
        let e = LocalSigner::load_or_generate(&data)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("can be read or written by other users")
                && e.contains(&format!("chmod 600 {}", path.display())),
            "{loose:o}: {e}"
        );
    }
    chmod(&path, 0o600);
    assert!(LocalSigner::load_or_generate(&data).is_ok());
    // The same rule through a symlinked folder.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    chmod(&data, 0o777);
    assert!(LocalSigner::load_or_generate(&link).is_err());
}

#[test]
fn signing_key_file_writable_by_others_is_refused_and_world_readable_warns() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let path = keys.join("key.pem");
    std::fs::write(&path, ec_pem()).unwrap();
    for loose in [0o666, 0o620, 0o602] {
        chmod(&path, loose);
        let e = LocalSigner::from_key_file(&path, Rules::default()).unwrap_err()[0].to_string();
        assert!(
            e.starts_with("SIGNING_KEY_FILE: '")
                && e.contains("can be written by other users")
                && e.contains(&format!("chmod go-w {}", path.display())),
            "{loose:o}: {e}"
        );
    }
    // Group-readable (Kubernetes defaultMode 0440 with fsGroup) is fine; world-readable
    // (Kubernetes' default 0644) warns.
    for (fine, warnings) in [
        (0o600, 0),
        (0o400, 0),
        (0o440, 0),
        (0o640, 0),
        (0o644, 1),
        (0o444, 1),
    ] {
        chmod(&path, fine);
        let (_, found) = LocalSigner::from_key_file(&path, Rules::default()).unwrap();
        assert_eq!(found.len(), warnings, "{fine:o}: {found:?}");
    }
    // A folder others can write (without the sticky bit), also behind a symlink, as
    // Kubernetes mounts secrets.
    chmod(&path, 0o440);
    chmod(&keys, 0o777);
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    for presented in [&path, &link] {
        let e = LocalSigner::from_key_file(presented, Rules::default()).unwrap_err()[0].to_string();
        assert!(
            e.contains("the folder") && e.contains(&format!("chmod go-w {}", keys.display())),
            "{e}"
        );
    }
    chmod(&keys, 0o1777);
    assert!(LocalSigner::from_key_file(&link, Rules::default()).is_ok());
}

#[test]
fn key_files_and_data_dir_of_another_user_are_refused() {
    if rustix::process::geteuid().as_raw() != 0 {
        // Only root can give a file away; the rule is the same code path as the mode checks.
        return;
    }
    let other = Some(54_321);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_, path, _) = LocalSigner::load_or_generate(&data).unwrap();
    std::os::unix::fs::chown(&path, other, None).unwrap();
    let e = LocalSigner::load_or_generate(&data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("belongs to user 54321") && e.contains("chown 0 "),
        "{e}"
    );
    std::os::unix::fs::chown(&path, Some(0), None).unwrap();
    std::os::unix::fs::chown(&data, other, None).unwrap();
    let e = LocalSigner::load_or_generate(&data)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("DATA_DIR: '") && e.contains("belongs to user 54321"),
        "{e}"
    );
    let key = dir.path().join("key.pem");
    std::fs::write(&key, ec_pem()).unwrap();
    std::os::unix::fs::chown(&key, other, None).unwrap();
    let e = LocalSigner::from_key_file(&key, Rules::default()).unwrap_err()[0].to_string();
    assert!(
        e.contains("neither the user Token Service runs as (0) nor root"),
        "{e}"
    );
}

/// The RSA signing threads belong to the service's `Background`: parsing a key starts none,
/// `start` starts them there, and shutdown ends and joins them (before, they were detached
/// and outlived the service). A signature asked for afterwards fails instead of waiting.
#[tokio::test]
async fn rsa_signing_threads_belong_to_the_background_and_end_at_shutdown() {
    let deadline = || crate::clock::Deadline::after(std::time::Duration::from_secs(5));
    let claims: Map<String, Value> = json!({ "sub": "device-1" }).as_object().unwrap().clone();
    let background = Background::new();
    let mut ec = LocalSigner::from_pem(ec_pem().as_bytes(), "test").unwrap();
    ec.start(&background);
    let mut rsa = LocalSigner::from_pem(rsa_pem().as_bytes(), "test").unwrap();
    assert_eq!(
        background.running(),
        0,
        "an EC key and parsing start no thread"
    );
    rsa.start(&background);
    let threads = background.running();
    assert!(threads >= 2, "signing threads and their stopper: {threads}");
    assert_eq!(background.started(), threads);
    assert!(rsa.rsa.is_some(), "signatures go to the threads");
    let jwt = rsa.sign(&claims, deadline()).await.unwrap();
    assert_eq!(jwt.split('.').count(), 3);
    tokio::time::timeout(std::time::Duration::from_secs(5), background.shutdown())
        .await
        .expect("shutdown ends the signing threads");
    assert_eq!(background.running(), 0, "a signing thread is still running");
    let late = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        rsa.sign(&claims, deadline()),
    )
    .await
    .expect("a signature after shutdown does not wait forever");
    assert!(late.is_err());
    assert!(
        ec.sign(&claims, deadline()).await.is_ok(),
        "EC signs inline"
    );
}
