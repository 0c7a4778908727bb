//! The re-signed twin of a certificate (`token_service::testing::x509::twin::twin`): the DER rewriter
//! behind deny lists that hold a certificate in both ECDSA signature encodings.
//!
//! Input: arbitrary DER (seeded with real certificates signed with ECDSA on P-256, P-384 and
//! P-521, and with RSA).
//!
//! Properties: never panics; a twin differs from its input, and the twin of the twin is the
//! input again (`twin(twin(x)) == x`). Whether the twin verifies iff the original does is
//! checked by the unit tests against the real verifier, not here (too costly per input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::testing::x509::twin::twin;
use token_service::testing::x509::{fingerprint, twin_fingerprint};

fuzz_target!(|data: &[u8]| {
    let Some(other) = twin(data) else {
        assert_eq!(twin_fingerprint(data), None);
        return;
    };
    assert_ne!(other, data);
    assert_eq!(twin(&other).as_deref(), Some(data));
    assert_eq!(twin_fingerprint(data), Some(fingerprint(&other)));
});
