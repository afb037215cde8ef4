//! Benchmarks (plain `main`, release profile): `cargo bench -p recorder --bench overhead`
//!
//! 1. Time the recording proxy adds per request: direct calls to a local upstream and calls through the proxy,
//!    interleaved in the same run, for replay and for recording (both write policies). Reported as p50/p99 of
//!    each and the difference.
//! 2. Loading a cassette of 10 000 interactions, and replay lookup time in it.
//!
//! Optional: `BENCH_REQUESTS` (default 1000) requests per proxy scenario.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use bytes::Bytes;
use recorder::{Mode, ProxyConfig, Request, Response, Secrets, Vcr, VcrConfig, WritePolicy};

const KEY: &str = "bench-key-0123456789";
const PATH: &str = "/v2/tradingview/advanced-chart";

fn secrets() -> Secrets {
    Secrets::new().with_account("acc-1", KEY.into())
}

fn body(i: usize) -> serde_json::Value {
    serde_json::json!({"symbol": "BINANCE:BTCUSDT", "interval": "4h", "timezone": "Etc/UTC", "style": "candle",
        "theme": "dark", "width": 800, "height": 600 + i, "studies": [{"name": "Volume", "forceOverlay": true}]})
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 0.50), percentile(&v, 0.99))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn spawn_upstream(png: Bytes) -> String {
    let app = axum::Router::new().route(
        PATH,
        post(move || {
            let png = png.clone();
            async move { ([("content-type", "image/png")], png) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn spawn_proxy(upstream: &str, vcr: Vcr) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ProxyConfig::new(upstream, vcr);
    tokio::spawn(recorder::run_proxy(listener, config, std::future::pending()));
    format!("http://{addr}")
}

async fn timed_post(client: &reqwest::Client, base: &str, i: usize) -> Duration {
    let payload = serde_json::to_vec(&body(i)).unwrap();
    let start = Instant::now();
    let resp = client
        .post(format!("{base}{PATH}"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let _ = resp.bytes().await.unwrap();
    start.elapsed()
}

async fn proxy_scenario(name: &str, upstream: &str, vcr: Vcr, n: usize, distinct: bool) {
    let proxy = spawn_proxy(upstream, vcr).await;
    let client = reqwest::Client::new();
    // Warm up connections (client → proxy, proxy → upstream, client → upstream).
    for i in 0..20 {
        timed_post(&client, upstream, i).await;
        timed_post(&client, &proxy, if distinct { 1_000_000 + i } else { i % 50 }).await;
    }
    let (mut direct, mut proxied) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        direct.push(timed_post(&client, upstream, i).await);
        proxied.push(timed_post(&client, &proxy, if distinct { i } else { i % 50 }).await);
    }
    let (d50, d99) = summary(direct);
    let (p50, p99) = summary(proxied);
    println!(
        "| {name} | {n} | {:.0} / {:.0} | {:.0} / {:.0} | **{:.0} / {:.0}** |",
        us(d50),
        us(d99),
        us(p50),
        us(p99),
        us(p50.saturating_sub(d50)),
        us(p99.saturating_sub(d99))
    );
}

async fn proxy_overhead(n: usize) {
    // A 48 KiB body, the size of a typical 800×600 chart PNG.
    let png = Bytes::from((0..48 * 1024).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let upstream = spawn_upstream(png).await;
    println!("\n## Proxy overhead (µs, p50 / p99; {n} interleaved requests each, 48 KiB PNG answers)\n");
    println!("| scenario | requests | direct | through proxy | added |");
    println!("|---|---|---|---|---|");

    // Replay: a cassette holding the 50 requests used, mode none.
    let dir = tempfile::tempdir().unwrap();
    {
        let rec = Vcr::open(
            dir.path(),
            VcrConfig {
                mode: Mode::NewEpisodes,
                write: WritePolicy::OnFlush,
                ..VcrConfig::default()
            },
            secrets(),
        )
        .unwrap();
        let proxy = spawn_proxy(&upstream, rec.clone()).await;
        let client = reqwest::Client::new();
        for i in 0..50 {
            timed_post(&client, &proxy, i).await;
        }
        rec.flush().unwrap();
    }
    let replay = Vcr::open(dir.path(), VcrConfig::default(), secrets()).unwrap();
    proxy_scenario("replay (mode none)", &upstream, replay, n, false).await;

    // Recording every request, file written once at the end (WritePolicy::OnFlush).
    let dir = tempfile::tempdir().unwrap();
    let vcr = Vcr::open(
        dir.path(),
        VcrConfig {
            mode: Mode::NewEpisodes,
            write: WritePolicy::OnFlush,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    proxy_scenario("record, write on flush", &upstream, vcr, n, true).await;

    // Recording every request, cassette rewritten (locked, merged, fsynced, renamed) after each one.
    let small = (n / 4).max(50);
    let dir = tempfile::tempdir().unwrap();
    let vcr = Vcr::open(
        dir.path(),
        VcrConfig {
            mode: Mode::NewEpisodes,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    proxy_scenario("record, write each interaction", &upstream, vcr, small, true).await;
}

async fn big_cassette() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let build = Instant::now();
    {
        let config = VcrConfig {
            mode: Mode::NewEpisodes,
            write: WritePolicy::OnFlush,
            ..VcrConfig::default()
        };
        let vcr = Vcr::open(dir.path(), config, secrets()).unwrap();
        for i in 0..N {
            let req = Request::post_json(PATH, &body(i)).with_header("x-api-key", KEY);
            // Most answers are small JSON (storage URLs, errors); every 100th is an image in a body file.
            let resp = if i % 100 == 0 {
                Response::new(200)
                    .with_header("content-type", "image/png")
                    .with_body(Bytes::from(vec![(i / 100) as u8; 20_000]))
            } else {
                Response::new(200)
                    .with_header("content-type", "application/json")
                    .with_body(format!(r#"{{"url":"https://example.invalid/{i}.png","etag":"e{i}","expire":"2026-01-01T00:00:00.000Z"}}"#))
            };
            vcr.handle(req, |_| async move { Ok::<_, std::io::Error>(resp) })
                .await
                .unwrap();
        }
        vcr.flush().unwrap();
    }
    let build = build.elapsed();
    let size = std::fs::metadata(dir.path().join(recorder::CASSETTE_FILE))
        .unwrap()
        .len();

    let mut loads = Vec::new();
    let mut vcr = None;
    for _ in 0..5 {
        let start = Instant::now();
        vcr = Some(Vcr::open(dir.path(), VcrConfig::default(), secrets()).unwrap());
        loads.push(start.elapsed());
    }
    let vcr = Arc::new(vcr.unwrap());
    assert_eq!(vcr.len(), N);
    let (load50, _) = summary(loads.clone());
    // Reference point: parsing the same file into an untyped serde_json::Value.
    let raw = std::fs::read(dir.path().join(recorder::CASSETTE_FILE)).unwrap();
    let start = Instant::now();
    let _: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let parse_only = start.elapsed();
    let load_max = loads.iter().max().copied().unwrap();

    // Requests are built beforehand: the figure is what `replay` costs (redact, canonicalize, hash, clone).
    let requests: Vec<Request> = (0..1000)
        .map(|k| Request::post_json(PATH, &body((k * 7919) % N)).with_header("x-api-key", KEY))
        .collect();
    let mut lookups = Vec::with_capacity(100_000);
    for round in 0..100 {
        for (k, req) in requests.iter().enumerate() {
            let start = Instant::now();
            let resp = vcr.replay(req).unwrap();
            lookups.push(start.elapsed());
            if round == 0 && k < 3 {
                assert_eq!(resp.status, 200);
            }
        }
    }
    let (l50, l99) = summary(lookups);
    let miss_req = Request::post_json(PATH, &serde_json::json!({"interval": "1h"}));
    let start = Instant::now();
    let _ = vcr.replay(&miss_req).unwrap_err();
    let miss = start.elapsed();

    println!(
        "\n## Cassette of {N} interactions ({:.1} MiB cassette.json, 100 body files)\n",
        size as f64 / 1048576.0
    );
    println!("| measure | result | goal |");
    println!("|---|---|---|");
    println!(
        "| load (`Vcr::open`), median of 5 / worst | {:.1} ms / {:.1} ms | < 200 ms |",
        load50.as_secs_f64() * 1e3,
        load_max.as_secs_f64() * 1e3
    );
    println!(
        "| reference: `serde_json::from_slice::<Value>` of the file | {:.1} ms | – |",
        parse_only.as_secs_f64() * 1e3
    );
    println!(
        "| replay lookup p50 / p99 (100 000 lookups) | {:.1} µs / {:.1} µs | < 50 µs |",
        us(l50),
        us(l99)
    );
    println!(
        "| miss report (closest of {N}) | {:.1} ms | – |",
        miss.as_secs_f64() * 1e3
    );
    println!(
        "| recording {N} interactions in memory + one write | {:.0} ms | – |",
        build.as_secs_f64() * 1e3
    );
}

fn main() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        big_cassette().await;
        proxy_overhead(n).await;
    });
}
