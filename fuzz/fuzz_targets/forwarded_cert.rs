//! Forwarded client-certificate headers in every format (`ForwardedFormat::ALL`: RFC 9440,
//! Envoy XFCC, nginx, HAProxy, Traefik), and the XFCC element parser on its own.
//!
//! Input layout: byte 0 picks the format (modulo 5) and, with bit 3, whether a chain header is
//! present; the rest is the leaf header value, then `\n` and the chain header value.
//!
//! Properties: nothing panics; every certificate returned is one DER SEQUENCE and a chain
//! holds fewer than ten; a header that `parse_xfcc` accepts, written out again with every
//! value quoted, parses to the same elements.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::flows::forwarded_cert::parse::{
    ForwardedFormat, XfccElement, parse_forwarded, parse_xfcc,
};

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Writes elements back in Envoy's syntax. Every element starts with an unknown key, so that one
/// whose known fields are all empty still has a pair.
fn write_xfcc(elements: &[XfccElement]) -> String {
    elements
        .iter()
        .map(|e| {
            let mut pairs = vec!["X=1".to_owned()];
            pairs.extend(e.by.iter().map(|v| format!("By={}", quote(v))));
            pairs.extend(e.hash.iter().map(|v| format!("Hash={}", quote(v))));
            pairs.extend(e.cert.iter().map(|v| format!("Cert={}", quote(v))));
            pairs.extend(e.chain.iter().map(|v| format!("Chain={}", quote(v))));
            pairs.extend(e.subject.iter().map(|v| format!("Subject={}", quote(v))));
            pairs.extend(e.uri.iter().map(|v| format!("URI={}", quote(v))));
            pairs.extend(e.dns.iter().map(|v| format!("DNS={}", quote(v))));
            pairs.join(";")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn is_one_sequence(der: &[u8]) -> bool {
    der.first() == Some(&0x30) && der.len() >= 2
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = ForwardedFormat::ALL[usize::from(config) % ForwardedFormat::ALL.len()];
    let (leaf, chain) = match text.split_once('\n') {
        Some((leaf, chain)) if config & 8 != 0 => (leaf, Some(chain)),
        Some((leaf, _)) => (leaf, None),
        None => (text, None),
    };
    if let Ok(cert) = parse_forwarded(format, leaf, chain) {
        assert!(is_one_sequence(&cert.leaf), "{format:?}: leaf is not DER");
        assert!(
            cert.chain.len() < 10,
            "{format:?}: chain of {}",
            cert.chain.len()
        );
        for c in &cert.chain {
            assert!(
                is_one_sequence(c),
                "{format:?}: chain certificate is not DER"
            );
        }
        assert_eq!(cert.xfcc.is_some(), format == ForwardedFormat::Xfcc);
    }

    if let Ok(elements) = parse_xfcc(leaf) {
        assert!(!elements.is_empty());
        let written = write_xfcc(&elements);
        let again = parse_xfcc(&written)
            .unwrap_or_else(|e| panic!("{written:?} (from {leaf:?}) does not parse: {e}"));
        assert_eq!(elements, again, "round trip of {leaf:?} via {written:?}");
    }
});
