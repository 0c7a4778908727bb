//! The whole `xlb-mtls-client-credentials` flow: `authenticate` (which decides whether the
//! request is the flow's and, if so, authenticates it) on a token request whose headers come
//! from the input.
//!
//! Input layout: byte 0 picks the settings (bits 0-1: which header identifies the client;
//! bit 2: whether a load-balancer secret header is required); the rest is lines, each a header:
//! the first byte of a line picks the header name (modulo the table below), the other bytes are
//! its value. Headers are appended, so a name can repeat.
//!
//! Property: it does not panic; `authenticate` completes without waiting (it does no I/O), and
//! an accepted client has a non-empty ID and trimmed, non-empty SANs.
#![no_main]

use std::future::Future as _;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use token_service::clock::Clock;
use token_service::flows::{Authentication, Flow as _};
use token_service::flows::xlb_mtls::{LbSecret, XlbMtlsFlow, XlbSettings};
use token_service::model::TokenRequest;

const SECRET_HEADER: &str = "x-lb-secret";

fn settings(byte: u8) -> XlbSettings {
    let mut s = XlbSettings {
        // A fixed clock (2023-11-14T22:13:20Z) keeps runs reproducible.
        clock: Clock::fixed(1_700_000_000),
        ..XlbSettings::default()
    };
    s.client_id = match byte & 3 {
        0 => s.spiffe.clone(),
        1 => s.dns_sans.clone(),
        2 => s.uri_sans.clone(),
        _ => s.sha256.clone(),
    };
    if byte & 4 != 0 {
        s.lb_secret = Some(LbSecret {
            header: HeaderName::from_static(SECRET_HEADER),
            value: "s3cret".to_owned(),
        });
    }
    s
}

fn header_names(s: &XlbSettings) -> [HeaderName; 12] {
    [
        s.present.clone(),
        s.chain_verified.clone(),
        s.error.clone(),
        s.sha256.clone(),
        s.spiffe.clone(),
        s.uri_sans.clone(),
        s.dns_sans.clone(),
        s.serial.clone(),
        s.not_before.clone(),
        s.not_after.clone(),
        HeaderName::from_static(SECRET_HEADER),
        HeaderName::from_static("x-other"),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let settings = settings(config);
    let names = header_names(&settings);
    let flow = XlbMtlsFlow::new(settings).expect("every client-ID choice is valid");

    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = names[usize::from(pick) % names.len()].clone();
        headers.append(name, value);
    }
    let request = TokenRequest {
        grant_type: "client_credentials".to_owned(),
        headers,
        ..TokenRequest::default()
    };

    let future = pin!(flow.authenticate(&request));
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(result) = future.poll(&mut cx) else {
        panic!("authenticate waited, but it does no I/O");
    };
    if let Ok(Authentication::Client(client)) = result {
        assert!(!client.client_id.is_empty());
        for san in client.facts.dns_sans.iter().chain(&client.facts.uri_sans) {
            assert!(!san.is_empty() && san.trim() == san, "SAN {san:?}");
        }
    }
});
