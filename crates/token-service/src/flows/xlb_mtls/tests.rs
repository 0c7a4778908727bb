use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;

use super::*;
use crate::clock::Clock;
use crate::error::Kind;
use crate::flows::Flow as _;

const NOW: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

fn flow_with(settings: XlbSettings) -> XlbMtlsFlow {
    XlbMtlsFlow::new(XlbSettings {
        clock: Clock::fixed(NOW),
        ..settings
    })
    .unwrap()
}

fn flow() -> XlbMtlsFlow {
    flow_with(XlbSettings::default())
}

fn request(headers: &[(&str, &str)]) -> TokenRequest {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    TokenRequest {
        grant_type: "client_credentials".into(),
        headers: map,
        ..Default::default()
    }
}

const OK: [(&str, &str); 3] = [
    ("x-client-cert-present", "true"),
    ("x-client-cert-chain-verified", "true"),
    ("x-client-cert-spiffe", "spiffe://example.org/ns/prod/sa/a"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<_> = OK.to_vec();
    all.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    all.extend_from_slice(extra);
    all
}

/// The flow's answer for a request it takes: the client or its refusal.
async fn auth(
    flow: &XlbMtlsFlow,
    headers: &[(&str, &str)],
) -> Result<AuthenticatedClient, Failure> {
    match flow.authenticate(&request(headers)).await? {
        Authentication::Client(client) => Ok(client),
        Authentication::NotMine(why) => panic!("the flow declined: {why:?}"),
    }
}

/// Why the flow declined a request, or `None` when it took it.
async fn declined(flow: &XlbMtlsFlow, headers: &[(&str, &str)]) -> Option<Declined> {
    match flow.authenticate(&request(headers)).await {
        Ok(Authentication::NotMine(why)) => Some(why),
        _ => None,
    }
}

#[test]
fn san_list_accepts_whole_list_and_per_entry_base64() {
    let whole = STANDARD.encode("a.example.com, b.example.com");
    let per_entry = format!(
        "{},{}",
        STANDARD.encode("a.example.com"),
        STANDARD.encode("b.example.com")
    );
    let unpadded = STANDARD
        .encode("ab.example.com")
        .trim_end_matches('=')
        .to_owned();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (whole, vec!["a.example.com", "b.example.com"]),
        (per_entry, vec!["a.example.com", "b.example.com"]),
        (
            STANDARD.encode(" one.example.com "),
            vec!["one.example.com"],
        ),
        (unpadded, vec!["ab.example.com"]),
        (String::new(), vec![]),
        (" ".into(), vec![]),
    ];
    for (input, expected) in cases {
        assert_eq!(
            decode_san_list(&input).unwrap(),
            expected,
            "input {input:?}"
        );
    }
}

#[test]
fn san_list_with_invalid_base64_or_utf8_is_an_error() {
    assert_eq!(
        decode_san_list("not base64!").unwrap_err().to_string(),
        "'not base64!' is not valid base64"
    );
    assert!(decode_san_list("%%%,abc").is_err());
    assert_eq!(
        decode_san_list(&STANDARD.encode([0xff, 0xfe]))
            .unwrap_err()
            .to_string(),
        "a decoded SAN is not valid UTF-8"
    );
}

#[tokio::test]
async fn the_flow_takes_only_requests_whose_present_header_is_true_in_any_case() {
    let f = flow();
    assert_eq!(
        declined(&f, &with(&[("x-client-cert-present", "TRUE")])).await,
        None
    );
    assert_eq!(
        declined(&f, &with(&[("x-client-cert-present", "true")])).await,
        None
    );
    let no = declined(&f, &[("x-client-cert-present", "false")])
        .await
        .unwrap();
    assert!(
        !no.is_untrusted() && no.reason().contains("rather than 'true'"),
        "{no:?}"
    );
    let none = declined(&f, &[]).await.unwrap();
    assert!(
        !none.is_untrusted() && none.reason().contains("is missing"),
        "{none:?}"
    );
}

