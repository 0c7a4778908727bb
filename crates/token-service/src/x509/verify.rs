//! Chain verification for every flow that sees the whole client certificate (TLS ended here,
//! or a proxy forwarded it): normalise the chain, verify it against the trust material in
//! force, derive the client, check it with OCSP when `TLS_CLIENT_OCSP` asks (`ocsp.rs`), and
//! remember the verdict so a client on a keep-alive connection
//! (or a proxy forwarding the same certificate) is not re-verified on every request.
//! Verification runs on the blocking pool, bounded per trust material (so per application), so
//! the async workers keep answering whatever chains arrive. Uses `model`, `clock`, `error` and the rest of `x509`;
//! knows nothing of flows or HTTP, and logs nothing: a refusal carries the certificate's facts
//! as labels of its `Failure`, for the request's one log line.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::UnixTime;

use rustls::CertificateError;

use super::{ClientIdAttribute, Refusal, RevocationPolicy, Trust, TrustMaterial, facts, normalise};
use crate::clock::{Clock, monotonic};
use crate::error::Failure;
use crate::model::{AuthenticatedClient, CertificateFacts};

/// Verifies an already normalised chain (DER, leaf first) against `material` and derives the
/// client. A refusal carries the certificate's facts as log labels, and says whether a CRL not
/// in force yet could change it ([`Refusal::awaits_crl`]): only then, or for an accepted chain,
/// are its distribution points worth looking at.
pub(crate) fn authenticate_chain(
    material: &TrustMaterial,
    clock: &Clock,
    attribute: ClientIdAttribute,
    chain: &[Vec<u8>],
) -> Result<AuthenticatedClient, (Failure, bool)> {
    let leaf = chain.first().ok_or_else(|| {
        (
            Failure::unauthorized("No client certificate was presented"),
            false,
        )
    })?;
    let mut facts = facts(leaf).map_err(|e| (Failure::from(e), false))?;
    let now =
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(clock.now()).unwrap_or(0)));
    if let Err(refusal) = material.verify(chain, now) {
        let awaits_crl = refusal.awaits_crl();
        return Err((rejected(&facts, refusal.into()), awaits_crl));
    }
    (facts.issuer_ca_sha256, facts.issuer_ca_sha256_twin) = material.issuer_fingerprint(chain);
    let Some(client_id) = attribute.client_id(&facts) else {
        let what = match attribute {
            ClientIdAttribute::Spiffe => "no SPIFFE ID (URI SAN with scheme spiffe)",
            ClientIdAttribute::DnsSan => "no DNS SAN",
            ClientIdAttribute::UriSan => "no URI SAN",
            ClientIdAttribute::Sha256 => "no fingerprint",
        };
        let reason = format!(
            "The client certificate has {what}, which MTLS_CLIENT_ID_ATTRIBUTE={} requires",
            attribute.name()
        );
        return Err((rejected(&facts, Failure::unauthorized(reason)), false));
    };
    Ok(AuthenticatedClient::new(client_id, facts))
}

/// A refused certificate: the refusal, with the facts operators need to find the certificate
/// (`cert/subject`, `cert/serial`, ...) as labels of the request's log line.
fn rejected(facts: &CertificateFacts, refusal: Failure) -> Failure {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    refusal
        .with_label("event", "client_certificate_rejected")
        .with_label("cert/subject", text(&facts.subject_dn))
        .with_label("cert/issuer", text(&facts.issuer_dn))
        .with_label("cert/serial", text(&facts.serial_number))
        .with_label("cert/sha256", text(&facts.sha256_fingerprint))
        .with_label("cert/spiffe", text(&facts.spiffe_id))
        .with_label(
            "cert/not_after",
            facts.not_after.unwrap_or_default().to_string(),
        )
}

/// A refusal of `chain` with its leaf's facts when the leaf parses.
fn refused_chain(chain: &[Vec<u8>], refusal: Failure) -> Failure {
    match chain.first().map(|leaf| facts(leaf)) {
        Some(Ok(facts)) => rejected(&facts, refusal),
        _ => refusal,
    }
}

