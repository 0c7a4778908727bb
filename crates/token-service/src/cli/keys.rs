//! `keys`: the local signing keys of `SIGNING_KEY_FILE` and their states (`next`, `active`,
//! `retired`; see `signer/local/states.rs`). `generate` prints a new key as a `next` key,
//! `show` lists which key signs and which are published, `check` applies every rule (exit 1
//! with one line per broken rule), `activate` makes a next key sign from a time every replica
//! reads alike, `prune` drops the retired keys no token can need any more. With `--replica
//! URL`, `show`, `check` and `activate` fetch each replica's JWK Set: every replica must
//! publish every key of the file before the new key signs.
//! Exit status: 0 fine, 1 a rule is broken, 2 the command cannot run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::clock::Clock;
use crate::config::reader::Reader;
use crate::config::source::Values;
use crate::signer::local::keyfile::{self, Meta, State, format_time};
use crate::signer::local::set::{KeyInfo, KeySet};
use crate::signer::local::states::{self, Rules};

mod replicas;
mod show;

pub(super) use show::judge;

/// `keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Print a new private key (PEM) with its metadata line, as a next key published now:
    /// append it to SIGNING_KEY_FILE (`token-service keys generate >> keys.pem`).
    Generate {
        /// An EC P-256 key (ES256) instead of RSA-2048 (RS256; the one every cloud accepts).
        #[arg(long)]
        ec: bool,
        /// Mark it active (the first key of a new file) instead of next.
        #[arg(long)]
        active: bool,
    },
    /// Show the keys of SIGNING_KEY_FILE: which signs now (and from when the next one does),
    /// which are published, their states and times, and when retired keys may be dropped.
    Show(FileArgs),
    /// Check SIGNING_KEY_FILE against the rules of the key states (and, with --replica, that
    /// every replica publishes every key); one line per broken rule, exit status 1.
    Check(FileArgs),
    /// Make a next key the active key from a time JWKS_MAX_AGE or more after it was published
    /// (the key that signs now is retired at that time), and print the new file, or write it
    /// with --write.
    Activate {
        /// The key ID to activate (default: the one next key). A key ID may start with '-':
        /// write `--kid=KID`.
        #[arg(long, value_name = "KID")]
        kid: Option<String>,
        /// Seconds from now until the key signs (default: JWKS_MAX_AGE + 60; minimum:
        /// JWKS_MAX_AGE, and never before its published-at + JWKS_MAX_AGE).
        #[arg(long = "in", value_name = "SECONDS")]
        delay: Option<u64>,
        /// Rewrite SIGNING_KEY_FILE in place (atomically, mode 0600) instead of printing.
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        file: FileArgs,
    },
    /// Drop the retired keys whose retired-at + the longest token lifetime + JWKS_MAX_AGE has
    /// passed, and print the new file, or write it with --write.
    Prune {
        /// Rewrite SIGNING_KEY_FILE in place (atomically, mode 0600) instead of printing.
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        file: FileArgs,
    },
}

