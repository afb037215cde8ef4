//! `cloud-run-kit`: what a Cloud Run process needs from its surroundings, written once for the worker and for
//! mock-chart-img (both run as Cloud Run–style servers and are read by the same log queries).
//!
//! - [`CloudLoggingLayer`]: a `tracing` layer writing one Cloud Logging JSON object a line (`severity`, `time`,
//!   the fields of the event's spans, `message`, the event's own fields, `target`) — the shape Cloud Logging parses
//!   from stdout/stderr into structured entries. An ERROR line also carries what Error Reporting needs without a
//!   stack trace: `@type` [`REPORTED_ERROR_EVENT`], `serviceContext` and `context.reportLocation` (the event's file,
//!   line and module).
//! - [`TraceContext`] and [`request_span`]: the trace of a request (`traceparent`, else `X-Cloud-Trace-Context`), as
//!   a span whose lines carry `logging.googleapis.com/trace` (`projects/<project>/traces/<id>`),
//!   `logging.googleapis.com/spanId` and `logging.googleapis.com/trace_sampled`, so Logs Explorer groups one
//!   request's lines under its trace.
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

/// The `@type` that makes Error Reporting pick up a log entry without a stack trace in its message.
pub const REPORTED_ERROR_EVENT: &str =
    "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent";
/// The special fields Cloud Logging reads a log line's trace from.
pub const TRACE_FIELD: &str = "logging.googleapis.com/trace";
pub const SPAN_ID_FIELD: &str = "logging.googleapis.com/spanId";
pub const TRACE_SAMPLED_FIELD: &str = "logging.googleapis.com/trace_sampled";

/// Error Reporting's `serviceContext`: which service (and version) an error belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContext {
    pub service: String,
    pub version: String,
}

impl ServiceContext {
    /// Cloud Run's `K_SERVICE` and `K_REVISION`, else the given defaults (a local run).
    pub fn from_env(default_service: &str, default_version: &str) -> Self {
        let get = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| d.to_owned())
        };
        Self {
            service: get("K_SERVICE", default_service),
            version: get("K_REVISION", default_version),
        }
    }
}

/// A `tracing` layer writing Cloud Logging JSON lines to `W`, one `write_all` a line (so a non-blocking writer
/// never splits one).
#[derive(Debug)]
pub struct CloudLoggingLayer<W> {
    make_writer: W,
    service: ServiceContext,
}

impl<W> CloudLoggingLayer<W> {
    /// A layer whose error lines name the service from `K_SERVICE`/`K_REVISION` (Cloud Run sets both), else the
    /// executable's name; [`CloudLoggingLayer::with_service`] names it otherwise.
    pub fn new(make_writer: W) -> Self {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            make_writer,
            service: ServiceContext::from_env(&exe, "unknown"),
        }
    }

    /// The `serviceContext` of this process's error lines.
    pub fn with_service(mut self, service: ServiceContext) -> Self {
        self.service = service;
        self
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
        if *meta.level() == Level::ERROR {
            // Error Reporting: the event type, the service, and where the error was reported (no stack trace).
            line.insert("@type".into(), REPORTED_ERROR_EVENT.into());
            line.insert(
                "serviceContext".into(),
                serde_json::json!({"service": self.service.service, "version": self.service.version}),
            );
            line.insert(
                "context".into(),
                serde_json::json!({"reportLocation": {
                    "filePath": meta.file().unwrap_or("unknown"),
                    "lineNumber": meta.line().unwrap_or(0),
                    "functionName": meta.module_path().unwrap_or(meta.target()),
                }}),
            );
        }
        let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        bytes.push(b'\n');
        let _ = self.make_writer.make_writer().write_all(&bytes);
    }
}

/// The trace a request carries: W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<flags>`), else Google's
/// `X-Cloud-Trace-Context` (`<32 hex trace id>/<decimal span id>;o=<0|1>`), the header Cloud Run and Eventarc's push
/// set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits (Cloud Logging's `spanId` form), when the header names a span.
    pub span_id: Option<String>,
    pub sampled: bool,
}

impl TraceContext {
    /// From a request's headers, looked up (case-insensitively, as HTTP headers are) through `get`; `None` when
    /// neither header is there or well-formed.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        get("traceparent")
            .and_then(Self::from_traceparent)
            .or_else(|| get("x-cloud-trace-context").and_then(Self::from_cloud_trace_context))
    }

    /// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
    pub fn from_traceparent(v: &str) -> Option<Self> {
        let mut parts = v.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2) || version.eq_ignore_ascii_case("ff") || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2)
        {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id: trace.to_ascii_lowercase(),
            span_id: Some(span.to_ascii_lowercase()),
            sampled: flags & 1 == 1,
        })
    }

    /// `105445aa7843bc8bf206b12000100000/1;o=1` (the span id is decimal on this header).
    pub fn from_cloud_trace_context(v: &str) -> Option<Self> {
        let (ids, options) = v.trim().split_once(';').unwrap_or((v.trim(), ""));
        let (trace, span) = ids.split_once('/').unwrap_or((ids, ""));
        if trace.len() != 32 || !trace.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let span_id = span
            .parse::<u64>()
            .ok()
            .filter(|s| *s != 0)
            .map(|s| format!("{s:016x}"));
        Some(Self {
            trace_id: trace.to_ascii_lowercase(),
            span_id,
            sampled: options.trim() == "o=1",
        })
    }

    /// Cloud Logging's trace resource name: `projects/<project>/traces/<trace id>`.
    pub fn resource(&self, project: &str) -> String {
        format!("projects/{project}/traces/{}", self.trace_id)
    }
}

