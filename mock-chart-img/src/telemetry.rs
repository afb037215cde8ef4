//! Logs that cost the request path nothing it can notice.
//!
//! - Lines are Cloud Logging JSON (`severity`, `time`, `message`, `target`, then the event's fields), the shape the
//!   worker writes, so one log query reads both.
//! - They go through a non-blocking writer (`tracing-appender`): a request never waits on stderr. If the writer's
//!   queue is full (128 000 lines behind) lines are dropped rather than slowing the server; the queue is flushed on
//!   exit.
//! - One line per request is a `debug` line (`RUST_LOG=mock_chart_img=debug` shows it). At the default `info`, a
//!   summary line every `--log-summary-secs` (10 s) says how many requests were answered with what, and nothing is
//!   written while the server is idle.

use std::{io::Write, time::Duration};

use serde_json::{Map, Value};
use tracing::{
    field::{Field, Visit},
    Event, Level, Subscriber,
};
use tracing_subscriber::{fmt::MakeWriter, layer::Context, registry::LookupSpan, Layer};

use crate::{journal::Traffic, state::AppState};

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
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

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// A `tracing` layer writing one Cloud Logging JSON object a line to `W`.
#[derive(Debug)]
pub struct CloudLoggingLayer<W> {
    make_writer: W,
}

impl<W> CloudLoggingLayer<W> {
    /// Writes to `make_writer` (stderr, a non-blocking writer, a test buffer).
    pub fn new(make_writer: W) -> Self {
        CloudLoggingLayer { make_writer }
    }
}

impl<S, W> Layer<S> for CloudLoggingLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let mut line = Map::new();
        line.insert("severity".into(), severity(meta.level()).into());
        line.insert("time".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
        line.insert("message".into(), fields.remove("message").unwrap_or(Value::String(String::new())));
        line.extend(fields);
        line.insert("target".into(), meta.target().into());
        let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        bytes.push(b'\n');
        let _ = self.make_writer.make_writer().write_all(&bytes);
    }
}

/// Keeps the background log writer alive; dropping it flushes what is queued. Hold it until `main` returns.
#[derive(Debug)]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Installs the binary's logging: Cloud Logging JSON lines (or, with `pretty`, human-readable ones) on stderr
/// through a non-blocking writer, filtered by `RUST_LOG` (default `info`).
pub fn init_logs(pretty: bool) -> LogGuard {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if pretty {
        registry.with(tracing_subscriber::fmt::layer().with_writer(writer)).try_init()
    } else {
        registry.with(CloudLoggingLayer::new(writer)).try_init()
    };
    LogGuard(guard)
}

/// Logs (at `info`) what was answered since the last summary, if anything was; returns those figures.
pub fn log_summary(state: &AppState) -> Traffic {
    let t = state.inner.journal.take_traffic();
    if t.requests > 0 {
        tracing::info!(
            requests = t.requests,
            ok = t.ok,
            client_errors = t.client_errors,
            throttled = t.throttled,
            server_errors = t.server_errors,
            dropped = t.dropped,
            cache_hits = t.cache_hits,
            mean_ms = t.total_ms as f64 / t.requests as f64,
            max_ms = t.max_ms,
            "traffic summary"
        );
    }
    t
}

/// Calls [`log_summary`] every `every`, forever (spawn it; a zero period is treated as one second).
pub async fn log_summaries(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        log_summary(&state);
    }
}