/// Which file, and which replicas to ask.
#[derive(Debug, Clone, clap::Args)]
pub struct FileArgs {
    /// The key file (default: SIGNING_KEY_FILE of the settings).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A replica's base URL (repeatable): its /.well-known/jwks.json is fetched and must
    /// publish every key of the file.
    #[arg(long, value_name = "URL")]
    pub replica: Vec<String>,
    /// CA certificates (PEM) trusted besides the system's roots for the replicas' TLS.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// What the commands read from the settings.
#[derive(Debug)]
pub(super) struct Settings {
    /// `SIGNING_KEY_FILE`.
    pub(super) file: Option<PathBuf>,
    /// The rules the key states follow.
    pub(super) rules: Rules,
}

/// `SIGNING_KEY_FILE` and the rules, or the settings' problems.
pub(super) fn settings(values: &Values) -> Result<Settings, Vec<String>> {
    let mut r = Reader::new(values);
    let file = r.path(&crate::signer::settings::SIGNING_KEY_FILE);
    let max_age = r.seconds(&crate::issuer::settings::JWKS_MAX_AGE).as_secs();
    let validity = r.seconds(&crate::issuer::settings::VALIDITY).as_secs();
    let audiences: Vec<i64> = r
        .list(&crate::issuer::settings::AUDIENCE_VALIDITY)
        .iter()
        .filter_map(|item| item.rsplit_once('=')?.1.trim().parse::<i64>().ok())
        .map(|minutes| minutes.saturating_mul(60))
        .collect();
    let policy = r.path(&crate::policy::settings::FILE).is_some();
    let (errors, _, _) = r.finish();
    if !errors.is_empty() {
        return Err(errors.iter().map(ToString::to_string).collect());
    }
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    Ok(Settings {
        file,
        rules: Rules {
            jwks_max_age: secs(max_age),
            longest_lifetime: states::longest_lifetime(secs(validity), audiences, policy),
        },
    })
}

/// What `check-config` prints about `SIGNING_KEY_FILE`: which key signs, which are published
/// and in which state, and when a pending activation takes effect.
pub fn describe(config: &crate::config::Config) -> Vec<String> {
    let crate::config::SignerConfig::Local {
        key_file: Some(path),
        ..
    } = &config.signer
    else {
        return Vec::new();
    };
    let rules = crate::app::key_rules(config);
    let now = Clock::system().now();
    let Ok(set) = std::fs::read(path)
        .map_err(|e| vec![e.to_string()])
        .and_then(|pem| KeySet::parse(&pem, now, &rules))
    else {
        return Vec::new();
    };
    let mut lines = vec![format!("signing keys: {}", set.summary(now))];
    for info in set.infos() {
        let meta = info.meta;
        let mut line = format!(
            "signing key {} ({}): {}",
            info.kid,
            info.alg,
            meta.map_or("published (no metadata line)", |m| m.state.name())
        );
        for (name, t) in [
            ("published-at", meta.and_then(|m| m.published_at)),
            ("signs-from", meta.and_then(|m| m.signs_from)),
            ("retired-at", meta.and_then(|m| m.retired_at)),
            (
                "may be dropped after",
                meta.and_then(|m| states::drop_after(&m, &rules)),
            ),
        ] {
            if let Some(t) = t {
                line.push_str(&format!(", {name} {}", format_time(t)));
            }
        }
        lines.push(line);
    }
    lines
}

/// Why a command cannot run (exit status 2).
fn cannot(problem: &str) -> ExitCode {
    eprintln!("error: {problem}");
    ExitCode::from(2)
}

/// Runs a `keys` subcommand with the settings `values`.
pub fn run(command: &KeysCommand, values: &Values) -> ExitCode {
    let settings = match settings(values) {
        Ok(settings) => settings,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return ExitCode::from(2);
        }
    };
    let now = Clock::system().now();
    match command {
        KeysCommand::Generate { ec, active } => generate(*ec, *active, now),
        KeysCommand::Show(args) => show::show(args, &settings, now),
        KeysCommand::Check(args) => show::check(args, &settings, now),
        KeysCommand::Activate {
            kid,
            delay,
            write,
            file,
        } => activate(kid.as_deref(), *delay, *write, file, &settings, now),
        KeysCommand::Prune { write, file } => prune(*write, file, &settings, now),
    }
}

/// `generate`: a new key with its metadata line on standard output.
fn generate(ec: bool, active: bool, now: i64) -> ExitCode {
    let pem = match crate::signer::local::generate_key_pem(ec) {
        Ok(pem) => pem,
        Err(e) => return cannot(e),
    };
    let meta = Meta {
        state: if active { State::Active } else { State::Next },
        published_at: Some(now),
        signs_from: None,
        retired_at: None,
    };
    let info = KeySet::parse(pem.as_bytes(), now, &Rules::default())
        .ok()
        .and_then(|set| set.infos().into_iter().next());
    let (kid, alg) = info.map_or((String::new(), ""), |i| (i.kid, i.alg));
    print!("# kid: {kid} ({alg})\n{}\n{pem}", keyfile::meta_line(&meta));
    eprintln!(
        "generated {alg} key {kid} as {}, published from {}",
        meta.state.name(),
        format_time(now)
    );
    ExitCode::SUCCESS
}

