//! Logs that cost the request path nothing it can notice.
//!
//! - Lines are Cloud Logging JSON (`severity`, `time`, `message`, the event's fields, `target`), written by the
//!   worker's own layer (`cloud_run_kit`), so one log query reads both.
//! - They go through a non-blocking writer (`tracing-appender`): a request never waits on stderr. If the writer's
//!   queue is full (128 000 lines behind) lines are dropped rather than slowing the server; the queue is flushed on
//!   exit.
//! - One line per request is a `debug` line (`RUST_LOG=mock_chart_img=debug` shows it). At the default `info`, a
//!   summary line every `--log-summary-secs` (10 s) says how many requests were answered with what, and nothing is
//!   written while the server is idle.

use std::time::Duration;

pub use cloud_run_kit::CloudLoggingLayer;

use crate::{journal::Traffic, state::AppState};

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
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init()
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
