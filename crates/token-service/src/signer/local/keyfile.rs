//! The key file's text: PEM blocks of PKCS#8 keys, each optionally preceded by one metadata line
//! `# token-service: state=STATE [published-at=TIME] [signs-from=TIME] [retired-at=TIME]` (times
//! in RFC 3339, UTC). PEM parsers ignore text outside the blocks (RFC 7468 §5.2's explanatory
//! text), so such a file still reads as a plain key file elsewhere. Other text lines are kept as
//! comments when the file is rewritten. Parsing and rendering only; what the states mean is
//! `states.rs`'s. Uses nothing of ours.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::SectionKind;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The prefix of a metadata line.
pub const MARKER: &str = "# token-service:";

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Published, never signs: announced ahead of its use.
    Next,
    /// Signs (from `signs-from`, when given); at most one key.
    Active,
    /// Published, no longer signs (after `retired-at`); kept until no token it signed can
    /// still be presented.
    Retired,
}

impl State {
    /// The name written in the file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// One key's metadata line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `state`.
    pub state: State,
    /// `published-at`: when the key was first put into the file (Unix seconds).
    pub published_at: Option<i64>,
    /// `signs-from`: when the active key starts signing.
    pub signs_from: Option<i64>,
    /// `retired-at`: when a retired key stopped (or stops) signing.
    pub retired_at: Option<i64>,
}

/// One PEM block of the file.
#[derive(Debug, Clone)]
pub struct Block {
    /// Its position among the file's PEM blocks, from 1.
    pub number: usize,
    /// What the block holds.
    pub kind: SectionKind,
    /// Its DER bytes.
    pub der: Vec<u8>,
    /// Its metadata line, when it has one.
    pub meta: Option<Meta>,
    /// The other text lines before it (kept when the file is rewritten).
    pub comments: Vec<String>,
}

/// What is wrong with the file's text, as a phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadFile(pub String);

/// The PEM blocks of `pem` with their metadata lines.
pub fn parse(pem: &[u8]) -> Result<Vec<Block>, BadFile> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| BadFile("not a readable PEM file (it is not UTF-8 text)".into()))?;
    let preambles = preambles(text)?;
    let mut reader = pem;
    let mut blocks = Vec::new();
    loop {
        let section = rustls_pki_types::pem::from_buf(&mut reader)
            .map_err(|e| BadFile(format!("not a readable PEM file ({e})")))?;
        let Some((kind, der)) = section else { break };
        let number = blocks.len() + 1;
        let (meta, comments) = preambles.get(blocks.len()).cloned().ok_or_else(|| {
            BadFile(format!(
                "PEM block {number} does not start with a -----BEGIN line"
            ))
        })?;
        if meta.is_some() && kind != SectionKind::PrivateKey {
            return Err(BadFile(format!(
                "PEM block {number} is not a 'PRIVATE KEY' block, but a '{MARKER}' line precedes it; metadata lines describe keys only"
            )));
        }
        blocks.push(Block {
            number,
            kind,
            der,
            meta,
            comments,
        });
    }
    if blocks.len() != preambles.len() {
        return Err(BadFile(format!(
            "{} PEM blocks were read but {} -----BEGIN lines found; start each -----BEGIN and -----END line at the beginning of its line",
            blocks.len(),
            preambles.len()
        )));
    }
    Ok(blocks)
}

type Preamble = (Option<Meta>, Vec<String>);

