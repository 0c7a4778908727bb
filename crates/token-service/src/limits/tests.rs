use super::*;

#[test]
fn failed_authentications_are_limited_per_caller_and_checking_takes_nothing() {
    let limits = Limits::new(
        LimitSettings {
            auth_failures: rate(1, 3),
            ..LimitSettings::default()
        },
        Arc::new(Metrics::new()),
    );
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    for _ in 0..10 {
        assert_eq!(limits.check_auth_failures(a), Ok(()), "checks take nothing");
    }
    for _ in 0..3 {
        assert_eq!(limits.check_auth_failures(a), Ok(()));
        limits.auth_failed(a);
    }
    assert_eq!(
        limits.check_auth_failures(a),
        Err(RateLimited { retry_after: 1 })
    );
    assert_eq!(limits.check_auth_failures(b), Ok(()), "another caller");
    limits.forget_idle_clients();
    assert!(
        limits.check_auth_failures(a).is_err(),
        "a busy bucket is kept"
    );
}

#[test]
fn the_caller_is_the_peer_or_what_a_trusted_proxy_or_google_lb_reports() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        "203.0.113.9, 198.51.100.7, 10.0.0.2".parse().unwrap(),
    );
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let direct = CallerKey::default();
    assert_eq!(
        direct.caller(peer, &headers),
        Some(peer),
        "XFF ignored from untrusted peers"
    );
    let proxied = CallerKey {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..CallerKey::default()
    };
    assert_eq!(proxied.caller(peer, &headers), "198.51.100.7".parse().ok());
    let lb = CallerKey {
        google_lb: true,
        ..CallerKey::default()
    };
    assert_eq!(lb.caller(peer, &headers), "198.51.100.7".parse().ok());
    let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
    assert_eq!(
        direct.caller(v6, &HeaderMap::new()),
        "2001:db8:1:2::".parse().ok(),
        "IPv6 by /64"
    );
    headers.insert("x-forwarded-for", "garbage".parse().unwrap());
    assert_eq!(
        proxied.caller(peer, &headers),
        Some(peer),
        "unparsable XFF: the proxy"
    );
}

#[test]
fn behind_google_lb_only_a_request_with_the_lb_secret_is_keyed_on_x_forwarded_for() {
    let lb = CallerKey {
        google_lb: true,
        lb_secret: Some(LbSecret {
            header: http::HeaderName::from_static("x-lb-secret"),
            value: "s3cret-s3cret-s3cret".into(),
        }),
        ..CallerKey::default()
    };
    let peer: IpAddr = "192.0.2.50".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        "198.51.100.7, 34.120.0.1".parse().unwrap(),
    );
    assert_eq!(lb.caller(peer, &headers), Some(peer), "no secret: the peer");
    headers.insert("x-lb-secret", "s3cret-s3cret-s3creT".parse().unwrap());
    assert_eq!(
        lb.caller(peer, &headers),
        Some(peer),
        "wrong secret: the peer"
    );
    headers.insert("x-lb-secret", "s3cret-s3cret-s3cret".parse().unwrap());
    assert_eq!(lb.caller(peer, &headers), "198.51.100.7".parse().ok());
    headers.append("x-lb-secret", "s3cret-s3cret-s3cret".parse().unwrap());
    assert_eq!(
        lb.caller(peer, &headers),
        Some(peer),
        "two secrets: the peer"
    );
}

#[test]
fn non_ascii_bytes_left_of_the_entries_reached_do_not_change_the_key() {
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let proxied = CallerKey {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..CallerKey::default()
    };
    let lb = CallerKey {
        google_lb: true,
        ..CallerKey::default()
    };
    let xff = |lines: &[&[u8]]| {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                "x-forwarded-for",
                http::HeaderValue::from_bytes(line).unwrap(),
            );
        }
        headers
    };
    let client: IpAddr = "203.0.113.9".parse().unwrap();
    for headers in [
        xff(&[b"\xff\xfe, 203.0.113.9, 10.0.0.2"]),
        xff(&["caf\u{e9},203.0.113.9,10.0.0.2".as_bytes()]),
        xff(&[b"\x80", b"203.0.113.9, 10.0.0.2"]),
        xff(&[b"\xc3, 203.0.113.9", b"10.0.0.2"]),
    ] {
        assert_eq!(proxied.caller(peer, &headers), Some(client), "{headers:?}");
        assert_eq!(lb.caller(peer, &headers), Some(client), "{headers:?}");
    }
    // A non-ASCII entry that is reached is not an address: the last trusted hop (behind
    // TRUSTED_PROXIES) or the peer (behind the load balancer).
    let reached = xff(&[b"203.0.113.9, \xff, 10.0.0.2"]);
    assert_eq!(proxied.caller(peer, &reached), "10.0.0.2".parse().ok());
    assert_eq!(lb.caller(peer, &reached), Some(peer));
}

#[test]
fn callers_beyond_the_cap_are_not_locked_out_by_the_tracked_ones() {
    let limits = Limits::new(
        LimitSettings {
            auth_failures: rate(1, 1),
            ..LimitSettings::default()
        },
        Arc::new(Metrics::new()),
    );
    for i in 0..MAX_CALLERS as u32 {
        limits.auth_failed(IpAddr::V4(std::net::Ipv4Addr::from(i)));
    }
    assert!(
        limits
            .check_auth_failures(IpAddr::V4(std::net::Ipv4Addr::from(7)))
            .is_err(),
        "tracked callers stay limited"
    );
    let late: IpAddr = "255.255.255.1".parse().unwrap();
    for _ in 0..3 {
        assert_eq!(limits.check_auth_failures(late), Ok(()));
        limits.auth_failed(late);
    }
    let later: IpAddr = "255.255.255.2".parse().unwrap();
    assert_eq!(
        limits.check_auth_failures(later),
        Ok(()),
        "a full table locks nobody out"
    );
}

fn rate(per_second: u32, burst: u32) -> Option<Rate> {
    Some(Rate {
        per_second: NonZeroU32::new(per_second)?,
        burst: NonZeroU32::new(burst)?,
    })
}

#[test]
fn per_client_buckets_are_independent_and_say_when_to_retry() {
    let limits = Limits::new(
        LimitSettings {
            per_client: rate(1, 3),
            ..LimitSettings::default()
        },
        Arc::new(Metrics::new()),
    );
    for _ in 0..3 {
        assert_eq!(limits.check_client("a"), Ok(()));
    }
    let refused = limits.check_client("a");
    assert_eq!(refused, Err(RateLimited { retry_after: 1 }));
    assert_eq!(limits.check_client("b"), Ok(()));
    assert_eq!(limits.check_global(), Ok(()), "the global limit is off");
}

#[test]
fn global_bucket_counts_every_request() {
    let limits = Limits::new(
        LimitSettings {
            global: rate(1, 2),
            ..LimitSettings::default()
        },
        Arc::new(Metrics::new()),
    );
    assert_eq!(limits.check_global(), Ok(()));
    assert_eq!(limits.check_global(), Ok(()));
    assert!(limits.check_global().is_err());
    assert_eq!(
        limits.check_client("a"),
        Ok(()),
        "the per-client limit is off"
    );
}

#[test]
fn concurrency_permits_run_out_and_come_back() {
    let limits = Limits::new(
        LimitSettings {
            max_concurrent_requests: 2,
            ..LimitSettings::default()
        },
        Arc::new(Metrics::new()),
    );
    let a = limits.admit();
    let b = limits.admit();
    assert!(a.is_some() && b.is_some());
    assert!(limits.admit().is_none());
    drop(a);
    assert!(limits.admit().is_some());
}
