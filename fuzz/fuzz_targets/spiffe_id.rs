//! SPIFFE ID validation (`token_service::testing::x509::spiffe::parse`): what every certificate flow
//! applies to each `spiffe://` URI SAN, and the xlb flow to the SPIFFE ID header.
//!
//! Input: UTF-8 text, the URI.
//!
//! Properties: never panics; an accepted ID is detected by `is_spiffe`, at most 2,048 bytes,
//! is exactly `spiffe://` + trust domain + path, has a non-empty lowercase trust domain of
//! `[a-z0-9._-]` and a path of non-empty, non-dot segments of `[A-Za-z0-9._-]`, and parses
//! again to itself (an accepted ID is its own normal form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::testing::x509::spiffe::{MAX_BYTES, is_spiffe, parse, printable};

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    let shown = printable(uri, 256);
    assert!(!shown.chars().any(char::is_control));
    let Ok(id) = parse(uri) else {
        return;
    };
    assert!(is_spiffe(uri));
    assert!(uri.len() <= MAX_BYTES);
    assert_eq!(id.as_str(), uri);
    assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), uri);
    assert!(!id.trust_domain().is_empty());
    assert!(
        id.trust_domain()
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
    );
    if !id.path().is_empty() {
        let segments = id
            .path()
            .strip_prefix('/')
            .unwrap_or_else(|| panic!("{uri:?}"));
        for segment in segments.split('/') {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "{uri:?}"
            );
            assert!(
                segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
                "{uri:?}"
            );
        }
    }
    assert_eq!(parse(id.as_str()), Ok(id));
});
