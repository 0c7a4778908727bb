//! One version of the key file, compiled: its keys, which of them signs when, the JWK Set that
//! publishes all of them, and when this process first published each. A new version is
//! compiled completely, and held to the reload rules against the one in force, before it
//! replaces it.

use std::sync::Arc;

use rustls_pki_types::pem::SectionKind;
use serde_json::{Value, json};

use super::jwk::{BadKey, parse_pkcs8, public_jwk};
use super::keyfile::{self, Meta};
use super::states::{self, Entry, Rules, Schedule};
use super::{KeyPair, SigningKey};
use crate::signer::Publication;

/// The compiled key file.
pub struct KeySet {
    pub(super) keys: Vec<SigningKey>,
    pub(super) schedule: Schedule,
    pub(super) publication: Publication,
    /// When this process first published each key (Unix seconds).
    pub(super) seen: Vec<i64>,
    /// The last time this process signed with each key under an earlier version of the file,
    /// if it did (Unix seconds).
    pub(super) signed: Vec<Option<i64>>,
}

/// One key as `keys show` lists it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// `kid`.
    pub kid: String,
    /// `RS256` or `ES256`.
    pub alg: &'static str,
    /// The metadata line, when any.
    pub meta: Option<Meta>,
}

impl KeySet {
    /// Compiles the PEM document at `now`, or every problem found (plain sentences: the
    /// caller names the setting and the file).
    pub fn parse(pem: &[u8], now: i64, rules: &Rules) -> Result<Self, Vec<String>> {
        let blocks = keyfile::parse(pem).map_err(|e| vec![e.0])?;
        let mut keys = Vec::new();
        for block in blocks {
            let number = block.number;
            match block.kind {
                SectionKind::PrivateKey => {
                    let mut key = parse_pkcs8(&block.der)
                        .map_err(|BadKey(e)| vec![format!("key {}: {e}", keys.len() + 1)])?;
                    key.meta = block.meta;
                    keys.push(key);
                }
                SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                    return Err(vec![format!(
                        "PEM block {number} is a PKCS#1/SEC1 key; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`"
                    )]);
                }
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err(vec![
                "no 'PRIVATE KEY' (PKCS#8) block found; expected RSA ≥ 2048 bits or EC P-256 keys"
                    .to_owned(),
            ]);
        }
        if let Some(twice) = keys
            .iter()
            .enumerate()
            .find(|(i, k)| keys[..*i].iter().any(|o| o.kid == k.kid))
        {
            return Err(vec![format!(
                "key {} ({}) is in the file twice; keep one copy",
                twice.0 + 1,
                twice.1.kid
            )]);
        }
        let schedule = states::schedule(&entries(&keys), now, rules)?;
        let jwks: Vec<Value> = keys.iter().map(public_jwk).collect();
        Ok(Self {
            seen: vec![now; keys.len()],
            signed: vec![None; keys.len()],
            keys,
            schedule,
            publication: Publication::Jwks(Arc::new(json!({ "keys": jwks }))),
        })
    }

    /// The next version from `pem` at `now`, held to the reload rules against this one; keys
    /// this version published keep the time they were first published.
    pub fn reloaded(&self, pem: &[u8], now: i64, rules: &Rules) -> Result<Self, Vec<String>> {
        let mut next = Self::parse(pem, now, rules)?;
        let old = entries(&self.keys);
        let signed = self.signed_until(now);
        let problems = states::reload_problems(
            (&old, &self.schedule, &self.seen),
            &signed,
            (&entries(&next.keys), &next.schedule),
            now,
            rules,
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        for (i, key) in next.keys.iter().enumerate() {
            if let Some(j) = self.keys.iter().position(|k| k.kid == key.kid) {
                next.seen[i] = self.seen[j];
                next.signed[i] = signed[j];
            }
        }
        Ok(next)
    }

    /// Per key, the last time this process signed with it up to `now`, if it did: the key
    /// that signs now, the key that signed until the active key's `signs-from` once that has
    /// passed, and what earlier versions recorded.
    fn signed_until(&self, now: i64) -> Vec<Option<i64>> {
        let mut signed = self.signed.clone();
        let mut mark = |i: usize, t: i64| {
            if let Some(slot) = signed.get_mut(i) {
                *slot = (*slot).max(Some(t));
            }
        };
        mark(self.schedule.signer_at(now), now);
        if let (Some(from), Some(handover)) = (self.schedule.signs_from, self.schedule.handover)
            && from <= now
        {
            mark(handover, from);
        }
        signed
    }

    /// The key that signs at `now`.
    pub(super) fn signer_at(&self, now: i64) -> &SigningKey {
        let index = self.schedule.signer_at(now);
        self.keys.get(index).unwrap_or(&self.keys[0])
    }

    /// Whether any key is an RSA key.
    pub fn has_rsa(&self) -> bool {
        self.keys.iter().any(|k| matches!(k.pair, KeyPair::Rsa(_)))
    }

    /// The keys, in file order.
    pub fn infos(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|k| KeyInfo {
                kid: k.kid.clone(),
                alg: k.alg,
                meta: k.meta,
            })
            .collect()
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// One line about the keys at `now`: which signs, which are published.
    pub fn summary(&self, now: i64) -> String {
        let signer = self.signer_at(now);
        let mut text = format!("{} key {} signs", signer.alg, signer.kid);
        if let (Some(from), Some(_)) = (self.schedule.signs_from, self.schedule.handover)
            && now < from
        {
            let active = &self.keys[self.schedule.active];
            text.push_str(&format!(
                " until {}, then {}",
                keyfile::format_time(from),
                active.kid
            ));
        }
        let published: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                let state = k.meta.map_or("published", |m| m.state.name());
                format!("{} ({state})", k.kid)
            })
            .collect();
        text.push_str(&format!("; published: {}", published.join(", ")));
        text
    }
}

/// The `kid`s and metadata of `keys`.
fn entries(keys: &[SigningKey]) -> Vec<Entry<'_>> {
    keys.iter()
        .map(|k| Entry {
            kid: &k.kid,
            meta: k.meta,
        })
        .collect()
}
