//! Policy templates (`client_id = "device-{dns_san}"`, string claims): `Template::parse` and
//! `render`, compared with a plain reference reading of the syntax (`{fact}` placeholders,
//! `{{` and `}}` for literal braces) built on the public `Fact::parse` and `Fact::value`.
//!
//! Properties: never panics; parse accepts exactly what the reference accepts and renders the
//! same text for a client that has every fact; `source()` is the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_service::model::{AuthenticatedClient, CertificateFacts};
use token_service::testing::policy::template::{Fact, Template};

fn client() -> AuthenticatedClient {
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    AuthenticatedClient {
        flow: "xlb-mtls-client-credentials".into(),
        client_id: "client-1".into(),
        facts: CertificateFacts {
            spiffe_id: Some("spiffe://example.org/ns/a/sa/b".into()),
            dns_sans: vec!["a.example.com".into(), "b.example.com".into()],
            uri_sans: vec!["https://a.example/x".into()],
            sha256_fingerprint: Some("AAAA".into()),
            serial_number: Some("01:02".into()),
            issuer_ca_sha256: Some("BBBB".into()),
            subject: pairs(&[("CN", "leaf"), ("O", "Org"), ("1.2.3.4", "oid")]),
            issuer: pairs(&[("CN", "ca"), ("C", "DE")]),
            ..CertificateFacts::default()
        },
    }
}

/// `Some(rendered)` when the reference accepts the template (rendered is `Err(fact name)` when
/// the client lacks a fact), `None` when it refuses it.
fn reference(source: &str, client: &AuthenticatedClient) -> Option<Result<String, String>> {
    let mut facts: Vec<Result<String, Fact>> = Vec::new();
    let mut i = 0;
    let bytes = source.as_bytes();
    let mut text = String::new();
    while i < source.len() {
        let rest = &source[i..];
        let c = rest.chars().next()?;
        if rest.starts_with("{{") {
            text.push('{');
            i += 2;
        } else if rest.starts_with("}}") {
            text.push('}');
            i += 2;
        } else if c == '{' {
            let end = rest[1..].find('}')?;
            let fact = Fact::parse(rest[1..1 + end].trim())?;
            facts.push(Ok(std::mem::take(&mut text)));
            facts.push(Err(fact));
            i += 1 + end + 1;
        } else if c == '}' {
            return None;
        } else {
            text.push(c);
            i += c.len_utf8();
        }
        debug_assert!(i <= bytes.len());
    }
    facts.push(Ok(text));
    let mut out = String::new();
    for part in facts {
        match part {
            Ok(t) => out.push_str(&t),
            Err(f) => match f.value(client) {
                Some(v) => out.push_str(v),
                None => return Some(Err(f.name())),
            },
        }
    }
    Some(Ok(out))
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let client = client();
    let parsed = Template::parse(source);
    let expected = reference(source, &client);
    match (&parsed, &expected) {
        (Ok(t), Some(rendered)) => {
            assert_eq!(t.source(), source);
            assert_eq!(&t.render(&client), rendered, "template {source:?}");
        }
        (Err(_), None) => {}
        (Ok(_), None) => panic!("template {source:?} parsed, but the reference refuses it"),
        (Err(e), Some(_)) => {
            panic!("template {source:?} refused ({e}), but the reference accepts it")
        }
    }
});
