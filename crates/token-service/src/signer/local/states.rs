//! What the key states mean, as pure functions of the keys' metadata, the time and two
//! settings: which key signs at a given second, and the rules a key file must keep so that no
//! verifier meets a token whose key it has not cached, and no token outlives its key's
//! publication.
//!
//! - `next`: published, never signs. A new key enters the file as `next` (with `published-at`)
//!   and stays so until every replica publishes it and every cache has had `JWKS_MAX_AGE` to
//!   see it.
//! - `active`: the one key that signs, from `signs-from` (when given). Every replica reads the
//!   same time, so they all switch in the same second without talking to each other. Until
//!   then the `retired` key whose `retired-at` equals that `signs-from` keeps signing.
//! - `retired`: published, signs no more after `retired-at`; may be dropped from the file once
//!   `retired-at` + the longest token lifetime + `JWKS_MAX_AGE` has passed.
//!
//! A file without metadata lines keeps its old meaning: the first key signs, all are
//! published. In a file with some, a key without one is published; when no key is marked
//! active, the first such key signs (so `keys generate` can append a next key to a plain
//! file). Uses only `keyfile` (and the lifetime bound of the issuer's settings).

use super::keyfile::{Meta, State, format_time};

/// The settings the rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `JWKS_MAX_AGE`: how long a verifier may cache the JWK Set, in seconds.
    pub jwks_max_age: i64,
    /// The longest lifetime a token of this configuration can have, in seconds.
    pub longest_lifetime: i64,
}

impl Default for Rules {
    /// The defaults: `JWKS_MAX_AGE` 300 s, and the longest lifetime any setting or policy
    /// rule allows (60 minutes).
    fn default() -> Self {
        Self {
            jwks_max_age: 300,
            longest_lifetime: 3600,
        }
    }
}

/// One key of the file: its `kid` and metadata.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// `kid` (the RFC 7638 thumbprint).
    pub kid: &'a str,
    /// The metadata line, when the key has one.
    pub meta: Option<Meta>,
}

/// Which key signs when: the index of the active key, and of the key that signs before its
/// `signs-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The key that signs (from `signs_from`).
    pub active: usize,
    /// When the active key starts signing.
    pub signs_from: Option<i64>,
    /// The key that signs until then.
    pub handover: Option<usize>,
    /// Whether the file has no metadata (the first key signs).
    pub legacy: bool,
}

impl Schedule {
    /// The index of the key that signs at `now`.
    pub fn signer_at(&self, now: i64) -> usize {
        match (self.signs_from, self.handover) {
            (Some(from), Some(handover)) if now < from => handover,
            _ => self.active,
        }
    }
}

/// The longest lifetime a token can have: `TOKEN_VALIDITY`, the lifetimes of
/// `TOKEN_AUDIENCE_VALIDITY`, and with a policy file the bound its rules share.
pub fn longest_lifetime(
    validity: i64,
    audience_lifetimes: impl IntoIterator<Item = i64>,
    policy: bool,
) -> i64 {
    let policy_bound = if policy {
        i64::try_from(crate::issuer::settings::VALIDITY_MINUTES.1 * 60).unwrap_or(i64::MAX)
    } else {
        0
    };
    audience_lifetimes
        .into_iter()
        .fold(validity.max(policy_bound), i64::max)
}

/// When a retired key may be dropped: `retired-at` + the longest token lifetime +
/// `JWKS_MAX_AGE`.
pub fn drop_after(meta: &Meta, rules: &Rules) -> Option<i64> {
    (meta.state == State::Retired).then_some(())?;
    Some(meta.retired_at? + rules.longest_lifetime + rules.jwks_max_age)
}

