//! The `worker-serve` binary (and the tests crate's `scenario-serve`): exactly `worker-chart-export serve`, the
//! worker's own CLI path, with one guard for local runs: `HOST` (which `serve` binds) must be a loopback address,
//! 127.0.0.1 when unset — test servers here listen on loopback only, while the production default is 0.0.0.0.

use std::net::IpAddr;

use clap::Parser as _;
use worker_chart_export::entry::{main_with, Cli};

/// Runs `worker-chart-export serve` until SIGTERM and returns its exit code (2 with one line on stderr for a
/// `HOST` that is not a loopback address).
pub async fn main() -> i32 {
    match std::env::var("HOST") {
        Ok(h) if !h.trim().is_empty() => match h.trim().parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => {}
            _ => {
                eprintln!("error: HOST: {h:?} is not a loopback address (this entrypoint is for local runs)");
                return 2;
            }
        },
        // Before the worker reads its settings; no other thread reads the environment yet.
        _ => std::env::set_var("HOST", "127.0.0.1"),
    }
    main_with(Cli::parse_from(["worker-chart-export", "serve"])).await
}