/// The metadata line and the other text lines before each `-----BEGIN` line, in order.
fn preambles(text: &str) -> Result<Vec<Preamble>, BadFile> {
    let mut found = Vec::new();
    let mut meta: Option<(usize, Meta)> = None;
    let mut comments = Vec::new();
    let mut inside = false;
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let trimmed = line.trim();
        if inside {
            inside = !trimmed.starts_with("-----END ");
            continue;
        }
        if let Some(label) = trimmed.strip_prefix("-----BEGIN ") {
            inside = true;
            // The PEM reader skips blocks of labels it does not know (`EC PARAMETERS`, ...),
            // so they have no preamble either; a metadata line cannot describe one.
            let label = label.strip_suffix("-----").unwrap_or(label);
            if SectionKind::try_from(label.as_bytes()).is_err() {
                if let Some((at, _)) = meta {
                    return Err(BadFile(format!(
                        "line {at}: the '{MARKER}' line precedes a '{label}' block, which is no key; metadata lines describe keys only"
                    )));
                }
                comments.clear();
                continue;
            }
            found.push((meta.take().map(|(_, m)| m), std::mem::take(&mut comments)));
        } else if let Some(rest) = trimmed.strip_prefix(MARKER) {
            if let Some((first, _)) = meta {
                return Err(BadFile(format!(
                    "line {line_number}: a second '{MARKER}' line for one key (the first is line {first}); keep one line per key"
                )));
            }
            let parsed =
                parse_meta(rest).map_err(|e| BadFile(format!("line {line_number}: {e}")))?;
            meta = Some((line_number, parsed));
        } else if !trimmed.is_empty() {
            comments.push(line.to_owned());
        }
    }
    if let Some((line_number, _)) = meta {
        return Err(BadFile(format!(
            "line {line_number}: the '{MARKER}' line is followed by no key; put it right before the key's -----BEGIN PRIVATE KEY----- line"
        )));
    }
    Ok(found)
}

/// `state=... published-at=...` (after the marker).
pub fn parse_meta(text: &str) -> Result<Meta, String> {
    let mut state = None;
    let (mut published_at, mut signs_from, mut retired_at) = (None, None, None);
    for item in text.split_whitespace() {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!(
                "'{item}' is not NAME=VALUE; expected state=next|active|retired and published-at=, signs-from=, retired-at= with RFC 3339 times"
            ));
        };
        let slot = match name {
            "state" => {
                let parsed = match value {
                    "next" => State::Next,
                    "active" => State::Active,
                    "retired" => State::Retired,
                    _ => {
                        return Err(format!(
                            "state '{value}' is not one of next, active, retired"
                        ));
                    }
                };
                if state.replace(parsed).is_some() {
                    return Err("state is given twice".into());
                }
                continue;
            }
            "published-at" => &mut published_at,
            "signs-from" => &mut signs_from,
            "retired-at" => &mut retired_at,
            _ => {
                return Err(format!(
                    "unknown field '{name}'; the fields are state, published-at, signs-from, retired-at"
                ));
            }
        };
        let time = parse_time(value).ok_or_else(|| {
            format!("{name} '{value}' is not an RFC 3339 time such as 2026-12-04T19:00:00Z")
        })?;
        if slot.replace(time).is_some() {
            return Err(format!("{name} is given twice"));
        }
    }
    let state = state.ok_or("no state=next|active|retired")?;
    Ok(Meta {
        state,
        published_at,
        signs_from,
        retired_at,
    })
}

/// An RFC 3339 time as Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Unix seconds as an RFC 3339 UTC time (`2026-12-04T19:00:00Z`).
pub fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// The metadata line of `meta`.
pub fn meta_line(meta: &Meta) -> String {
    let mut line = format!("{MARKER} state={}", meta.state.name());
    for (name, time) in [
        ("published-at", meta.published_at),
        ("signs-from", meta.signs_from),
        ("retired-at", meta.retired_at),
    ] {
        if let Some(time) = time {
            line.push_str(&format!(" {name}={}", format_time(time)));
        }
    }
    line
}

/// A PKCS#8 key's PEM block.
pub fn pem_block(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// The file's text for `blocks`: each block's comments, its metadata line, the block. Blocks
/// other than private keys keep their label-less content out: only keys are written.
pub fn render(blocks: &[Block]) -> String {
    let mut text = String::new();
    for block in blocks.iter().filter(|b| b.kind == SectionKind::PrivateKey) {
        for comment in &block.comments {
            text.push_str(comment);
            text.push('\n');
        }
        if let Some(meta) = &block.meta {
            text.push_str(&meta_line(meta));
            text.push('\n');
        }
        text.push_str(&pem_block(&block.der));
    }
    text
}
