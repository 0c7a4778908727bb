#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Black-box tests of the `forwarded-cert-client-credentials` flow: the real binary on a plain
//! HTTP listener behind an emulated TLS-terminating proxy. The test sets the headers Envoy,
//! nginx, HAProxy, Traefik or an RFC 9440 proxy (Google's load balancer) would set, with
//! certificates of the TLS suite's test PKI, and checks the tokens as a relying party would.

mod common;
#[allow(dead_code)]
mod tls_support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use tls_support::{
    EXPIRED, GRANT, Leaf, NO_CLIENT_AUTH, NOT_YET_VALID, Pki, REVOKED, UNKNOWN_ISSUER,
    assert_refused, colon_hex, der_serial, id_token, sha256_b64,
};

const FLOW: &str = "forwarded-cert-client-credentials";
const NO_FLOW: &str = "No suitable flow found for grant type 'client_credentials'";

// ---------------------------------------------------------------------------------------------
// The service behind an emulated proxy
// ---------------------------------------------------------------------------------------------

/// The service with only the forwarded-certificate flow, trusting the test root for clients.
struct Proxied {
    server: common::Server,
    /// Keeps the CA and CRL files.
    _files: tempfile::TempDir,
}

impl Proxied {
    /// Starts the service trusting `pki.root`, with 127.0.0.1 as the trusted proxy, an optional
    /// CRL file and extra settings (which win; an empty value removes a setting).
    fn start(pki: &Pki, crl_pem: Option<&str>, extra: &[(&str, &str)]) -> Proxied {
        let files = tempfile::tempdir().unwrap();
        let ca = common::temp_file(&files, "client-ca.pem", &pki.root.pem)
            .display()
            .to_string();
        let crl = crl_pem.map(|crl| {
            common::temp_file(&files, "client.crl", crl)
                .display()
                .to_string()
        });
        let mut env: Vec<(&str, &str)> = vec![
            ("AUTH_FLOWS", FLOW),
            ("TLS_CLIENT_CA_FILE", &ca),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ];
        if let Some(crl) = &crl {
            env.push(("TLS_CLIENT_CRL_FILE", crl));
        }
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k, v));
        }
        Proxied {
            server: common::Server::start(&env),
            _files: files,
        }
    }

    /// [`Proxied::start`] with `FORWARDED_CERT_FORMAT=format`.
    fn with_format(pki: &Pki, format: &str) -> Proxied {
        Self::start(pki, None, &[("FORWARDED_CERT_FORMAT", format)])
    }

    /// POSTs the client-credentials grant with these headers (a name may repeat); returns the
    /// status and the JSON body.
    async fn post(&self, headers: &[(&str, &str)]) -> (u16, Value) {
        let headers = headers
            .iter()
            .map(|(name, value)| (*name, HeaderValue::from_str(value).unwrap()))
            .collect();
        self.post_raw(headers).await
    }

    /// [`Proxied::post`] with header values that need not be visible ASCII.
    async fn post_raw(&self, headers: Vec<(&str, HeaderValue)>) -> (u16, Value) {
        self.post_via("127.0.0.1", headers).await
    }

    /// [`Proxied::post_raw`] connecting to `host` (`127.0.0.1` or `[::1]`).
    async fn post_via(&self, host: &str, headers: Vec<(&str, HeaderValue)>) -> (u16, Value) {
        let url = format!("http://{host}:{}/token", self.server.port);
        let mut request = common::client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(GRANT);
        for (name, value) in headers {
            // `header` appends: a repeated name is sent as two header lines.
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("status {status}, body not JSON: {text:?}"));
        (status, body)
    }

    /// The labels of the log lines with this event.
    fn events(&self, event: &str) -> Vec<Value> {
        tls_support::events(&self.server, event)
    }

    /// Checks a 200 answer: the token verifies through discovery and JWKS, and its claims are
    /// the facts of `leaf` computed here from the DER.
    async fn assert_token_for(&self, (status, body): (u16, Value), leaf: &Leaf) -> Value {
        let token = id_token(status, &body);
        let claims = common::verify(&token, &self.server.base, common::AUDIENCE).await;
        let spiffe = leaf.spiffe();
        assert!(!spiffe.is_empty());
        assert_eq!(claims["iss"], self.server.base);
        assert_eq!(claims["sub"], spiffe, "{claims}");
        assert_eq!(claims["client_id"], spiffe, "{claims}");
        assert_eq!(claims["amr"], json!([FLOW]), "{claims}");
        assert_eq!(
            claims["client"],
            json!({
                "x5_spiffe": spiffe,
                "x5_dnssan": leaf.spec.dns.clone().unwrap(),
                "x5_urisan": leaf.spec.uri.clone().unwrap(),
                "x5_sha256": sha256_b64(&leaf.der),
                "x5_serial": colon_hex(&der_serial(&leaf.der)),
            }),
            "{claims}"
        );
        claims
    }
}

