//! `cloud-run-kit`: what a Cloud Run process needs from its surroundings, written once for the worker and for
//! mock-chart-img (both run as Cloud Run–style servers and are read by the same log queries).
//!
//! - [`CloudLoggingLayer`]: a `tracing` layer writing one Cloud Logging JSON object a line (`severity`, `time`,
//!   the fields of the event's spans, `message`, the event's own fields, `target`) — the shape Cloud Logging parses
//!   from stdout/stderr into structured entries.
//! - [`CaptureWriter`]: a `MakeWriter` into a shared buffer, for tests that read the lines back.
//! - [`shutdown_signal`]: resolves on SIGTERM (Cloud Run's stop signal) or Ctrl-C.
//! - [`service`]: the `PORT` rule and the probe of a `healthcheck` subcommand, for servers run as container services.

pub mod service;

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// Cloud Logging's severity names.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Span fields, stored in the span's extensions when it is created and updated by `Span::record`.
struct SpanFields(Map<String, Value>);

/// A `tracing` layer writing Cloud Logging JSON lines to `W`, one `write_all` a line (so a non-blocking writer
/// never splits one).
#[derive(Debug)]
pub struct CloudLoggingLayer<W> {
    make_writer: W,
}

impl<W> CloudLoggingLayer<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for CloudLoggingLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(f) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut f.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("severity".into(), severity(meta.level()).into());
        line.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &f.0 {
                        // An empty span field (a stepId not known yet) says nothing; leave it out.
                        if v.as_str() != Some("") {
                            line.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        line.extend(fields);
        line.insert("target".into(), meta.target().into());
        let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        bytes.push(b'\n');
        let _ = self.make_writer.make_writer().write_all(&bytes);
    }
}

/// A `MakeWriter` into a shared buffer: tests capture the logs of a whole run with it.
#[derive(Clone, Default)]
pub struct CaptureWriter(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CaptureWriter {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Write for CaptureWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CaptureWriter {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> CaptureWriter {
        self.clone()
    }
}

/// Resolves on SIGTERM (Cloud Run's stop signal) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_carry_severity_message_event_and_span_fields() {
        let buf = CaptureWriter::default();
        let sub = tracing_subscriber::registry().with(CloudLoggingLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("step", runId = "run-1", stepId = "");
            let _g = span.enter();
            span.record("stepId", "charts_4h");
            tracing::warn!(
                event = "claim_attempt",
                n = 3,
                ok = true,
                ratio = 0.5,
                "hello {}",
                "world"
            );
        });
        let text = buf.contents();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "hello world");
        assert_eq!(line["event"], "claim_attempt");
        assert_eq!(line["runId"], "run-1");
        assert_eq!(line["stepId"], "charts_4h");
        assert_eq!(line["n"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn an_empty_span_field_is_left_out() {
        let buf = CaptureWriter::default();
        let sub = tracing_subscriber::registry().with(CloudLoggingLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("step", runId = "run-1", stepId = "");
            let _g = span.enter();
            tracing::info!("claimed");
        });
        let line: Value = serde_json::from_str(buf.contents().trim()).unwrap();
        assert_eq!(line["runId"], "run-1");
        assert!(line.get("stepId").is_none(), "{line}");
        assert_eq!(line["severity"], "INFO");
    }
}
