//! CRL distribution points of presented certificates, and whether their issuer is trusted.
//! A certificate's points name the CRL of its issuer (a leaf's the CRL of its CA, an
//! intermediate's that of its parent), so a point is followed only when the certificate's
//! signature verifies, link by link, up to a CA of `TLS_CLIENT_CA_FILE`: a self-made
//! certificate cannot make the service fetch anything. Only full names that are http or https
//! URLs are taken; points with a cRLIssuer (indirect CRLs) or partitioned by reasons are not.

use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::settings::check_url;

/// A distribution point to fetch: its URL and the certificates that vouch for the CRL there,
/// from the CA that must have signed it up to (and including) a CA of the bundle (DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The URL.
    pub url: String,
    /// The issuer path; the first signs the CRL.
    pub issuers: Vec<Vec<u8>>,
}

/// The http(s) URLs of `cert`'s CRL distribution points, at most `max`.
pub fn urls(cert: &X509Certificate<'_>, max: usize) -> Vec<String> {
    let mut found = Vec::new();
    for ext in cert.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else {
            continue;
        };
        for point in points.iter() {
            if point.crl_issuer.is_some() || point.reasons.is_some() {
                continue;
            }
            let Some(DistributionPointName::FullName(names)) = &point.distribution_point else {
                continue;
            };
            for name in names {
                if let GeneralName::URI(uri) = name
                    && check_url(uri).is_ok()
                    && !found.iter().any(|u: &String| u == uri)
                    && found.len() < max
                {
                    found.push((*uri).to_owned());
                }
            }
        }
    }
    found
}

/// The distribution points of the certificates of `chain` (DER, leaf first) whose URL `known`
/// does not hold yet, each with the path of verified signatures from it up to a CA of `bundle`;
/// a certificate whose issuer is not trusted that way contributes nothing. At most `max` points.
pub fn unknown_points(
    chain: &[Vec<u8>],
    bundle: &[Vec<u8>],
    known: impl Fn(&str) -> bool,
    max: usize,
) -> Vec<Point> {
    let parsed: Vec<(usize, X509Certificate<'_>)> = chain
        .iter()
        .enumerate()
        .filter_map(|(i, der)| X509Certificate::from_der(der).ok().map(|(_, c)| (i, c)))
        .collect();
    let mut anchors: Option<Vec<(&Vec<u8>, X509Certificate<'_>)>> = None;
    let mut points: Vec<Point> = Vec::new();
    for (i, cert) in &parsed {
        let wanted: Vec<String> = urls(cert, max)
            .into_iter()
            .filter(|u| !known(u) && !points.iter().any(|p| &p.url == u))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        // The bundle is parsed once, and only for a chain that names unknown points.
        let anchors = anchors.get_or_insert_with(|| {
            bundle
                .iter()
                .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| (der, c)))
                .collect()
        });
        let Some(issuers) = issuer_path(*i, cert, &parsed, chain, anchors, &mut vec![*i]) else {
            continue;
        };
        for url in wanted {
            if points.len() < max {
                points.push(Point {
                    url,
                    issuers: issuers.clone(),
                });
            }
        }
    }
    points
}

/// The certificates from `cert`'s issuer up to a CA of `bundle` (DER), each signature verified:
/// a bundle CA directly, else a CA certificate of the chain (not `cert` itself) whose own path
/// leads there, at most `MAX_DEPTH` links. `path` holds the chain positions on the way here
/// (`cert`'s first): no position is visited twice on one path, so certificates that name each
/// other as issuers cost one step each, not a walk of every cycle.
fn issuer_path(
    index: usize,
    cert: &X509Certificate<'_>,
    parsed: &[(usize, X509Certificate<'_>)],
    chain: &[Vec<u8>],
    anchors: &[(&Vec<u8>, X509Certificate<'_>)],
    path: &mut Vec<usize>,
) -> Option<Vec<Vec<u8>>> {
    for (der, anchor) in anchors {
        if signed_by(cert, anchor) {
            return Some(vec![(*der).clone()]);
        }
    }
    if path.len() > super::MAX_DEPTH {
        return None;
    }
    for (j, parent) in parsed {
        if *j == index || *j == 0 || path.contains(j) || !parent.is_ca() || !signed_by(cert, parent)
        {
            continue;
        }
        let der = chain.get(*j)?;
        path.push(*j);
        let found = issuer_path(*j, parent, parsed, chain, anchors, path);
        path.pop();
        if let Some(mut rest) = found {
            rest.insert(0, der.clone());
            return Some(rest);
        }
    }
    None
}

/// Whether `issuer`'s name and key fit `cert`.
fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    issuer.subject().as_raw() == cert.issuer().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Whether `issuers` is still a path of verified signatures ending at a CA of `bundle` (byte
/// for byte): for CRLs of distribution points read back from the cache.
pub fn still_trusted(issuers: &[Vec<u8>], bundle: &[Vec<u8>]) -> bool {
    let Some(anchor) = issuers.last() else {
        return false;
    };
    if !bundle.iter().any(|b| b == anchor) {
        return false;
    }
    issuers.windows(2).all(|pair| {
        match (
            X509Certificate::from_der(&pair[0]),
            X509Certificate::from_der(&pair[1]),
        ) {
            (Ok((_, child)), Ok((_, parent))) => signed_by(&child, &parent),
            _ => false,
        }
    })
}
