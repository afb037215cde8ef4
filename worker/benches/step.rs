//! Wall time of one step (20 charts by default) with one account (PRO: 10 req/s, burst 15), against a bound no
//! scheduler can beat, computed from the plan's rate and burst and the calls' latencies only (the worker's own
//! in-flight maximum plays no part in it). Two stand-ins for Chart-IMG:
//!
//! - default: a bare axum server that answers every chart after a fixed `--latency-ms` (300 ms by default); the bound
//!   is `quota::ideal_bound` (shared with the fleet simulation), and the sequential time is printed next to it;
//! - `--mock realistic`: the real mock-chart-img in-process, with its realistic latency profile (4–10 s a chart at
//!   `--time-scale 1.0`, a rare 20–30 s outlier, a 504 past 29 s) and its own per-key rate and burst; the charts
//!   vary in size and studies. Each round starts a fresh mock (seed `--seed` + round) and its bound is
//!   `quota::ideal_bound_for` the durations the mock drew for that round's answered calls (its journal's
//!   `duration_ms`): the longest calls on the earliest starts the plan allows. Also printed: the bound for the
//!   order the calls actually went out in (what any scheduler that cannot know a chart's duration before sending it
//!   could hope for with that order), and every answer that was not a 200.
//!
//! Run: `cargo bench -p worker --bench step` (add `-- --charts 40 --latency-ms 6000 --plan MEGA --max-in-flight 64`
//! to vary), or `cargo bench -p worker --bench step -- --mock realistic --charts 20 --time-scale 1.0 --rounds 3`.
//! `--plans BASIC,PRO,PRO` gives the step one account per plan (fixed latency only): its bound is their rates and
//! bursts together. Each round prints the process's resident memory after it and its peak so far (`VmRSS`,
//! `VmHWM`): with `--charts 1000` against `--charts 100`, memory that grows with the step's size shows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use chart_img_spec::Plan;
use mock_chart_img::{JournalQuery, LatencyProfile};
use serde_json::{json, Value};
use worker_chart_export::adapters::{JsonDocs, MemoryArtifacts};
use worker_chart_export::config::{parse_accounts, AccountConfig};
use worker_chart_export::domain::collections::{CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::domain::{RunId, StepSelector, WorkerId};
use worker_chart_export::HttpChartImg;
use worker_chart_export::RetryPolicy;
use worker_chart_export::{ideal_bound, ideal_bound_for, AccountPool};
use worker_chart_export::{run_chart_export_step, StepReport};
use worker_chart_export::{CoreSettings, Worker};

const ACCOUNT: &str = "acc-1";
const KEY: &str = "bench-key";
/// The chart route the worker calls.
const CHART_PATH: &str = "/v2/tradingview/advanced-chart";

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .map(|i| args.get(i + 1).cloned().unwrap_or_default())
}

/// The value of `--name`, or `default` when it is not given; a value that does not parse stops the bench with a
/// message naming the flag.
fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    match arg_str(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}: cannot read {v:?}");
            std::process::exit(2)
        }),
    }
}

/// This process's resident memory now and its peak so far (`/proc/self/status`), in MiB.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or("?".to_owned(), |kb| format!("{:.1}", kb / 1024.0))
    };
    format!("RSS {} MiB, peak {} MiB", field("VmRSS:"), field("VmHWM:"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let charts: u64 = arg("--charts", 20);
    let plan: Plan = arg("--plan", Plan::Pro);
    let max_in_flight: u64 = arg(
        "--max-in-flight",
        worker_chart_export::config::DEFAULT_CONCURRENCY as u64,
    );
    let rounds: u64 = arg("--rounds", 3);
    let plans: Vec<Plan> = match arg_str("--plans") {
        None => vec![plan],
        Some(list) => list
            .split(',')
            .map(|p| {
                p.trim().parse().unwrap_or_else(|_| {
                    eprintln!("--plans: cannot read the plan {p:?} (e.g. BASIC,PRO,PRO)");
                    std::process::exit(2)
                })
            })
            .collect(),
    };
    let accounts_json = match plans.as_slice() {
        [one] => format!(
            r#"[{{"id":"{ACCOUNT}","apiKey":"{KEY}","dailyLimit":100000,"plan":"{}"}}]"#,
            one.name()
        ),
        many => {
            if arg_str("--mock").is_some() {
                eprintln!("--plans: only with the fixed-latency stand-in, not --mock");
                std::process::exit(2)
            }
            let list: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    format!(
                        r#"{{"id":"acc-{}","apiKey":"{KEY}-{i}","dailyLimit":100000,"plan":"{}"}}"#,
                        i + 1,
                        p.name()
                    )
                })
                .collect();
            format!("[{}]", list.join(","))
        }
    };
    let accounts = parse_accounts("bench", &accounts_json).unwrap();
    let bench = Bench {
        charts,
        max_in_flight: max_in_flight as usize,
        accounts_json,
    };
    let described: Vec<String> = plans
        .iter()
        .map(|p| {
            format!(
                "{} ({}/s, burst {})",
                p.name(),
                p.limits().rate_per_sec,
                p.limits().burst
            )
        })
        .collect();
    println!(
        "step of {charts} charts, plan {}, in-flight maximum {max_in_flight}; {}",
        described.join(" + "),
        memory()
    );
    match arg_str("--mock").as_deref() {
        None => fixed_latency(&bench, &accounts, rounds).await,
        Some("realistic") => realistic(&bench, &accounts, plan, rounds).await,
        Some(other) => {
            eprintln!("--mock: expected `realistic`, got {other:?}");
            std::process::exit(2)
        }
    }
}

