//! Certificate facts (`token_service::testing::x509::facts`) from arbitrary DER: what the `mtls` and
//! `forwarded-cert` flows extract from a client certificate before policy sees it. (The flows
//! verify the chain first; fuzzing `facts` directly reaches the parser without a valid
//! signature.)
//!
//! Property: never panics; accepted input has a fingerprint equal to `fingerprint(der)`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::testing::x509::{facts, fingerprint};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = facts(data) {
        assert_eq!(
            f.sha256_fingerprint.as_deref(),
            Some(fingerprint(data).as_str())
        );
        assert!(f.not_before.is_some() && f.not_after.is_some());
    }
});
