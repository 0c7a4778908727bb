//! ID tokens for audiences other than the broker's default, for the metadata server's
//! `…/identity?audience=A` and the `--audience-token-file` files: one [`Slot`] per audience
//! (its own single-flight refresh, refreshed ahead of expiry by its keeper like the default
//! one), asked of the broker with the form parameter `audience`.
//!
//! - Audiences of `--audience-token-file` are kept from the start.
//! - Audiences a local caller asks for are kept once the broker has issued a token for
//!   them, at most [`MAX_ASKED_AUDIENCES`] of them (more: [`AudienceError::TooMany`]), so
//!   that a caller cannot make the agent hold unbounded state. One the broker refuses (not
//!   in its `TOKEN_AUDIENCES`, or outside the client's policy) or cannot issue is not kept:
//!   the caller gets the reason, and the next call asks again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::keep;
use super::slot::{Current, Kind, Slot, Unavailable};
use crate::broker::{Broker, Query};

/// Audiences asked for by callers whose tokens are kept at once (besides the default one and
/// those of `--audience-token-file`).
pub const MAX_ASKED_AUDIENCES: usize = 8;

/// Why there is no ID token for an audience.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AudienceError {
    #[error(
        "token-client serve keeps ID tokens for at most {MAX_ASKED_AUDIENCES} audiences besides the broker's default and those of --audience-token-file; ask for one already in use (see GET /status), or restart it"
    )]
    TooMany,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// An audience's slot; `kept` once its keeper runs.
struct Entry {
    slot: Arc<Slot>,
    kept: bool,
}

/// The slots of the audiences other than the default; see the module documentation.
pub struct Audiences {
    broker: Arc<Broker>,
    /// `--audience-token-file` audiences, their slots and files.
    configured: Vec<(String, Arc<Slot>, Vec<PathBuf>)>,
    asked: Mutex<HashMap<String, Entry>>,
}

impl Audiences {
    /// The slots of the token files' audiences (`(audience, file)` pairs, grouped here).
    pub fn new(broker: Arc<Broker>, files: &[(String, PathBuf)]) -> Self {
        let mut configured: Vec<(String, Arc<Slot>, Vec<PathBuf>)> = Vec::new();
        for (audience, file) in files {
            match configured.iter_mut().find(|(a, _, _)| a == audience) {
                Some((_, _, files)) => files.push(file.clone()),
                None => {
                    let query = Query::id_token_for(audience);
                    let slot = Slot::new(Kind::IdToken, query, broker.clone());
                    configured.push((audience.clone(), slot, vec![file.clone()]));
                }
            }
        }
        Self {
            broker,
            configured,
            asked: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the keepers of the token files' audiences.
    pub fn start(&self) {
        for (_, slot, files) in &self.configured {
            tokio::spawn(keep(slot.clone(), files.clone()));
        }
    }

    /// Every token file of an audience.
    pub fn files(&self) -> Vec<(String, PathBuf)> {
        self.configured
            .iter()
            .flat_map(|(a, _, files)| files.iter().map(|f| (a.clone(), f.clone())))
            .collect()
    }

    fn asked(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A usable ID token for `audience`: the kept one, or one broker request shared with
    /// every concurrent caller for that audience.
    pub async fn get(&self, audience: &str) -> Result<Current, AudienceError> {
        if let Some((_, slot, _)) = self.configured.iter().find(|(a, _, _)| a == audience) {
            return Ok(slot.get().await?);
        }
        let slot = {
            let mut asked = self.asked();
            match asked.get(audience) {
                Some(entry) => entry.slot.clone(),
                None => {
                    if asked.len() >= MAX_ASKED_AUDIENCES {
                        return Err(AudienceError::TooMany);
                    }
                    let query = Query::id_token_for(audience);
                    let slot = Slot::new(Kind::IdToken, query, self.broker.clone());
                    let entry = Entry {
                        slot: slot.clone(),
                        kept: false,
                    };
                    asked.insert(audience.to_owned(), entry);
                    slot
                }
            }
        };
        let result = slot.get().await;
        let mut asked = self.asked();
        if let Some(entry) = asked.get_mut(audience)
            && Arc::ptr_eq(&entry.slot, &slot)
            && !entry.kept
        {
            if result.is_ok() {
                entry.kept = true;
                tokio::spawn(keep(slot.clone(), Vec::new()));
            } else {
                asked.remove(audience);
            }
        }
        Ok(result?)
    }

    /// Every slot's state, for `/status`.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let mut slots: Vec<_> = self.configured.iter().map(|(_, s, _)| s.status()).collect();
        slots.extend(self.asked().values().map(|e| e.slot.status()));
        slots
    }
}
