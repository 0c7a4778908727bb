//! Operating the service: metrics, probes on an admin port, rate and concurrency limits,
//! request, header and idle timeouts, the connection cap, and graceful shutdown on SIGTERM.
//! Each test runs the real binary and talks to it over loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

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
    let server = Server::start(&[("AUTH_FLOWS", "xlb-mtls-client-credentials")]);
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
    let admin = free_port();
    let server = Server::start(&[("ADMIN_PORT", &admin.to_string())]);
    let admin_url = |path: &str| format!("http://127.0.0.1:{admin}{path}");
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
    let limited = token(&server, GRANT, &[]).await;
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
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Too many"),
        "{body}"
    );
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
    let port = free_port();
    let emulator = start_emulator(emulator_config(port)).await;
    let server = start_service(port, &emulator, &[("MAX_CONCURRENT_REQUESTS", "1")]).await;
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
    let server = Server::start(&[
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