fn name(keys: &[Entry<'_>], index: usize) -> String {
    format!("key {} ({})", index + 1, keys[index].kid)
}

/// The schedule of `keys` at `now`, or every rule the file breaks (one sentence each).
pub fn schedule(keys: &[Entry<'_>], now: i64, rules: &Rules) -> Result<Schedule, Vec<String>> {
    if keys.iter().all(|k| k.meta.is_none()) {
        return Ok(Schedule {
            active: 0,
            signs_from: None,
            handover: None,
            legacy: true,
        });
    }
    let mut problems = Vec::new();
    let mut metas = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(meta) = &key.meta {
            field_rules(&name(keys, i), meta, &mut problems);
            metas.push((i, *meta));
        }
    }
    let actives: Vec<usize> = metas
        .iter()
        .filter(|(_, m)| m.state == State::Active)
        .map(|(i, _)| *i)
        .collect();
    let active = match actives.as_slice() {
        [one] => *one,
        // A key without a line (a plain file to which `keys generate` appended a next key):
        // the first such key signs, as it did.
        [] => match keys.iter().position(|k| k.meta.is_none()) {
            Some(first) if problems.is_empty() => {
                return Ok(Schedule {
                    active: first,
                    signs_from: None,
                    handover: None,
                    legacy: false,
                });
            }
            Some(_) => return Err(problems),
            None => {
                problems.push(
                    "no key has state=active: mark the key that signs (`token-service keys activate`)"
                        .into(),
                );
                return Err(problems);
            }
        },
        several => {
            let names: Vec<String> = several.iter().map(|i| name(keys, *i)).collect();
            problems.push(format!(
                "{} all have state=active; exactly one key signs: mark the others retired (with retired-at) or next",
                names.join(", ")
            ));
            return Err(problems);
        }
    };
    let Some((_, meta)) = metas.iter().find(|(i, _)| *i == active).copied() else {
        return Err(problems);
    };
    let handover = handover_rules(keys, &metas, active, &meta, now, rules, &mut problems);
    if problems.is_empty() {
        Ok(Schedule {
            active,
            signs_from: meta.signs_from,
            handover,
            legacy: false,
        })
    } else {
        Err(problems)
    }
}

/// The fields each state takes.
fn field_rules(key: &str, meta: &Meta, problems: &mut Vec<String>) {
    match meta.state {
        State::Next if meta.signs_from.is_some() || meta.retired_at.is_some() => problems.push(format!(
            "{key} is next: signs-from belongs to the active key and retired-at to retired keys; remove them, or activate the key with `token-service keys activate`"
        )),
        State::Active if meta.retired_at.is_some() => problems.push(format!(
            "{key} is active but has retired-at: an active key signs; remove retired-at, or mark it retired"
        )),
        State::Retired if meta.retired_at.is_none() => problems.push(format!(
            "{key} is retired without retired-at: write when it stopped signing, so that it is known when it may be dropped"
        )),
        State::Retired if meta.signs_from.is_some() => problems.push(format!(
            "{key} is retired but has signs-from: a retired key signs no more; remove signs-from"
        )),
        _ => {}
    }
}

/// The rules of the active key's `signs-from` and of the key that signs until then; that
/// key's index.
fn handover_rules(
    keys: &[Entry<'_>],
    metas: &[(usize, Meta)],
    active: usize,
    meta: &Meta,
    now: i64,
    rules: &Rules,
    problems: &mut Vec<String>,
) -> Option<usize> {
    let key = name(keys, active);
    let from = meta.signs_from?;
    match meta.published_at {
        None => problems.push(format!(
            "{key} has signs-from but no published-at, so nothing shows that verifiers could see it before it signs: add the key as next with `token-service keys generate` first"
        )),
        Some(published) if from < published + rules.jwks_max_age => problems.push(format!(
            "{key} signs from {} but was published at {}: verifiers may cache the JWK Set for JWKS_MAX_AGE={} s, so signs-from must be {} or later",
            format_time(from),
            format_time(published),
            rules.jwks_max_age,
            format_time(published + rules.jwks_max_age)
        )),
        Some(_) => {}
    }
    let handover = metas
        .iter()
        .find(|(_, m)| m.state == State::Retired && m.retired_at == Some(from))
        .map(|(i, _)| *i);
    if now < from && handover.is_none() {
        problems.push(format!(
            "{key} signs from {} and no retired key has retired-at={} to sign until then: mark the key that signs now retired with that retired-at",
            format_time(from),
            format_time(from)
        ));
    }
    for (i, m) in metas {
        if m.state == State::Retired
            && m.retired_at.is_some_and(|at| at > now)
            && Some(*i) != handover
        {
            problems.push(format!(
                "{} has retired-at in the future ({}) but is not the key that signs until the active key's signs-from: a retired key signs no more; set retired-at to when it stopped signing",
                name(keys, *i),
                m.retired_at.map(format_time).unwrap_or_default()
            ));
        }
    }
    handover
}

/// Every rule `keys check` applies to the file alone: the load rules, and that each `next`
/// key says when it was published.
pub fn check(keys: &[Entry<'_>], now: i64, rules: &Rules) -> Vec<String> {
    let mut problems = schedule(keys, now, rules).err().unwrap_or_default();
    for (i, key) in keys.iter().enumerate() {
        if let Some(meta) = &key.meta
            && meta.state == State::Next
            && meta.published_at.is_none()
        {
            problems.push(format!(
                "{} is next without published-at: nothing shows when caches could first see it; `token-service keys generate` writes it",
                name(keys, i)
            ));
        }
    }
    problems
}

/// The rules of a reload from `old` (with the times this replica first published each of its
/// keys, `seen`) to `new` at `now`: a key may leave the file only when no token it signed can
/// still be presented, and a key may start signing (at once, or at a `signs-from` the new
/// file sets) only when this replica has published it for `JWKS_MAX_AGE` by then. A file without metadata keeps its old meaning and is
/// not held to the second rule.
///
/// `signed` holds, per old key, the last time this replica signed with it, if it did: a key
/// stays until then + the longest token lifetime + `JWKS_MAX_AGE` too, whatever its
/// `retired-at` says.
pub fn reload_problems(
    old: (&[Entry<'_>], &Schedule, &[i64]),
    signed: &[Option<i64>],
    new: (&[Entry<'_>], &Schedule),
    now: i64,
    rules: &Rules,
) -> Vec<String> {
    let (old_keys, old_schedule, seen) = old;
    let (new_keys, new_schedule) = new;
    let mut problems = Vec::new();
    let old_signer = old_schedule.signer_at(now);
    for (i, key) in old_keys.iter().enumerate() {
        if new_keys.iter().any(|k| k.kid == key.kid) {
            continue;
        }
        if i == old_signer {
            problems.push(format!(
                "the new file drops key {}, which signs now; mark it retired and activate another key first (`token-service keys activate`)",
                key.kid
            ));
        } else if let Some(until) = key
            .meta
            .as_ref()
            .and_then(|m| drop_after(m, rules))
            .max(
                signed
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|t| t + rules.longest_lifetime + rules.jwks_max_age),
            )
            .filter(|until| now < *until)
        {
            problems.push(format!(
                "the new file drops key {} before {}: tokens it signed may be presented until its retired-at (or the last time this replica signed with it) + the longest token lifetime ({} s) + JWKS_MAX_AGE ({} s); keep it until then (`token-service keys prune` drops keys when they may go)",
                key.kid,
                format_time(until),
                rules.longest_lifetime,
                rules.jwks_max_age
            ));
        }
    }
    let signer = new_schedule.signer_at(now);
    let kid = new_keys[signer].kid;
    let published = |kid: &str| {
        old_keys
            .iter()
            .position(|k| k.kid == kid)
            .and_then(|i| seen.get(i).copied())
    };
    if !new_schedule.legacy && kid != old_keys[old_signer].kid {
        if published(kid).is_none_or(|at| now < at + rules.jwks_max_age) {
            problems.push(format!(
                "the new file makes key {kid} sign at once, but this replica has not published it for JWKS_MAX_AGE ({} s): caches may not know it; add it as next first, then activate it with a signs-from in the future",
                rules.jwks_max_age
            ));
        }
    } else if let Some(problem) = scheduled_switch(old, new, now, rules, published) {
        problems.push(problem);
    }
    problems
}

/// A switch the new file schedules for later (an active key whose `signs-from` is in the
/// future, new or moved): by then this replica must have published that key for
/// `JWKS_MAX_AGE`, counted from when it first published it here (now, for a key new to it),
/// not from the file's `published-at`. An activation already in force is not judged again.
fn scheduled_switch(
    old: (&[Entry<'_>], &Schedule, &[i64]),
    new: (&[Entry<'_>], &Schedule),
    now: i64,
    rules: &Rules,
    published: impl Fn(&str) -> Option<i64>,
) -> Option<String> {
    let ((old_keys, old_schedule, _), (new_keys, new_schedule)) = (old, new);
    let from = new_schedule.signs_from.filter(|from| *from > now)?;
    let kid = new_keys.get(new_schedule.active)?.kid;
    let unchanged = old_keys
        .get(old_schedule.active)
        .is_some_and(|k| k.kid == kid)
        && old_schedule.signs_from == Some(from);
    if new_schedule.legacy || unchanged {
        return None;
    }
    let since = published(kid).unwrap_or(now);
    (from < since + rules.jwks_max_age).then(|| {
        format!(
            "the new file makes key {kid} sign from {}, but this replica has not published it for JWKS_MAX_AGE ({} s) by then (it publishes it since {}): caches may not know it; give it a signs-from of {} or later",
            format_time(from),
            rules.jwks_max_age,
            format_time(since),
            format_time(since + rules.jwks_max_age)
        )
    })
}

#[cfg(test)]
mod tests;
