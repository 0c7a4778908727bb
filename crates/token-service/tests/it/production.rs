//! Operating the service: metrics, probes on an admin port, rate and concurrency limits,
//! request, header and idle timeouts, the connection cap, and graceful shutdown on SIGTERM.
//! Each test runs the real binary and talks to it over loopback sockets.

use crate::support as common;
use crate::support::tls as tls_support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const GRANT: &str = "grant_type=client_credentials";

async fn metrics_text(url: &str) -> String {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        response.headers()
    );
    response.text().await.unwrap()
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A 429 with a Retry-After of 1 or 2 s and an OAuth body whose description holds `says`;
/// returns the Retry-After seconds.
async fn assert_rate_limited(limited: reqwest::Response, says: &str) -> u64 {
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        body["error_description"].as_str().unwrap().contains(says),
        "{body}"
    );
    retry
}

/// A raw HTTP/1.1 connection, to control exactly what and when the client sends.
fn raw(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

fn lb_header_block() -> String {
    lb_headers(SPIFFE)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect()
}

/// A raw HTTP/1.1 token request with the load balancer's headers, its body cut after `sent`
/// bytes (the whole body when `sent` is the body's length).
fn raw_token_request(sent: usize) -> String {
    format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{}\r\n{}",
        GRANT.len(),
        lb_header_block(),
        &GRANT[..sent]
    )
}

