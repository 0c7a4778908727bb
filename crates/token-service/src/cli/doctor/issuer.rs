//! The rules about the issuer URL itself, read as text (byte for byte, as the clouds compare
//! it): https, no port and no query for AWS, a host the clouds can reach, Entra's length.

use std::net::IpAddr;

use super::rules::{Cloud, ENTRA_MAX_ISSUER_CHARS, Report, Status};

/// The host and the port as written in `url`'s authority (a default port written out, as
/// in `:443`, is still a port: the clouds compare the text).
pub fn host_and_port(url: &str) -> (String, Option<String>) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
        let port = after.strip_prefix(':').map(str::to_owned);
        return (host.to_owned(), port);
    }
    match authority.split_once(':') {
        Some((host, port)) => (host.to_owned(), Some(port.to_owned())),
        None => (authority.to_owned(), None),
    }
}

/// Whether `host` is reachable only from this machine or its private network.
fn is_private(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") || host.ends_with(".local") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_unique_local()
                || ip.is_unicast_link_local()
        }
        Err(_) => false,
    }
}

/// The issuer URL's rules.
pub fn check(report: &mut Report, issuer: &str) {
    report.check(
        "issuer-https",
        Cloud::All,
        issuer.starts_with("https://"),
        format!("the issuer is {issuer}"),
        "serve the issuer over https and set TOKEN_ISSUER to its https:// URL",
    );
    let (host, port) = host_and_port(issuer);
    report.check(
        "issuer-no-port",
        Cloud::Aws,
        port.is_none(),
        match &port {
            Some(port) => format!("the issuer names port {port}"),
            None => "the issuer names no port".into(),
        },
        "serve the issuer on port 443 and leave the port out of TOKEN_ISSUER (e.g. behind a load balancer)",
    );
    let query = issuer.contains('?') || issuer.contains('#');
    report.check(
        "issuer-no-query",
        Cloud::Aws,
        !query,
        if query {
            "the issuer has a query or fragment".into()
        } else {
            "the issuer has no query or fragment".into()
        },
        "leave the query and fragment out of the issuer",
    );
    let private = is_private(&host);
    let detail = if private {
        format!("{host} is reachable only from this machine or its private network")
    } else {
        format!("{host} is not a loopback or private address")
    };
    let fix = "publish the issuer under a public DNS name the cloud can reach";
    let google = if private { Status::Warn } else { Status::Pass };
    report.add(
        "issuer-public-host",
        Cloud::Google,
        google,
        if private {
            format!("{detail}: Google accepts it only with the JWK Set uploaded to the provider")
        } else {
            detail.clone()
        },
        fix,
    );
    for cloud in [Cloud::Aws, Cloud::Entra] {
        report.check("issuer-public-host", cloud, !private, detail.clone(), fix);
    }
    let chars = issuer.chars().count();
    report.check(
        "issuer-length",
        Cloud::Entra,
        chars <= ENTRA_MAX_ISSUER_CHARS,
        format!("{chars} characters (at most {ENTRA_MAX_ISSUER_CHARS})"),
        "use a shorter issuer URL",
    );
}
