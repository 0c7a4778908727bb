//! Client chain normalisation (`token_service::testing::x509::normalise`): what the `mtls` and
//! `forwarded-cert` flows do to the certificates a client sends before any path building.
//!
//! Input: byte 0 says how many certificates (mod 8); then each certificate as a two-byte
//! big-endian length and that many bytes (the last one takes what is left).
//!
//! Properties: never panics; more than `MAX_INTERMEDIATES` after the leaf is refused; an
//! accepted chain starts with the leaf, holds at most that many distinct intermediates in byte
//! order, each one of those sent, its key is `chain::key` of it, and normalising it again
//! changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::testing::x509::{MAX_INTERMEDIATES, chain, normalise};

fuzz_target!(|data: &[u8]| {
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let mut certs: Vec<Vec<u8>> = Vec::new();
    for i in 0..usize::from(count % 8) {
        let last = i + 1 == usize::from(count % 8);
        if last || rest.len() < 2 {
            certs.push(rest.to_vec());
            break;
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        certs.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    match normalise(&certs) {
        Err(_) => {}
        Ok(n) => {
            assert!(certs.len() <= 1 + MAX_INTERMEDIATES);
            assert_eq!(n.chain[0], certs[0]);
            let intermediates = &n.chain[1..];
            assert!(intermediates.len() <= MAX_INTERMEDIATES);
            assert!(intermediates.windows(2).all(|w| w[0] < w[1]));
            assert!(intermediates.iter().all(|c| certs[1..].contains(c)));
            assert_eq!(n.key, chain::key(&n.chain));
            assert_eq!(normalise(&n.chain).as_ref(), Ok(&n));
        }
    }
    if certs.len() > 1 + MAX_INTERMEDIATES {
        assert!(normalise(&certs).is_err());
    }
});
