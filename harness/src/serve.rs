//! The `worker-serve` binary: the worker's `serve` entrypoint (the same settings, worker, router, shutdown and
//! JSON logs as `worker-chart-export serve`) listening on `HOST:PORT` with `HOST` limited to the loopback
//! interface (default 127.0.0.1). `worker-chart-export serve` itself binds `0.0.0.0:$PORT`, as Cloud Run needs,
//! and test servers here must listen on 127.0.0.1 only.
//!
//! Only the bind differs from [`worker_chart_export::serve::main_from_env`]; keep the two in step (or, once the
//! worker's `serve` reads a listen host itself, make this run `cli::main_with` unchanged).

use std::net::IpAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use worker_chart_export::config::Settings;
use worker_chart_export::serve::{run, shutdown_signal, worker_from_settings, AppState};
use worker_chart_export::telemetry::{self, LogFormat};

/// Runs until SIGTERM; the exit code of `worker-chart-export serve` (0, or 2 with the error on stderr).
pub async fn main() -> i32 {
    telemetry::init(LogFormat::Json, false);
    match serve().await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(event = "serve_failed", error = %format!("{e:#}"), "serve failed");
            eprintln!("error: {e:#}");
            2
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let host: IpAddr = match std::env::var("HOST") {
        Ok(h) if !h.trim().is_empty() => h.trim().parse().map_err(|_| anyhow::anyhow!("HOST: {h:?} is not an IP address"))?,
        _ => IpAddr::from([127, 0, 0, 1]),
    };
    anyhow::ensure!(host.is_loopback(), "HOST: {host} is not a loopback address (this entrypoint is for local runs)");
    let settings = Settings::from_env().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let worker = worker_from_settings(&settings).await?;
    let listener =
        TcpListener::bind((host, settings.port)).await.with_context(|| format!("cannot listen on {host}:{}", settings.port))?;
    tracing::info!(event = "serve_started", port = settings.port, worker = %worker.settings.worker_id, "listening");
    run(listener, AppState::new(worker), shutdown_signal()).await.context("server failed")
}
