//! `keys show` and `keys check`.

use std::process::ExitCode;

use super::{FileArgs, Settings, cannot, file_of, replicas};
use crate::signer::local::keyfile::format_time;
use crate::signer::local::set::KeySet;
use crate::signer::local::states::{self, Entry};

/// The key set of `pem` and the rules of the key states it breaks (none when it keeps them
/// all), or why it is no key set.
pub(in crate::cli) fn judge(
    pem: &[u8],
    now: i64,
    rules: &states::Rules,
) -> Result<(KeySet, Vec<String>), Vec<String>> {
    let set = KeySet::parse(pem, now, rules)?;
    let infos = set.infos();
    let entries: Vec<Entry<'_>> = infos
        .iter()
        .map(|i| Entry {
            kid: &i.kid,
            meta: i.meta,
        })
        .collect();
    let broken = states::check(&entries, now, rules);
    Ok((set, broken))
}

/// A time, or `-`.
fn time(t: Option<i64>) -> String {
    t.map_or_else(|| "-".into(), format_time)
}

/// `show`: the keys, which signs now and from when the next does, and the replicas' sets.
pub fn show(args: &FileArgs, settings: &Settings, now: i64) -> ExitCode {
    let path = match file_of(args, settings) {
        Ok(path) => path,
        Err(e) => return cannot(&e),
    };
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) => return cannot(&format!("cannot read '{}': {e}", path.display())),
    };
    let set = match KeySet::parse(&pem, now, &settings.rules) {
        Ok(set) => set,
        Err(problems) => {
            for p in problems {
                println!("'{}': {p}", path.display());
            }
            return ExitCode::from(1);
        }
    };
    let rules = &settings.rules;
    println!(
        "{}: {} key(s); JWKS_MAX_AGE {} s, longest token lifetime {} s",
        path.display(),
        set.infos().len(),
        rules.jwks_max_age,
        rules.longest_lifetime
    );
    println!("{}", set.summary(now));
    let signer = set.schedule().signer_at(now);
    println!(
        "{:<44}  {:<5}  {:<9}  {:<20}  {:<20}  {:<20}  MAY-BE-DROPPED-AFTER",
        "KID", "ALG", "STATE", "PUBLISHED-AT", "SIGNS-FROM", "RETIRED-AT"
    );
    for (i, info) in set.infos().iter().enumerate() {
        let mut state = info.meta.map_or("published", |m| m.state.name()).to_owned();
        if i == signer {
            state.push('*');
        }
        let meta = info.meta;
        println!(
            "{:<44}  {:<5}  {:<9}  {:<20}  {:<20}  {:<20}  {}",
            info.kid,
            info.alg,
            state,
            time(meta.and_then(|m| m.published_at)),
            time(meta.and_then(|m| m.signs_from)),
            time(meta.and_then(|m| m.retired_at)),
            time(meta.and_then(|m| states::drop_after(&m, rules)))
        );
    }
    println!("(* signs now)");
    for (replica, answer) in replicas::published(args) {
        match answer {
            Ok(kids) => println!("replica {replica} publishes: {}", kids.join(", ")),
            Err(e) => println!("replica {replica} could not be asked: {e}"),
        }
    }
    ExitCode::SUCCESS
}

/// `check`: every rule, one line per broken one.
pub fn check(args: &FileArgs, settings: &Settings, now: i64) -> ExitCode {
    let path = match file_of(args, settings) {
        Ok(path) => path,
        Err(e) => return cannot(&e),
    };
    let shown = path.display();
    let mut problems = Vec::new();
    match crate::signer::local::files::check_key_file(&path) {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) => return cannot(&format!("cannot read '{shown}': {e}")),
    };
    match judge(&pem, now, &settings.rules) {
        Ok((set, broken)) => {
            problems.extend(broken.into_iter().map(|p| format!("'{shown}': {p}")));
            problems.extend(replicas::missing(args, &set.infos()));
            if problems.is_empty() {
                println!("'{shown}': the keys keep every rule: {}", set.summary(now));
            }
        }
        Err(found) => problems.extend(found.into_iter().map(|p| format!("'{shown}': {p}"))),
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