#[tokio::test]
async fn verified_certificate_yields_client_with_facts() {
    let dns = STANDARD.encode("dev1.example.org,dev1.alt.example.org");
    let uri = STANDARD.encode("https://devices.example.org/1");
    let headers = with(&[
        (
            "x-client-cert-hash",
            "q1Ki0fHfPVfPs2QhGOqPm6qOoJx6JxGNOpr3jxNKsL4",
        ),
        ("x-client-cert-serial-number", "01:ab"),
        ("x-client-cert-valid-not-before", "2026-01-01T00:00:00Z"),
        ("x-client-cert-valid-not-after", "2028-01-01T00:00:00Z"),
    ]);
    let mut headers: Vec<(&str, &str)> = headers;
    headers.push(("x-client-cert-dnsname-sans", &dns));
    headers.push(("x-client-cert-uri-sans", &uri));
    let client = auth(&flow(), &headers).await.unwrap();
    assert_eq!(client.flow, "", "the grant names the flow");
    assert_eq!(client.client_id, "spiffe://example.org/ns/prod/sa/a");
    assert_eq!(
        client.facts.spiffe_id.as_deref(),
        Some("spiffe://example.org/ns/prod/sa/a")
    );
    assert_eq!(
        client.facts.dns_sans,
        vec!["dev1.example.org", "dev1.alt.example.org"]
    );
    assert_eq!(client.facts.uri_sans, vec!["https://devices.example.org/1"]);
    assert_eq!(client.facts.serial_number.as_deref(), Some("01:ab"));
    assert_eq!(
        client.facts.sha256_fingerprint.as_deref(),
        Some("q1Ki0fHfPVfPs2QhGOqPm6qOoJx6JxGNOpr3jxNKsL4")
    );
    assert_eq!(client.facts.not_before, Some(1_767_225_600));
}

#[tokio::test]
async fn client_id_from_san_header_is_the_decoded_first_entry() {
    let f = flow_with(XlbSettings {
        client_id: HeaderName::from_static("x-client-cert-dnsname-sans"),
        ..Default::default()
    });
    let dns = STANDARD.encode(" dev1.example.org ,dev2.example.org");
    let client = auth(&f, &[OK[0], OK[1], ("x-client-cert-dnsname-sans", &dns)])
        .await
        .unwrap();
    assert_eq!(client.client_id, "dev1.example.org");
}

