//! Load benchmark: the mock's successful PNG answer beside a bare axum handler returning the same bytes, measured
//! in the same process and run, over `CONNS` keep-alive HTTP/1.1 connections for `SECS` seconds each.
//!
//! `cargo bench -p mock-chart-img --bench load` (env: `LOAD_SECS`, default 5; `LOAD_CONNS`, default 50;
//! `LOAD_BODY_BUDGET`, the journal's body budget in bytes, default the config's).
//! The mock runs with rate limiting and the journal on (a key with a huge custom rate), as the README reports.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{http::header, routing::post, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mock_chart_img::{spawn, Config, Plan, PlanLimits};

const PATH: &str = "/v2/tradingview/advanced-chart";
const BODY: &str =
    r#"{"symbol":"BINANCE:BTCUSDT","interval":"4h","theme":"dark","studies":[{"name":"Volume","forceOverlay":true}]}"#;

struct Result {
    requests: usize,
    errors: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Latency histogram with 10 µs buckets up to 1 s, allocated once: the client must not grow the process's memory
/// while the server's is being measured.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 100_000;

async fn drive(addr: std::net::SocketAddr, conns: usize, secs: u64) -> Result {
    let hist: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new((0..=BUCKETS).map(|_| Default::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let stop = stop.clone();
            let hist = hist.clone();
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut done = 0usize;
                let mut errors = 0;
                while !stop.load(Ordering::Relaxed) {
                    let req = hyper::Request::post(PATH)
                        .header("host", "bench")
                        .header("x-api-key", "load-key")
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                        .unwrap();
                    let t = Instant::now();
                    if sender.ready().await.is_err() {
                        errors += 1;
                        break;
                    }
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status() == 200;
                            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                            if ok && body.as_ref().is_ok_and(|b| b.starts_with(b"\x89PNG")) {
                                let b = (t.elapsed().as_micros() as u64 / BUCKET_US).min(BUCKETS as u64) as usize;
                                hist[b].fetch_add(1, Ordering::Relaxed);
                                done += 1;
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (done, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    let mut errors = 0;
    for t in tasks {
        let (ok, e) = t.await.unwrap();
        requests += ok;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let pct = |p: f64| {
        let target = (requests as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, c) in hist.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= target {
                return Duration::from_micros((i as u64 + 1) * BUCKET_US);
            }
        }
        Duration::from_secs(1)
    };
    Result {
        requests,
        errors,
        rps: requests as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn show(name: &str, r: &Result) {
    println!(
        "{name:<34} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ok, {} errors)",
        r.rps,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.requests,
        r.errors
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let conns: usize = std::env::var("LOAD_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);

    // The mock: rate limiting on (huge custom rate so it never says no), journal on (default capacity 1000).
    let limits = PlanLimits {
        rate_per_sec: 1e9,
        burst: 1_000_000_000,
        daily_limit: u32::MAX,
        ..PlanLimits::unlimited()
    };
    let mut config = Config::default().with_key("load-key", "acc-load", Plan::custom(limits));
    // `LOAD_BODY_BUDGET=0`: the journal keeps no bodies (for snapshots), to measure what keeping them costs.
    if let Some(budget) = std::env::var("LOAD_BODY_BUDGET").ok().and_then(|v| v.parse().ok()) {
        config.journal_body_budget = budget;
    }
    let mock = spawn(config).await?;
    let png = reqwest::Client::new()
        .post(format!("{}{PATH}", mock.base_url()))
        .header("x-api-key", "load-key")
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await?
        .bytes()
        .await?;
    assert!(png.starts_with(b"\x89PNG"));

    // The baseline: the least an axum server can do to answer the same bytes.
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr = bare_listener.local_addr()?;
    let bytes = png.clone();
    let bare = Router::new().route(
        PATH,
        post(move || {
            let b = bytes.clone();
            async move { ([(header::CONTENT_TYPE, "image/png")], b) }
        }),
    );
    tokio::spawn(async move { axum::serve(bare_listener, bare).await });

    println!(
        "{conns} keep-alive connections, {secs} s per run, PNG of {} bytes",
        png.len()
    );
    // Warm-up of both, so neither pays for first-touch allocations inside its measured run.
    drive(bare_addr, conns, 1).await;
    drive(mock.addr(), conns, 1).await;

    if std::env::var("LOAD_ONLY").as_deref() == Ok("mock") {
        // For profiling the mock alone.
        show(
            "mock-chart-img (limits + journal)",
            &drive(mock.addr(), conns, secs).await,
        );
        return Ok(());
    }
    // Interleaved rounds, because the machine is shared: whatever else runs slows both sides of a round alike, and
    // the best round of each side is the figure least disturbed by it.
    let rounds: usize = std::env::var("LOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rss_before = rss_kib();
    let (mut best_bare, mut best_mock, mut ratios) = (0f64, 0f64, Vec::new());
    let mut rss_after = Vec::new();
    for round in 1..=rounds {
        let b = drive(bare_addr, conns, secs).await;
        show(&format!("round {round}: bare axum handler"), &b);
        let m = drive(mock.addr(), conns, secs).await;
        show(&format!("round {round}: mock-chart-img"), &m);
        rss_after.push(rss_kib());
        best_bare = best_bare.max(b.rps);
        best_mock = best_mock.max(m.rps);
        ratios.push(m.rps / b.rps);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    println!(
        "mock / bare throughput: best round of each {:.0}%, median of rounds {:.0}%",
        100.0 * best_mock / best_bare,
        100.0 * ratios[ratios.len() / 2]
    );
    println!("RSS: before the mock runs {rss_before} KiB, after each round {rss_after:?} KiB");
    let journal = mock.state().journal(&Default::default()).len();
    println!("journal entries kept: {journal} (capacity 1000)");
    mock.shutdown().await?;
    Ok(())
}
