//! Flow `mtls-client-credentials`: TLS ends at Token Service and the client presents its
//! certificate in the handshake (which proves possession of the key). The chain is verified on
//! every request against the CA bundle and CRLs in force at that moment.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rustls_pki_types::UnixTime;
use serde_json::json;

use super::{Flow, FlowError, TLS_CLIENT_AUTH};
use crate::clock::Clock;
use crate::model::{AuthenticatedClient, CLIENT_CREDENTIALS, CertificateFacts, TokenRequest};
use crate::x509::{ClientIdAttribute, Trust, TrustMaterial, facts, normalise};

/// Name of this flow in `AUTH_FLOWS` and `amr`.
pub const NAME: &str = "mtls-client-credentials";

/// Verifies an already normalised chain (DER, leaf first) against `material` and derives the
/// client: shared by every flow that sees the whole certificate. Rejections are logged with the
/// certificate's facts.
pub(crate) fn authenticate_chain(
    flow: &str,
    material: &TrustMaterial,
    clock: &Clock,
    attribute: ClientIdAttribute,
    chain: &[Vec<u8>],
) -> Result<AuthenticatedClient, FlowError> {
    let leaf = chain
        .first()
        .ok_or_else(|| FlowError::Unauthorized("No client certificate was presented".into()))?;
    let mut facts = facts(leaf).map_err(FlowError::Unauthorized)?;
    let now =
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(clock.now()).unwrap_or(0)));
    if let Err(reason) = material.verify(chain, now) {
        log_rejection(flow, &facts, &reason);
        return Err(FlowError::Unauthorized(reason));
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
        log_rejection(flow, &facts, &reason);
        return Err(FlowError::Unauthorized(reason));
    };
    Ok(AuthenticatedClient {
        flow: flow.to_owned(),
        client_id,
        facts,
    })
}

fn log_rejection(flow: &str, facts: &CertificateFacts, reason: &str) {
    let labels = json!({
        "cert/subject": facts.subject_dn.clone().unwrap_or_default(),
        "cert/issuer": facts.issuer_dn.clone().unwrap_or_default(),
        "cert/serial": facts.serial_number.clone().unwrap_or_default(),
        "cert/sha256": facts.sha256_fingerprint.clone().unwrap_or_default(),
        "cert/spiffe": facts.spiffe_id.clone().unwrap_or_default(),
        "cert/not_after": facts.not_after.unwrap_or_default().to_string(),
    });
    tracing::warn!(event = "client_certificate_rejected", flow, labels = %labels, reason = %reason, "{reason}");
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
/// is freed at once. An accepted chain counts within the certificate's validity period, a
/// refused one for [`REFUSED_TTL`]. Both maps are bounded and forget their oldest entry when
/// full; only chains that verify enter the first, so no client can evict another's entry there
/// without certificates of its own.
///
/// Verification runs on the blocking pool, at most [`verifications`] at a time, so the async
/// workers keep answering `/healthz`, discovery and cached clients whatever chains arrive.
pub(crate) struct VerifiedChains {
    /// Keyed by the leaf's hash, so one certificate holds one entry whatever chains it comes
    /// with: a client that pads its chain with certificates that still verify replaces its own
    /// entry and evicts nobody's.
    accepted: std::sync::Mutex<Bounded<Accepted>>,
    refused: std::sync::Mutex<Bounded<Refused>>,
}

/// A refused chain: trust version, when, and why.
type Refused = (u64, Instant, String);

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

/// Chain verifications running at once, process-wide: half the CPUs, at least one.
fn verifications() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
        std::sync::LazyLock::new(|| {
            let cpus = std::thread::available_parallelism().map_or(2, usize::from);
            Arc::new(tokio::sync::Semaphore::new((cpus / 2).max(1)))
        });
    PERMITS.clone()
}

