//! SAN list headers of Google's load balancer (`X-Client-Cert-DNSName-SANs`,
//! `X-Client-Cert-URI-SANs`): base64 of the whole comma-separated list, or of each entry.
//!
//! Property: `decode_san_list` never panics; what it returns are trimmed, non-empty entries,
//! and encoding them again (per entry when there are several, else the whole list) decodes to
//! the same entries.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use token_service::flows::xlb_mtls::decode_san_list;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = decode_san_list(text) else {
        return;
    };
    for entry in &entries {
        assert!(!entry.is_empty(), "empty entry from {text:?}");
        assert_eq!(entry, entry.trim(), "untrimmed entry from {text:?}");
    }
    let encoded = match entries.len() {
        0 => return,
        1 if entries[0].contains(',') => return, // needs per-entry encoding, but one entry has no comma
        1 => STANDARD.encode(&entries[0]),
        _ => entries
            .iter()
            .map(|e| STANDARD.encode(e))
            .collect::<Vec<_>>()
            .join(","),
    };
    let again = decode_san_list(&encoded).expect("re-encoded SAN list decodes");
    assert_eq!(entries, again, "round trip of {text:?} via {encoded:?}");
});