/// The span one request's work runs in: its lines carry the request's trace when the request has one and the
/// project is known (`GOOGLE_CLOUD_PROJECT`), as Cloud Logging needs it to group them.
pub fn request_span(trace: Option<&TraceContext>, project: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        "logging.googleapis.com/trace" = tracing::field::Empty,
        "logging.googleapis.com/spanId" = tracing::field::Empty,
        "logging.googleapis.com/trace_sampled" = tracing::field::Empty,
    );
    if let (Some(t), Some(p)) = (trace, project.filter(|p| !p.is_empty())) {
        span.record(TRACE_FIELD, t.resource(p));
        if let Some(s) = &t.span_id {
            span.record(SPAN_ID_FIELD, s.as_str());
        }
        span.record(TRACE_SAMPLED_FIELD, t.sampled);
    }
    span
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

/// Resolves on SIGTERM (Cloud Run's stop signal) or Ctrl-C (SIGINT). On Unix both handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives in between (a process stopped right after it
/// started answering) ends the future instead of killing the process with the default action. Call it inside a Tokio
/// runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (term, int) = (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        );
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// A SIGTERM between the call and the first poll ends the future; before the handlers were installed at the call,
    /// it killed the process (this test binary) with the default action.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_sigterm_before_the_first_poll_ends_the_future() {
        let stop = shutdown_signal();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(std::time::Duration::from_secs(10), stop)
            .await
            .expect("the signal ends the future");
    }

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
    fn traceparent_and_x_cloud_trace_context_are_read_and_bad_ones_refused() {
        let t = TraceContext::from_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(t.sampled);
        assert_eq!(
            t.resource("p-1"),
            "projects/p-1/traces/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "garbage",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
        }
        let c = TraceContext::from_cloud_trace_context("105445aa7843bc8bf206b12000100000/1;o=1").unwrap();
        assert_eq!(c.trace_id, "105445aa7843bc8bf206b12000100000");
        assert_eq!(c.span_id.as_deref(), Some("0000000000000001"));
        assert!(c.sampled);
        let no_span = TraceContext::from_cloud_trace_context("105445aa7843bc8bf206b12000100000").unwrap();
        assert_eq!((no_span.span_id, no_span.sampled), (None, false));
        assert_eq!(TraceContext::from_cloud_trace_context("xyz/1;o=1"), None);
        // traceparent wins over X-Cloud-Trace-Context.
        let headers = [
            ("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        ];
        let get = |k: &str| headers.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let both = TraceContext::from_headers(get).unwrap();
        assert_eq!(
            (both.trace_id.as_str(), both.sampled),
            ("4bf92f3577b34da6a3ce929d0e0e4736", false)
        );
    }

    #[test]
    fn lines_in_a_request_span_carry_its_trace_and_error_lines_the_error_reporting_shape() {
        let buf = CaptureWriter::default();
        let service = ServiceContext {
            service: "svc".into(),
            version: "v9".into(),
        };
        let sub = tracing_subscriber::registry().with(CloudLoggingLayer::new(buf.clone()).with_service(service));
        tracing::subscriber::with_default(sub, || {
            let t = TraceContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            let _g = request_span(t.as_ref(), Some("p-1")).entered();
            tracing::info!("in the request");
            tracing::error!(event = "boom", "it broke");
            drop(_g);
            let _untraced = request_span(t.as_ref(), None).entered();
            tracing::info!("no project, no trace");
        });
        let lines: Vec<Value> = buf
            .contents()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        for l in &lines[..2] {
            assert_eq!(
                l[TRACE_FIELD], "projects/p-1/traces/4bf92f3577b34da6a3ce929d0e0e4736",
                "{l}"
            );
            assert_eq!(l[SPAN_ID_FIELD], "00f067aa0ba902b7");
            assert_eq!(l[TRACE_SAMPLED_FIELD], true);
        }
        assert!(lines[0].get("@type").is_none(), "{}", lines[0]);
        let e = &lines[1];
        assert_eq!(e["severity"], "ERROR");
        assert_eq!(e["@type"], REPORTED_ERROR_EVENT);
        assert_eq!(
            e["serviceContext"],
            serde_json::json!({"service": "svc", "version": "v9"})
        );
        assert_eq!(e["message"], "it broke");
        let loc = &e["context"]["reportLocation"];
        assert!(loc["filePath"].as_str().unwrap().ends_with("lib.rs"), "{e}");
        assert!(loc["lineNumber"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(loc["functionName"], "cloud_run_kit::tests");
        assert!(lines[2].get(TRACE_FIELD).is_none(), "{}", lines[2]);
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