/// A precise, client-facing reason for a rejected certificate.
pub(super) fn describe(e: &rustls::Error, policy: RevocationPolicy) -> Refusal {
    let awaits_crl = matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownRevocationStatus
                | CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. }
        )
    );
    let what = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "is not valid yet".to_owned()
            }
            CertificateError::UnknownIssuer => {
                "was not issued by a CA in TLS_CLIENT_CA_FILE (unknown issuer)".to_owned()
            }
            CertificateError::Revoked => "has been revoked".to_owned(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "is not valid for client authentication (no clientAuth extended key usage)"
                    .to_owned()
            }
            CertificateError::BadSignature => "has an invalid signature".to_owned(),
            CertificateError::BadEncoding => "cannot be parsed".to_owned(),
            CertificateError::UnknownRevocationStatus if policy.required && policy.fetched => {
                "has an unknown revocation status: no CRL of a CA of its chain is in force (from TLS_CLIENT_CRL_FILE, TLS_CLIENT_CRL_URLS or a distribution point), which TLS_CLIENT_CRL_REQUIRED=true requires".to_owned()
            }
            CertificateError::UnknownRevocationStatus if policy.required => {
                "has an unknown revocation status: TLS_CLIENT_CRL_FILE holds no CRL of a CA of its chain, which TLS_CLIENT_CRL_REQUIRED=true requires".to_owned()
            }
            CertificateError::UnknownRevocationStatus => {
                "has an unknown revocation status".to_owned()
            }
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => format!(
                "cannot be checked for revocation: the CRL of a CA of its chain is past its nextUpdate, and TLS_CLIENT_CRL_EXPIRED={} refuses certificates until a fresh CRL is loaded",
                policy.expired.name()
            ),
            CertificateError::Other(inner) if inner.0.to_string().contains("CaUsedAsEndEntity") => {
                "is a CA certificate: present the client's own (end-entity) certificate, with its CA certificates after it as the chain".to_owned()
            }
            // webpki's other reasons have only programmer names; the log keeps them as detail.
            _ => "was rejected by chain verification: it must be an end-entity certificate for client authentication, issued by a CA in TLS_CLIENT_CA_FILE".to_owned(),
        },
        rustls::Error::InvalidCertRevocationList(_) => {
            "cannot be checked for revocation: the CRL of a CA of its chain is not usable (check its signature and format in TLS_CLIENT_CRL_FILE)".to_owned()
        }
        other => format!("was rejected: {other}"),
    };
    if awaits_crl {
        Refusal::RevocationUnknown(what)
    } else {
        Refusal::Rejected(what)
    }
}

/// A map bounded to `max` entries that forgets the oldest insertion when full (never everything
/// at once).
struct Bounded<V> {
    entries: HashMap<[u8; 32], V>,
    order: VecDeque<[u8; 32]>,
    max: usize,
}

