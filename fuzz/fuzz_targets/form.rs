//! `application/x-www-form-urlencoded` bodies of `POST /token`.
//!
//! Property: `parse_form` never panics; a body it accepts, re-encoded (every byte outside the
//! unreserved set percent-escaped), parses to the same map.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::testing::http::form::parse_form;

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(params) = parse_form(data) else {
        return;
    };
    let body = params
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let again = parse_form(body.as_bytes()).expect("a re-encoded accepted form parses");
    assert_eq!(params, again, "round trip of {body:?}");
});
