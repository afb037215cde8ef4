//! `mock-chart-img`: serve the mock Chart-IMG API. All logic lives in the library; this parses flags, sets up logs,
//! binds, and waits for Ctrl-C / SIGTERM.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use mock_chart_img::{
    admin_router, api_router, init_logs, log_summaries, router, serve, watch_config, AppState, Config,
};
use tokio::net::TcpListener;

// See Cargo.toml: the allocator is a measurable share of the per-request cost.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A standalone server that behaves like the Chart-IMG API (keys, plans, quotas, faults, real images).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (`.yaml`, `.yml` or `.toml`); reloaded when it changes.
    #[arg(long, env = "MOCK_CHART_IMG_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the Chart-IMG API.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Address of the `/__admin` API. Default: the `--listen` address when that is loopback, otherwise
    /// 127.0.0.1 on the next port.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Seed of the chart data and fault dice (overrides the file's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// `instant` or `realistic` chart times (overrides the file's `latency`).
    #[arg(long, value_parser = ["instant", "realistic"])]
    latency: Option<String>,
    /// Multiplies realistic waits (overrides the file's `time_scale`), e.g. 0.01 for tests.
    #[arg(long)]
    time_scale: Option<f64>,
    /// Human-readable logs instead of Cloud Logging JSON lines.
    #[arg(long)]
    pretty_logs: bool,
    /// Seconds between the `traffic summary` log lines (per-request lines are `debug`); 0: no summary.
    #[arg(long, default_value_t = 10)]
    log_summary_secs: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line on stderr for a bad config or a taken port: no backtrace, whatever RUST_BACKTRACE says.
    match run_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run_main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    // Held to the end: dropping it flushes the queued log lines.
    let _logs = init_logs(args.pretty_logs);

    let mut config = match &args.config {
        // `ConfigError` already reads `file:line: message`.
        Some(path) => Config::from_file(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::default(),
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    match args.latency.as_deref() {
        Some("realistic") => config.latency = mock_chart_img::LatencyProfile::Realistic,
        Some(_) => config.latency = mock_chart_img::LatencyProfile::Instant,
        None => {}
    }
    if let Some(scale) = args.time_scale {
        config.time_scale = scale;
    }
    let state = AppState::new(&config)?;
    let _watch = match &args.config {
        Some(path) => Some(watch_config(path, state.clone()).context("cannot watch the config file")?),
        None => None,
    };

    let admin_addr = match args.admin_listen {
        Some(a) => Some(a),
        None if args.listen.ip().is_loopback() => None,
        None => Some(SocketAddr::from(([127, 0, 0, 1], args.listen.port().wrapping_add(1)))),
    };
    // Installed before the port is bound: a SIGTERM sent as soon as the server answers stops it cleanly.
    let stop = cloud_run_kit::shutdown_signal();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    let summaries = (args.log_summary_secs > 0).then(|| {
        tokio::spawn(log_summaries(
            state.clone(),
            std::time::Duration::from_secs(args.log_summary_secs),
        ))
    });
    match admin_addr {
        None => {
            tracing::info!(listen = %listener.local_addr()?, keys = config.keys.len(), "serving Chart-IMG API and /__admin");
            tasks.push(tokio::spawn(serve(
                listener,
                router(state.clone()),
                stopped(stop_rx.clone()),
            )));
        }
        Some(addr) => {
            let admin = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin)"))?;
            tracing::info!(listen = %listener.local_addr()?, admin = %admin.local_addr()?, keys = config.keys.len(), "serving");
            tasks.push(tokio::spawn(serve(
                listener,
                api_router(state.clone()),
                stopped(stop_rx.clone()),
            )));
            tasks.push(tokio::spawn(serve(
                admin,
                admin_router(state.clone()),
                stopped(stop_rx.clone()),
            )));
        }
    }
    stop.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await??;
    }
    if let Some(s) = summaries {
        s.abort();
    }
    // What the last period served.
    mock_chart_img::log_summary(&state);
    // The end of a replay session is the server's shutdown: under `allow_unused: false` what no request used fails it.
    if let Err(unused) = state.check_replay_unused() {
        eprint!("mock-chart-img: {unused}");
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