/// Asserts a 400 `invalid_request` without a token whose description contains `expected`.
fn assert_bad_request(what: &str, (status, body): &(u16, Value), expected: &str) {
    assert_eq!(*status, 400, "{what}: {body}");
    assert!(body.get("id_token").is_none(), "{what}: {body}");
    assert_eq!(body["error"], "invalid_request", "{what}: {body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains(expected),
        "{what}: {description:?} does not contain {expected:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Proxy encodings, written here from each proxy's documentation
// ---------------------------------------------------------------------------------------------

/// RFC 9440 `Client-Cert`: an RFC 8941 byte sequence `:base64(DER):`.
fn sf_binary(der: &[u8]) -> String {
    format!(":{}:", STANDARD.encode(der))
}

/// RFC 9440 `Client-Cert-Chain`: a list of byte sequences.
fn sf_list<D: AsRef<[u8]>>(ders: &[D]) -> String {
    ders.iter()
        .map(|der| sf_binary(der.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent-encodes every byte but ASCII letters and digits.
fn url_escape(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// Percent-encodes only control characters (newlines) and spaces: `+`, `/` and `=` stay.
fn minimal_escape(text: &str) -> String {
    const SET: &AsciiSet = &CONTROLS.add(b' ');
    utf8_percent_encode(text, SET).to_string()
}

/// Go's `url.QueryEscape` of strings without spaces: everything but `A-Za-z0-9-_.~`.
fn query_escape(text: &str) -> String {
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(text, SET).to_string()
}

/// Traefik `passTLSClientCert` with `pem: true`: each certificate's PEM without its BEGIN/END
/// lines and newlines (the base64 of the DER), joined with `,`; `escape_all` escapes the
/// whole value (comma included), otherwise each certificate is escaped on its own.
fn traefik(ders: &[Vec<u8>], escape_all: bool) -> String {
    let bodies: Vec<String> = ders.iter().map(|der| STANDARD.encode(der)).collect();
    if escape_all {
        query_escape(&bodies.join(","))
    } else {
        bodies
            .iter()
            .map(|b| query_escape(b))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// HAProxy `ssl_c_chain_der,base64`: the DER of the certificates concatenated, then base64.
fn haproxy_chain(ders: &[&[u8]]) -> String {
    STANDARD.encode(ders.concat())
}

/// Lowercase hex SHA-256 of the DER, as Envoy writes XFCC `Hash`.
fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Quotes an XFCC value as Envoy does: `"` and `\` escaped with `\`.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One XFCC element as Envoy writes it for `set_current_client_cert_details: { cert, chain,
/// uri, dns, subject }`: `By` (the proxy's own URI SAN), `Hash`, `Cert` (URL-encoded PEM),
/// `Chain` (URL-encoded PEM of the leaf and the intermediates), `Subject`, `URI`, `DNS`, with
/// the values that hold `,` `;` or `=` quoted.
fn xfcc_element(by: &str, leaf: &Leaf) -> String {
    format!(
        "By={by};Hash={};Cert={};Chain={};Subject={};URI={};DNS={}",
        sha256_hex(&leaf.der),
        quoted(&url_escape(&leaf.pem)),
        quoted(&url_escape(&leaf.chain_pem)),
        quoted(&format!("CN={},O=Token Service TLS tests", leaf.spec.name)),
        leaf.spiffe(),
        leaf.spec.dns.as_deref().unwrap(),
    )
}

const EDGE_ENVOY: &str = "spiffe://example.org/ns/edge/sa/envoy";
const INNER_ENVOY: &str = "spiffe://example.org/ns/mesh/sa/ingress";

// ---------------------------------------------------------------------------------------------
// 1. Every format gets a token with the certificate's facts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rfc9440_client_cert_gets_token_with_facts_of_the_der_with_and_without_chain() {
    let pki = Pki::new();
    let service = Proxied::start(&pki, None, &[]); // rfc9440 is the default format
    let valid = sf_binary(&pki.valid.der);
    let claims = service
        .assert_token_for(service.post(&[("Client-Cert", &valid)]).await, &pki.valid)
        .await;
    assert_eq!(claims["client"]["x5_serial"], "10:01");

    // A leaf of the intermediate, the intermediate in Client-Cert-Chain; the bundle holds only
    // the root.
    let leaf = &pki.via_intermediate;
    assert!(!pki.root.pem.contains(&pki.intermediate.pem));
    let cert = sf_binary(&leaf.der);
    let chain = sf_list(&[&pki.intermediate.der]);
    let claims = service
        .assert_token_for(
            service
                .post(&[("Client-Cert", &cert), ("Client-Cert-Chain", &chain)])
                .await,
            leaf,
        )
        .await;
    // Serial 80:02:ab has its high bit set: the DER integer carries a leading 00 byte.
    assert_eq!(claims["client"]["x5_serial"], "00:80:02:ab");

    // A chain that repeats the leaf first, and one that goes up to the root, work too.
    for chain in [
        sf_list(&leaf.chain_der),
        sf_list(&[&pki.intermediate.der, &pki.root.der]),
    ] {
        service
            .assert_token_for(
                service
                    .post(&[("Client-Cert", &cert), ("Client-Cert-Chain", &chain)])
                    .await,
                leaf,
            )
            .await;
    }

    // Without the chain (absent or empty) the leaf of the intermediate cannot be verified.
    for headers in [
        vec![("Client-Cert", cert.as_str())],
        vec![("Client-Cert", cert.as_str()), ("Client-Cert-Chain", "")],
    ] {
        let (status, body) = service.post(&headers).await;
        assert_refused(status, &body, UNKNOWN_ISSUER);
    }
    assert_eq!(service.events("token_issued").len(), 4);
}

#[tokio::test]
async fn envoy_xfcc_single_element_with_cert_chain_and_quoted_values_gets_token() {
    let pki = Pki::new();
    let service = Proxied::with_format(&pki, "xfcc");
    let leaf = &pki.via_intermediate;
    let element = xfcc_element(EDGE_ENVOY, leaf);
    assert!(element.contains("Subject=\"CN=via-intermediate,O=Token"));
    let claims = service
        .assert_token_for(
            service.post(&[("X-Forwarded-Client-Cert", &element)]).await,
            leaf,
        )
        .await;
    assert_eq!(claims["client"]["x5_serial"], "00:80:02:ab");

    // Only Chain (leaf first), no Cert nor Hash; keys in another order and case; a quoted
    // value with `,` `;` `=` and an escaped quote; an unknown key.
    let element = format!(
        "uri={};Chain={};subject={};By={EDGE_ENVOY};X-Extra=1",
        leaf.spiffe(),
        quoted(&url_escape(&leaf.chain_pem)),
        quoted(r#"CN=via-intermediate;OU="ops, eu"=x,O=Token Service TLS tests"#),
    );
    service
        .assert_token_for(
            service.post(&[("X-Forwarded-Client-Cert", &element)]).await,
            leaf,
        )
        .await;

    // A root-issued leaf with only Cert.
    let element = format!("Cert={}", quoted(&url_escape(&pki.valid.pem)));
    service
        .assert_token_for(
            service.post(&[("X-Forwarded-Client-Cert", &element)]).await,
            &pki.valid,
        )
        .await;

    // A Hash that is not the certificate's is refused.
    let wrong = format!(
        "Hash={};Cert={}",
        sha256_hex(&pki.no_dns.der),
        quoted(&url_escape(&pki.valid.pem))
    );
    let answer = service.post(&[("X-Forwarded-Client-Cert", &wrong)]).await;
    assert_bad_request("wrong Hash", &answer, "Hash");
}

/// Envoy documents XFCC as a comma-separated list of elements, each added by one proxy, which
/// appends "the current client certificate information ... to the end"; so the last element is
/// the one the proxy directly in front of the service (the trusted one) wrote about its own
/// client. Earlier elements come from hops the service cannot vouch for (a client may even send
/// its own XFCC through an APPEND_FORWARD proxy), so the flow uses the last element.
#[tokio::test]
async fn envoy_xfcc_with_several_elements_uses_the_last_one_written_by_the_adjacent_proxy() {
    let pki = Pki::new();
    let service = Proxied::with_format(&pki, "xfcc");
    let first = xfcc_element(INNER_ENVOY, &pki.valid);
    let last = xfcc_element(EDGE_ENVOY, &pki.via_intermediate);
    // The elements' quoted values contain `,` and `;`, which must not split elements.
    assert!(first.contains("\"CN=valid,O=Token Service TLS tests\""));

    let header = format!("{first},{last}");
    service
        .assert_token_for(
            service.post(&[("X-Forwarded-Client-Cert", &header)]).await,
            &pki.via_intermediate,
        )
        .await;
    // The same elements the other way round: the position decides, not the content.
    let header = format!("{last}, {first}");
    service
        .assert_token_for(
            service.post(&[("X-Forwarded-Client-Cert", &header)]).await,
            &pki.valid,
        )
        .await;
    // A forged first element (another CA) does not matter when the last one is good...
    let forged = xfcc_element(INNER_ENVOY, &pki.other_ca);
    let header = format!("{forged},{last}");
    service
        .assert_token_for(
            service.post(&[("X-Forwarded-Client-Cert", &header)]).await,
            &pki.via_intermediate,
        )
        .await;
    // ... and a good first element does not rescue a bad last one.
    let header = format!("{first},{forged}");
    let (status, body) = service.post(&[("X-Forwarded-Client-Cert", &header)]).await;
    assert_refused(status, &body, UNKNOWN_ISSUER);
    // A last element without Cert or Chain is refused, whatever came before.
    let header = format!("{first},By={EDGE_ENVOY};URI={}", pki.valid.spiffe());
    let answer = service.post(&[("X-Forwarded-Client-Cert", &header)]).await;
    assert_bad_request(
        "last element without Cert",
        &answer,
        "neither Cert nor Chain",
    );
}

#[tokio::test]
async fn nginx_ssl_client_escaped_cert_gets_token() {
    let pki = Pki::new();
    let service = Proxied::with_format(&pki, "nginx");
    // Everything escaped, and only newlines and spaces escaped (`+`, `/`, `=` left as they are).
    for value in [url_escape(&pki.valid.pem), minimal_escape(&pki.valid.pem)] {
        service
            .assert_token_for(
                service.post(&[("X-SSL-Client-Cert", &value)]).await,
                &pki.valid,
            )
            .await;
    }
    // nginx cannot forward intermediates: a leaf of an intermediate that is not in the bundle
    // is refused.
    let value = url_escape(&pki.via_intermediate.pem);
    let (status, body) = service.post(&[("X-SSL-Client-Cert", &value)]).await;
    assert_refused(status, &body, UNKNOWN_ISSUER);
    // $ssl_client_escaped_cert holds the leaf only.
    let value = url_escape(&pki.via_intermediate.chain_pem);
    let answer = service.post(&[("X-SSL-Client-Cert", &value)]).await;
    assert_bad_request("leaf and chain", &answer, "more than one certificate");
}

#[tokio::test]
async fn haproxy_base64_der_with_ssl_c_chain_der_gets_token() {
    let pki = Pki::new();
    let service = Proxied::with_format(&pki, "haproxy");
    let leaf = STANDARD.encode(&pki.valid.der);
    service
        .assert_token_for(
            service.post(&[("X-SSL-Client-DER", &leaf)]).await,
            &pki.valid,
        )
        .await;

    let leaf = &pki.via_intermediate;
    let der = STANDARD.encode(&leaf.der);
    // One intermediate, and intermediate + root concatenated.
    for chain in [
        haproxy_chain(&[&pki.intermediate.der]),
        haproxy_chain(&[&pki.intermediate.der, &pki.root.der]),
    ] {
        service
            .assert_token_for(
                service
                    .post(&[
                        ("X-SSL-Client-DER", &der),
                        ("X-SSL-Client-Chain-DER", &chain),
                    ])
                    .await,
                leaf,
            )
            .await;
    }
    let (status, body) = service.post(&[("X-SSL-Client-DER", &der)]).await;
    assert_refused(status, &body, UNKNOWN_ISSUER);
}

#[tokio::test]
async fn traefik_forwarded_tls_client_cert_with_chain_gets_token() {
    let pki = Pki::new();
    let service = Proxied::with_format(&pki, "traefik");
    let leaf = &pki.via_intermediate;
    for escape_all in [true, false] {
        let value = traefik(&leaf.chain_der, escape_all);
        assert!(value.contains("%2F") || value.contains("%2B"), "{value}");
        service
            .assert_token_for(
                service
                    .post(&[("X-Forwarded-Tls-Client-Cert", &value)])
                    .await,
                leaf,
            )
            .await;
    }
    let value = traefik(std::slice::from_ref(&pki.valid.der), true);
    service
        .assert_token_for(
            service
                .post(&[("X-Forwarded-Tls-Client-Cert", &value)])
                .await,
            &pki.valid,
        )
        .await;
    let value = traefik(std::slice::from_ref(&leaf.der), true);
    let (status, body) = service
        .post(&[("X-Forwarded-Tls-Client-Cert", &value)])
        .await;
    assert_refused(status, &body, UNKNOWN_ISSUER);
}

#[tokio::test]
async fn custom_header_names_replace_the_format_defaults() {
    let pki = Pki::new();
    let service = Proxied::start(
        &pki,
        None,
        &[
            ("FORWARDED_CERT_FORMAT", "rfc9440"),
            ("FORWARDED_CERT_HEADER", "X-Edge-Client-Cert"),
            ("FORWARDED_CERT_CHAIN_HEADER", "X-Edge-Client-Chain"),
        ],
    );
    let leaf = &pki.via_intermediate;
    let cert = sf_binary(&leaf.der);
    let chain = sf_list(&[&pki.intermediate.der]);
    service
        .assert_token_for(
            service
                .post(&[
                    // Header names are case-insensitive.
                    ("x-edge-client-cert", &cert),
                    ("X-EDGE-CLIENT-CHAIN", &chain),
                ])
                .await,
            leaf,
        )
        .await;
    // The default names mean nothing now.
    let answer = service
        .post(&[("Client-Cert", &cert), ("Client-Cert-Chain", &chain)])
        .await;
    assert_bad_request("default header names", &answer, NO_FLOW);
    // The chain must come in the custom chain header.
    let (status, body) = service
        .post(&[("X-Edge-Client-Cert", &cert), ("Client-Cert-Chain", &chain)])
        .await;
    assert_refused(status, &body, UNKNOWN_ISSUER);

    // Another format under another name.
    let service = Proxied::start(
        &pki,
        None,
        &[
            ("FORWARDED_CERT_FORMAT", "xfcc"),
            ("FORWARDED_CERT_HEADER", "X-Mesh-Client"),
        ],
    );
    let element = xfcc_element(EDGE_ENVOY, leaf);
    service
        .assert_token_for(service.post(&[("X-Mesh-Client", &element)]).await, leaf)
        .await;
    let answer = service.post(&[("X-Forwarded-Client-Cert", &element)]).await;
    assert_bad_request("default XFCC name", &answer, NO_FLOW);
}

#[tokio::test]
async fn dns_san_client_id_attribute_applies_to_forwarded_certificates() {
    let pki = Pki::new();
    let service = Proxied::start(&pki, None, &[("MTLS_CLIENT_ID_ATTRIBUTE", "dns_san")]);
    let cert = sf_binary(&pki.valid.der);
    let (status, body) = service.post(&[("Client-Cert", &cert)]).await;
    let token = id_token(status, &body);
    let claims = common::verify(&token, &service.server.base, common::AUDIENCE).await;
    assert_eq!(claims["sub"], "valid.example.org");
    assert_eq!(claims["client_id"], "valid.example.org");
    assert_eq!(claims["client"]["x5_spiffe"], pki.valid.spiffe());

    let cert = sf_binary(&pki.no_dns.der);
    let (status, body) = service.post(&[("Client-Cert", &cert)]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "unauthorized_client", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("MTLS_CLIENT_ID_ATTRIBUTE=dns_san"),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Trusted proxies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn spoofed_header_from_an_address_outside_trusted_proxies_is_refused_and_logged() {
    let pki = Pki::new();
    let service = Proxied::start(
        &pki,
        None,
        &[("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.0.0/16,fd00::/8")],
    );
    let cert = sf_binary(&pki.valid.der);
    let expected = "Forwarded client certificates are accepted only from trusted proxies; 127.0.0.1 is not one";
    // A perfectly valid certificate, even with headers that claim a trusted proxy.
    let attempts: [&[(&str, &str)]; 3] = [
        &[("Client-Cert", cert.as_str())],
        &[
            ("Client-Cert", cert.as_str()),
            ("X-Forwarded-For", "10.1.2.3"),
            ("X-Real-IP", "10.1.2.3"),
            ("Forwarded", "for=10.1.2.3;proto=https"),
        ],
        // The proxy check comes before any parsing: garbage gets the same answer.
        &[("Client-Cert", ":not a certificate:")],
    ];
    for headers in attempts {
        let (status, body) = service.post(headers).await;
        assert_refused(status, &body, expected);
    }
    let refused = service.events("forwarded_cert_untrusted_proxy");
    assert_eq!(refused.len(), attempts.len(), "{refused:#?}");
    for line in &refused {
        assert_eq!(line["peer"], "127.0.0.1", "{line}");
        assert_eq!(line["flow"], FLOW, "{line}");
    }
    let logs = tls_support::log_lines(&service.server);
    let line = logs
        .iter()
        .find(|l| l["logging.googleapis.com/labels"]["event"] == "forwarded_cert_untrusted_proxy")
        .unwrap();
    assert_eq!(line["severity"], "WARNING", "{line}");
    assert!(service.events("token_issued").is_empty());
    assert!(service.events("client_certificate_rejected").is_empty());

    // The same service trusts 127.0.0.1 when it is listed, as a CIDR or a bare address.
    for trusted in ["10.0.0.0/8,127.0.0.0/8", "10.0.0.0/8, 127.0.0.1"] {
        let service = Proxied::start(&pki, None, &[("TRUSTED_PROXIES", trusted)]);
        service
            .assert_token_for(service.post(&[("Client-Cert", &cert)]).await, &pki.valid)
            .await;
    }
}

/// A dual-stack listener (`BIND_ADDRESS=::`) sees IPv4 peers as IPv4-mapped IPv6 addresses
/// (`::ffff:127.0.0.1`); they must still match IPv4 entries of TRUSTED_PROXIES.
#[tokio::test]
async fn ipv4_proxy_is_trusted_on_a_dual_stack_listener() {
    let pki = Pki::new();
    let service = Proxied::start(&pki, None, &[("BIND_ADDRESS", "::")]);
    let cert = sf_binary(&pki.valid.der);
    service
        .assert_token_for(service.post(&[("Client-Cert", &cert)]).await, &pki.valid)
        .await;

    // An IPv6 proxy is matched by an IPv6 entry, and an untrusted IPv4 peer is reported as
    // such, not as an IPv6 address.
    let service = Proxied::start(
        &pki,
        None,
        &[
            ("BIND_ADDRESS", "::"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,::1"),
        ],
    );
    let header = || vec![("Client-Cert", HeaderValue::from_str(&cert).unwrap())];
    service
        .assert_token_for(service.post_via("[::1]", header()).await, &pki.valid)
        .await;
    let (status, body) = service.post_raw(header()).await;
    assert_refused(
        status,
        &body,
        "Forwarded client certificates are accepted only from trusted proxies; 127.0.0.1 is not one",
    );
    let refused = service.events("forwarded_cert_untrusted_proxy");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["peer"], "127.0.0.1");
}

// ---------------------------------------------------------------------------------------------
// 3. Repeated and malformed headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn header_sent_twice_is_refused_with_400() {
    let pki = Pki::new();
    let service = Proxied::start(&pki, None, &[]);
    let valid = sf_binary(&pki.valid.der);
    let leaf = sf_binary(&pki.via_intermediate.der);
    let chain = sf_list(&[&pki.intermediate.der]);
    // The proxy appended its header to the client's own: both values are valid certificates.
    let answer = service
        .post(&[("Client-Cert", &valid), ("Client-Cert", &leaf)])
        .await;
    assert_bad_request("Client-Cert twice", &answer, "appears more than once");
    assert_bad_request("Client-Cert twice", &answer, "client-cert");
    let answer = service
        .post(&[
            ("Client-Cert", &leaf),
            ("Client-Cert-Chain", &chain),
            ("Client-Cert-Chain", &chain),
        ])
        .await;
    assert_bad_request("Client-Cert-Chain twice", &answer, "client-cert-chain");

    let service = Proxied::with_format(&pki, "xfcc");
    let element = xfcc_element(EDGE_ENVOY, &pki.valid);
    let answer = service
        .post(&[
            ("X-Forwarded-Client-Cert", &element),
            ("X-Forwarded-Client-Cert", &element),
        ])
        .await;
    assert_bad_request("XFCC twice", &answer, "appears more than once");
    assert!(service.events("token_issued").is_empty());
}

#[tokio::test]
async fn malformed_headers_get_4xx_json_never_500_and_the_service_stays_up() {
    let pki = Pki::new();
    let der = &pki.valid.der;
    let pem = &pki.valid.pem;
    // A PEM cut in the middle of its base64, without its END line.
    let truncated_pem = &pem[..pem.len() / 2];
    let huge_base64 = "A".repeat(9 * 1024);
    let huge_der = STANDARD.encode(vec![0x30u8; 9 * 1024]);
    let too_long = format!(":{}:", "A".repeat(70 * 1024));
    let half_der = STANDARD.encode(&der[..der.len() / 2]);
    let two_certs = format!("{},{}", STANDARD.encode(der), "%%%");

    // (format, header, value, expected text in the description)
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("rfc9440", "Client-Cert", "".into(), "is empty"),
        ("rfc9440", "Client-Cert", "   ".into(), "is empty"),
        (
            "rfc9440",
            "Client-Cert",
            STANDARD.encode(der),
            "not an RFC 9440 byte sequence",
        ),
        (
            "rfc9440",
            "Client-Cert",
            ":!!garbage!!:".into(),
            "not an RFC 9440 byte sequence",
        ),
        ("rfc9440", "Client-Cert", ":A:".into(), "not valid base64"),
        ("rfc9440", "Client-Cert", ":QUJD:".into(), "SEQUENCE"),
        (
            "rfc9440",
            "Client-Cert",
            format!(":{half_der}:"),
            "truncated",
        ),
        (
            "rfc9440",
            "Client-Cert",
            format!(":{huge_base64}:"),
            "SEQUENCE",
        ),
        ("rfc9440", "Client-Cert", too_long.clone(), "at most 65536"),
        (
            "nginx",
            "X-SSL-Client-Cert",
            url_escape(truncated_pem),
            "PEM",
        ),
        ("nginx", "X-SSL-Client-Cert", "".into(), "is empty"),
        (
            "nginx",
            "X-SSL-Client-Cert",
            "not%20a%20certificate".into(),
            "no certificate",
        ),
        (
            "nginx",
            "X-SSL-Client-Cert",
            url_escape(&format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                "QUJD"
            )),
            "SEQUENCE",
        ),
        (
            "xfcc",
            "X-Forwarded-Client-Cert",
            format!("By={EDGE_ENVOY};Cert=\"{}", url_escape(pem)),
            "unterminated quoted value",
        ),
        (
            "xfcc",
            "X-Forwarded-Client-Cert",
            format!("Cert={}\"", url_escape(pem)),
            "malformed",
        ),
        (
            "xfcc",
            "X-Forwarded-Client-Cert",
            format!("Subject=\"CN=a,b;Cert={}", url_escape(pem)),
            "unterminated quoted value",
        ),
        ("xfcc", "X-Forwarded-Client-Cert", "".into(), "is empty"),
        (
            "xfcc",
            "X-Forwarded-Client-Cert",
            format!("Cert={}", quoted(&url_escape(truncated_pem))),
            "PEM",
        ),
        (
            "xfcc",
            "X-Forwarded-Client-Cert",
            format!("{},", xfcc_element(EDGE_ENVOY, &pki.valid)),
            "empty element",
        ),
        (
            "xfcc",
            "X-Forwarded-Client-Cert",
            format!("Hash=\"{}\"", "a".repeat(9 * 1024)),
            "neither Cert nor Chain",
        ),
        ("haproxy", "X-SSL-Client-DER", "@@@@".into(), "base64"),
        ("haproxy", "X-SSL-Client-DER", huge_der, "DER"),
        ("haproxy", "X-SSL-Client-DER", half_der.clone(), "truncated"),
        ("haproxy", "X-SSL-Client-DER", "".into(), "is empty"),
        (
            "traefik",
            "X-Forwarded-Tls-Client-Cert",
            two_certs,
            "base64",
        ),
        (
            "traefik",
            "X-Forwarded-Tls-Client-Cert",
            half_der,
            "truncated",
        ),
        (
            "traefik",
            "X-Forwarded-Tls-Client-Cert",
            too_long,
            "at most 65536",
        ),
    ];
    let formats = ["rfc9440", "xfcc", "nginx", "haproxy", "traefik"];
    for format in formats {
        let service = Proxied::with_format(&pki, format);
        for (_, header, value, expected) in cases.iter().filter(|c| c.0 == format) {
            let what = format!("{format} {header}: {:?}", snippet(value));
            let answer = service.post(&[(*header, value.as_str())]).await;
            assert_bad_request(&what, &answer, expected);
        }
        // Bytes that are not visible ASCII.
        let answer = service
            .post_raw(vec![(
                match format {
                    "rfc9440" => "Client-Cert",
                    "xfcc" => "X-Forwarded-Client-Cert",
                    "nginx" => "X-SSL-Client-Cert",
                    "haproxy" => "X-SSL-Client-DER",
                    _ => "X-Forwarded-Tls-Client-Cert",
                },
                HeaderValue::from_bytes(b":\xc3\xa9t\xc3\xa9:").unwrap(),
            )])
            .await;
        assert_bad_request(format, &answer, "not printable ASCII");
        // Nothing broke: the service still answers and issues tokens.
        let health = common::client()
            .get(service.server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(
            health.status().is_success(),
            "{format}: {}",
            health.status()
        );
        assert!(service.events("token_issued").is_empty(), "{format}");
        let logs = service.server.logs();
        assert!(!logs.contains("panicked"), "{format}: {logs}");
    }
    // Beyond what the HTTP server reads at all (1 MiB of headers), hyper itself answers 431
    // (without an OAuth body: the request never reaches /token); never a 500.
    let service = Proxied::start(&pki, None, &[]);
    let response = common::client()
        .post(service.server.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("Client-Cert", format!(":{}:", "A".repeat(1024 * 1024)))
        .body(GRANT)
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status(), 431),
        // The server may close the connection while the client still writes.
        Err(e) => assert!(!e.is_timeout(), "{e:?}"),
    }
    // A valid header after all that still gets a token.
    let _ = service.post(&[("Client-Cert", ":A:")]).await;
    service
        .assert_token_for(
            service
                .post(&[("Client-Cert", &sf_binary(&pki.valid.der))])
                .await,
            &pki.valid,
        )
        .await;
}

/// At most 40 characters of a value, for messages.
fn snippet(value: &str) -> String {
    value.chars().take(40).collect()
}

// ---------------------------------------------------------------------------------------------
// 4. Re-verification against our own CA bundle and CRLs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forwarded_certificates_are_reverified_with_precise_reasons_and_no_token() {
    let pki = Pki::new();
    let crl = pki.root.crl_pem(&[&pki.revoked]);
    let cases: [(&Leaf, &str); 6] = [
        (&pki.other_ca, UNKNOWN_ISSUER),
        (&pki.self_signed, UNKNOWN_ISSUER),
        (&pki.expired, EXPIRED),
        (&pki.not_yet_valid, NOT_YET_VALID),
        (&pki.revoked, REVOKED),
        (&pki.server_auth_only, NO_CLIENT_AUTH),
    ];
    // The same verdicts whatever the proxy's encoding.
    type Encode = fn(&Leaf) -> String;
    let formats: [(&str, &str, Encode); 5] = [
        ("rfc9440", "Client-Cert", |l| sf_binary(&l.der)),
        ("xfcc", "X-Forwarded-Client-Cert", |l| {
            xfcc_element(EDGE_ENVOY, l)
        }),
        ("nginx", "X-SSL-Client-Cert", |l| url_escape(&l.pem)),
        ("haproxy", "X-SSL-Client-DER", |l| STANDARD.encode(&l.der)),
        ("traefik", "X-Forwarded-Tls-Client-Cert", |l| {
            traefik(std::slice::from_ref(&l.der), true)
        }),
    ];
    for (format, header, encode) in formats {
        let service = Proxied::start(&pki, Some(&crl), &[("FORWARDED_CERT_FORMAT", format)]);
        for (leaf, description) in &cases {
            let (status, body) = service.post(&[(header, &encode(leaf))]).await;
            let name = &leaf.spec.name;
            assert_eq!(status, 403, "{format} {name}: {body}");
            assert_refused(status, &body, description);
        }
        let rejected = service.events("client_certificate_rejected");
        for (leaf, description) in &cases {
            let name = &leaf.spec.name;
            let serial = colon_hex(&der_serial(&leaf.der));
            let line = rejected
                .iter()
                .find(|l| l["cert/serial"] == serial)
                .unwrap_or_else(|| panic!("{format} {name}: no rejection logged: {rejected:#?}"));
            assert_eq!(line["reason"], *description, "{format} {name}: {line}");
            assert_eq!(line["flow"], FLOW, "{format} {name}: {line}");
            assert_eq!(line["cert/sha256"], sha256_b64(&leaf.der), "{line}");
        }
        assert_eq!(rejected.len(), cases.len(), "{format}: {rejected:#?}");
        assert!(service.events("token_issued").is_empty(), "{format}");
        // Another certificate of the same CA is unaffected by the CRL.
        service
            .assert_token_for(
                service.post(&[(header, &encode(&pki.valid))]).await,
                &pki.valid,
            )
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. No header
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn request_without_the_header_is_400_like_any_request_without_credentials() {
    let pki = Pki::new();
    let service = Proxied::start(&pki, None, &[]);
    let chain = sf_list(&[&pki.intermediate.der]);
    let cases: [&[(&str, &str)]; 3] = [
        &[],
        // A chain alone is no credential.
        &[("Client-Cert-Chain", &chain)],
        // Nor are another flow's load-balancer headers.
        &[
            ("X-Client-Cert-Present", "true"),
            ("X-Client-Cert-Chain-Verified", "true"),
            ("X-Client-Cert-Spiffe", common::SPIFFE),
        ],
    ];
    for headers in cases {
        let answer = service.post(headers).await;
        assert_bad_request(&format!("{headers:?}"), &answer, NO_FLOW);
        assert_eq!(
            answer.1["error_description"],
            format!(
                "{NO_FLOW}: forwarded-cert-client-credentials: no forwarded client certificate (header client-cert is missing)"
            )
        );
    }
    let rejected = service.events("token_request_rejected");
    assert_eq!(rejected.len(), cases.len(), "{rejected:#?}");
    assert!(service.events("token_issued").is_empty());
}

/// Issue 10, finding 12: the forwarded-certificate flow validates SPIFFE IDs as direct mTLS
/// does: a malformed one, or a second one, is refused saying what is wrong.
#[tokio::test]
async fn forwarded_certificates_with_a_malformed_or_second_spiffe_id_are_refused() {
    let pki = Pki::new();
    let service = Proxied::start(&pki, None, &[]);
    let issue = |spiffe: &str, uri: Option<&str>| {
        pki.root.issue(tls_support::Spec {
            spiffe: Some(spiffe.to_owned()),
            uri: uri.map(str::to_owned),
            ..tls_support::Spec::client("workload", &[0x40, 0x02])
        })
    };
    let leaf = issue("spiffe://example.org/ns/PROD/sa/../admin", None);
    let (status, body) = service
        .post(&[("Client-Cert", &sf_binary(&leaf.der))])
        .await;
    assert_refused(
        status,
        &body,
        "The client certificate's SPIFFE ID 'spiffe://example.org/ns/PROD/sa/../admin' is not valid: the path has a '..' segment",
    );
    let leaf = issue("spiffe://example.org/a", Some("spiffe://example.org/b"));
    let (status, body) = service
        .post(&[("Client-Cert", &sf_binary(&leaf.der))])
        .await;
    assert_refused(
        status,
        &body,
        "The client certificate has more than one SPIFFE ID (URI SAN with scheme spiffe); a SPIFFE certificate carries exactly one",
    );
    let leaf = issue("spiffe://example.org/ns/PROD/sa/x", Some("urn:example:x"));
    service
        .assert_token_for(
            service
                .post(&[("Client-Cert", &sf_binary(&leaf.der))])
                .await,
            &leaf,
        )
        .await;
}