#[tokio::test]
async fn unverified_chain_is_unauthorized_with_the_lb_error() {
    let e = auth(
        &flow(),
        &with(&[
            ("x-client-cert-chain-verified", "false"),
            ("x-client-cert-error", "client_cert_chain_invalid"),
        ]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), Kind::UnauthorizedClient);
    let m = e.message();
    assert!(m.contains("x-client-cert-chain-verified"), "{m}");
    assert!(m.contains("client_cert_chain_invalid"), "{m}");
    // The request's log line shows every certificate header the load balancer sent.
    let label = |name: &str| {
        e.labels()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(label("header/x-client-cert-chain-verified"), Some("false"));
    assert_eq!(
        label("header/x-client-cert-error"),
        Some("client_cert_chain_invalid")
    );
    assert_eq!(label("header/x-client-cert-spiffe"), Some(OK[2].1));
}

#[tokio::test]
async fn empty_client_id_header_is_unauthorized_naming_the_header() {
    let e = auth(&flow(), &with(&[("x-client-cert-spiffe", "")]))
        .await
        .unwrap_err();
    assert!(
        e.kind() == Kind::UnauthorizedClient && {
            let m = e.message();
            m.contains("x-client-cert-spiffe")
        },
        "{e:?}"
    );
    let e = auth(&flow(), &OK[..2]).await.unwrap_err();
    assert!(
        e.kind() == Kind::UnauthorizedClient && {
            let m = e.message();
            m.contains("x-client-cert-spiffe")
        },
        "{e:?}"
    );
}

#[tokio::test]
async fn validity_window_is_enforced() {
    let cases = [
        (
            ("x-client-cert-valid-not-before", "2027-06-01T00:00:00Z"),
            "not valid before 2027-06-01T00:00:00Z",
        ),
        (
            ("x-client-cert-valid-not-after", "2027-01-01T00:00:00+00:00"),
            "expired at 2027-01-01T00:00:00Z",
        ),
        (
            ("x-client-cert-valid-not-after", "yesterday"),
            "not an RFC 3339 time",
        ),
    ];
    for (header, expected) in cases {
        let e = auth(&flow(), &with(&[header])).await.unwrap_err();
        assert!(
            e.kind() == Kind::UnauthorizedClient && {
                let m = e.message();
                m.contains(expected)
            },
            "{header:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn bad_header_values_are_invalid_requests() {
    let e = auth(&flow(), &with(&[("x-client-cert-dnsname-sans", "***")]))
        .await
        .unwrap_err();
    assert!(
        e.kind() == Kind::InvalidRequest && {
            let m = e.message();
            m.contains("x-client-cert-dnsname-sans")
        },
        "{e:?}"
    );
    let twice = [
        OK[0],
        OK[1],
        OK[2],
        ("x-client-cert-spiffe", "spiffe://evil/x"),
    ];
    let e = auth(&flow(), &twice).await.unwrap_err();
    assert!(
        e.kind() == Kind::InvalidRequest && {
            let m = e.message();
            m.contains("more than once")
        },
        "{e:?}"
    );
    let mut req = request(&OK);
    req.headers.insert(
        "x-client-cert-serial-number",
        HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    let e = flow().authenticate(&req).await.unwrap_err();
    assert!(
        e.kind() == Kind::InvalidRequest && {
            let m = e.message();
            m.contains("printable ASCII")
        },
        "{e:?}"
    );
}

#[tokio::test]
async fn lb_secret_is_checked_in_constant_time_before_any_certificate_header() {
    let f = flow_with(XlbSettings {
        lb_secret: Some(LbSecret {
            header: HeaderName::from_static("x-lb-secret"),
            value: "s3cret".into(),
        }),
        ..Default::default()
    });
    // Without the secret the flow never takes the request (another flow may serve it),
    // whatever the headers say: certificate headers without the secret are untrusted (403 if
    // no flow takes the request), no headers at all is a request for another flow (400).
    for headers in [
        with(&[]),
        with(&[("x-lb-secret", "wrong")]),
        with(&[("x-lb-secret", "s3cret2")]),
    ] {
        let why = declined(&f, &headers).await.unwrap();
        assert!(why.is_untrusted(), "{why:?}");
        assert!(
            why.reason().contains("x-lb-secret") && why.reason().contains("not trusted"),
            "{why:?}"
        );
    }
    assert_eq!(
        declined(&f, &[]).await,
        Some(Declined::missing(
            "no load-balancer certificate headers with a valid secret (header 'x-lb-secret')"
        ))
    );
    let ok = auth(&f, &with(&[("x-lb-secret", "s3cret")])).await.unwrap();
    assert_eq!(ok.client_id, "spiffe://example.org/ns/prod/sa/a");
    assert!(!format!("{:?}", f.settings.lb_secret).contains("s3cret"));
}

#[test]
fn client_id_header_must_name_an_identifying_header() {
    let e = XlbMtlsFlow::new(XlbSettings {
        client_id: HeaderName::from_static("x-client-cert-serial-number"),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "MTLS_HEADER_CLIENT_ID: 'x-client-cert-serial-number' must name the SPIFFE (x-client-cert-spiffe), DNS-SAN (x-client-cert-dnsname-sans), URI-SAN (x-client-cert-uri-sans) or SHA-256 (x-client-cert-hash) header"
    );
    for ok in [
        "x-client-cert-hash",
        "x-client-cert-uri-sans",
        "x-client-cert-dnsname-sans",
        "x-client-cert-spiffe",
    ] {
        assert!(
            XlbMtlsFlow::new(XlbSettings {
                client_id: HeaderName::from_static(ok),
                ..Default::default()
            })
            .is_ok()
        );
    }
}