impl VerifiedChains {
    /// [`authenticate_chain`] on the normalised chain, answered from the verdicts when this
    /// chain was judged against the trust material in force.
    pub(crate) async fn authenticate(
        &self,
        flow: &str,
        trust: &Arc<Trust>,
        clock: &Clock,
        attribute: ClientIdAttribute,
        chain: &[Vec<u8>],
    ) -> Result<AuthenticatedClient, FlowError> {
        let normalised = match normalise(chain) {
            Ok(n) => n,
            Err(reason) => {
                if let Some(leaf) = chain.first()
                    && let Ok(facts) = facts(leaf)
                {
                    log_rejection(flow, &facts, &reason);
                }
                return Err(FlowError::Unauthorized(reason));
            }
        };
        let key = normalised.key;
        let leaf_key = leaf_key(&normalised.chain, key);
        let material = trust.current();
        let now = clock.now();
        if let Some(client) = self.accepted(&leaf_key, &key, material.version, now) {
            return Ok(client);
        }
        if let Some(reason) = self.refused(&key, material.version) {
            if let Some(Ok(facts)) = chain.first().map(|leaf| facts(leaf)) {
                log_rejection(flow, &facts, &reason);
            }
            return Err(FlowError::Unauthorized(reason));
        }
        let version = material.version;
        let outcome = {
            // The permit moves into the task: it is held until the work ends, even when the
            // request stops waiting for it (deadline).
            let permit = verifications().acquire_owned().await.map_err(|_| {
                FlowError::Unauthorized("The client certificate could not be verified now".into())
            })?;
            let (flow, clock) = (flow.to_owned(), *clock);
            let chain = normalised.chain;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                authenticate_chain(&flow, &material, &clock, attribute, &chain)
                    .map(|client| (client, material.verdict_valid_until(&chain)))
            })
            .await
            .unwrap_or_else(|_| {
                Err(FlowError::Unauthorized(
                    "The client certificate could not be verified".into(),
                ))
            })
        };
        match &outcome {
            Ok((client, valid_until)) => {
                if let Ok(mut accepted) = self.accepted.lock() {
                    accepted.insert(
                        leaf_key,
                        Accepted {
                            chain: key,
                            version,
                            valid_until: *valid_until,
                            client: client.clone(),
                        },
                    );
                }
            }
            Err(FlowError::Unauthorized(reason)) => {
                if let Ok(mut refused) = self.refused.lock() {
                    refused.insert(key, (version, Instant::now(), reason.clone()));
                }
            }
            Err(_) => {}
        }
        outcome.map(|(client, _)| client)
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

    fn refused(&self, key: &[u8; 32], version: u64) -> Option<String> {
        let mut refused = self.refused.lock().ok()?;
        let (judged_with, at, reason) = refused.get(key)?;
        if *judged_with == version && at.elapsed() < REFUSED_TTL {
            return Some(reason.clone());
        }
        refused.remove(key);
        None
    }
}

/// The direct mTLS flow.
pub struct MtlsFlow {
    attribute: ClientIdAttribute,
    trust: Arc<Trust>,
    clock: Clock,
    verified: VerifiedChains,
}

impl MtlsFlow {
    /// Builds the flow over the shared trust material.
    pub fn new(attribute: ClientIdAttribute, trust: Arc<Trust>, clock: Clock) -> Self {
        Self {
            attribute,
            trust,
            clock,
            verified: VerifiedChains::default(),
        }
    }
}

#[async_trait]
impl Flow for MtlsFlow {
    fn name(&self) -> &str {
        NAME
    }

    fn grant_type(&self) -> &str {
        CLIENT_CREDENTIALS
    }

    fn auth_method(&self) -> &str {
        TLS_CLIENT_AUTH
    }

    fn can_handle(&self, request: &TokenRequest) -> bool {
        request
            .peer_certificates
            .as_ref()
            .is_some_and(|c| !c.is_empty())
    }

    fn declined(&self, _request: &TokenRequest) -> FlowError {
        FlowError::InvalidRequest("no client certificate was presented in the TLS handshake".into())
    }

