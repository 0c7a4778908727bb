//! Deny-list files (`DenyList::parse`) of both kinds, and the fingerprint and serial spellings
//! they share with policy `match` conditions.
//!
//! Input: byte 0 picks the kind (bit 0), the rest is the file's text.
//!
//! Properties: never panics; when a list parses, every entry it was written with is found by
//! `contains`, and it holds no more entries than the file has lines.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use token_service::testing::policy::deny_list::{DenyList, Kind};

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let kind = if config & 1 == 0 {
        Kind::Fingerprints
    } else {
        Kind::Serials
    };
    let Ok(list) = DenyList::parse(kind, Path::new("fuzz/deny.txt"), text) else {
        return;
    };
    assert_eq!(list.kind(), kind);
    assert!(list.len() <= text.lines().count());
    for line in text.lines() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if !entry.is_empty() {
            assert!(
                list.contains(entry),
                "{kind:?} list lacks its entry {entry:?}"
            );
        }
    }
});