/// Reads until the peer closes; returns what arrived and how long it took.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!(
                    "the server kept the connection open: {}",
                    String::from_utf8_lossy(&out)
                )
            }
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn metrics_count_requests_outcomes_and_the_signing_key() {
    let server = Server::start_process(&[("AUTH_FLOWS", "xlb-mtls-client-credentials")]);
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    assert_eq!(
        token(&server, "grant_type=password", &[]).await.status(),
        400
    );
    let refused = token(&server, GRANT, &[("X-Client-Cert-Chain-Verified", "false")]).await;
    assert_eq!(refused.status(), 403);

    let text = metrics_text(&server.url("/metrics")).await;
    let flow = "xlb-mtls-client-credentials";
    assert_eq!(
        metric(
            &text,
            &format!("token_service_token_requests_total{{flow=\"{flow}\",outcome=\"issued\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "token_service_token_requests_total{{flow=\"{flow}\",outcome=\"unauthorized_client\"}}"
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "token_service_token_requests_total{flow=\"none\",outcome=\"unsupported_grant_type\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("token_service_token_request_duration_seconds_count{{flow=\"{flow}\"}}")
        ),
        Some(3.0),
        "{text}"
    );
    // The current key id, as published in the JWKS.
    let jwks: Value = client()
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap();
    assert_eq!(
        metric(
            &text,
            &format!("token_service_signing_key_info{{kid=\"{kid}\",algorithm=\"ES256\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE token_service_connections_open gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE token_service_requests_in_flight gauge"),
        "{text}"
    );
    assert!(!text.contains(SPIFFE), "metrics never carry client IDs");
}

#[tokio::test]
async fn admin_port_serves_probes_and_metrics_apart_from_the_main_port() {
    // The real binary: an in-process service binds no admin port of its own.
    let server = Server::start_process(&[("ADMIN_PORT", "0")]);
    let admin_url = |path: &str| server.admin_url(path);
    let text = metrics_text(&admin_url("/metrics")).await;
    assert!(text.contains("token_service_signing_key_info"), "{text}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            client().get(admin_url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
        assert_eq!(
            client()
                .get(server.url(path))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client()
            .get(admin_url("/token"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn per_client_rate_limit_answers_429_with_retry_after_and_an_oauth_body() {
    let server = Server::start(&[
        ("RATE_LIMIT_PER_CLIENT", "1"),
        ("RATE_LIMIT_PER_CLIENT_BURST", "2"),
    ]);
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    let retry = assert_rate_limited(token(&server, GRANT, &[]).await, "Too many").await;
    // Another client has its own bucket.
    let other = token(
        &server,
        GRANT,
        &[(
            "X-Client-Cert-Spiffe",
            "spiffe://example.org/ns/prod/sa/other",
        )],
    )
    .await;
    assert_eq!(other.status(), 200);
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100 * retry)).await;
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    let text = metrics_text(&server.url("/metrics")).await;
    assert_eq!(
        metric(&text, "token_service_rate_limited_total{scope=\"client\"}"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn global_rate_limit_counts_every_client() {
    let server = Server::start(&[
        ("RATE_LIMIT_GLOBAL", "1"),
        ("RATE_LIMIT_GLOBAL_BURST", "1"),
        ("RATE_LIMIT_PER_CLIENT", "0"),
    ]);
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    let limited = token(
        &server,
        GRANT,
        &[(
            "X-Client-Cert-Spiffe",
            "spiffe://example.org/ns/prod/sa/other",
        )],
    )
    .await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // Discovery is not rate limited.
    assert_eq!(
        client()
            .get(server.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A request holds one of MAX_CONCURRENT_REQUESTS while it is being answered (here: signing
/// takes 2 s at the IAM emulator); more get 503 with Retry-After; probes still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_concurrent_requests_get_503() {
    use common::google::*;
    let listener = listener();
    let emulator = start_emulator(emulator_config(port_of(&listener))).await;
    let server = start_service(listener, &emulator, &[("MAX_CONCURRENT_REQUESTS", "1")]).await;
    emulator.inject(
        "iam.signJwt",
        gcp_emulator::Fault {
            status: None,
            latency_ms: 2000,
            times: Some(1),
            message: None,
        },
    );
    let slow = tokio::spawn(token_request(&server, GRANT, &[]).send());
    for _ in 0..100 {
        if emulator.calls("iam.signJwt") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = token(&server, GRANT, &[]).await;
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    let e: Value = busy.json().await.unwrap();
    assert_eq!(e["error"], "temporarily_unavailable");
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("MAX_CONCURRENT_REQUESTS"),
        "{e}"
    );
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // The permit is free again.
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
}

/// A client that sends its headers and only half its body holds no request permit (the body
/// must be in first): others are served meanwhile; the slow request gets 408 once
/// HEADER_READ_TIMEOUT passes without the rest of the body, or REQUEST_TIMEOUT when shorter.
#[tokio::test]
async fn slow_bodies_hold_no_permit_and_time_out_with_408() {
    for (settings, named) in [
        (
            [("HEADER_READ_TIMEOUT", "2"), ("REQUEST_TIMEOUT", "30")],
            "HEADER_READ_TIMEOUT",
        ),
        (
            [("HEADER_READ_TIMEOUT", "10"), ("REQUEST_TIMEOUT", "2")],
            "REQUEST_TIMEOUT",
        ),
    ] {
        let mut env = vec![("MAX_CONCURRENT_REQUESTS", "1"), ("UPSTREAM_TIMEOUT", "1")];
        env.extend(settings);
        let server = Server::start(&env);
        let mut slow = raw(&server);
        slow.write_all(raw_token_request(5).as_bytes()).unwrap();
        slow.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(token(&server, GRANT, &[]).await.status(), 200, "{named}");
        let (answer, _) = tokio::task::spawn_blocking(move || read_until_closed(&mut slow))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("\"error\":\"invalid_request\"") && answer.contains(named),
            "{named}: {answer}"
        );
        assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    }
}

/// HEADER_READ_TIMEOUT runs from accept to the first complete request: a socket that sends
/// nothing, a byte of the HTTP/2 preface, part of it, the 33-byte preface with SETTINGS, or
/// HTTP/2 HEADERS whose body never comes is closed (it used to be held for IDLE_TIMEOUT or
/// forever), and the MAX_CONNECTIONS they held are free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_complete_request_are_closed_after_header_read_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let server = Server::start(&[
        ("HEADER_READ_TIMEOUT", "1"),
        ("IDLE_TIMEOUT", "600"),
        ("MAX_CONNECTIONS", "5"),
    ]);
    let mut stalled = http2::preface();
    stalled.extend(http2::stalled_token_request(1));
    let sends: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"P".to_vec(),
        b"PRI * HTTP".to_vec(),
        http2::preface(),
        stalled,
    ];
    let mut held = Vec::new();
    for bytes in sends {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        tcp.write_all(&bytes).await.unwrap();
        held.push((bytes, tcp));
    }
    let checks = held.into_iter().map(|(bytes, mut tcp)| {
        tokio::spawn(async move {
            let closed = http2::closed_within(&mut tcp, Duration::from_secs(20)).await;
            (
                String::from_utf8_lossy(&bytes[..bytes.len().min(10)]).into_owned(),
                closed,
            )
        })
    });
    for check in checks {
        let (sent, closed) = check.await.unwrap();
        assert!(closed, "a connection that sent {sent:?} was kept open");
    }
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the connections are free again"
    );
    let text = metrics_text(&server.url("/metrics")).await;
    assert!(
        metric(
            &text,
            "token_service_connections_timed_out_total{result=\"header_read\"}"
        )
        .is_some_and(|n| n >= 5.0),
        "{text}"
    );
}

/// An HTTP/2 client that got its answer and then never answers the server (no SETTINGS ack,
/// no PING ack) is closed IDLE_TIMEOUT plus a short grace later; it used to be held forever
/// after GOAWAY and PING.
#[tokio::test]
async fn idle_http2_connections_are_closed_even_if_the_client_never_answers() {
    use tokio::io::AsyncWriteExt as _;
    let server = Server::start(&[("IDLE_TIMEOUT", "1"), ("HEADER_READ_TIMEOUT", "5")]);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut bytes = http2::preface();
    bytes.extend(http2::headers(
        1,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "127.0.0.1"),
            (":path", "/healthz"),
        ],
        true,
    ));
    tcp.write_all(&bytes).await.unwrap();
    let mut answered = false;
    while let Some(frame) = http2::read_frame(&mut tcp, Duration::from_secs(5)).await {
        if frame.stream == 1 && frame.flags & http2::END_STREAM != 0 {
            answered = true;
            break;
        }
    }
    assert!(answered, "the request was answered");
    assert!(
        http2::closed_within(&mut tcp, Duration::from_secs(20)).await,
        "the idle connection was kept open"
    );
}

/// Stalled HTTP/2 streams (HEADERS of a token request whose body never comes) take no request
/// permit: with 8 connections x 64 such streams against MAX_CONCURRENT_REQUESTS=64, discovery,
/// JWKS and tokens are still served, over HTTP/1.1 and HTTP/2; a connection may open only an
/// eighth of MAX_CONCURRENT_REQUESTS streams (the rest are refused), and the stalled streams
/// end with 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http2_streams_take_no_request_permit() {
    use tokio::io::AsyncWriteExt as _;
    let server = Server::start_process(&[
        ("MAX_CONCURRENT_REQUESTS", "64"),
        ("HEADER_READ_TIMEOUT", "3"),
        ("REQUEST_TIMEOUT", "30"),
        ("RATE_LIMIT_PER_CLIENT", "0"),
    ]);
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let mut bytes = http2::preface();
        for i in 0..64u32 {
            bytes.extend(http2::stalled_token_request(2 * i + 1));
        }
        tcp.write_all(&bytes).await.unwrap();
        attackers.push(tcp);
    }
    // Count the streams the server refused on the first connection.
    let mut refused = 0;
    while refused < 56 {
        let Some(frame) = http2::read_frame(&mut attackers[0], Duration::from_secs(3)).await else {
            break;
        };
        if frame.kind == http2::RST_STREAM
            && frame.payload.get(..4) == Some(&http2::REFUSED_STREAM.to_be_bytes()[..])
        {
            refused += 1;
        }
    }
    assert!(
        refused >= 56,
        "only {refused} of 64 streams refused: at most 8 may be open"
    );
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
    ] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(token(&server, GRANT, &[]).await.status(), 200);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut h2 = http2::client(tcp).await;
    let (status, _, body) = http2::get(
        &mut h2,
        http2::request("127.0.0.1", "/.well-known/openid-configuration", None),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = metrics_text(&server.url("/metrics")).await;
    assert_eq!(
        metric(
            &text,
            "token_service_requests_rejected_total{result=\"concurrency\"}"
        ),
        None,
        "{text}"
    );
    // The stalled streams end: the attacking connections are closed.
    for mut tcp in attackers {
        assert!(http2::closed_within(&mut tcp, Duration::from_secs(20)).await);
    }
    let text = metrics_text(&server.url("/metrics")).await;
    assert!(
        metric(
            &text,
            "token_service_requests_rejected_total{result=\"body_timeout\"}"
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
}

/// Failed authentications are limited per caller address, before verification: after the
/// burst, even a valid request from that caller gets 429 temporarily_unavailable with
/// Retry-After, while other callers (another peer address; behind Google's LB another client
/// entry of X-Forwarded-For) are served. On by default; `off` turns it off.
#[tokio::test]
async fn failed_authentications_are_rate_limited_per_caller() {
    let server = Server::start_process(&[
        ("RATE_LIMIT_AUTH_FAILURES", "1"),
        ("RATE_LIMIT_AUTH_FAILURES_BURST", "3"),
        ("RATE_LIMIT_PER_CLIENT", "0"),
    ]);
    let forged = [("X-Client-Cert-Chain-Verified", "false")];
    for _ in 0..3 {
        assert_eq!(token(&server, GRANT, &forged).await.status(), 403);
    }
    for overrides in [&forged[..], &[]] {
        assert_rate_limited(
            token(&server, GRANT, overrides).await,
            "RATE_LIMIT_AUTH_FAILURES",
        )
        .await;
    }
    // Another peer address has its own bucket.
    let other_peer = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    // Straight to the process: the harness's forwarder in front of it would be the peer.
    let mut request = other_peer
        .post(server.direct_url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(GRANT);
    for (k, v) in lb_headers(SPIFFE) {
        request = request.header(k, v);
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    // Behind Google's LB (the xlb flow), the client entry the LB appends is the caller.
    let behind_lb = |client: &str| format!("{client}, 34.120.0.1");
    for _ in 0..3 {
        let xff = behind_lb("198.51.100.1");
        let refused = token(&server, GRANT, &[forged[0], ("X-Forwarded-For", &xff)]).await;
        assert_eq!(refused.status(), 403);
    }
    let xff = behind_lb("198.51.100.1");
    assert_eq!(
        token(&server, GRANT, &[("X-Forwarded-For", &xff)])
            .await
            .status(),
        429
    );
    let xff = behind_lb("198.51.100.2");
    assert_eq!(
        token(&server, GRANT, &[("X-Forwarded-For", &xff)])
            .await
            .status(),
        200
    );
    let text = metrics_text(&server.url("/metrics")).await;
    assert_eq!(
        metric(
            &text,
            "token_service_rate_limited_total{scope=\"auth_failures\"}"
        ),
        Some(3.0),
        "{text}"
    );

    // On by default (10/s, burst 50): a flood of failures is cut off.
    let default = Server::start_process(&[("RATE_LIMIT_PER_CLIENT", "0")]);
    let flood = (0..150).map(|_| token_request(&default, GRANT, &forged).send());
    let statuses: Vec<u16> = futures_util::future::join_all(flood)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let refused = statuses.iter().filter(|s| **s == 403).count();
    assert!((50..150).contains(&refused), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 403 || *s == 429),
        "{statuses:?}"
    );
    // Off.
    let off = Server::start_process(&[
        ("RATE_LIMIT_AUTH_FAILURES", "off"),
        ("RATE_LIMIT_PER_CLIENT", "0"),
    ]);
    for _ in 0..80 {
        assert_eq!(token(&off, GRANT, &forged).await.status(), 403);
    }
}

#[test]
fn slow_headers_are_cut_off_by_header_read_timeout() {
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "1")]);
    let mut stream = raw(&server);
    // Slowloris: a request line and one header, then nothing.
    stream
        .write_all(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let (answer, waited) = read_until_closed(&mut stream);
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // TLS handshakes that never finish are bounded the same way (see tests/tls.rs for TLS).
}

#[test]
fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let server = Server::start(&[("IDLE_TIMEOUT", "1")]);
    let mut stream = raw(&server);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (rest, waited) = read_until_closed(&mut stream);
    assert!(rest.is_empty(), "{rest}");
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
}

/// An HTTP/1.1 keep-alive connection may wait IDLE_TIMEOUT between requests (hyper's own header
/// timer used to close it after HEADER_READ_TIMEOUT); a later request whose head starts but
/// never ends is still cut off after HEADER_READ_TIMEOUT.
#[test]
fn keep_alive_waits_idle_timeout_and_a_later_slow_head_is_cut_off() {
    let server = Server::start(&[("HEADER_READ_TIMEOUT", "1"), ("IDLE_TIMEOUT", "600")]);
    let mut stream = raw(&server);
    let mut buf = [0u8; 4096];
    for round in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let n = stream.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "round {round}: {}",
            String::from_utf8_lossy(&buf[..n])
        );
        // Longer than HEADER_READ_TIMEOUT, far shorter than IDLE_TIMEOUT.
        std::thread::sleep(Duration::from_millis(2500));
    }
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let server = Server::start(&[("MAX_CONNECTIONS", "2")]);
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut s = raw(&server);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).unwrap() > 0);
        held.push(s);
    }
    let mut third = raw(&server);
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let (answer, _) = read_until_closed(&mut third);
    assert!(answer.is_empty(), "{answer}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = metrics_text(&server.url("/metrics")).await;
    assert_eq!(
        metric(&text, "token_service_connections_rejected_total"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_oversized_bodies_413() {
    let server = Server::start(&[]);
    let response = token_request(&server, GRANT, &[])
        .header("X-Padding", "a".repeat(200 * 1024))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 431);
    }
    let big = format!("{GRANT}&pad={}", "a".repeat(20 * 1024));
    let response = token(&server, &big, &[]).await;
    assert_eq!(response.status(), 413);
    let e: Value = response.json().await.unwrap();
    assert_eq!(e["error"], "invalid_request");
    assert_eq!(
        token(&server, GRANT, &[]).await.status(),
        200,
        "the service stays up"
    );
}

/// What one keep-alive HTTP/1.1 exchange gave.
enum Exchange {
    /// A complete response; `close` when the server said `Connection: close`.
    Answered { status: u16, close: bool },
    /// The connection ended before a complete response.
    Cut { reused: bool },
}

/// Sends one token request on `stream` and reads the whole response.
fn exchange(stream: &mut TcpStream, request: &[u8], reused: bool) -> Exchange {
    if stream.write_all(request).is_err() {
        return Exchange::Cut { reused };
    }
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let close = head.lines().any(|l| l == "connection: close");
                return Exchange::Answered { status, close };
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Exchange::Cut { reused },
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

/// While draining after SIGTERM, the admin port still answers probes: `/readyz` 503 "shutting
/// down" (so a load balancer stops sending), `/healthz` 200 (so nothing restarts the process),
/// until the last accepted request is answered and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_shutting_down_on_the_admin_port_while_draining() {
    let mut server = Server::start_process(&[("ADMIN_PORT", "0"), ("SHUTDOWN_GRACE_PERIOD", "5")]);
    let admin = server.admin_url("");
    let admin_url = move |path: &str| format!("{admin}{path}");
    let get = |path: &'static str| {
        let url = admin_url(path);
        async move {
            let response = client().get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/readyz").await.0, 200);
    // An accepted request in flight keeps the service draining.
    let mut in_flight = raw(&server);
    in_flight
        .write_all(raw_token_request(5).as_bytes())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.terminate();
    let mut readyz = (0, String::new());
    for _ in 0..50 {
        readyz = get("/readyz").await;
        if readyz.0 != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz.0, 503, "{}", readyz.1);
    assert!(readyz.1.contains("shutting down"), "{}", readyz.1);
    assert_eq!(get("/healthz").await.0, 200);
    in_flight.write_all(&GRANT.as_bytes()[5..]).unwrap();
    let (answer, _) = tokio::task::spawn_blocking(move || read_until_closed(&mut in_flight))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let exit = tokio::task::spawn_blocking(move || server.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(exit.map(|s| s.code()), Some(Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_accepted_request() {
    let mut server = Server::start_process(&[
        ("SHUTDOWN_GRACE_PERIOD", "5"),
        ("RATE_LIMIT_PER_CLIENT", "0"),
    ]);
    // An accepted request still in flight when SIGTERM arrives: headers and half the body sent.
    let mut in_flight = raw(&server);
    in_flight
        .write_all(raw_token_request(5).as_bytes())
        .unwrap();
    // Load: 8 threads with keep-alive connections sending token requests back to back. A
    // request on a connection that already answered one was accepted by the service; it must
    // be answered. Only a first request on a new connection may fail, when the connection was
    // never accepted (listener closed, or still in the kernel's backlog).
    let request = raw_token_request(GRANT.len());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = server.port;
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stop, request) = (stop.clone(), request.clone());
        workers.push(std::thread::spawn(move || {
            let (mut answered, mut closes, mut not_accepted) = (0u32, 0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    not_accepted += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let mut reused = false;
                loop {
                    match exchange(&mut stream, request.as_bytes(), reused) {
                        Exchange::Answered { status, close } => {
                            assert_eq!(status, 200, "an answered request must succeed");
                            answered += 1;
                            if close {
                                closes += 1;
                                break;
                            }
                            reused = true;
                        }
                        Exchange::Cut { reused: true } => {
                            panic!("the service dropped a request on a connection it had accepted")
                        }
                        Exchange::Cut { reused: false } => {
                            not_accepted += 1;
                            break;
                        }
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
            }
            (answered, closes, not_accepted)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The in-flight request completes after the signal.
    in_flight.write_all(&GRANT.as_bytes()[5..]).unwrap();
    let (answer, _) = tokio::task::spawn_blocking(move || read_until_closed(&mut in_flight))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("id_token"), "{answer}");
    let (exit, logs) = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(15));
        (status, server.logs())
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut answered, mut closes) = (0, 0);
    for w in workers {
        let (a, c, _) = w.join().unwrap();
        answered += a;
        closes += c;
    }
    assert!(answered > 0, "the load ran");
    assert!(closes > 0, "draining told keep-alive clients to close");
    assert_eq!(exit.map(|s| s.code()), Some(Some(0)), "{logs}");
    assert!(
        logs.contains("shutting_down") && logs.contains("\"stopped\""),
        "{logs}"
    );
}

/// On a TLS listener too, HEADER_READ_TIMEOUT runs from accept to the first complete request:
/// a client that finishes the handshake and then sends nothing, `P`, or only the HTTP/2
/// preface is disconnected (it used to be held until IDLE_TIMEOUT), as is one that never
/// finishes the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_without_a_complete_request_are_closed_after_header_read_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let pki = tls_support::Pki::new();
    let service = tls_support::TlsService::start(
        &pki,
        &pki.root.pem,
        None,
        &[("HEADER_READ_TIMEOUT", "1"), ("IDLE_TIMEOUT", "600")],
    );
    let leaf = &pki.valid;
    let config = |alpn: &[u8]| {
        let base = tls_support::rustls_config(
            &pki.root.der,
            &leaf.chain_der,
            &leaf.key_der,
            &rustls::version::TLS13,
        );
        let mut config = (*base).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        std::sync::Arc::new(config)
    };
    let mut checks = Vec::new();
    for (alpn, sent) in [
        (&b"http/1.1"[..], Vec::new()),
        (&b"http/1.1"[..], b"P".to_vec()),
        (&b"h2"[..], Vec::new()),
        (&b"h2"[..], http2::preface()),
    ] {
        let mut tls = tls_support::connect(&service, config(alpn)).await.unwrap();
        tls.write_all(&sent).await.unwrap();
        tls.flush().await.unwrap();
        let label = format!("{} + {} bytes", String::from_utf8_lossy(alpn), sent.len());
        checks.push(tokio::spawn(async move {
            (
                label,
                http2::closed_within(&mut tls, Duration::from_secs(20)).await,
            )
        }));
    }
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", service.server.port))
        .await
        .unwrap();
    checks.push(tokio::spawn(async move {
        let closed = http2::closed_within(&mut silent, Duration::from_secs(20)).await;
        ("no handshake".to_owned(), closed)
    }));
    for check in checks {
        let (label, closed) = check.await.unwrap();
        assert!(closed, "a TLS connection ({label}) was kept open");
    }
}

/// With both mtls and xlb flows on a TLS listener (MTLS_LB_SECRET set), only a request that
/// carries the load balancer's secret is keyed on the client entry of X-Forwarded-For: a
/// direct client naming a victim's address in that header counts its failures against its
/// own peer address, so it neither drains the victim's bucket nor dodges the limit by
/// rotating the header.
#[tokio::test]
async fn a_direct_client_cannot_spend_or_dodge_a_bucket_by_sending_x_forwarded_for() {
    const SECRET: &str = "lb-secret-0123456789abcdef";
    let pki = tls_support::Pki::new();
    let service = tls_support::TlsService::start(
        &pki,
        &pki.root.pem,
        None,
        &[
            (
                "AUTH_FLOWS",
                "mtls-client-credentials,xlb-mtls-client-credentials",
            ),
            ("MTLS_LB_SECRET", SECRET),
            ("RATE_LIMIT_AUTH_FAILURES", "1"),
            ("RATE_LIMIT_AUTH_FAILURES_BURST", "3"),
            ("RATE_LIMIT_PER_CLIENT", "0"),
        ],
    );
    let https_from = |local: &str| {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.root.pem.as_bytes()).unwrap()])
            .local_address(local.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let attacker = https_from("127.0.0.1");
    let lb = https_from("127.0.0.2");
    let post = |client: &reqwest::Client, xff: &str, secret: bool, verified: bool| {
        let mut request = client
            .post(service.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", format!("{xff}, 34.120.0.1"))
            .body(GRANT);
        for (k, v) in lb_headers(SPIFFE) {
            let v = if k == "X-Client-Cert-Chain-Verified" && !verified {
                "false".to_owned()
            } else {
                v
            };
            if !v.is_empty() {
                request = request.header(k, v);
            }
        }
        if secret {
            request = request.header("x-token-service-lb-secret", SECRET);
        }
        request.send()
    };
    let victim = "198.51.100.1";
    // The attacker talks to the TLS port directly, without the secret, naming the victim.
    for _ in 0..3 {
        let refused = post(&attacker, victim, false, true).await.unwrap();
        let status = refused.status().as_u16();
        assert!((400..500).contains(&status) && status != 429, "{status}");
    }
    let served = post(&lb, victim, true, true).await.unwrap();
    assert_eq!(
        served.status(),
        200,
        "the victim's bucket was drained by another host"
    );
    // Rotating the header does not give the attacker a fresh bucket.
    assert_rate_limited(
        post(&attacker, "203.0.113.77", false, true).await.unwrap(),
        "RATE_LIMIT_AUTH_FAILURES",
    )
    .await;
    // Through the load balancer (the secret), the client entry is the caller.
    let failing = "198.51.100.9";
    for _ in 0..3 {
        let refused = post(&lb, failing, true, false).await.unwrap();
        assert_eq!(refused.status(), 403);
    }
    assert_rate_limited(
        post(&lb, failing, true, true).await.unwrap(),
        "RATE_LIMIT_AUTH_FAILURES",
    )
    .await;
    assert_eq!(post(&lb, victim, true, true).await.unwrap().status(), 200);
}

/// An X-Forwarded-For line with a non-ASCII entry left of the ones the load balancer appended
/// still names the client: the entries reached are decoded one by one. The whole line used to
/// be dropped, so the failures counted against the peer (the load balancer's or proxy's own
/// address, shared by every request keyed on it) instead of the client that failed.
#[tokio::test]
async fn a_non_ascii_forwarded_entry_does_not_collapse_callers_onto_the_load_balancer() {
    let server = Server::start(&[
        ("RATE_LIMIT_AUTH_FAILURES", "1"),
        ("RATE_LIMIT_AUTH_FAILURES_BURST", "3"),
        ("RATE_LIMIT_PER_CLIENT", "0"),
    ]);
    let forged = [("X-Client-Cert-Chain-Verified", "false")];
    for left in [&b"\xff\xfe"[..], "caf\u{e9}".as_bytes(), b"\x80"] {
        let mut line = left.to_vec();
        line.extend_from_slice(b", 198.51.100.1, 34.120.0.1");
        let xff = reqwest::header::HeaderValue::from_bytes(&line).unwrap();
        let refused = token_request(&server, GRANT, &forged)
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
    }
    // The load balancer's own address (a request with no client entry is keyed on it) and
    // another client behind it are served; the client that failed is limited.
    assert_eq!(
        token(&server, GRANT, &[]).await.status(),
        200,
        "the failures were counted against the load balancer's address"
    );
    let xff = "198.51.100.2, 34.120.0.1";
    assert_eq!(
        token(&server, GRANT, &[("X-Forwarded-For", xff)])
            .await
            .status(),
        200
    );
    let xff = "198.51.100.1, 34.120.0.1";
    assert_rate_limited(
        token(&server, GRANT, &[("X-Forwarded-For", xff)]).await,
        "RATE_LIMIT_AUTH_FAILURES",
    )
    .await;
}
