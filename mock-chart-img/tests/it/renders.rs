//! The render gate over HTTP: a bounded number of renders at once (the wait in the journal's `queue_ms`), identical
//! requests in flight drawn once.

use mock_chart_img::{Config, Plan};
use serde_json::json;

use crate::{start, CHART};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_concurrent_requests_render_once_and_wait_their_turn() {
    let mut config = Config::default().with_key("k", "acc", Plan::ULTRA);
    config.render_concurrency = 1;
    let ctx = start(config).await;
    assert_eq!(ctx.admin_get("/health").await["render_concurrency"], 1);

    // A slow chart takes the one render thread first...
    let studies: Vec<_> = [
        "Bollinger Bands",
        "Relative Strength Index",
        "MACD",
        "Ichimoku Cloud",
        "Volume",
        "Stochastic",
    ]
    .iter()
    .map(|n| json!({"name": n}))
    .collect();
    let slow = json!({"symbol": "NASDAQ:AAPL", "width": 2048, "height": 1920, "studies": studies});
    let first = {
        let (http, url) = (ctx.http.clone(), ctx.url(CHART));
        tokio::spawn(async move {
            http.post(url)
                .header("x-api-key", "k")
                .header("content-type", "application/json")
                .body(slow.to_string())
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // ...and eight identical requests arrive while it draws: one of them queues, the others wait for its drawing.
    let same = json!({"symbol": "BINANCE:ETHUSDT", "interval": "4h"});
    let many: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, body) = (ctx.http.clone(), ctx.url(CHART), same.to_string());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .header("x-api-key", "k")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap())
            })
        })
        .collect();
    let mut images = Vec::new();
    for t in many {
        let (status, bytes) = t.await.unwrap();
        assert_eq!(status, 200);
        images.push(bytes);
    }
    assert_eq!(first.await.unwrap(), 200);
    assert!(images.windows(2).all(|w| w[0] == w[1]), "all eight got the same image");

    let health = ctx.admin_get("/health").await;
    assert_eq!(health["renders"], 2, "the slow chart and ETHUSDT once: {health}");
    let journal = ctx.admin_get("/requests").await;
    let eth: Vec<_> = journal
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["symbol"] == "BINANCE:ETHUSDT")
        .collect();
    assert_eq!(eth.len(), 8);
    let shared = eth.iter().filter(|e| e["shared_render"] == true).count();
    assert_eq!(shared, 7, "seven shared the one drawing: {journal}");
    let queued = eth.iter().filter_map(|e| e["queue_ms"].as_u64()).max().unwrap();
    assert!(queued > 0, "the drawing waited for the slow chart: {journal}");
    let slow_entry = journal
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["symbol"] == "NASDAQ:AAPL")
        .unwrap();
    assert!(
        slow_entry["queue_ms"].is_u64() && slow_entry.get("shared_render").is_none(),
        "{slow_entry}"
    );
}

#[tokio::test]
async fn render_concurrency_comes_from_the_file_and_defaults_to_the_cores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mock.yaml");
    std::fs::write(&path, "render_concurrency: 3\n").unwrap();
    assert_eq!(Config::from_file(&path).unwrap().render_concurrency, 3);
    let ctx = start(Config::default().with_key("k", "acc", Plan::PRO)).await;
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(ctx.admin_get("/health").await["render_concurrency"], cores);
}
