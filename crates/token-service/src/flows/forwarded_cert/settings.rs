//! Settings of the flow `forwarded-cert-client-credentials`: the declarations and
//! [`ForwardedSettings`], which they fill. Read through `config::reader`; reads no
//! environment.

use http::HeaderName;
use ipnet::IpNet;

use super::parse::ForwardedFormat;
use crate::config::reader::{Reader, Setting};
use crate::config::source::Values;

/// `FORWARDED_CERT_FORMAT` (also `envoy` and `istio` for xfcc).
pub const FORMAT: Setting = Setting::text(
    "FORWARDED_CERT_FORMAT",
    Some("rfc9440"),
    "Header format of forwarded certificates: rfc9440, xfcc, nginx, haproxy or traefik",
);
/// `FORWARDED_CERT_HEADER`: the default follows the format.
pub const HEADER: Setting = Setting::header_noted(
    "FORWARDED_CERT_HEADER",
    "per format: Client-Cert, X-Forwarded-Client-Cert, X-SSL-Client-Cert, X-SSL-Client-DER, X-Forwarded-Tls-Client-Cert",
    "Header carrying the forwarded client certificate",
);
/// `FORWARDED_CERT_CHAIN_HEADER`: the default follows the format.
pub const CHAIN_HEADER: Setting = Setting::header_noted(
    "FORWARDED_CERT_CHAIN_HEADER",
    "per format: Client-Cert-Chain, X-SSL-Client-Chain-DER",
    "Header carrying the forwarded intermediates",
);
/// `TRUSTED_PROXIES`: also the proxies whose `X-Forwarded-For` the limits believe.
pub const TRUSTED_PROXIES: Setting = Setting::cidrs(
    "TRUSTED_PROXIES",
    "Comma-separated CIDRs of the proxies allowed to forward certificates, e.g. 10.0.0.0/8,127.0.0.1/32; a range wider than an IPv4 /8 or a public IPv6 /16 warns",
);

/// Every setting of the flow, in help order.
pub const SETTINGS: &[Setting] = &[FORMAT, HEADER, CHAIN_HEADER, TRUSTED_PROXIES];

/// Settings of the flow.
#[derive(Debug, Clone)]
pub struct ForwardedSettings {
    /// Header encoding (`FORWARDED_CERT_FORMAT`).
    pub format: ForwardedFormat,
    /// Leaf header (`FORWARDED_CERT_HEADER`).
    pub header: HeaderName,
    /// Chain header (`FORWARDED_CERT_CHAIN_HEADER`), when the format has one.
    pub chain_header: Option<HeaderName>,
    /// Proxies allowed to forward certificates (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ForwardedSettings {
    /// RFC 9440 headers, no trusted proxies.
    fn default() -> Self {
        Self::read(&mut Reader::new(&Values::new()))
    }
}

impl ForwardedSettings {
    /// Reads the format, its headers and the trusted proxies.
    pub fn read(r: &mut Reader<'_>) -> Self {
        let given = r.text(&FORMAT).unwrap_or_default();
        let format = ForwardedFormat::parse(&given).unwrap_or_else(|| {
            r.fail(
                FORMAT.name,
                format!(
                    "'{given}' is not valid; expected rfc9440, xfcc, nginx, haproxy or traefik"
                ),
            );
            ForwardedFormat::Rfc9440
        });
        r.resolve(&FORMAT, format.name());
        let header = r.header(&HEADER, Some(format.default_header()));
        let chain_header = match (
            r.get(CHAIN_HEADER.name).is_some(),
            format.default_chain_header(),
        ) {
            (false, None) => None,
            (true, None) => {
                r.fail(CHAIN_HEADER.name, format!(
                    "FORWARDED_CERT_FORMAT={given} has no separate chain header (Envoy sends Chain= inside XFCC, Traefik sends the chain in the same header, nginx cannot forward intermediates); unset it, or use rfc9440 or haproxy"
                ));
                None
            }
            (_, default) => Some(r.header(&CHAIN_HEADER, default)),
        };
        let trusted_proxies = r.cidrs(&TRUSTED_PROXIES);
        for net in &trusted_proxies {
            if covers_the_internet(net) {
                r.warn(format!("TRUSTED_PROXIES: '{net}' covers a large part of the Internet (an IPv4 prefix shorter than /8, or an IPv6 prefix shorter than /16 outside fc00::/7 and fe80::/10): every host in it can forward a certificate header and be any client; list only your proxies' addresses"));
            }
        }
        Self {
            format,
            header,
            chain_header,
            trusted_proxies,
        }
    }
}

/// Whether a trusted-proxy range is so wide that it holds much of the public Internet: an
/// IPv4 prefix shorter than /8 (more than one /8; `10.0.0.0/8` is fine), or an IPv6 prefix
/// shorter than /16 that is not inside the private (fc00::/7) or link-local (fe80::/10) space.
/// IPv4-mapped ranges were turned into the IPv4 range they are by the reader.
pub fn covers_the_internet(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() < 8,
        IpNet::V6(v6) => {
            if let Some(v4) = v6.addr().to_ipv4_mapped()
                && v6.prefix_len() >= 96
            {
                return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .is_ok_and(|v4| v4.prefix_len() < 8);
            }
            let private = ["fc00::/7", "fe80::/10"]
                .iter()
                .filter_map(|p| p.parse::<ipnet::Ipv6Net>().ok())
                .any(|p| p.contains(v6));
            v6.prefix_len() < 16 && !private
        }
    }
}
