//! Logs: one JSON object per line on stdout in Cloud Logging's structured format
//! (`severity`, `message`, `time`, `logging.googleapis.com/labels`,
//! `logging.googleapis.com/trace`), or human-readable lines with `LOG_FORMAT=text`.
//!
//! Event fields become labels. A field named `labels` carries a JSON object whose members are
//! merged into the labels (for label names only known at run time, such as `header/<name>`).
//! The `trace` field of the enclosing `request` span becomes the trace.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

pub(crate) mod settings;
pub use settings::LogSettings;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Cloud Logging JSON lines.
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

/// Where log lines go.
pub type SharedWriter = Arc<Mutex<dyn Write + Send>>;

/// Installs the global subscriber writing to stdout.
pub fn init(format: LogFormat, filter: &str) {
    let writer: SharedWriter = Arc::new(Mutex::new(std::io::stdout()));
    install(format, filter, writer);
}

/// Installs the global subscriber writing to `writer` (tests pass a buffer).
pub fn install(format: LogFormat, filter: &str, writer: SharedWriter) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(CloudLoggingLayer { writer })
            .try_init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(text_layer(
                writer,
                std::io::IsTerminal::is_terminal(&std::io::stdout()),
            ))
            .try_init(),
    };
    // A second install (tests in one process) keeps the first subscriber.
    drop(result);
}

/// The human-readable layer (`LOG_FORMAT=text`). Every field value and the message pass
/// through [`escape_controls`], so a newline or terminal escape inside a certificate fact or a
/// header cannot forge or hide a log line; `ansi` colours only the level.
fn text_layer<S>(writer: SharedWriter, ansi: bool) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use std::fmt::Write as _;
    use tracing_subscriber::field::MakeExt as _;
    let fields = tracing_subscriber::fmt::format::debug_fn(|out, field, value| {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        let text = escape_controls(&text);
        match field.name() {
            "message" => write!(out, "{text}"),
            name => write!(out, "{name}={text}"),
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .fmt_fields(fields)
        .with_writer(move || LineWriter(writer.clone()))
}

/// Writes each formatted line to the shared writer in one piece.
struct LineWriter(SharedWriter);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut w) => w.write_all(buf),
            Err(_) => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut w) => w.flush(),
            Err(_) => Ok(()),
        }
    }
}

/// `text` with every control character (C0, DEL, C1: newline, carriage return, ESC...) and
/// every invisible line or direction mark (U+2028, U+2029, bidirectional overrides) written as
/// an escape: `\n`, `\r`, `\t`, or `\u{1b}`. Backslashes stay as they are.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || invisible(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || invisible(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// serde_json escapes U+0000 to U+001F; this escapes the other characters that
/// [`escape_controls`] does (DEL, C1 controls such as the 8-bit CSI U+009B, line separators,
/// direction overrides) as `\\uXXXX`, so a terminal showing the JSON line cannot be steered
/// either. They can only occur inside JSON strings, where the escape means the same character.
fn json_escape_invisible(json: String) -> String {
    if !json.chars().any(|c| c.is_control() || invisible(c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_control() || invisible(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that move or hide text without being control characters.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{61c}'
    ) || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// The Cloud Logging JSON layer.
pub struct CloudLoggingLayer {
    writer: SharedWriter,
}

struct Trace(String);

#[derive(Default)]
struct Fields {
    message: String,
    labels: Map<String, Value>,
    trace: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, name: &str, value: String) {
        match name {
            "message" => self.message = value,
            "trace" => self.trace = Some(value).filter(|t| !t.is_empty()),
            "labels" => {
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&value) {
                    self.labels.extend(map);
                }
            }
            _ => {
                self.labels.insert(name.to_owned(), Value::String(value));
            }
        }
    }
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S> Layer<S> for CloudLoggingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(trace), Some(span)) = (fields.trace, ctx.span(id)) {
            span.extensions_mut().insert(Trace(trace));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let trace = fields.trace.clone().or_else(|| {
            ctx.event_scope(event)?
                .find_map(|span| span.extensions().get::<Trace>().map(|t| t.0.clone()))
        });
        let mut line = Map::new();
        line.insert("severity".into(), severity(event.metadata().level()).into());
        line.insert("message".into(), Value::String(fields.message));
        if let Ok(now) = crate::clock::utc_now().format(&Rfc3339) {
            line.insert("time".into(), Value::String(now));
        }
        if !fields.labels.is_empty() {
            line.insert(
                "logging.googleapis.com/labels".into(),
                Value::Object(fields.labels),
            );
        }
        if let Some(trace) = trace {
            line.insert("logging.googleapis.com/trace".into(), Value::String(trace));
        }
        let mut text = json_escape_invisible(Value::Object(line).to_string());
        text.push('\n');
        if let Ok(mut w) = self.writer.lock() {
            let _ = w.write_all(text.as_bytes());
            let _ = w.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    /// What one event with hostile text in the message, a field and a span field becomes.
    fn logged(format: LogFormat) -> String {
        let buffer: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let writer: SharedWriter = buffer.clone();
        let hostile =
            "dev.example\nERROR forged line\r\u{1b}[2K\u{1b}[31mred\u{7f}\u{85}\u{2028}\u{202e}";
        let emit = || {
            let span = tracing::info_span!("request", path = %hostile);
            let _entered = span.enter();
            tracing::warn!(
                event = "token_issued",
                client_id = %hostile,
                spiffe = hostile,
                "issued a token to client '{hostile}'"
            );
        };
        match format {
            LogFormat::Text => {
                let subscriber = tracing_subscriber::registry().with(text_layer(writer, false));
                tracing::subscriber::with_default(subscriber, emit);
            }
            LogFormat::Json => {
                let subscriber = tracing_subscriber::registry().with(CloudLoggingLayer { writer });
                tracing::subscriber::with_default(subscriber, emit);
            }
        }
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn text_logs_escape_control_characters_in_the_message_and_every_field() {
        let text = logged(LogFormat::Text);
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(text.ends_with('\n'));
        let line = text.trim_end_matches('\n');
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{202e}'),
            "{line:?}"
        );
        // The message, the Display field and the span field are escaped; the str field is
        // Debug-quoted as before.
        assert_eq!(
            line.matches("dev.example\\nERROR forged line\\r\\u{1b}[2K")
                .count(),
            4,
            "{line}"
        );
        assert!(line.contains("\\u{2028}\\u{202e}"), "{line}");
        assert!(line.contains("client_id=dev.example"), "{line}");
    }

    #[test]
    fn json_logs_escape_control_characters_through_serde() {
        let text = logged(LogFormat::Json);
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        let line = text.trim_end_matches('\n');
        assert!(
            !line.chars().any(|c| c.is_control() || invisible(c)),
            "{line:?}"
        );
        let value: Value = serde_json::from_str(line).unwrap();
        assert!(
            value["message"]
                .as_str()
                .unwrap()
                .contains("example\nERROR forged")
        );
        assert!(
            value["logging.googleapis.com/labels"]["client_id"]
                .as_str()
                .unwrap()
                .contains("\u{1b}[31mred\u{7f}\u{85}\u{2028}\u{202e}")
        );
    }

    #[test]
    fn escape_controls_leaves_plain_text_and_backslashes_alone() {
        assert!(matches!(
            escape_controls("spiffe://a/b c\\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(escape_controls("a\tb\u{0}c\u{9b}d"), "a\\tb\\u{0}c\\u{9b}d");
    }
}
