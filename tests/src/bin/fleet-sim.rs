//! `fleet-sim`: the multi-instance simulation (see `tests::fleet`). Prints a table, or the report as JSON with
//! `--json`; exits 1 when the report lists a problem (a step not final in time or FAILED, a `429 Too Many Requests`,
//! a usage under-count or an over-count past its limit, calls per chart or wall time past theirs, an orphan PNG),
//! 2 when the simulation could not run (no emulators, bad options).
//!
//! With `--freeze-firestore-every-secs` it starts a private Firestore emulator (the one it freezes) and stops it at
//! the end; the shared one (`FIRESTORE_EMULATOR_HOST`) is not used then.
//!
//! `fleet-sim serve` is the `serve` child it starts (the harness's loopback entrypoint of `worker-chart-export serve`),
//! so the processes under test are always built from the current worker code with this binary.

use std::time::Duration;

use clap::Parser;
use tests::fleet::{run, Freezes, Options};
use tests::private_firestore::PrivateFirestore;
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
    /// RUST_LOG of the serve processes (default: info, the Firestore adapter's retries at debug)
    #[arg(long)]
    rust_log: Option<String>,
    /// chaos: SIGKILL a random instance about every this many seconds (restarted 0.5–3 s later)
    #[arg(long)]
    kill_every_secs: Option<f64>,
    /// chaos: how long after the runs are written instances are killed
    #[arg(long, default_value_t = 30.0)]
    chaos_secs: f64,
    /// a problem (exit 1) when Chart-IMG calls per chart in a manifest exceed this
    #[arg(long)]
    max_calls_per_chart: Option<f64>,
    /// a problem (exit 1) when Chart-IMG calls per chart, the calls lost in flight at a SIGKILL left out, exceed
    /// this: the worker's own re-renders (after a release, a reclaim, a fence, a deadline)
    #[arg(long)]
    max_calls_per_chart_beyond_kills: Option<f64>,
    /// chaos: freeze (SIGSTOP/SIGCONT) the Firestore emulator about every this many seconds during the chaos
    /// window; starts a private emulator for it
    #[arg(long)]
    freeze_firestore_every_secs: Option<f64>,
    /// chaos: the longest freeze in seconds (each lasts 1 s to this, uniformly)
    #[arg(long, default_value_t = 3.0)]
    freeze_max_secs: f64,
    /// a problem (exit 1) when usageToday exceeds the calls by more than this % of the calls (default: 0 without
    /// kills, no limit with kills)
    #[arg(long)]
    max_over_count_pct: Option<f64>,
    /// a problem (exit 1) when the wall time exceeds this many times the ideal bound
    #[arg(long)]
    max_bound_ratio: Option<f64>,
    /// a problem (exit 1) when the wall time exceeds this many times the bound in the order drawn (the keys'
    /// earliest starts meeting the latencies the mock drew, in the order it drew them: the run's tail included)
    #[arg(long)]
    max_in_order_ratio: Option<f64>,
}

fn positive(name: &str, v: Option<f64>) -> Option<f64> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            eprintln!("error: {name} must be a positive number, got {x}");
            std::process::exit(2);
        }
        v => v,
    }
}

fn main() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    if std::env::args().nth(1).as_deref() == Some("serve") {
        std::process::exit(runtime().block_on(harness::serve::main()));
    }
    let mut args = Args::parse();
    let freeze_every = positive("--freeze-firestore-every-secs", args.freeze_firestore_every_secs);
    let freeze_max = positive("--freeze-max-secs", Some(args.freeze_max_secs)).unwrap_or(3.0);
    let max_over_count_pct = match args.max_over_count_pct {
        Some(p) if !(p.is_finite() && p >= 0.0) => {
            eprintln!("error: --max-over-count-pct must be a number ≥ 0, got {p}");
            std::process::exit(2);
        }
        p => p,
    };
    let max_bound_ratio = positive("--max-bound-ratio", args.max_bound_ratio);
    args.max_in_order_ratio = positive("--max-in-order-ratio", args.max_in_order_ratio);
    for (name, v) in [
        ("--max-calls-per-chart", args.max_calls_per_chart),
        (
            "--max-calls-per-chart-beyond-kills",
            args.max_calls_per_chart_beyond_kills,
        ),
    ] {
        if let Some(x) = v.filter(|x| !(x.is_finite() && *x >= 1.0)) {
            eprintln!("error: {name} must be a number ≥ 1 (a chart costs at least one call), got {x}");
            std::process::exit(2);
        }
    }
    // The emulator a freeze stops is the simulation's own: started before the runtime (its address goes into this
    // process's environment, which the Firestore clients and the local Eventarc read) and stopped when dropped.
    let private = match freeze_every {
        Some(_) => {
            if std::env::var_os("STORAGE_EMULATOR_HOST").is_none() {
                eprintln!("error: FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST must be set (scripts/emulators.sh start; source .tools/emulators.env)");
                std::process::exit(2);
            }
            match PrivateFirestore::start(Duration::from_secs(90)) {
                Ok(p) => {
                    eprintln!(
                        "fleet-sim: a private Firestore emulator on {} (pid {}) for the freezes",
                        p.host,
                        p.pid()
                    );
                    std::env::set_var("FIRESTORE_EMULATOR_HOST", &p.host);
                    Some(p)
                }
                Err(e) => {
                    eprintln!("error: cannot start the private Firestore emulator the freezes need: {e:#}");
                    std::process::exit(2);
                }
            }
        }
        None => None,
    };
    let freeze = freeze_every.zip(private.as_ref()).map(|(every, p)| Freezes {
        every: Duration::from_secs_f64(every),
        longest: Duration::from_secs_f64(freeze_max),
        pid: p.pid(),
    });
    let code = runtime().block_on(simulate(args, freeze, max_over_count_pct, max_bound_ratio));
    drop(private);
    std::process::exit(code);
}

async fn simulate(
    args: Args,
    freeze: Option<Freezes>,
    max_over_count_pct: Option<f64>,
    max_bound_ratio: Option<f64>,
) -> i32 {
    let Some(emu) = Emulators::from_env() else {
        eprintln!("error: FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST must be set (scripts/emulators.sh start; source .tools/emulators.env)");
        return 2;
    };
    let timeout = match args.timeout_secs {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            eprintln!("error: --timeout-secs must be a positive number of seconds, got {s}");
            return 2;
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
        rust_log: args.rust_log.unwrap_or_else(|| Options::default().rust_log),
        kill_every: match args.kill_every_secs {
            Some(s) if s.is_finite() && s > 0.0 => Some(std::time::Duration::from_secs_f64(s)),
            Some(s) => {
                eprintln!("fleet-sim: --kill-every-secs must be above 0, got {s}");
                return 2;
            }
            None => None,
        },
        chaos_window: std::time::Duration::from_secs_f64(args.chaos_secs.clamp(0.0, 86_400.0)),
        max_calls_per_chart: args.max_calls_per_chart,
        max_calls_per_chart_beyond_kills: args.max_calls_per_chart_beyond_kills,
        freeze,
        max_over_count_pct,
        max_bound_ratio,
        max_in_order_ratio: args.max_in_order_ratio,
    };
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this executable to start it as `serve`: {e}");
            return 2;
        }
    };
    let report = match run(&opts, &emu, program).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the simulation could not run: {e:#}");
            return 2;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", report.table());
    }
    if report.problems.is_empty() {
        0
    } else {
        1
    }
}
