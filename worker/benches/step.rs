//! Wall time of one 20-chart step against a local Chart-IMG stand-in that answers in 300 ms, with one PRO account
//! (10 req/s, burst 15), next to the sequential time (20 × 300 ms) and the ideal bound that the plan's rate and burst
//! and the latency allow (`quota::ideal_bound`, shared with the fleet simulation; the worker's own in-flight maximum
//! plays no part in it).
//!
//! Run: `cargo bench -p worker --bench step` (add `-- --charts 40 --latency-ms 6000 --plan MEGA --max-in-flight 64`
//! to vary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use serde_json::json;
use worker_chart_export::adapters::docs::{CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::adapters::{JsonDocs, MemoryArtifacts};
use worker_chart_export::chartimg::HttpChartImg;
use worker_chart_export::config::{parse_accounts, Plan, RetryPolicy};
use worker_chart_export::core::{CoreSettings, Worker};
use worker_chart_export::domain::{RunId, StepSelector, WorkerId};
use worker_chart_export::ports::SystemClock;
use worker_chart_export::quota::{ideal_bound, AccountPool};
use worker_chart_export::{run_chart_export_step, StepReport};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn arg_str(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    let charts = arg("--charts", 20);
    let latency = Duration::from_millis(arg("--latency-ms", 300));
    let plan: Plan = arg_str("--plan", "PRO").parse().unwrap();
    let max_in_flight = arg("--max-in-flight", worker_chart_export::config::DEFAULT_CONCURRENCY as u64);
    let rounds = arg("--rounds", 3);

    let png = std::sync::Arc::new(b"\x89PNG\r\n\x1a\nbench".to_vec());
    let app = axum::Router::new().route(
        "/v2/tradingview/advanced-chart",
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

    let accounts = format!(r#"[{{"id":"acc-1","apiKey":"bench-key","dailyLimit":100000,"plan":"{plan:?}"}}]"#);
    let ideal = ideal_bound(charts, latency, &parse_accounts("bench", &accounts).unwrap()).expect("the daily limit allows every chart");
    let sequential = latency * charts as u32;
    println!(
        "step of {charts} charts, endpoint latency {} ms, plan {plan:?} ({}/s, burst {}), in-flight maximum {max_in_flight}",
        latency.as_millis(),
        plan.limits().rate_per_sec,
        plan.limits().burst
    );
    println!("sequential  {:>7.0} ms", sequential.as_secs_f64() * 1e3);
    println!("ideal bound {:>7.0} ms", ideal.as_secs_f64() * 1e3);
    for round in 0..rounds {
        // A fresh account pool each round: the limiter starts full, as in a new process.
        let docs = JsonDocs::in_memory();
        let requests: Vec<_> = (0..charts).map(|i| json!({"chartTemplateId": format!("t{i:02}")})).collect();
        let run = json!({"scope": {"symbol": "BTCUSDT"}, "steps": {"s": {"stepType": "CHART_EXPORT", "status": "READY",
            "inputs": {"timeframe": "4h", "minImages": charts, "requests": requests}}}});
        docs.put_doc(FLOW_RUNS, "bench", run).await.unwrap();
        for i in 0..charts {
            docs.put_doc(CHART_TEMPLATES, &format!("t{i:02}"), json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": {}}))
                .await
                .unwrap();
        }
        let worker = Worker {
            flow_runs: Arc::new(docs.clone()),
            templates: Arc::new(docs.clone()),
            usage: Arc::new(docs.clone()),
            renderer: Arc::new(HttpChartImg::new(&format!("http://{addr}"), Duration::from_secs(10)).unwrap()),
            artifacts: Arc::new(MemoryArtifacts::default()),
            clock: Arc::new(SystemClock),
            accounts: AccountPool::new(parse_accounts("bench", &accounts).unwrap()),
            settings: CoreSettings {
                worker_id: WorkerId::parse("bench").unwrap(),
                bucket: "bench-bucket".into(),
                timezone: "Etc/UTC".into(),
                concurrency: max_in_flight as usize,
                lease: Duration::from_secs(900),
                retry: RetryPolicy::default(),
                lifecycle: worker_chart_export::config::Lifecycle::for_lease(Duration::from_secs(900)),
            },
            shutdown: Default::default(),
        };
        let in_flight = worker.accounts.in_flight(max_in_flight as usize);
        let started = Instant::now();
        let report = run_chart_export_step(&worker, &RunId::parse("bench").unwrap(), &StepSelector::First, None).await.unwrap();
        let wall = started.elapsed();
        assert!(matches!(report, StepReport::Succeeded { ref items, .. } if items.len() as u64 == charts), "{report:?}");
        println!(
            "round {round}: {in_flight} in flight, wall {:>7.0} ms = {:.2}x ideal, {:.2}x faster than sequential",
            wall.as_secs_f64() * 1e3,
            wall.as_secs_f64() / ideal.as_secs_f64(),
            sequential.as_secs_f64() / wall.as_secs_f64()
        );
    }
}