impl<V> Bounded<V> {
    fn new(max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    fn get(&self, key: &[u8; 32]) -> Option<&V> {
        self.entries.get(key)
    }

    fn insert(&mut self, key: [u8; 32], value: V) {
        if let Some(slot) = self.entries.get_mut(&key) {
            *slot = value;
            return;
        }
        while self.entries.len() >= self.max {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        self.entries.insert(key, value);
        self.order.push_back(key);
    }

    fn remove(&mut self, key: &[u8; 32]) {
        if self.entries.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Verdicts on chains, so a client on a keep-alive connection (or a proxy forwarding the same
/// certificate) is not re-verified on every request, and a client repeating a refused chain
/// costs a lookup. Keys are the normalised chain (see [`crate::x509::chain`]): padding or
/// reordering a chain finds the same entry. A verdict only counts for the version of the trust
/// material it was reached with (a reloaded CA bundle or CRL is a new version, so revocation
/// bites at once); entries hold that version number, not the material, so superseded material
/// is freed at once. An accepted chain counts within the certificate's validity period (and,
/// with `TLS_CLIENT_OCSP`, its OCSP answer's), a refused one for [`REFUSED_TTL`] (but a 503 of
/// `TLS_CLIENT_OCSP=required` is not remembered here). Both maps are bounded and forget their oldest entry when
/// full; only chains that verify enter the first, so no client can evict another's entry there
/// without certificates of its own.
///
/// Verification runs on the blocking pool, at most [`concurrency`] at a time per [`Trust`] (whose
/// permits they are, so two applications in one process do not share them), so the async
/// workers keep answering `/healthz`, discovery and cached clients whatever chains arrive.
pub struct VerifiedChains {
    /// Keyed by the leaf's hash, so one certificate holds one entry whatever chains it comes
    /// with: a client that pads its chain with certificates that still verify replaces its own
    /// entry and evicts nobody's.
    accepted: std::sync::Mutex<Bounded<Accepted>>,
    refused: std::sync::Mutex<Bounded<Refused>>,
}

/// What verifying a chain came to before OCSP: the client, until when that holds and, when
/// OCSP is on, what it is to ask about; or the refusal.
type Checked = Result<
    (
        AuthenticatedClient,
        i64,
        Option<Result<super::ocsp::Subject, super::ocsp::Problem>>,
    ),
    Failure,
>;

/// A refused chain: trust version, when, and the refusal (with the certificate's facts).
type Refused = (u64, crate::clock::Instant, Failure);

/// An accepted chain: its normalised key, the trust version, until when the verdict holds
/// ([`TrustMaterial::verdict_valid_until`]), and the client.
struct Accepted {
    chain: [u8; 32],
    version: u64,
    valid_until: i64,
    client: AuthenticatedClient,
}

const VERIFIED_CHAINS_MAX: usize = 4096;
const REFUSED_CHAINS_MAX: usize = 4096;
/// How long a refusal is remembered (it may stop applying: a certificate not valid yet).
pub(crate) const REFUSED_TTL: Duration = Duration::from_secs(5);

impl Default for VerifiedChains {
    fn default() -> Self {
        Self {
            accepted: std::sync::Mutex::new(Bounded::new(VERIFIED_CHAINS_MAX)),
            refused: std::sync::Mutex::new(Bounded::new(REFUSED_CHAINS_MAX)),
        }
    }
}

/// The key of accepted verdicts: [`crate::x509::chain::key`] of the leaf alone, which for the
/// common leaf-only chain is the chain key already computed (no second hash per request).
fn leaf_key(chain: &[Vec<u8>], chain_key: [u8; 32]) -> [u8; 32] {
    match chain {
        [_] => chain_key,
        [leaf, ..] => crate::x509::chain::key(std::slice::from_ref(leaf)),
        [] => chain_key,
    }
}

/// Chain verifications allowed at once per [`Trust`] (so per application): half the CPUs, at
/// least one.
pub(super) fn concurrency() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    (cpus / 2).max(1)
}

impl VerifiedChains {
    /// [`authenticate_chain`] on the normalised chain, answered from the verdicts when this
    /// chain was judged against the trust material in force.
    pub async fn authenticate(
        &self,
        trust: &Arc<Trust>,
        clock: &Clock,
        attribute: ClientIdAttribute,
        chain: &[Vec<u8>],
    ) -> Result<AuthenticatedClient, Failure> {
        let normalised = normalise(chain).map_err(|e| refused_chain(chain, e.into()))?;
        let key = normalised.key;
        let leaf_key = leaf_key(&normalised.chain, key);
        let material = trust.current();
        if let Some(client) = self.accepted(&leaf_key, &key, material.version, clock.now()) {
            return Ok(client);
        }
        if let Some(refusal) = self.refused(&key, material.version) {
            return Err(refusal);
        }
        let (mut version, mut outcome, points) =
            Self::verify_now(trust, material, clock, attribute, normalised.chain.clone()).await?;
        if !points.is_empty() {
            // Distribution points of a chain whose issuers are trusted: fetched once, then the
            // chain is judged again against the material that holds their CRLs.
            trust.fetch_points(points).await;
            let material = trust.current();
            if material.version != version {
                (version, outcome, _) =
                    Self::verify_now(trust, material, clock, attribute, normalised.chain).await?;
            }
        }
        // An accepted verdict holds no longer than the OCSP answer behind it.
        let outcome = match (outcome, trust.ocsp().cloned()) {
            (Ok((mut client, until, Some(subject))), Some(ocsp)) => {
                match ocsp.check(subject, &mut client.facts, *clock).await {
                    Ok(answered) => Ok((client, until.min(answered))),
                    Err(refusal) => Err(rejected(&client.facts, refusal)),
                }
            }
            (Ok((client, until, _)), _) => Ok((client, until)),
            (Err(refusal), _) => Err(refusal),
        };
        match outcome {
            Ok((client, valid_until)) => {
                if let Ok(mut accepted) = self.accepted.lock() {
                    accepted.insert(
                        leaf_key,
                        Accepted {
                            chain: key,
                            version,
                            valid_until,
                            client: client.clone(),
                        },
                    );
                }
                Ok(client)
            }
            // "Try again later" is not remembered: the OCSP check keeps its own brief answer.
            Err(refusal) if matches!(refusal.kind(), crate::error::Kind::Unavailable { .. }) => {
                Err(refusal)
            }
            Err(refusal) => {
                if let Ok(mut refused) = self.refused.lock() {
                    refused.insert(key, (version, monotonic(), refusal.clone()));
                }
                Err(refusal)
            }
        }
    }

    /// [`authenticate_chain`] on a blocking thread under a permit, with the version of the
    /// material used and the CRL distribution points of the chain still to fetch.
    async fn verify_now(
        trust: &Arc<Trust>,
        material: Arc<TrustMaterial>,
        clock: &Clock,
        attribute: ClientIdAttribute,
        chain: Vec<Vec<u8>>,
    ) -> Result<(u64, Checked, Vec<super::crl_fetch::cdp::Point>), Failure> {
        let version = material.version;
        let asks = trust.ocsp().is_some();
        // The permit moves into the task: it is held until the work ends, even when the
        // request stops waiting for it (deadline).
        let permit = trust
            .verifications()
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| {
                Failure::unauthorized("The client certificate could not be verified now")
            })?;
        let (clock, trust) = (*clock, trust.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let judged = authenticate_chain(&material, &clock, attribute, &chain);
            // A CRL can change only an acceptance or a refusal for want of one: the points of
            // any other chain (a foreign CA's, a forged one) are never even looked at.
            let points = match &judged {
                Ok(_) | Err((_, true)) => trust.crl_points(&material, &chain),
                Err((_, false)) => Vec::new(),
            };
            let outcome = judged.map_err(|(refusal, _)| refusal).map(|client| {
                let until = material.verdict_valid_until(&chain);
                // What OCSP asks about, found while the material is at hand.
                let subject = asks.then(|| super::ocsp::Subject::of(&material, &chain));
                (client, until, subject)
            });
            (version, outcome, points)
        })
        .await
        .map_err(|_| Failure::unauthorized("The client certificate could not be verified"))
    }

    fn accepted(
        &self,
        leaf: &[u8; 32],
        chain: &[u8; 32],
        version: u64,
        now: i64,
    ) -> Option<AuthenticatedClient> {
        let mut accepted = self.accepted.lock().ok()?;
        let entry = accepted.get(leaf)?;
        if entry.chain == *chain
            && entry.version == version
            && now <= entry.valid_until
            && entry.client.facts.not_before.is_some_and(|t| t <= now)
        {
            return Some(entry.client.clone());
        }
        accepted.remove(leaf);
        None
    }

    fn refused(&self, key: &[u8; 32], version: u64) -> Option<Failure> {
        let mut refused = self.refused.lock().ok()?;
        let (judged_with, at, refusal) = refused.get(key)?;
        if *judged_with == version && monotonic().saturating_duration_since(*at) < REFUSED_TTL {
            return Some(refusal.clone());
        }
        refused.remove(key);
        None
    }
}

#[cfg(test)]
mod tests;
