//! `mock-chart-img`: serve the mock Chart-IMG API. All logic lives in the library; this parses flags, sets up logs,
//! binds, and waits for Ctrl-C / SIGTERM.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use mock_chart_img::{admin_router, api_router, router, serve, watch_config, AppState, Config};
use tokio::net::TcpListener;

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
    /// Human-readable logs instead of JSON lines.
    #[arg(long)]
    pretty_logs: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line on stderr for a bad config or a taken port: no backtrace, whatever RUST_BACKTRACE says.
    match run_main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run_main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(args.pretty_logs);

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
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    match admin_addr {
        None => {
            tracing::info!(listen = %listener.local_addr()?, keys = config.keys.len(), "serving Chart-IMG API and /__admin");
            tasks.push(tokio::spawn(serve(listener, router(state.clone()), stopped(stop_rx.clone()))));
        }
        Some(addr) => {
            let admin = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (admin)"))?;
            tracing::info!(listen = %listener.local_addr()?, admin = %admin.local_addr()?, keys = config.keys.len(), "serving");
            tasks.push(tokio::spawn(serve(listener, api_router(state.clone()), stopped(stop_rx.clone()))));
            tasks.push(tokio::spawn(serve(admin, admin_router(state.clone()), stopped(stop_rx.clone()))));
        }
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn init_logs(pretty: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if pretty {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

async fn shutdown_signal() {
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
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
