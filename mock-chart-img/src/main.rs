//! `mock-chart-img`: serve the mock Chart-IMG API, or `healthcheck` a running one. All logic lives in the library
//! (the settings in `settings`); this sets up logs, binds, logs one `ready` line and waits for Ctrl-C / SIGTERM.

use anyhow::Context;
use clap::Parser;
use mock_chart_img::{
    admin_router_with, api_router, init_logs, log_summaries, router_with, serve,
    settings::{self, Cli, Command, ServeArgs},
    watch_config_with, AppState,
};
use tokio::net::TcpListener;

// See Cargo.toml: the allocator is a measurable share of the per-request cost.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Memory back after load: once the tokio workers have been quiet for 200 ms after some work, each collects its
/// mimalloc heap (forced) when it next goes idle. mimalloc keeps a thread's emptied pages in that thread's heap
/// until the thread allocates or collects again, and after a burst the async threads do neither (the render threads
/// give theirs back by themselves, `renders.rs`). Under load nothing is collected: a forced collection every 200 ms
/// per worker cost about a tenth of the renders per second (measured), handing back pages the next requests
/// faulted in again. README, "Render load with wrk".
static IDLE_COLLECT: mimalloc_collect::IdleCollect =
    mimalloc_collect::IdleCollect::new(std::time::Duration::from_millis(200));

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_unpark(|| IDLE_COLLECT.busy())
        .on_thread_park(|| {
            IDLE_COLLECT.idle();
        })
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The janitor starts a collection round after the quiet time and wakes the workers (an empty task each), so
    // that each goes idle once more and collects.
    let handle = runtime.handle().clone();
    let workers = handle.metrics().num_workers();
    let _ = std::thread::Builder::new().name("idle-collect".into()).spawn(move || {
        IDLE_COLLECT.run_janitor(workers, || {
            for _ in 0..workers {
                handle.spawn(async {});
            }
        })
    });
    runtime.block_on(async_main())
}

async fn async_main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck(args)) = &cli.command {
        return match settings::healthcheck(args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                std::process::ExitCode::from(1)
            }
        };
    }
    // One line on stderr for a bad config or a taken port: no backtrace, whatever RUST_BACKTRACE says.
    match run_main(cli.serve).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run_main(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    // Held to the end: dropping it flushes the queued log lines.
    let _logs = init_logs(args.pretty_logs);
    let resolved = args.resolve()?;
    let config = &resolved.config;
    let state = AppState::new(config)?;
    let _watch = match &args.config {
        Some(path) => {
            // Each reload gets the flags and the environment's keys again.
            let env_keys = resolved.env_keys.clone();
            let overlay = args.clone();
            Some(
                watch_config_with(path, state.clone(), move |c| overlay.overlay(c, &env_keys))
                    .context("cannot watch the config file")?,
            )
        }
        None => None,
    };
    if config.keys.is_empty() {
        tracing::warn!("{}", settings::NO_KEYS_WARNING);
    }

    let admin = &resolved.admin;
    // Installed before the port is bound: a SIGTERM sent as soon as the server answers stops it cleanly.
    let stop = cloud_run_kit::shutdown_signal();
    let listener = TcpListener::bind(resolved.listen)
        .await
        .with_context(|| format!("cannot listen on {}", resolved.listen))?;
    let admin_listener = match admin.separate {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin)"))?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let summaries = (args.log_summary_secs > 0).then(|| {
        tokio::spawn(log_summaries(
            state.clone(),
            std::time::Duration::from_secs(args.log_summary_secs),
        ))
    });
    let api = if admin.on_api_port {
        router_with(state.clone(), admin.token.clone())
    } else {
        api_router(state.clone())
    };
    let listen = listener.local_addr()?;
    let mut tasks = vec![tokio::spawn(serve(listener, api, stopped(stop_rx.clone())))];
    let admin_addr = match admin_listener {
        Some(l) => {
            let addr = l.local_addr()?;
            let app = admin_router_with(state.clone(), admin.token.clone());
            tasks.push(tokio::spawn(serve(l, app, stopped(stop_rx.clone()))));
            Some(addr)
        }
        None => None,
    };
    // The one start-up line, for log-wait strategies (testcontainers, compose): `"message":"ready"`.
    tracing::info!(
        listen = %listen,
        admin = %admin_addr.map_or_else(|| listen.to_string(), |a| a.to_string()),
        admin_on_api_port = admin.on_api_port,
        admin_token = admin.token.is_some(),
        keys = config.keys.len(),
        key_sources = %resolved.key_sources.join(", "),
        "ready"
    );
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
