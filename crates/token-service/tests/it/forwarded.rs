//! Black-box tests of the `forwarded-cert-client-credentials` flow: the real binary on a plain
//! HTTP listener behind an emulated TLS-terminating proxy. The test sets the headers Envoy,
//! nginx, HAProxy, Traefik or an RFC 9440 proxy (Google's load balancer) would set, with
//! certificates of the TLS suite's test PKI, and checks the tokens as a relying party would.
//! Section 6 runs the README's nginx and HAProxy recipes as written against the real proxies
//! (Debian's `nginx` and `haproxy`, which `.ci/run` installs; a missing one fails the test).

use crate::support as common;
use crate::support::tls as tls_support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderValue;
use std::sync::Arc;

use rustls::{ClientConfig, HandshakeKind};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tls_support::{
    EXPIRED, GRANT, Leaf, NO_CLIENT_AUTH, NOT_YET_VALID, Pki, REVOKED, Spec, UNKNOWN_ISSUER,
    assert_refused, colon_hex, der_serial, http1, id_token, rustls_config, sha256_b64,
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
        Self::start_with(common::Server::start, pki, crl_pem, extra)
    }

    /// [`Proxied::start`] with the real binary, for tests that read its log or set its
    /// listening address.
    fn start_process(pki: &Pki, crl_pem: Option<&str>, extra: &[(&str, &str)]) -> Proxied {
        Self::start_with(common::Server::start_process, pki, crl_pem, extra)
    }

    fn start_with(
        start: fn(&[(&str, &str)]) -> common::Server,
        pki: &Pki,
        crl_pem: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Proxied {
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
            server: start(&env),
            _files: files,
        }
    }

    /// [`Proxied::start`] with `FORWARDED_CERT_FORMAT=format`.
    fn with_format(pki: &Pki, format: &str) -> Proxied {
        Self::start(pki, None, &[("FORWARDED_CERT_FORMAT", format)])
    }

    /// [`Proxied::start_process`] with `FORWARDED_CERT_FORMAT=format`.
    fn with_format_process(pki: &Pki, format: &str) -> Proxied {
        Self::start_process(pki, None, &[("FORWARDED_CERT_FORMAT", format)])
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
    let service = Proxied::start_process(&pki, None, &[]); // rfc9440 is the default format
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
    // An error in the chain header names that header, under its configured name.
    let answer = service
        .post(&[
            ("X-Edge-Client-Cert", &cert),
            ("X-Edge-Client-Chain", ":A:"),
        ])
        .await;
    assert_bad_request(
        "bad chain",
        &answer,
        "Header x-edge-client-chain: the Client-Cert-Chain header is not valid base64",
    );
    let answer = service.post(&[("X-Edge-Client-Cert", ":A:")]).await;
    assert_bad_request(
        "bad leaf",
        &answer,
        "Header x-edge-client-cert: the Client-Cert header is not valid base64",
    );
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
    let service = Proxied::start_process(
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
        let service = Proxied::start_process(&pki, None, &[("TRUSTED_PROXIES", trusted)]);
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
    let service = Proxied::start_process(&pki, None, &[("BIND_ADDRESS", "::")]);
    let cert = sf_binary(&pki.valid.der);
    service
        .assert_token_for(service.post(&[("Client-Cert", &cert)]).await, &pki.valid)
        .await;

    // An IPv6 proxy is matched by an IPv6 entry, and an untrusted IPv4 peer is reported as
    // such, not as an IPv6 address.
    let service = Proxied::start_process(
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
    let service = Proxied::start_process(&pki, None, &[]);
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

    let service = Proxied::with_format_process(&pki, "xfcc");
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
        let service = Proxied::with_format_process(&pki, format);
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
    let service = Proxied::start_process(&pki, None, &[]);
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
        let service =
            Proxied::start_process(&pki, Some(&crl), &[("FORWARDED_CERT_FORMAT", format)]);
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
    let service = Proxied::start_process(&pki, None, &[]);
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

// ---------------------------------------------------------------------------------------------
// 6. The README's nginx and HAProxy recipes, against the real proxies
// ---------------------------------------------------------------------------------------------

/// The README, for its recipes.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap()
}

/// The README's fenced code block with this language tag that contains `marker`.
fn readme_block(readme: &str, language: &str, marker: &str) -> String {
    readme
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|block| block.strip_prefix(language)?.strip_prefix('\n'))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("README has no {language} block with {marker:?}"))
        .to_owned()
}

