#![expect(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::too_many_lines,
    reason = "tests index into what they built and list their cases at length; the parser's own lints stay on"
)]

use std::sync::LazyLock;

use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Root → intermediate → client leaf, another client's leaf, and eleven unrelated certificates.
struct Pki {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    leaf: Vec<u8>,
    gateway: Vec<u8>,
    many: Vec<Vec<u8>>,
}

static PKI: LazyLock<Pki> = LazyLock::new(|| {
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Example Root CA");
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let int_key = KeyPair::generate().unwrap();
    let mut int_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int_params
        .distinguished_name
        .push(DnType::CommonName, "Example Intermediate CA");
    let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap();
    let int_issuer = Issuer::new(int_params, int_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["a.example.com".to_owned(), "b.example.com".to_owned()])
            .unwrap();
    leaf_params.subject_alt_names.push(SanType::URI(
        "spiffe://cluster.local/ns/foo/sa/bar".try_into().unwrap(),
    ));
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "client");
    leaf_params
        .distinguished_name
        .push(DnType::OrganizationName, "Example, Inc.");
    let leaf = leaf_params.signed_by(&leaf_key, &int_issuer).unwrap();

    let mut gateway_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    gateway_params.subject_alt_names.push(SanType::URI(
        "spiffe://cluster.local/ns/default/sa/gateway"
            .try_into()
            .unwrap(),
    ));
    let gateway = gateway_params.signed_by(&leaf_key, &int_issuer).unwrap();

    let many = (0..11)
        .map(|i| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("extra {i}"));
            params.self_signed(&leaf_key).unwrap().der().to_vec()
        })
        .collect();

    Pki {
        root: root.der().to_vec(),
        intermediate: intermediate.der().to_vec(),
        leaf: leaf.der().to_vec(),
        gateway: gateway.der().to_vec(),
        many,
    }
});

/// PEM as OpenSSL writes it: 64-character lines, `\n` line ends.
fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn pems(ders: &[&[u8]]) -> String {
    ders.iter().map(|d| pem(d)).collect()
}

/// Everything but RFC 3986 unreserved characters, as nginx's `$ssl_client_escaped_cert` and
/// Go's `url.QueryEscape` (Traefik) escape base64 and PEM.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn url_escape(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Envoy's URL encoding of PEM in XFCC `Cert` and `Chain`.
fn envoy_escape(s: &str) -> String {
    s.replace('\n', "%0A")
        .replace(' ', "%20")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn sha256(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 8941 byte sequence.
fn sf(der: &[u8]) -> String {
    format!(":{}:", STANDARD.encode(der))
}

fn b64(der: &[u8]) -> String {
    STANDARD.encode(der)
}

/// An XFCC element as Envoy writes it with every detail enabled.
fn envoy_element(by: &str, cert: &[u8], chain: &[&[u8]]) -> String {
    format!(
        "By={by};Hash={};Cert=\"{}\";Chain=\"{}\";Subject=\"CN=client,O=Example, Inc.\";\
         URI=spiffe://cluster.local/ns/foo/sa/bar;DNS=a.example.com;DNS=b.example.com",
        sha256(cert),
        envoy_escape(&pem(cert)),
        envoy_escape(&pems(chain)),
    )
}

/// The certificate with its last byte cut off (the SEQUENCE length no longer matches).
fn truncated(der: &[u8]) -> Vec<u8> {
    der[..der.len() - 1].to_vec()
}

/// The certificate followed by a stray byte.
fn trailing(der: &[u8]) -> Vec<u8> {
    let mut out = der.to_vec();
    out.push(0);
    out
}

/// Name, format, header value, chain header value, expectation.
type Sample<'a, T> = (&'a str, ForwardedFormat, String, Option<String>, T);

/// Name, XFCC value, expected leaf, expected intermediates.
type XfccSample<'a> = (&'a str, String, &'a [u8], Vec<&'a [u8]>);

fn variant(e: &ParseError) -> &'static str {
    match e {
        ParseError::Empty { .. } => "Empty",
        ParseError::TooLong { .. } => "TooLong",
        ParseError::NotByteSequence { .. } => "NotByteSequence",
        ParseError::NotByteSequenceList { .. } => "NotByteSequenceList",
        ParseError::EmptyByteSequence { .. } => "EmptyByteSequence",
        ParseError::ConcatenatedCertificates { .. } => "ConcatenatedCertificates",
        ParseError::InvalidBase64 { .. } => "InvalidBase64",
        ParseError::InvalidPem { .. } => "InvalidPem",
        ParseError::NoCertificate { .. } => "NoCertificate",
        ParseError::ExtraCertificates { .. } => "ExtraCertificates",
        ParseError::TooManyCertificates { .. } => "TooManyCertificates",
        ParseError::NotDer { .. } => "NotDer",
        ParseError::XfccSyntax { .. } => "XfccSyntax",
        ParseError::XfccDuplicateKey { .. } => "XfccDuplicateKey",
        ParseError::XfccMissingCertificate => "XfccMissingCertificate",
        ParseError::HashMismatch => "HashMismatch",
    }
}

fn ok(format: ForwardedFormat, leaf: &str, chain: Option<&str>) -> ForwardedCertificate {
    match parse_forwarded(format, leaf, chain) {
        Ok(cert) => cert,
        Err(e) => panic!("{format:?} rejected {leaf:.80?}: {e}"),
    }
}