    async fn authenticate(&self, request: &TokenRequest) -> Result<AuthenticatedClient, FlowError> {
        let chain = request
            .peer_certificates
            .as_deref()
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.verified
            .authenticate(NAME, &self.trust, &self.clock, self.attribute, chain)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::{FromDer, X509Certificate};

    struct TestCa {
        der: Vec<u8>,
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str, parent: Option<&TestCa>) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = match parent {
            Some(parent) => params.signed_by(&key, &parent.issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        TestCa {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(name: &str, issuer: &TestCa) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://example.org/{name}").try_into().unwrap(),
        ));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .signed_by(&key, &issuer.issuer)
            .unwrap()
            .der()
            .to_vec()
    }

    fn lengths(chains: &VerifiedChains) -> (usize, usize) {
        (
            chains.accepted.lock().unwrap().len(),
            chains.refused.lock().unwrap().len(),
        )
    }

    /// Finding 8 (issue 10): padding or reordering a chain with unrelated certificates finds the
    /// same verdict, so it neither adds entries nor evicts another client's.
    #[tokio::test]
    async fn padded_or_reordered_chains_share_one_verdict_and_evict_nobody() {
        let root = ca("Root", None);
        let intermediate = ca("Intermediate", Some(&root));
        let stranger = ca("Stranger", None);
        let strangers_child = ca("Stranger child", Some(&stranger));
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &root.pem).unwrap();
        let trust = Arc::new(
            Trust::load(crate::x509::TrustSettings {
                ca_file,
                crl_file: None,
                reload_interval: Duration::from_secs(5),
                revocation: Default::default(),
            })
            .unwrap(),
        );
        let clock = Clock::system();
        let chains = VerifiedChains::default();
        let spiffe = ClientIdAttribute::Spiffe;
        let (a, b) = (leaf("a", &intermediate), leaf("b", &root));
        let chain_a = vec![a.clone(), intermediate.der.clone()];
        let client = chains
            .authenticate(NAME, &trust, &clock, spiffe, &chain_a)
            .await
            .unwrap();
        assert_eq!(client.client_id, "spiffe://example.org/a");
        chains
            .authenticate(NAME, &trust, &clock, spiffe, std::slice::from_ref(&b))
            .await
            .unwrap();
        assert_eq!(lengths(&chains), (2, 0));
        let paddings = [
            vec![a.clone(), stranger.der.clone(), intermediate.der.clone()],
            vec![
                a.clone(),
                intermediate.der.clone(),
                intermediate.der.clone(),
            ],
            vec![
                a.clone(),
                strangers_child.der.clone(),
                intermediate.der.clone(),
            ],
            vec![
                a.clone(),
                root.der.clone(),
                intermediate.der.clone(),
                a.clone(),
            ],
        ];
        for padded in &paddings {
            let again = chains
                .authenticate(NAME, &trust, &clock, spiffe, padded)
                .await
                .unwrap();
            assert_eq!(again.client_id, client.client_id);
        }
        assert_eq!(lengths(&chains), (2, 0));
        let version = trust.current().version;
        let key_b = normalise(std::slice::from_ref(&b)).unwrap().key;
        let leaf_b = leaf_key(std::slice::from_ref(&b), key_b);
        assert!(
            chains
                .accepted(&leaf_b, &key_b, version, clock.now())
                .is_some()
        );
        let alone = std::slice::from_ref(&a);
        assert_eq!(
            leaf_key(alone, normalise(alone).unwrap().key),
            leaf_key(&chain_a, normalise(&chain_a).unwrap().key),
            "a leaf has one key whether it comes alone or with its chain"
        );

        // A look-alike CA (the intermediate's name and key identifier, another issuer and key)
        // survives the name-based reduction and the chain still verifies through the real
        // intermediate: it must neither add an entry, nor evict one, nor make the issuer
        // ambiguous (which would blank issuer_ca_sha256 and skip a deny rule on it).
        let ski = {
            let (_, cert) = X509Certificate::from_der(&intermediate.der).unwrap();
            cert.extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                    _ => None,
                })
                .unwrap()
        };
        let lookalike = {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, "Intermediate");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ski);
            params
                .signed_by(&key, &stranger.issuer)
                .unwrap()
                .der()
                .to_vec()
        };
        for padded in [
            vec![a.clone(), lookalike.clone(), intermediate.der.clone()],
            vec![a.clone(), intermediate.der.clone(), lookalike.clone()],
        ] {
            let again = chains
                .authenticate(NAME, &trust, &clock, spiffe, &padded)
                .await
                .unwrap();
            assert_eq!(
                again.facts.issuer_ca_sha256.as_deref(),
                Some(crate::x509::fingerprint(&intermediate.der).as_str()),
                "the issuer is the CA whose key signed the leaf"
            );
        }
        assert_eq!(lengths(&chains), (2, 0), "one entry per certificate");

        // A refused chain, padded in different ways, is one refusal too.
        let outsider = leaf("outsider", &stranger);
        for padded in [
            vec![outsider.clone()],
            vec![outsider.clone(), intermediate.der.clone()],
            vec![outsider.clone(), stranger.der.clone(), root.der.clone()],
        ] {
            let refused = chains
                .authenticate(NAME, &trust, &clock, spiffe, &padded)
                .await
                .unwrap_err();
            assert!(
                matches!(&refused, FlowError::Unauthorized(r) if r.contains("unknown issuer")),
                "{refused:?}"
            );
        }
        assert_eq!(lengths(&chains), (2, 1));

        // A reload is a new version: the old verdicts no longer count (and are replaced in
        // place, not added).
        trust.reload().unwrap();
        chains
            .authenticate(NAME, &trust, &clock, spiffe, &paddings[0])
            .await
            .unwrap();
        assert_eq!(lengths(&chains), (2, 1));
    }

    #[test]
    fn a_full_map_forgets_only_its_oldest_entry() {
        let mut map = Bounded::new(3);
        for i in 0..3u8 {
            map.insert([i; 32], i);
        }
        map.insert([1; 32], 10);
        assert_eq!(map.len(), 3);
        map.insert([7; 32], 7);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&[0; 32]), None);
        assert_eq!(map.get(&[1; 32]), Some(&10));
        assert_eq!(map.get(&[2; 32]), Some(&2));
        assert_eq!(map.get(&[7; 32]), Some(&7));
        map.remove(&[2; 32]);
        map.insert([8; 32], 8);
        map.insert([9; 32], 9);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&[1; 32]), None);
        assert_eq!(map.get(&[7; 32]), Some(&7));
    }
}
