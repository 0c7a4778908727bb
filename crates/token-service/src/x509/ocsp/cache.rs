//! The OCSP answers in force, per certificate (issuer key, serial), each until its own time,
//! bounded in number (the oldest insertion goes first), and the exchanges in flight, so that
//! one certificate has at most one request at its responder at a time.

use std::collections::{HashMap, VecDeque};

use tokio::sync::watch;

use super::Answer;

/// A certificate's key ([`super::request::Subject::key`]).
pub type Key = [u8; 32];

/// Answers and exchanges in flight.
pub struct Cache {
    answers: HashMap<Key, Answer>,
    order: VecDeque<Key>,
    max: usize,
    /// Where the answer of an exchange in flight will be published.
    pub(super) in_flight: HashMap<Key, watch::Receiver<Option<Answer>>>,
}

impl Cache {
    /// An empty cache of at most `max` answers.
    pub fn new(max: usize) -> Self {
        Self {
            answers: HashMap::new(),
            order: VecDeque::new(),
            max,
            in_flight: HashMap::new(),
        }
    }

    /// The answer for `key` that still holds at `now`; an expired one is forgotten.
    pub fn get(&mut self, key: &Key, now: i64) -> Option<Answer> {
        let answer = self.answers.get(key)?;
        if now <= answer.until {
            return Some(answer.clone());
        }
        self.answers.remove(key);
        self.order.retain(|k| k != key);
        None
    }

    /// Keeps `answer` for `key`, forgetting the oldest answers when full.
    pub fn insert(&mut self, key: Key, answer: Answer) {
        if let Some(slot) = self.answers.get_mut(&key) {
            *slot = answer;
            return;
        }
        while self.answers.len() >= self.max {
            match self.order.pop_front() {
                Some(old) => {
                    self.answers.remove(&old);
                }
                None => break,
            }
        }
        self.answers.insert(key, answer);
        self.order.push_back(key);
    }

    /// How many answers are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.answers.len()
    }
}