fn err(format: ForwardedFormat, leaf: &str, chain: Option<&str>) -> ParseError {
    match parse_forwarded(format, leaf, chain) {
        Ok(cert) => panic!("{format:?} accepted {leaf:.80?}: {cert:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Format names

#[test]
fn format_names() {
    use ForwardedFormat::*;
    for (name, format) in [
        ("rfc9440", Rfc9440),
        ("RFC9440", Rfc9440),
        ("xfcc", Xfcc),
        ("envoy", Xfcc),
        ("Istio", Xfcc),
        ("nginx", Nginx),
        ("HAProxy", Haproxy),
        ("TRAEFIK", Traefik),
    ] {
        assert_eq!(ForwardedFormat::parse(name), Some(format), "{name}");
    }
    for name in ["", "rfc", "x-forwarded-client-cert", " nginx", "google"] {
        assert_eq!(ForwardedFormat::parse(name), None, "{name}");
    }
    for format in ForwardedFormat::ALL {
        assert_eq!(ForwardedFormat::parse(format.name()), Some(format));
    }
    let headers: Vec<_> = ForwardedFormat::ALL
        .iter()
        .map(|f| (f.name(), f.default_header(), f.default_chain_header()))
        .collect();
    assert_eq!(
        headers,
        [
            ("rfc9440", "client-cert", Some("client-cert-chain")),
            ("xfcc", "x-forwarded-client-cert", None),
            ("nginx", "x-ssl-client-cert", None),
            (
                "haproxy",
                "x-ssl-client-der",
                Some("x-ssl-client-chain-der")
            ),
            ("traefik", "x-forwarded-tls-client-cert", None),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Well-formed samples

#[test]
fn well_formed_samples() {
    let p = &*PKI;
    let (leaf, int, root) = (&p.leaf[..], &p.intermediate[..], &p.root[..]);
    let escaped_pem = url_escape(&pem(leaf));
    let flat_spaces = pem(leaf).trim_end().replace('\n', " ");
    let flat_tabs = pem(leaf).trim_end().replace('\n', "\t");
    let ssl_client_cert = pem(leaf).trim_end().replace('\n', "\n\t");
    let key_then_cert = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n{}",
        b64(b"not really a key"),
        pem(leaf)
    );

    use ForwardedFormat::*;
    #[rustfmt::skip]
    let cases: Vec<Sample<'_, Vec<&[u8]>>> = vec![
        // RFC 9440 and Google's load balancer.
        ("rfc9440 leaf", Rfc9440, sf(leaf), None, vec![]),
        ("rfc9440 padded whitespace", Rfc9440, format!(" \t{} ", sf(leaf)), None, vec![]),
        ("rfc9440 chain", Rfc9440, sf(leaf), Some(format!("{},{}", sf(int), sf(root))), vec![int, root]),
        ("rfc9440 chain spaced", Rfc9440, sf(leaf), Some(format!(" {} ,\t{} ", sf(int), sf(root))), vec![int, root]),
        ("rfc9440 chain single", Rfc9440, sf(leaf), Some(sf(int)), vec![int]),
        ("rfc9440 empty chain", Rfc9440, sf(leaf), Some(String::new()), vec![]),
        ("rfc9440 blank chain", Rfc9440, sf(leaf), Some("  ".into()), vec![]),
        // HAProxy's `:%[ssl_c_chain_der,base64]:` for a client without intermediates.
        ("rfc9440 empty byte sequence chain", Rfc9440, sf(leaf), Some("::".into()), vec![]),
        ("rfc9440 empty members skipped", Rfc9440, sf(leaf), Some(format!(":: , {}, ::", sf(int))), vec![int]),
        ("rfc9440 chain repeats leaf", Rfc9440, sf(leaf), Some(format!("{}, {}", sf(leaf), sf(int))), vec![int]),
        ("rfc9440 unpadded", Rfc9440, format!(":{}:", STANDARD.encode(leaf).trim_end_matches('=')), None, vec![]),
        ("rfc9440 chain of 9", Rfc9440, sf(leaf), Some(p.many[..9].iter().map(|d| sf(d)).collect::<Vec<_>>().join(", ")), p.many[..9].iter().map(Vec::as_slice).collect()),
        // nginx.
        ("nginx escaped", Nginx, escaped_pem.clone(), None, vec![]),
        ("nginx raw pem", Nginx, pem(leaf), None, vec![]),
        ("nginx crlf pem", Nginx, pem(leaf).replace('\n', "\r\n"), None, vec![]),
        ("nginx flattened spaces", Nginx, flat_spaces, None, vec![]),
        ("nginx flattened tabs", Nginx, flat_tabs, None, vec![]),
        ("nginx $ssl_client_cert", Nginx, ssl_client_cert, None, vec![]),
        ("nginx other blocks ignored", Nginx, url_escape(&key_then_cert), None, vec![]),
        ("nginx ignores chain", Nginx, escaped_pem, Some(sf(int)), vec![]),
        // HAProxy.
        ("haproxy leaf", Haproxy, b64(leaf), None, vec![]),
        ("haproxy chain", Haproxy, b64(leaf), Some(b64(&[int, root].concat())), vec![int, root]),
        ("haproxy single chain", Haproxy, b64(leaf), Some(b64(int)), vec![int]),
        ("haproxy chain with leaf", Haproxy, b64(leaf), Some(b64(&[leaf, int].concat())), vec![int]),
        ("haproxy empty chain", Haproxy, b64(leaf), Some(String::new()), vec![]),
        // Traefik.
        ("traefik single", Traefik, b64(leaf), None, vec![]),
        ("traefik single escaped", Traefik, url_escape(&b64(leaf)), None, vec![]),
        ("traefik multi", Traefik, [b64(leaf), b64(int), b64(root)].join(","), None, vec![int, root]),
        ("traefik multi escaped", Traefik, url_escape(&[b64(leaf), b64(int)].join(",")), None, vec![int]),
        ("traefik multi spaced", Traefik, format!("{} , {}", b64(leaf), b64(int)), None, vec![int]),
    ];
    for (name, format, value, chain, expected_chain) in cases {
        let cert = ok(format, &value, chain.as_deref());
        assert_eq!(cert.leaf, leaf, "{name}: leaf");
        assert_eq!(cert.chain, expected_chain, "{name}: chain");
        assert_eq!(cert.xfcc, None, "{name}: xfcc");
    }
}

#[test]
fn xfcc_envoy_single_element() {
    let p = &*PKI;
    let value = envoy_element(
        "spiffe://cluster.local/ns/default/sa/gateway",
        &p.leaf,
        &[&p.leaf, &p.intermediate],
    );
    assert!(value.contains("Cert=\"-----BEGIN%20CERTIFICATE-----%0A"));

    let cert = ok(ForwardedFormat::Xfcc, &value, None);
    assert_eq!(cert.leaf, p.leaf);
    assert_eq!(cert.chain, vec![p.intermediate.clone()]);
    let element = cert.xfcc.unwrap();
    assert_eq!(
        element,
        XfccElement {
            by: vec!["spiffe://cluster.local/ns/default/sa/gateway".into()],
            hash: Some(sha256(&p.leaf)),
            cert: Some(envoy_escape(&pem(&p.leaf))),
            chain: Some(envoy_escape(&pems(&[&p.leaf, &p.intermediate]))),
            subject: Some("CN=client,O=Example, Inc.".into()),
            uri: vec!["spiffe://cluster.local/ns/foo/sa/bar".into()],
            dns: vec!["a.example.com".into(), "b.example.com".into()],
        }
    );
    assert_eq!(parse_xfcc(&value).unwrap(), vec![element]);
}

#[test]
fn xfcc_two_hops_uses_last_element() {
    let p = &*PKI;
    let first = envoy_element("spiffe://cluster.local/ns/edge/sa/edge", &p.gateway, &[]);
    let second = envoy_element(
        "spiffe://cluster.local/ns/default/sa/gateway",
        &p.leaf,
        &[&p.leaf, &p.intermediate],
    );
    for separator in [",", ", ", " ,\t"] {
        let value = format!("{first}{separator}{second}");
        let elements = parse_xfcc(&value).unwrap();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].by, ["spiffe://cluster.local/ns/edge/sa/edge"]);
        assert_eq!(
            elements[0].hash.as_deref(),
            Some(sha256(&p.gateway).as_str())
        );
        assert_eq!(elements[0].chain.as_deref(), Some(""));

        let cert = ok(ForwardedFormat::Xfcc, &value, None);
        assert_eq!(cert.leaf, p.leaf);
        assert_eq!(cert.chain, vec![p.intermediate.clone()]);
        assert_eq!(cert.xfcc.as_ref(), elements.last());
    }
    // The other order picks the other certificate.
    let cert = ok(ForwardedFormat::Xfcc, &format!("{second},{first}"), None);
    assert_eq!(cert.leaf, p.gateway);
    assert!(cert.chain.is_empty());
}

#[test]
fn xfcc_certificate_selection() {
    let p = &*PKI;
    let (leaf, int, root) = (&p.leaf[..], &p.intermediate[..], &p.root[..]);
    let cert = |der: &[u8]| format!("Cert=\"{}\"", envoy_escape(&pem(der)));
    let chain = |ders: &[&[u8]]| format!("Chain=\"{}\"", envoy_escape(&pems(ders)));
    let nine: Vec<&[u8]> = p.many[..9].iter().map(Vec::as_slice).collect();

    #[rustfmt::skip]
    let cases: Vec<XfccSample<'_>> = vec![
        ("cert only", cert(leaf), leaf, vec![]),
        ("chain only", chain(&[leaf, int]), leaf, vec![int]),
        ("chain only, leaf alone", chain(&[leaf]), leaf, vec![]),
        ("cert and chain", format!("{};{}", cert(leaf), chain(&[leaf, int, root])), leaf, vec![int, root]),
        ("chain without leaf kept whole", format!("{};{}", cert(leaf), chain(&[int, root])), leaf, vec![int, root]),
        ("empty chain", format!("{};Chain=\"\"", cert(leaf)), leaf, vec![]),
        ("empty cert", format!("Cert=\"\";{}", chain(&[leaf, int])), leaf, vec![int]),
        ("unquoted cert", format!("Cert={}", envoy_escape(&pem(leaf))), leaf, vec![]),
        ("lowercase keys", format!("by=x;hash={};cert=\"{}\"", sha256(leaf), envoy_escape(&pem(leaf))), leaf, vec![]),
        ("uppercase keys", format!("BY=x;HASH={};CERT=\"{}\"", sha256(leaf), envoy_escape(&pem(leaf))), leaf, vec![]),
        ("hash with chain only", format!("Hash={};{}", sha256(leaf), chain(&[leaf, int])), leaf, vec![int]),
        ("url-escaped everything", format!("Cert=\"{}\"", url_escape(&pem(leaf))), leaf, vec![]),
        ("raw newlines", format!("Cert=\"{}\"", pem(leaf)), leaf, vec![]),
        ("unknown keys ignored", format!("Foo=bar;{};Baz=\"q;u,o=te\"", cert(leaf)), leaf, vec![]),
        ("trailing semicolon", format!("{};", cert(leaf)), leaf, vec![]),
        ("ten in chain", chain(&[&[leaf][..], &nine[..]].concat()), leaf, nine.clone()),
    ];
    for (name, value, expected_leaf, expected_chain) in cases {
        let cert = ok(ForwardedFormat::Xfcc, &value, None);
        assert_eq!(cert.leaf, expected_leaf, "{name}: leaf");
        assert_eq!(cert.chain, expected_chain, "{name}: chain");
        assert!(cert.xfcc.is_some(), "{name}: xfcc");
    }
}

#[test]
fn xfcc_quoting() {
    let elements = parse_xfcc(
        r#"By=spiffe://a;Subject="CN=\"quoted\" \\ name,O=x;y=z";URI="u,1";Subject2="\,kept",By="b;c""#,
    )
    .unwrap();
    assert_eq!(elements.len(), 2);
    assert_eq!(
        elements[0],
        XfccElement {
            by: vec!["spiffe://a".into()],
            subject: Some(r#"CN="quoted" \ name,O=x;y=z"#.into()),
            uri: vec!["u,1".into()],
            ..XfccElement::default()
        }
    );
    assert_eq!(elements[1].by, ["b;c"]);

    // RFC 4514 escapes in a subject survive; Envoy only escapes quotes and backslashes.
    let elements = parse_xfcc(r#"Subject="CN=a\,b+OU=c""#).unwrap();
    assert_eq!(elements[0].subject.as_deref(), Some(r"CN=a\,b+OU=c"));
    // Empty quoted values, whitespace around pairs, '=' in unquoted values.
    let elements = parse_xfcc(r#" Subject="" ; URI = https://x/?a=b ;DNS=d "#).unwrap();
    assert_eq!(elements[0].subject.as_deref(), Some(""));
    assert_eq!(elements[0].uri, ["https://x/?a=b"]);
    assert_eq!(elements[0].dns, ["d"]);
}

#[test]
fn xfcc_istio_sidecar_without_cert() {
    let p = &*PKI;
    let value = format!(
        "By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash={};Subject=\"\";\
         URI=spiffe://cluster.local/ns/foo/sa/sleep",
        sha256(&p.leaf)
    );
    let elements = parse_xfcc(&value).unwrap();
    assert_eq!(elements[0].uri, ["spiffe://cluster.local/ns/foo/sa/sleep"]);
    let e = err(ForwardedFormat::Xfcc, &value, None);
    assert_eq!(e, ParseError::XfccMissingCertificate);
    let message = e.to_string();
    assert!(message.contains("forward_client_cert_details"), "{message}");
    assert!(message.contains("cert: true, chain: true"), "{message}");

    // An earlier hop's certificate does not help: the last element decides.
    let with_cert = envoy_element("spiffe://edge", &p.leaf, &[]);
    let e = err(ForwardedFormat::Xfcc, &format!("{with_cert},{value}"), None);
    assert_eq!(e, ParseError::XfccMissingCertificate);
}

// ---------------------------------------------------------------------------------------------
// Malformed samples

#[test]
fn malformed_samples() {
    let p = &*PKI;
    let (leaf, int) = (&p.leaf[..], &p.intermediate[..]);
    let many: Vec<&[u8]> = p.many.iter().map(Vec::as_slice).collect();
    let huge = " ".repeat(MAX_HEADER_LEN) + "x";
    let xfcc_cert = |der: &[u8]| format!("Cert=\"{}\"", envoy_escape(&pem(der)));
    let xfcc_chain = |ders: &[&[u8]]| format!("Chain=\"{}\"", envoy_escape(&pems(ders)));
    let indefinite = [&[0x30, 0x80][..], &leaf[4..], &[0, 0][..]].concat();

    use ForwardedFormat::*;
    #[rustfmt::skip]
    let cases: Vec<Sample<'_, &str>> = vec![
        // RFC 9440.
        ("rfc9440 empty", Rfc9440, String::new(), None, "Empty"),
        ("rfc9440 blank", Rfc9440, " \t ".into(), None, "Empty"),
        ("rfc9440 oversized", Rfc9440, huge.clone(), None, "TooLong"),
        ("rfc9440 oversized chain", Rfc9440, sf(leaf), Some(huge.clone()), "TooLong"),
        ("rfc9440 missing colons", Rfc9440, b64(leaf), None, "NotByteSequence"),
        ("rfc9440 missing closing colon", Rfc9440, format!(":{}", b64(leaf)), None, "NotByteSequence"),
        ("rfc9440 lone colon", Rfc9440, ":".into(), None, "NotByteSequence"),
        ("rfc9440 parameters", Rfc9440, format!("{};a=1", sf(leaf)), None, "NotByteSequence"),
        ("rfc9440 base64url", Rfc9440, format!(":{}:", b64(leaf).replace('+', "-").replace('/', "_")), None, "NotByteSequence"),
        ("rfc9440 two items", Rfc9440, format!("{}, {}", sf(leaf), sf(int)), None, "NotByteSequence"),
        ("rfc9440 bad base64", Rfc9440, ":ab=c:".into(), None, "InvalidBase64"),
        ("rfc9440 empty sequence", Rfc9440, "::".into(), None, "EmptyByteSequence"),
        ("rfc9440 empty sequence padded", Rfc9440, " :: ".into(), Some(sf(int)), "EmptyByteSequence"),
        ("rfc9440 not a certificate", Rfc9440, sf(b"hello world"), None, "NotDer"),
        ("rfc9440 truncated", Rfc9440, sf(&truncated(leaf)), None, "NotDer"),
        ("rfc9440 trailing garbage", Rfc9440, sf(&trailing(leaf)), None, "NotDer"),
        ("rfc9440 chain missing colons", Rfc9440, sf(leaf), Some(b64(int)), "NotByteSequenceList"),
        ("rfc9440 chain empty member", Rfc9440, sf(leaf), Some(format!("{},,{}", sf(int), sf(int))), "NotByteSequenceList"),
        ("rfc9440 chain trailing comma", Rfc9440, sf(leaf), Some(format!("{},", sf(int))), "NotByteSequenceList"),
        ("rfc9440 chain semicolon", Rfc9440, sf(leaf), Some(format!("{};{}", sf(int), sf(int))), "NotByteSequenceList"),
        ("rfc9440 chain bad base64", Rfc9440, sf(leaf), Some(":ab=c:".into()), "InvalidBase64"),
        ("rfc9440 chain truncated", Rfc9440, sf(leaf), Some(sf(&truncated(int))), "NotDer"),
        ("rfc9440 chain trailing garbage", Rfc9440, sf(leaf), Some(sf(&trailing(int))), "NotDer"),
        ("rfc9440 chain member truncated after one", Rfc9440, sf(leaf), Some(sf(&[int, &truncated(leaf)].concat())), "NotDer"),
        // HAProxy's ssl_c_chain_der joins the intermediates into one DER string.
        ("rfc9440 chain member concatenated", Rfc9440, sf(leaf), Some(sf(&[int, leaf].concat())), "ConcatenatedCertificates"),
        ("rfc9440 chain second member concatenated", Rfc9440, sf(leaf), Some(format!("{}, {}", sf(int), sf(&[int, leaf].concat()))), "ConcatenatedCertificates"),
        ("rfc9440 only empty members, too many", Rfc9440, sf(leaf), Some(["::"; 11].join(",")), "TooManyCertificates"),
        ("rfc9440 chain of 11", Rfc9440, sf(leaf), Some(many.iter().map(|d| sf(d)).collect::<Vec<_>>().join(",")), "TooManyCertificates"),
        ("rfc9440 leaf + chain of 10", Rfc9440, sf(leaf), Some(many[..10].iter().map(|d| sf(d)).collect::<Vec<_>>().join(",")), "TooManyCertificates"),
        // XFCC.
        ("xfcc empty", Xfcc, String::new(), None, "Empty"),
        ("xfcc oversized", Xfcc, huge.clone(), None, "TooLong"),
        ("xfcc unterminated quote", Xfcc, format!("By=x;Subject=\"CN=a;{}", xfcc_cert(leaf)), None, "XfccSyntax"),
        ("xfcc unterminated escape", Xfcc, "Subject=\"a\\".into(), None, "XfccSyntax"),
        ("xfcc escaped closing quote", Xfcc, "Subject=\"a\\\"".into(), None, "XfccSyntax"),
        ("xfcc missing =", Xfcc, format!("By;{}", xfcc_cert(leaf)), None, "XfccSyntax"),
        ("xfcc empty key", Xfcc, format!("=x;{}", xfcc_cert(leaf)), None, "XfccSyntax"),
        ("xfcc text after quotes", Xfcc, format!("Subject=\"a\"b;{}", xfcc_cert(leaf)), None, "XfccSyntax"),
        ("xfcc quote in unquoted value", Xfcc, format!("By=a\"b;{}", xfcc_cert(leaf)), None, "XfccSyntax"),
        ("xfcc trailing comma", Xfcc, format!("{},", xfcc_cert(leaf)), None, "XfccSyntax"),
        ("xfcc empty element", Xfcc, format!("By=a,,{}", xfcc_cert(leaf)), None, "XfccSyntax"),
        ("xfcc only semicolons", Xfcc, ";;".into(), None, "XfccSyntax"),
        ("xfcc duplicate cert", Xfcc, format!("{};{}", xfcc_cert(leaf), xfcc_cert(int)), None, "XfccDuplicateKey"),
        ("xfcc duplicate hash", Xfcc, format!("Hash=a;hash=b;{}", xfcc_cert(leaf)), None, "XfccDuplicateKey"),
        ("xfcc no cert", Xfcc, "By=spiffe://a;URI=spiffe://b".into(), None, "XfccMissingCertificate"),
        ("xfcc hash mismatch", Xfcc, format!("Hash={};{}", sha256(int), xfcc_cert(leaf)), None, "HashMismatch"),
        ("xfcc hash uppercase", Xfcc, format!("Hash={};{}", sha256(leaf).to_uppercase(), xfcc_cert(leaf)), None, "HashMismatch"),
        ("xfcc hash not hex", Xfcc, format!("Hash=zz;{}", xfcc_cert(leaf)), None, "HashMismatch"),
        ("xfcc hash mismatch chain only", Xfcc, format!("Hash={};{}", sha256(int), xfcc_chain(&[leaf, int])), None, "HashMismatch"),
        ("xfcc cert not pem", Xfcc, format!("Cert=\"{}\"", b64(leaf)), None, "NoCertificate"),
        ("xfcc cert pem missing end", Xfcc, format!("Cert=\"{}\"", envoy_escape(pem(leaf).split("-----END").next().unwrap())), None, "InvalidPem"),
        ("xfcc cert bad pem base64", Xfcc, format!("Cert=\"{}\"", envoy_escape(&pem(leaf).replacen('M', "!", 1))), None, "InvalidPem"),
        ("xfcc cert truncated", Xfcc, xfcc_cert(&truncated(leaf)), None, "NotDer"),
        ("xfcc cert trailing garbage", Xfcc, xfcc_cert(&trailing(leaf)), None, "NotDer"),
        ("xfcc cert carries two", Xfcc, format!("Cert=\"{}\"", envoy_escape(&pems(&[leaf, int]))), None, "ExtraCertificates"),
        ("xfcc chain truncated", Xfcc, format!("{};{}", xfcc_cert(leaf), xfcc_chain(&[leaf, &truncated(int)])), None, "NotDer"),
        ("xfcc chain of 11", Xfcc, xfcc_chain(&many), None, "TooManyCertificates"),
        ("xfcc cert + chain of 11", Xfcc, format!("{};{}", xfcc_cert(leaf), xfcc_chain(&[&[leaf][..], &many[..10]].concat())), None, "TooManyCertificates"),
        ("xfcc cert + 10 other", Xfcc, format!("{};{}", xfcc_cert(leaf), xfcc_chain(&many[..10])), None, "TooManyCertificates"),
        // nginx.
        ("nginx empty", Nginx, String::new(), None, "Empty"),
        ("nginx oversized", Nginx, huge.clone(), None, "TooLong"),
        ("nginx not pem", Nginx, "hello".into(), None, "NoCertificate"),
        ("nginx base64 only", Nginx, b64(leaf), None, "NoCertificate"),
        ("nginx key only", Nginx, url_escape(&format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", b64(b"key"))), None, "NoCertificate"),
        ("nginx missing end", Nginx, url_escape(pem(leaf).split("-----END").next().unwrap()), None, "InvalidPem"),
        ("nginx bad base64", Nginx, url_escape(&pem(leaf).replacen('M', "*", 1)), None, "InvalidPem"),
        ("nginx truncated", Nginx, url_escape(&pem(&truncated(leaf))), None, "NotDer"),
        ("nginx trailing garbage", Nginx, url_escape(&pem(&trailing(leaf))), None, "NotDer"),
        ("nginx two certificates", Nginx, url_escape(&pems(&[leaf, int])), None, "ExtraCertificates"),
        // HAProxy.
        ("haproxy empty", Haproxy, String::new(), None, "Empty"),
        ("haproxy oversized", Haproxy, huge.clone(), None, "TooLong"),
        ("haproxy oversized chain", Haproxy, b64(leaf), Some(huge.clone()), "TooLong"),
        ("haproxy bad base64", Haproxy, format!("{}!", b64(leaf)), None, "InvalidBase64"),
        ("haproxy pem instead", Haproxy, pem(leaf), None, "InvalidBase64"),
        ("haproxy sf instead", Haproxy, sf(leaf), None, "InvalidBase64"),
        ("haproxy truncated", Haproxy, b64(&truncated(leaf)), None, "NotDer"),
        ("haproxy trailing garbage", Haproxy, b64(&trailing(leaf)), None, "NotDer"),
        ("haproxy leaf is a chain", Haproxy, b64(&[leaf, int].concat()), None, "NotDer"),
        ("haproxy indefinite length", Haproxy, b64(&indefinite), None, "NotDer"),
        ("haproxy chain bad base64", Haproxy, b64(leaf), Some("%%%".into()), "InvalidBase64"),
        ("haproxy chain truncated", Haproxy, b64(leaf), Some(b64(&[int, &truncated(leaf)].concat())), "NotDer"),
        ("haproxy chain trailing garbage", Haproxy, b64(leaf), Some(b64(&trailing(int))), "NotDer"),
        ("haproxy chain indefinite", Haproxy, b64(leaf), Some(b64(&indefinite)), "NotDer"),
        ("haproxy chain of 11", Haproxy, b64(leaf), Some(b64(&many.concat())), "TooManyCertificates"),
        ("haproxy leaf + chain of 10", Haproxy, b64(leaf), Some(b64(&many[..10].concat())), "TooManyCertificates"),
        // Traefik.
        ("traefik empty", Traefik, String::new(), None, "Empty"),
        ("traefik oversized", Traefik, huge.clone(), None, "TooLong"),
        ("traefik bad base64", Traefik, format!("{}!", b64(leaf)), None, "InvalidBase64"),
        ("traefik escaped bad base64", Traefik, url_escape(&format!("{},{}*", b64(leaf), b64(int))), None, "InvalidBase64"),
        ("traefik with pem markers", Traefik, pem(leaf), None, "InvalidBase64"),
        ("traefik truncated", Traefik, b64(&truncated(leaf)), None, "NotDer"),
        ("traefik trailing garbage", Traefik, b64(&trailing(leaf)), None, "NotDer"),
        ("traefik empty item", Traefik, format!("{},,{}", b64(leaf), b64(int)), None, "NotDer"),
        ("traefik trailing comma", Traefik, format!("{},", b64(leaf)), None, "NotDer"),
        ("traefik 11 certificates", Traefik, many.iter().map(|d| b64(d)).collect::<Vec<_>>().join(","), None, "TooManyCertificates"),
        ("traefik leaf + 10", Traefik, url_escape(&[&[leaf][..], &many[..10]].concat().iter().map(|d| b64(d)).collect::<Vec<_>>().join(",")), None, "TooManyCertificates"),
    ];
    for (name, format, value, chain, expected) in cases {
        let e = err(format, &value, chain.as_deref());
        assert_eq!(variant(&e), expected, "{name}: {e}");
    }
}

#[test]
fn errors_name_the_offending_header() {
    let p = &*PKI;
    let e = err(ForwardedFormat::Rfc9440, "nope", None);
    assert_eq!(
        e,
        ParseError::NotByteSequence {
            input: "Client-Cert header",
            found: "nope".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "the Client-Cert header is not an RFC 9440 byte sequence (:base64:); found \"nope\""
    );
    let e = err(ForwardedFormat::Rfc9440, &sf(&p.leaf), Some(":a:, nope"));
    assert_eq!(
        e,
        ParseError::NotByteSequenceList {
            input: "Client-Cert-Chain header",
            member: 2,
            found: "nope".into()
        }
    );
    // What HAProxy sends when an RFC 9440 header is built from ssl_c_chain_der with two
    // intermediates, and from ssl_c_der without a client certificate: the messages say what to do.
    let two = sf(&[&p.intermediate[..], &p.root[..]].concat());
    let e = err(ForwardedFormat::Rfc9440, &sf(&p.leaf), Some(&two));
    assert_eq!(
        e,
        ParseError::ConcatenatedCertificates {
            input: "Client-Cert-Chain header",
            member: 1,
        }
    );
    assert_eq!(
        e.to_string(),
        "member 1 of the Client-Cert-Chain header holds several certificates one after another; \
         RFC 9440 wants one certificate per member (HAProxy's ssl_c_chain_der joins them like \
         this: behind HAProxy set FORWARDED_CERT_FORMAT=haproxy)"
    );
    let e = err(ForwardedFormat::Rfc9440, "::", Some("::"));
    assert_eq!(
        e.to_string(),
        "the Client-Cert header is an empty byte sequence (::): the proxy forwarded no \
         certificate; have it set the header only when the client presented one"
    );
    let e = err(
        ForwardedFormat::Haproxy,
        &b64(&p.leaf),
        Some(&b64(b"\x31\x00")),
    );
    assert_eq!(
        e,
        ParseError::NotDer {
            input: "HAProxy ssl_c_chain_der header",
            reason: "it does not start with a SEQUENCE (0x30)"
        }
    );
    assert!(e.in_chain_header());
    assert!(!err(ForwardedFormat::Haproxy, "", None).in_chain_header());
    assert!(err(ForwardedFormat::Rfc9440, &sf(&p.leaf), Some("x")).in_chain_header());
    assert!(!err(ForwardedFormat::Rfc9440, "x", Some("x")).in_chain_header());
    assert!(!err(ForwardedFormat::Xfcc, "Cert=x", None).in_chain_header());
    let e = err(ForwardedFormat::Xfcc, "Subject=\"x", None);
    assert_eq!(
        e,
        ParseError::XfccSyntax {
            position: 8,
            reason: "unterminated quoted value"
        }
    );
    // Positions count from the start of the untrimmed value.
    let e = err(ForwardedFormat::Xfcc, "  By=a,,", None);
    assert_eq!(
        e,
        ParseError::XfccSyntax {
            position: 7,
            reason: "empty element"
        }
    );
    let e = err(ForwardedFormat::Xfcc, "Cert=a;CERT=b", None);
    assert_eq!(e, ParseError::XfccDuplicateKey { key: "Cert" });
    let e = err(
        ForwardedFormat::Traefik,
        &" ".repeat(MAX_HEADER_LEN + 1),
        None,
    );
    assert_eq!(
        e,
        ParseError::TooLong {
            input: "Traefik X-Forwarded-Tls-Client-Cert header",
            len: MAX_HEADER_LEN + 1
        }
    );
    assert_eq!(
        e.to_string(),
        "the Traefik X-Forwarded-Tls-Client-Cert header is 65537 bytes long; at most 65536 bytes \
         are accepted"
    );
}

#[test]
fn length_limit_is_inclusive() {
    let p = &*PKI;
    let value = sf(&p.leaf);
    let padded = format!("{value}{}", " ".repeat(MAX_HEADER_LEN - value.len()));
    assert_eq!(padded.len(), MAX_HEADER_LEN);
    assert_eq!(ok(ForwardedFormat::Rfc9440, &padded, None).leaf, p.leaf);
    let e = err(ForwardedFormat::Rfc9440, &format!("{padded} "), None);
    assert_eq!(variant(&e), "TooLong");
    assert_eq!(
        variant(&parse_xfcc(&"a".repeat(MAX_HEADER_LEN + 1)).unwrap_err()),
        "TooLong"
    );
}

#[test]
fn errors_echo_at_most_64_characters() {
    let p = &*PKI;
    let junk = "Z".repeat(5000);
    let long_run = "Z".repeat(65);
    let values = [
        junk.clone(),
        format!(":{junk}"),
        format!(":{junk}:"),
        format!("{junk}={junk}"),
        format!("By=\"{junk}"),
        format!("-----BEGIN {junk}-----\n{junk}\n"),
        format!("-----BEGIN CERTIFICATE-----\n{junk}\n-----END {junk}-----\n"),
        format!("-----BEGIN CERTIFICATE-----\n{junk}\n"),
    ];
    for format in ForwardedFormat::ALL {
        for value in &values {
            for chain in [None, Some(value.as_str())] {
                let leaf = if chain.is_some() {
                    match format {
                        ForwardedFormat::Rfc9440 => sf(&p.leaf),
                        _ => b64(&p.leaf),
                    }
                } else {
                    value.clone()
                };
                if let Err(e) = parse_forwarded(format, &leaf, chain) {
                    let message = e.to_string();
                    assert!(!message.contains(&long_run), "{format:?}: {message}");
                }
            }
        }
    }
    let e = err(ForwardedFormat::Rfc9440, &format!("é{junk}"), None);
    let ParseError::NotByteSequence { found, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(found.chars().count(), 64);
}

#[test]
fn der_sequence_lengths() {
    let p = &*PKI;
    assert_eq!(der_sequence_len(&p.leaf), Ok(p.leaf.len()));
    assert_eq!(
        der_sequence_len(&[p.leaf.as_slice(), &p.root].concat()),
        Ok(p.leaf.len())
    );
    assert_eq!(der_sequence_len(&[0x30, 0x00]), Ok(2));
    assert_eq!(der_sequence_len(&[0x30, 0x01, 0x05, 0xff]), Ok(3));
    let mut long = vec![0x30, 0x81, 0x80];
    long.extend([0; 0x80]);
    assert_eq!(der_sequence_len(&long), Ok(long.len()));
    let mut longer = vec![0x30, 0x82, 0x01, 0x00];
    longer.extend([0; 0x100]);
    assert_eq!(der_sequence_len(&longer), Ok(longer.len()));

    for bad in [
        &[][..],
        &[0x31, 0x00],
        &[0x30],
        &[0x30, 0x80, 0x00, 0x00],
        &[0x30, 0x81],
        &[0x30, 0x81, 0x05, 0, 0, 0, 0, 0],
        &[0x30, 0x82, 0x00, 0x80],
        &[0x30, 0x85, 1, 0, 0, 0, 0],
        &[0x30, 0xff],
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        &[0x30, 0x02, 0x00],
        &long[..long.len() - 1],
    ] {
        assert!(der_sequence_len(bad).is_err(), "{bad:02x?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b":",
    b",",
    b";",
    b"=",
    b"\"",
    b"\\",
    b"\\\"",
    b"%",
    b"%0A",
    b"%2C",
    b"%3D",
    b"%",
    b"%z",
    b" ",
    b"\t",
    b"\n",
    b"\r",
    b"-----",
    b"-----BEGIN CERTIFICATE-----",
    b"-----END CERTIFICATE-----",
    b"-----BEGIN ",
    b"-----END ",
    b"-----BEGIN PRIVATE KEY-----",
    b"Cert=\"",
    b"Chain=",
    b"Hash=",
    b"By=",
    b",Cert=",
    b"\x30",
    b"\x30\x80",
    b"\x30\x82\xff\xff",
    b"\x30\x84",
    b"MII",
    b"==",
    b"\xc3\xa9",
    b"\xff",
    b"\0",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.below(200)).min(out.len());
                let copy = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, copy);
            }
            5 => {
                let bytes: Vec<u8> = (0..rng.below(32)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            6 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = TOKENS[rng.below(TOKENS.len())][0];
            }
            _ => {
                let bytes: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                out = bytes;
            }
        }
    }
    out
}

/// Thousands of random and mutated values through every parser: errors are fine, panics are
/// not.
#[test]
fn never_panics() {
    let p = &*PKI;
    let (leaf, int) = (&p.leaf[..], &p.intermediate[..]);
    let seeds: Vec<Vec<u8>> = [
        sf(leaf),
        format!("{}, {}", sf(int), sf(leaf)),
        envoy_element("spiffe://gw", leaf, &[leaf, int]),
        format!(
            "By=a;Subject=\"x\\\"y\";URI=u,{}",
            envoy_element("spiffe://gw", int, &[int])
        ),
        url_escape(&pem(leaf)),
        pem(leaf).replace('\n', " "),
        b64(leaf),
        b64(&[leaf, int].concat()),
        url_escape(&[b64(leaf), b64(int)].join(",")),
        String::new(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();

    let (rfc9440_leaf, haproxy_leaf) = (sf(leaf), b64(leaf));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let a = mutate(&mut rng, &seeds[round % seeds.len()]);
        let other = rng.below(seeds.len());
        let b = mutate(&mut rng, &seeds[other]);
        let (a_text, b_text) = (String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        let outcome = std::panic::catch_unwind(|| {
            let _ = der_sequence_len(&a);
            let _ = pem_certificates("fuzz", &a);
            let _ = parse_xfcc(&a_text);
            for format in ForwardedFormat::ALL {
                let _ = parse_forwarded(format, &a_text, None);
                let _ = parse_forwarded(format, &a_text, Some(&b_text));
            }
            // A valid leaf, so that the chain parsers see every mutation.
            let _ = parse_forwarded(ForwardedFormat::Rfc9440, &rfc9440_leaf, Some(&b_text));
            let _ = parse_forwarded(ForwardedFormat::Haproxy, &haproxy_leaf, Some(&b_text));
        });
        assert!(outcome.is_ok(), "panicked on {a_text:?} / {b_text:?}");
    }
}