/// The bare axum stand-in with a fixed latency.
async fn fixed_latency(bench: &Bench, accounts: &[AccountConfig], rounds: u64) {
    let latency = Duration::from_millis(arg("--latency-ms", 300));
    let png = Arc::new(b"\x89PNG\r\n\x1a\nbench".to_vec());
    let app = axum::Router::new().route(
        CHART_PATH,
        post(move || {
            let png = png.clone();
            async move {
                tokio::time::sleep(latency).await;
                ([("content-type", "image/png")], png.as_ref().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let ideal = ideal_bound(bench.charts, latency, accounts).expect("the daily limit allows every chart");
    let sequential = latency * bench.charts as u32;
    println!("endpoint latency {} ms (fixed)", latency.as_millis());
    println!("sequential  {:>7.0} ms", ms(sequential));
    println!("ideal bound {:>7.0} ms", ms(ideal));
    for round in 0..rounds {
        let templates = (0..bench.charts).map(|_| json!({})).collect();
        let (wall, in_flight) = bench
            .run(&format!("http://{addr}"), Duration::from_secs(10), templates)
            .await;
        println!(
            "round {round}: {in_flight} in flight, wall {:>7.0} ms = {:.2}x ideal, {:.2}x faster than sequential; {}",
            ms(wall),
            wall.as_secs_f64() / ideal.as_secs_f64(),
            sequential.as_secs_f64() / wall.as_secs_f64(),
            memory()
        );
    }
}

/// mock-chart-img in-process with `latency: realistic`.
async fn realistic(bench: &Bench, accounts: &[AccountConfig], plan: Plan, rounds: u64) {
    let time_scale: f64 = arg("--time-scale", 1.0);
    let seed: u64 = arg("--seed", 1);
    if !(time_scale.is_finite() && time_scale > 0.0) {
        eprintln!("--time-scale: must be a positive number, got {time_scale}");
        std::process::exit(2)
    }
    // The same plan in the mock (its limits are the spec's, the table the worker paces by).
    let mock_plan = mock_chart_img::Plan::Named(plan);
    // Charts of several sizes and study counts, within the plan: the realistic median grows with both.
    let l = plan.limits();
    let sizes: Vec<(u32, u32)> = [(800, 600), (1280, 720), (1920, 1080)]
        .into_iter()
        .filter(|(w, h)| *w <= l.max_width && *h <= l.max_height)
        .collect();
    let studies = ["Volume", "Relative Strength Index", "MACD"];
    let templates = |n: u64| -> Vec<Value> {
        (0..n as usize)
            .map(|i| {
                let (w, h) = sizes[i % sizes.len()];
                let k = (i % (studies.len() + 1)).min(l.max_params as usize);
                json!({"width": w, "height": h, "studies": studies[..k].iter().map(|s| json!({"name": s})).collect::<Vec<_>>()})
            })
            .collect()
    };
    println!("mock-chart-img, latency realistic, time_scale {time_scale}, seed {seed} + round");
    for round in 0..rounds {
        let mut config = mock_chart_img::Config::default()
            .with_seed(seed + round)
            .with_key(KEY, ACCOUNT, mock_plan);
        config.latency = LatencyProfile::Realistic;
        config.time_scale = time_scale;
        let server = mock_chart_img::spawn(config).await.expect("the mock starts");
        // The worker's default CHART_IMG_TIMEOUT_SECONDS: longer than the gateway's 29 s, so a slow chart is waited for.
        let (wall, in_flight) = bench
            .run(&server.base_url(), Duration::from_secs(35), templates(bench.charts))
            .await;
        let journal = server.state().journal(&JournalQuery {
            account: Some(ACCOUNT.into()),
            ..Default::default()
        });
        server.shutdown().await.expect("the mock stops");

        let calls: Vec<_> = journal.iter().filter(|e| e.path == CHART_PATH).collect();
        let start = |e: &mock_chart_img::JournalEntry| e.at - chrono::Duration::milliseconds(e.duration_ms as i64);
        let first = calls.iter().map(|e| start(e)).min();
        let mut answered: Vec<_> = calls.iter().filter(|e| e.status == Some(200)).collect();
        // Each failure with when it reached the mock, counted from the first call, and how many calls came before it.
        let not_ok: Vec<String> = calls
            .iter()
            .filter(|e| e.status != Some(200))
            .map(|e| {
                let before = calls.iter().filter(|c| start(c) < start(e)).count();
                let at = first.map_or(0, |f| (start(e) - f).num_milliseconds());
                format!(
                    "{} {} at +{at} ms after {before} calls",
                    e.status.map_or("dropped".into(), |s| s.to_string()),
                    e.error.as_deref().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(answered.len() as u64, bench.charts, "one answered call per chart");
        // Every chart needs one answered call at least as long as the one the mock measured; failed attempts only
        // add to the real optimum, so leaving them out keeps the bound a lower bound.
        let drawn: Vec<Duration> = answered.iter().map(|e| Duration::from_millis(e.duration_ms)).collect();
        let bound = ideal_bound_for(&drawn, accounts).expect("the daily limit allows every chart");
        // The same schedule for the order the calls went out in (start = answer time − duration).
        answered.sort_by_key(|e| start(e));
        // (The k-th earliest start is the bound of k calls that take no time.)
        let in_order = (0..answered.len() as u64)
            .map(|k| {
                ideal_bound(k + 1, Duration::ZERO, accounts).expect("allowed")
                    + Duration::from_millis(answered[k as usize].duration_ms)
            })
            .max()
            .unwrap_or_default();
        let mut sorted = drawn.clone();
        sorted.sort();
        println!(
            "round {round}: {in_flight} in flight, drawn {:.1}–{:.1} s (median {:.1} s), wall {:>7.0} ms, bound {:>7.0} ms, \
             ratio {:.2}x (bound in the order sent {:.0} ms: {:.2}x), non-200 answers {}{}",
            sorted[0].as_secs_f64(),
            sorted[sorted.len() - 1].as_secs_f64(),
            sorted[sorted.len() / 2].as_secs_f64(),
            ms(wall),
            ms(bound),
            wall.as_secs_f64() / bound.as_secs_f64(),
            ms(in_order),
            wall.as_secs_f64() / in_order.as_secs_f64(),
            not_ok.len(),
            if not_ok.is_empty() { String::new() } else { format!(" {not_ok:?}") }
        );
    }
}

struct Bench {
    charts: u64,
    max_in_flight: usize,
    accounts_json: String,
}

impl Bench {
    /// Runs one step of `templates.len()` charts (template `i`'s `request` is `templates[i]`) against `base_url` with
    /// a fresh account pool (the limiter starts full, as in a new process); returns its wall time and the charts it
    /// kept in flight.
    async fn run(&self, base_url: &str, timeout: Duration, templates: Vec<Value>) -> (Duration, usize) {
        let docs = JsonDocs::in_memory();
        let requests: Vec<_> = (0..templates.len())
            .map(|i| json!({"chartTemplateId": format!("t{i:02}")}))
            .collect();
        let run = json!({"scope": {"symbol": "BTCUSDT"}, "steps": {"s": {"stepType": "CHART_EXPORT", "status": "READY",
            "inputs": {"timeframe": "4h", "minImages": templates.len(), "requests": requests}}}});
        docs.put_doc(FLOW_RUNS, "bench", run).await.unwrap();
        for (i, request) in templates.iter().enumerate() {
            docs.put_doc(
                CHART_TEMPLATES,
                &format!("t{i:02}"),
                json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": request}),
            )
            .await
            .unwrap();
        }
        let worker = Worker::with_documents(
            docs.clone(),
            Arc::new(HttpChartImg::new(base_url, timeout).unwrap()),
            Arc::new(MemoryArtifacts::default()),
            AccountPool::new(parse_accounts("bench", &self.accounts_json).unwrap()),
            CoreSettings {
                worker_id: WorkerId::parse("bench").unwrap(),
                bucket: "bench-bucket".into(),
                timezone: "Etc/UTC".into(),
                concurrency: self.max_in_flight,
                max_requests: worker_chart_export::config::DEFAULT_MAX_REQUESTS,
                lease: Duration::from_secs(900),
                retry: RetryPolicy::default(),
                lifecycle: worker_chart_export::config::Lifecycle::for_lease(Duration::from_secs(900)),
            },
        );
        let in_flight = worker.accounts.in_flight(self.max_in_flight);
        let started = Instant::now();
        let report = run_chart_export_step(&worker, &RunId::parse("bench").unwrap(), &StepSelector::First, None)
            .await
            .unwrap();
        let wall = started.elapsed();
        assert!(
            matches!(report, StepReport::Succeeded { ref items, .. } if items.len() == templates.len()),
            "{report:?}"
        );
        (wall, in_flight)
    }
}
