//! `fleet-sim`: the multi-instance simulation (see `tests::fleet`). Prints a table, or the report as JSON with
//! `--json`; exits 1 when a step was not final within the timeout or a key's `usageToday` differs from the calls the
//! mock received on it, 2 when the simulation could not run (no emulators, bad options).
//!
//! `fleet-sim serve` is the `serve` child it starts (the harness's loopback entrypoint of `worker-chart-export serve`),
//! so the processes under test are always built from the current worker code with this binary.

use std::time::Duration;

use clap::Parser;
use tests::fleet::{run, Options};
use tests::runner::Emulators;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-sim",
    about = "N serve processes of the worker, the Firestore and GCS emulators, one mock-chart-img with per-key limits and realistic latency, 3 accounts (BASIC, PRO, PRO), flow runs written at once and delivered by the local Eventarc",
    after_help = "Needs FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST (scripts/emulators.sh start; source .tools/emulators.env).\n`fleet-sim serve` is the child process it starts, not for direct use."
)]
struct Args {
    /// serve processes
    #[arg(long, default_value_t = 4)]
    instances: usize,
    /// flow runs, written at once
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// charts per flow run (one CHART_EXPORT step each)
    #[arg(long, default_value_t = 5)]
    charts: usize,
    /// multiplies the mock's realistic latency (4–10 s per chart at 1.0) and the local Eventarc's backoff
    #[arg(long, default_value_t = 0.25)]
    time_scale: f64,
    /// seconds the steps may take to be final (default: 4 × the ideal bound + 60 s)
    #[arg(long)]
    timeout_secs: Option<f64>,
    /// seed of the mock's latency dice
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// print the report as JSON
    #[arg(long)]
    json: bool,
    /// write every serve process's log lines to this file
    #[arg(long)]
    logs: Option<std::path::PathBuf>,
    /// chaos: SIGKILL a random instance about every this many seconds (restarted 0.5–3 s later)
    #[arg(long)]
    kill_every_secs: Option<f64>,
    /// chaos: how long after the runs are written instances are killed
    #[arg(long, default_value_t = 30.0)]
    chaos_secs: f64,
    /// a problem (exit 1) when Chart-IMG calls per chart in a manifest exceed this
    #[arg(long)]
    max_calls_per_chart: Option<f64>,
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        std::process::exit(harness::serve::main().await);
    }
    let args = Args::parse();
    let Some(emu) = Emulators::from_env() else {
        eprintln!("error: FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST must be set (scripts/emulators.sh start; source .tools/emulators.env)");
        std::process::exit(2);
    };
    let timeout = match args.timeout_secs {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            eprintln!("error: --timeout-secs must be a positive number of seconds, got {s}");
            std::process::exit(2);
        }
        None => None,
    };
    let opts = Options {
        instances: args.instances,
        runs: args.runs,
        charts: args.charts,
        time_scale: args.time_scale,
        timeout,
        seed: args.seed,
        logs: args.logs,
        kill_every: match args.kill_every_secs {
            Some(s) if s.is_finite() && s > 0.0 => Some(std::time::Duration::from_secs_f64(s)),
            Some(s) => {
                eprintln!("fleet-sim: --kill-every-secs must be above 0, got {s}");
                std::process::exit(2);
            }
            None => None,
        },
        chaos_window: std::time::Duration::from_secs_f64(args.chaos_secs.clamp(0.0, 86_400.0)),
        max_calls_per_chart: args.max_calls_per_chart,
        ..Options::default()
    };
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this executable to start it as `serve`: {e}");
            std::process::exit(2);
        }
    };
    let report = match run(&opts, &emu, program).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the simulation could not run: {e:#}");
            std::process::exit(2);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", report.table());
    }
    std::process::exit(if report.problems.is_empty() { 0 } else { 1 });
}
