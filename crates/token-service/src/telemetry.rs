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
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

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
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    // A second install (tests in one process) keeps the first subscriber.
    drop(result);
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
        if let Ok(now) = OffsetDateTime::now_utc().format(&Rfc3339) {
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
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Ok(mut w) = self.writer.lock() {
            let _ = w.write_all(text.as_bytes());
            let _ = w.flush();
        }
    }
}