/// `text` with every `from` replaced; `from` must occur, so a changed recipe fails loudly here.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the README recipe no longer contains {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// The proxy's executable: on PATH or in the sbin folders Debian installs it to. The recipes are
/// tested against the real proxy, so a missing one fails the test (`.ci/run` installs both).
pub(crate) fn proxy_binary(name: &str) -> std::path::PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed. The README's {name} recipe is tested against the real \
                 proxy: install Debian's package (apt-get install {name}), as .ci/run does"
            )
        })
}

/// A proxy process started by a test; stopped with SIGTERM (nginx's master then stops its
/// workers), killed if it lingers.
pub(crate) struct ProxyProcess {
    name: &'static str,
    child: std::process::Child,
    /// Its standard output and error, then any log file it writes itself.
    logs: Vec<std::path::PathBuf>,
}

impl ProxyProcess {
    /// Starts `name` with `socket`, a listener bound to port 0, as its standard input (HAProxy's
    /// `bind fd@0`; nginx's inherited sockets, `NGINX=0;`) and waits until it answers there.
    pub(crate) fn spawn(
        name: &'static str,
        args: &[&str],
        env: &[(&str, &str)],
        logs: Vec<std::path::PathBuf>,
        socket: std::net::TcpListener,
    ) -> ProxyProcess {
        use std::io::{ErrorKind, Read as _, Write as _};
        let address = socket.local_addr().unwrap();
        // The proxy's workers accept from an event loop: a blocking socket could stall one.
        socket.set_nonblocking(true).unwrap();
        let out = std::fs::File::create(&logs[0]).unwrap();
        let mut process = ProxyProcess {
            name,
            child: std::process::Command::new(proxy_binary(name))
                .args(args)
                .envs(env.iter().copied())
                .stdin(std::os::fd::OwnedFd::from(socket))
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap(),
            logs,
        };
        // The socket listens from the start, so a connection is queued at once; the proxy is
        // ready when it answers one (a plain-text request on its TLS port: an error, or a close).
        let mut probe = std::net::TcpStream::connect(address).unwrap();
        probe.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        probe
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            match probe.read(&mut [0; 512]) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // Bytes, the end, or a reset: the proxy took the connection, or it exited and
                // the socket closed (then nothing listens there any more).
                _ => break,
            }
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("{name} exited ({status}):\n{}", process.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} does not answer on {address}:\n{}",
                process.log()
            );
        }
        if std::net::TcpStream::connect(address).is_err() {
            let status = process.child.wait().unwrap();
            panic!("{name} exited ({status}):\n{}", process.log());
        }
        process
    }

    pub(crate) fn log(&self) -> String {
        self.logs
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the tests run as root (as in a container), where nginx's workers would otherwise
/// switch to `nobody`, who cannot enter the test's private folder.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// The proxies whose README recipes run for real.
#[derive(Clone, Copy, PartialEq)]
enum Recipe {
    Nginx,
    Haproxy,
}

/// The README's proxy recipe running: Token Service started with the README's settings and the
/// proxy with the README's configuration, only addresses and file paths replaced.
struct RecipeRun {
    service: common::Server,
    proxy: ProxyProcess,
    proxy_port: u16,
    /// `https://127.0.0.1:PORT`: the proxy, and TOKEN_ISSUER.
    issuer: String,
    audience: String,
    /// An HTTPS client without a client certificate that trusts the test root.
    verifier: reqwest::Client,
    _files: tempfile::TempDir,
}

impl RecipeRun {
    /// Starts both. `ca_pem` is the TLS_CLIENT_CA_FILE bundle (roots and intermediates, as the
    /// README asks).
    fn start(recipe: Recipe, pki: &Pki, ca_pem: &str) -> RecipeRun {
        Self::start_edited(recipe, pki, ca_pem, None, &|config| config)
    }

    /// [`RecipeRun::start`] with another `FORWARDED_CERT_FORMAT` and the proxy's configuration
    /// edited, for what the README advises against.
    fn start_edited(
        recipe: Recipe,
        pki: &Pki,
        ca_pem: &str,
        format: Option<&str>,
        edit: &dyn Fn(String) -> String,
    ) -> RecipeRun {
        let readme = readme();
        let files = tempfile::tempdir().unwrap();
        let dir = files.path();
        let path = |name: &str| dir.join(name).display().to_string();
        std::fs::write(path("client-ca.pem"), ca_pem).unwrap();
        std::fs::write(path("server.pem"), &pki.server.chain_pem).unwrap();
        std::fs::write(path("server.key"), &pki.server.key_pem).unwrap();
        // The proxy's socket, handed over bound: the issuer's port is known before it starts.
        let proxy_socket = common::listener();
        let proxy_port = common::port_of(&proxy_socket);
        let issuer = format!("https://127.0.0.1:{proxy_port}");

        // Token Service: the README's command line, its variables as the environment.
        let mut settings = readme_block(&readme, "sh", "FORWARDED_CERT_FORMAT=nginx");
        settings = substitute(
            &settings,
            "/etc/token-service/client-ca.pem",
            &path("client-ca.pem"),
        );
        settings = substitute(&settings, "https://token.example.com", &issuer);
        if recipe == Recipe::Haproxy {
            assert!(
                readme.contains("HAProxy (`FORWARDED_CERT_FORMAT=haproxy`)"),
                "the README's HAProxy recipe names its format"
            );
            settings = substitute(
                &settings,
                "FORWARDED_CERT_FORMAT=nginx",
                "FORWARDED_CERT_FORMAT=haproxy",
            );
        }
        if let Some(format) = format {
            let from = settings
                .split_whitespace()
                .find(|w| w.starts_with("FORWARDED_CERT_FORMAT="))
                .unwrap()
                .to_owned();
            settings = settings.replace(&from, &format!("FORWARDED_CERT_FORMAT={format}"));
        }
        let words: Vec<&str> = settings.split_whitespace().filter(|w| *w != "\\").collect();
        let (variables, command) = words.split_last_chunk::<2>().unwrap();
        assert_eq!(command, &["token-service", "serve"], "{settings}");
        let mut env: Vec<(String, String)> = variables
            .iter()
            .map(|w| {
                let (k, v) = w
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{w:?} in {settings}"));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        // The README's service listens on the default port; here on one the kernel picks.
        env.push(("PORT".into(), "0".into()));
        let get = |name: &str| env.iter().find(|(k, _)| k == name).unwrap().1.clone();
        let audience = format!(
            "https://iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            get("WORKLOAD_IDENTITY_PROJECT_NUMBER"),
            get("WORKLOAD_IDENTITY_POOL_ID"),
            get("WORKLOAD_IDENTITY_PROVIDER_ID"),
        );
        let service = common::Server::spawn(&["serve"], env, tempfile::tempdir().unwrap());

        let backend = format!("127.0.0.1:{}", service.port);
        let proxy = match recipe {
            Recipe::Nginx => {
                let mut site = readme_block(&readme, "nginx", "ssl_client_escaped_cert");
                site = substitute(
                    &site,
                    "listen 443 ssl;",
                    // The inherited socket's address, which nginx matches it by.
                    &format!("listen 127.0.0.1:{proxy_port} ssl;"),
                );
                site = substitute(
                    &site,
                    "/etc/nginx/token-service/server.pem",
                    &path("server.pem"),
                );
                site = substitute(
                    &site,
                    "/etc/nginx/token-service/server.key",
                    &path("server.key"),
                );
                site = substitute(&site, "127.0.0.1:8080", &backend);
                site = edit(site);
                std::fs::write(path("token-service.conf"), site).unwrap();
                // What Debian's /etc/nginx/nginx.conf provides around conf.d, with every file
                // the process writes in the test's folder.
                let user = if running_as_root() { "user root;" } else { "" };
                let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
                    .map(|t| format!("{t}_temp_path {};", path(t)))
                    .join("\n    ");
                let main = format!(
                    "{user}\npid {};\nerror_log {} info;\nevents {{}}\nhttp {{\n    access_log off;\n    {temp}\n    include {};\n}}\n",
                    path("nginx.pid"),
                    path("nginx.log"),
                    path("token-service.conf"),
                );
                std::fs::write(path("nginx.conf"), main).unwrap();
                let prefix = format!("{}/", dir.display());
                ProxyProcess::spawn(
                    "nginx",
                    &[
                        "-p",
                        &prefix,
                        "-e",
                        &path("nginx.log"),
                        "-c",
                        &path("nginx.conf"),
                        "-g",
                        "daemon off;",
                    ],
                    // The sockets nginx inherits (its binary-upgrade mechanism): fd 0.
                    &[("NGINX", "0;")],
                    vec![dir.join("nginx.out"), dir.join("nginx.log")],
                    proxy_socket,
                )
            }
            Recipe::Haproxy => {
                std::fs::write(
                    path("haproxy.pem"),
                    format!("{}{}", pki.server.chain_pem, pki.server.key_pem),
                )
                .unwrap();
                let mut sections = readme_block(&readme, "haproxy", "ssl_c_chain_der");
                sections = substitute(&sections, "bind :443 ", "bind fd@0 ");
                sections = substitute(
                    &sections,
                    "/etc/haproxy/token-service.pem",
                    &path("haproxy.pem"),
                );
                sections = substitute(
                    &sections,
                    "/etc/token-service/client-ca.pem",
                    &path("client-ca.pem"),
                );
                sections = substitute(&sections, "127.0.0.1:8080", &backend);
                sections = edit(sections);
                // The timeouts of Debian's /etc/haproxy/haproxy.cfg.
                let config = format!(
                    "defaults\n    timeout connect 5s\n    timeout client 50s\n    timeout server 50s\n\n{sections}"
                );
                std::fs::write(path("haproxy.cfg"), config).unwrap();
                ProxyProcess::spawn(
                    "haproxy",
                    &["-f", &path("haproxy.cfg"), "-db"],
                    &[],
                    vec![dir.join("haproxy.out")],
                    proxy_socket,
                )
            }
        };
        RecipeRun {
            service,
            proxy,
            proxy_port,
            issuer,
            audience,
            verifier: tls_support::https_client(&pki.root.pem, None),
            _files: files,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// POSTs the grant through the proxy with `client` and extra headers; status and body text.
    async fn post(&self, client: &reqwest::Client, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = client
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(GRANT);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// POSTs the grant through the proxy on a new raw TLS connection made with `config`
    /// (which resumes a session of an earlier one); the handshake kind, status and JSON body.
    async fn post_raw(&self, config: Arc<ClientConfig>, what: &str) -> (HandshakeKind, u16, Value) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.proxy_port))
            .await
            .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.logs()));
        let (status, body) = http1(&mut tls, "POST", "/token", Some(GRANT))
            .await
            .unwrap();
        let body: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{what}: {status} {body}\n{}", self.logs()));
        (tls.get_ref().1.handshake_kind().unwrap(), status, body)
    }

    /// Verifies a token as a relying party would, reading discovery and JWKS through the proxy,
    /// and checks it names `leaf`.
    async fn assert_token_for(&self, token: &str, leaf: &Leaf) {
        let claims = common::verify_with(&self.verifier, token, &self.issuer, &self.audience).await;
        assert_eq!(claims["iss"], self.issuer, "{claims}");
        assert_eq!(claims["sub"], leaf.spiffe(), "{claims}");
        assert_eq!(claims["amr"], json!([FLOW]), "{claims}");
        assert_eq!(
            claims["client"]["x5_sha256"],
            sha256_b64(&leaf.der),
            "{claims}"
        );
        assert_eq!(
            claims["client"]["x5_serial"],
            colon_hex(&der_serial(&leaf.der)),
            "{claims}"
        );
    }

    fn logs(&self) -> String {
        format!(
            "{} log:\n{}\nToken Service log:\n{}",
            self.proxy.name,
            self.proxy.log(),
            self.service.logs()
        )
    }
}

/// The README's recipe for `recipe`, run for real: tokens for clients with no, one and two
/// intermediates, over TLS 1.3 and 1.2, on full and resumed handshakes, each verified as a
/// relying party would through discovery and JWKS read through the proxy; a client without a
/// certificate reads discovery but cannot forge the certificate header; Token Service, not the
/// proxy, refuses a certificate of an unknown CA.
async fn readme_recipe_gets_verified_tokens_through_the_real_proxy(recipe: Recipe) {
    let pki = Pki::new();
    let second = pki.intermediate.intermediate("Test Second Intermediate CA");
    let deep = second.issue(Spec::client("two-intermediates", &[0x30, 0x01]));
    let deep = Leaf {
        chain_pem: format!("{}{}{}", deep.pem, second.pem, pki.intermediate.pem),
        chain_der: vec![
            deep.der.clone(),
            second.der.clone(),
            pki.intermediate.der.clone(),
        ],
        ..deep
    };
    // The README: the roots and every intermediate.
    let bundle = format!("{}{}{}", pki.root.pem, pki.intermediate.pem, second.pem);
    let run = RecipeRun::start(recipe, &pki, &bundle);

    let mut issued = 0;
    for leaf in [&pki.valid, &pki.via_intermediate, &deep] {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let config = rustls_config(&pki.root.der, &leaf.chain_der, &leaf.key_der, version);
            for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
                let what = format!("{} {:?} {expected:?}", leaf.spec.name, version.version);
                let (kind, status, body) = run.post_raw(config.clone(), &what).await;
                assert_eq!(kind, expected, "{what}");
                assert_eq!(status, 200, "{what}: {body}\n{}", run.logs());
                run.assert_token_for(&id_token(status, &body), leaf).await;
                issued += 1;
            }
        }
    }

    // Without a client certificate, discovery answers (the verifier above has none) and a
    // certificate header the client wrote itself does not reach Token Service.
    let forged = match recipe {
        Recipe::Nginx => ("X-SSL-Client-Cert", url_escape(&pki.valid.pem)),
        Recipe::Haproxy => ("X-SSL-Client-DER", STANDARD.encode(&pki.valid.der)),
    };
    let forged = [(forged.0, forged.1.as_str())];
    let (status, text) = run.post(&run.verifier, &forged).await;
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {text}"));
    assert_bad_request(
        "forged header without a certificate",
        &(status, body),
        NO_FLOW,
    );
    // With a certificate, the proxy's header replaces the client's.
    let client = tls_support::https_client(&pki.root.pem, Some(&pki.no_dns));
    let (status, text) = run.post(&client, &forged).await;
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {text}"));
    run.assert_token_for(&id_token(status, &body), &pki.no_dns)
        .await;
    issued += 1;

    // The proxy lets a certificate of an unknown CA through; Token Service refuses it.
    let client = tls_support::https_client(&pki.root.pem, Some(&pki.other_ca));
    let (status, text) = run.post(&client, &[]).await;
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {text}"));
    assert_refused(status, &body, UNKNOWN_ISSUER);
    // An expired one: nginx (optional_no_ca) refuses it itself, as the README says; HAProxy
    // (crt-ignore-err all) passes it on.
    let client = tls_support::https_client(&pki.root.pem, Some(&pki.expired));
    let (status, text) = run.post(&client, &[]).await;
    match recipe {
        Recipe::Nginx => {
            assert_eq!(status, 400, "{text}");
            assert!(text.contains("The SSL certificate error"), "{text}");
        }
        Recipe::Haproxy => {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_refused(status, &body, EXPIRED);
        }
    }
    assert_eq!(
        tls_support::events(&run.service, "token_issued").len(),
        issued,
        "{}",
        run.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_nginx_recipe_gets_verified_tokens_through_real_nginx() {
    readme_recipe_gets_verified_tokens_through_the_real_proxy(Recipe::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_haproxy_recipe_gets_verified_tokens_through_real_haproxy() {
    readme_recipe_gets_verified_tokens_through_the_real_proxy(Recipe::Haproxy).await;
}

/// What HAProxy really sends when RFC 9440 headers are built from `ssl_c_der` and
/// `ssl_c_chain_der` (the README advises the `haproxy` format instead): `Client-Cert-Chain: ::`
/// for a client without intermediates, read as no intermediates; every intermediate in one
/// member for two or more, refused with a message that names the `haproxy` format; and
/// `Client-Cert: ::` without a client certificate, refused with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_building_rfc9440_headers_gets_tokens_or_messages_that_name_the_haproxy_format() {
    let pki = Pki::new();
    let second = pki.intermediate.intermediate("Test Second Intermediate CA");
    let deep = second.issue(Spec::client("two-intermediates", &[0x30, 0x01]));
    let deep_chain = vec![
        deep.der.clone(),
        second.der.clone(),
        pki.intermediate.der.clone(),
    ];
    let rfc9440 = |config: String| {
        let mut kept: Vec<String> = config
            .lines()
            .filter(|l| !l.contains("http-request"))
            .map(str::to_owned)
            .collect();
        let at = kept
            .iter()
            .position(|l| l.contains("default_backend"))
            .unwrap();
        for (i, line) in [
            "    http-request set-header Client-Cert :%[ssl_c_der,base64]:",
            "    http-request set-header Client-Cert-Chain :%[ssl_c_chain_der,base64]:",
        ]
        .into_iter()
        .enumerate()
        {
            kept.insert(at + i, line.to_owned());
        }
        kept.join("\n") + "\n"
    };
    let run = RecipeRun::start_edited(
        Recipe::Haproxy,
        &pki,
        &pki.root.pem,
        Some("rfc9440"),
        &rfc9440,
    );
    let version = &rustls::version::TLS13;
    // A client that sends its leaf only: `Client-Cert-Chain: ::`.
    let leaf = &pki.valid;
    let config = rustls_config(&pki.root.der, &leaf.chain_der, &leaf.key_der, version);
    let (_, status, body) = run.post_raw(config, "leaf only").await;
    run.assert_token_for(&id_token(status, &body), leaf).await;
    // One intermediate: one member.
    let leaf = &pki.via_intermediate;
    let config = rustls_config(&pki.root.der, &leaf.chain_der, &leaf.key_der, version);
    let (_, status, body) = run.post_raw(config, "one intermediate").await;
    run.assert_token_for(&id_token(status, &body), leaf).await;
    // Two intermediates: one member holding both.
    let config = rustls_config(&pki.root.der, &deep_chain, &deep.key_der, version);
    let (_, status, body) = run.post_raw(config, "two intermediates").await;
    assert_bad_request(
        "two intermediates",
        &(status, body),
        "holds several certificates one after another; RFC 9440 wants one certificate per \
         member (HAProxy's ssl_c_chain_der joins them like this: behind HAProxy set \
         FORWARDED_CERT_FORMAT=haproxy)",
    );
    // No client certificate.
    let (status, text) = run.post(&run.verifier, &[]).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_bad_request(
        "no certificate",
        &(status, body),
        "the Client-Cert header is an empty byte sequence (::): the proxy forwarded no certificate",
    );
}