/// The key file's path: `--file`, else `SIGNING_KEY_FILE`.
fn file_of(args: &FileArgs, settings: &Settings) -> Result<PathBuf, String> {
    args.file
        .clone()
        .or_else(|| settings.file.clone())
        .ok_or_else(|| {
            "no key file: set SIGNING_KEY_FILE (environment or --config) or pass --file FILE".into()
        })
}

/// The file's text and its blocks.
fn read_blocks(path: &Path) -> Result<(Vec<u8>, Vec<keyfile::Block>), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let blocks = keyfile::parse(&pem).map_err(|e| format!("'{}': {e}", path.display()))?;
    Ok((pem, blocks))
}

/// Prints the new file, or writes it over `path`.
fn emit(text: &str, write: bool, path: &Path, what: &str) -> ExitCode {
    if !write {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    match crate::signer::local::rewrite_atomic(path, text.as_bytes(), "SIGNING_KEY_FILE") {
        Ok(()) => {
            eprintln!("{what}; wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => cannot(&e.to_string()),
    }
}

/// The new metadata of `activate`: `kid` active from `at`, the key that signs now retired
/// then.
fn activated(
    infos: &[KeyInfo],
    set: &KeySet,
    kid: Option<&str>,
    delay: Option<u64>,
    rules: &Rules,
    now: i64,
) -> Result<(usize, usize, i64), String> {
    let target = match kid {
        Some(kid) => infos.iter().position(|i| i.kid == kid).ok_or_else(|| {
            format!("no key {kid} in the file; `token-service keys show` lists them")
        })?,
        None => {
            let next: Vec<usize> = (0..infos.len())
                .filter(|i| infos[*i].meta.is_some_and(|m| m.state == State::Next))
                .collect();
            match next.as_slice() {
                [one] => *one,
                [] => return Err(
                    "no next key in the file: add one with `token-service keys generate >> FILE`"
                        .into(),
                ),
                _ => return Err("several next keys: name the one to activate (KID)".into()),
            }
        }
    };
    let meta = infos[target].meta;
    let published = match meta {
        Some(m) if m.state == State::Next => m.published_at.ok_or_else(|| format!("key {} has no published-at, so nothing shows when caches could first see it; generate a new key with `token-service keys generate`", infos[target].kid))?,
        _ => return Err(format!("key {} is not next: only a next key is activated", infos[target].kid)),
    };
    if set.schedule().signs_from.is_some_and(|from| now < from) {
        return Err("an activation is pending (the active key's signs-from is in the future): wait until it signs".into());
    }
    // Replicas that publish the key now may each have begun just before: caches that fetched
    // their JWK Set earlier know it JWKS_MAX_AGE from now at the earliest.
    let default = u64::try_from(rules.jwks_max_age).unwrap_or(0) + 60;
    let asked = i64::try_from(delay.unwrap_or(default)).unwrap_or(i64::MAX);
    let from = now
        .saturating_add(asked.max(rules.jwks_max_age))
        .max(published.saturating_add(rules.jwks_max_age));
    let signer = set.schedule().signer_at(now);
    Ok((target, signer, from))
}

/// `activate`: the next key signs from a time every replica reads alike.
fn activate(
    kid: Option<&str>,
    delay: Option<u64>,
    write: bool,
    args: &FileArgs,
    settings: &Settings,
    now: i64,
) -> ExitCode {
    let path = match file_of(args, settings) {
        Ok(path) => path,
        Err(e) => return cannot(&e),
    };
    let (pem, mut blocks) = match read_blocks(&path) {
        Ok(read) => read,
        Err(e) => return cannot(&e),
    };
    let set = match KeySet::parse(&pem, now, &settings.rules) {
        Ok(set) => set,
        Err(problems) => return cannot(&format!("'{}': {}", path.display(), problems.join("; "))),
    };
    let infos = set.infos();
    let (target, signer, from) = match activated(&infos, &set, kid, delay, &settings.rules, now) {
        Ok(plan) => plan,
        Err(e) => return cannot(&e),
    };
    if !args.replica.is_empty() {
        let missing = replicas::missing(args, &infos);
        if !missing.is_empty() {
            for line in &missing {
                println!("{line}");
            }
            return ExitCode::from(1);
        }
    }
    let keys: Vec<&mut keyfile::Block> = blocks
        .iter_mut()
        .filter(|b| b.kind == rustls_pki_types::pem::SectionKind::PrivateKey)
        .collect();
    for (i, block) in keys.into_iter().enumerate() {
        if i == target {
            let published_at = block.meta.and_then(|m| m.published_at);
            block.meta = Some(Meta {
                state: State::Active,
                published_at,
                signs_from: Some(from),
                retired_at: None,
            });
        } else if i == signer {
            let published_at = block.meta.and_then(|m| m.published_at);
            block.meta = Some(Meta {
                state: State::Retired,
                published_at,
                signs_from: None,
                retired_at: Some(from),
            });
        }
    }
    let what = format!(
        "key {} signs from {}; key {} is retired then",
        infos[target].kid,
        format_time(from),
        infos[signer].kid
    );
    if !write {
        eprintln!("{what}");
    }
    emit(&keyfile::render(&blocks), write, &path, &what)
}

/// `prune`: drop the retired keys that may go.
fn prune(write: bool, args: &FileArgs, settings: &Settings, now: i64) -> ExitCode {
    let path = match file_of(args, settings) {
        Ok(path) => path,
        Err(e) => return cannot(&e),
    };
    let (_, blocks) = match read_blocks(&path) {
        Ok(read) => read,
        Err(e) => return cannot(&e),
    };
    let (dropped, kept): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|b| {
        b.meta
            .as_ref()
            .and_then(|m| states::drop_after(m, &settings.rules))
            .is_some_and(|until| until <= now)
    });
    let what = format!("dropped {} retired key(s)", dropped.len());
    if !write {
        eprintln!("{what}");
    }
    emit(&keyfile::render(&kept), write, &path, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const RULES: Rules = Rules {
        jwks_max_age: 300,
        longest_lifetime: 600,
    };

    /// An active key and a next key published long ago.
    fn set() -> KeySet {
        let key = || crate::signer::local::generate_key_pem(true).unwrap();
        let next = Meta {
            state: State::Next,
            published_at: Some(NOW - 10_000),
            signs_from: None,
            retired_at: None,
        };
        let pem = format!(
            "{}\n{}{}\n{}",
            keyfile::MARKER.to_owned() + " state=active",
            key(),
            keyfile::meta_line(&next),
            key()
        );
        KeySet::parse(pem.as_bytes(), NOW, &RULES).unwrap()
    }

    /// Replicas checked now may each have begun publishing the next key just before: it
    /// signs no sooner than JWKS_MAX_AGE from now, whatever `--in` asks, and a huge `--in`
    /// neither wraps around nor panics.
    #[test]
    fn an_activation_is_never_sooner_than_jwks_max_age_from_now() {
        let set = set();
        let infos = set.infos();
        for delay in [0, 1, 299] {
            let (target, signer, from) =
                activated(&infos, &set, None, Some(delay), &RULES, NOW).unwrap();
            assert_eq!((target, signer), (1, 0));
            assert_eq!(from, NOW + RULES.jwks_max_age, "--in {delay}");
        }
        let (_, _, from) = activated(&infos, &set, None, None, &RULES, NOW).unwrap();
        assert_eq!(from, NOW + RULES.jwks_max_age + 60);
        for delay in [u64::MAX, i64::MAX as u64] {
            let (_, _, from) = activated(&infos, &set, None, Some(delay), &RULES, NOW).unwrap();
            assert!(from > NOW + RULES.jwks_max_age, "--in {delay}: {from}");
        }
    }
}
