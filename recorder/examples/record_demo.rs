//! Records `cassettes/demo`: three BTCUSDT 4h chart requests (Volume, RSI, MACD) through the recording proxy.
//!
//! Against an in-process mock-chart-img (the default; no network, no key):
//!     cargo run -p recorder --example record_demo
//! Against the real API (needs a key; the cassette gets `<CHART_IMG_API_KEY:acc-1>`, never the key):
//!     CHART_IMG_API_KEY=… cargo run -p recorder --example record_demo -- --upstream https://api.chart-img.com
//! Options: `--cassette DIR` (default cassettes/demo, relative to the workspace root), `--mode M` (default all:
//! re-recording replaces the old interactions, so the same traffic gives the same files).

use std::path::PathBuf;

use recorder::{Mode, ProxyConfig, Secrets, Vcr, VcrConfig};

/// The key the in-process mock accepts. Not a secret; it is redacted like one all the same.
const MOCK_KEY: &str = "demo-key-acc-1";

fn demo_bodies() -> Vec<serde_json::Value> {
    let base = |study: serde_json::Value| {
        serde_json::json!({"symbol":"BINANCE:BTCUSDT","interval":"4h","timezone":"Etc/UTC","style":"candle",
            "theme":"dark","width":800,"height":600,"studies":[study]})
    };
    vec![
        base(serde_json::json!({"name":"Volume","forceOverlay":true})),
        base(serde_json::json!({"name":"Relative Strength Index"})),
        base(serde_json::json!({"name":"MACD"})),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut upstream: Option<String> = None;
    let mut cassette = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cassettes/demo");
    let mut mode = Mode::All;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--upstream" => upstream = args.next(),
            "--cassette" => cassette = args.next().map(PathBuf::from).expect("--cassette DIR"),
            "--mode" => mode = args.next().expect("--mode M").parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }

    let (upstream_url, key, mock) = match upstream {
        Some(url) => (
            url,
            std::env::var("CHART_IMG_API_KEY").map_err(|_| anyhow::anyhow!("set CHART_IMG_API_KEY"))?,
            None,
        ),
        None => {
            let server = mock_chart_img::spawn(mock_chart_img::Config::default().with_key(
                MOCK_KEY,
                "acc-1",
                mock_chart_img::Plan::BASIC,
            ))
            .await?;
            (server.base_url(), MOCK_KEY.to_owned(), Some(server))
        }
    };
    let secrets = Secrets::new().with_account("acc-1", key.clone().into());
    let vcr = Vcr::open(
        &cassette,
        VcrConfig {
            mode,
            ..VcrConfig::default()
        },
        secrets,
    )?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let proxy = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(recorder::run_proxy(
        listener,
        ProxyConfig::new(upstream_url.clone(), vcr),
        async {
            let _ = stopped.await;
        },
    ));

    let client = reqwest::Client::new();
    for body in demo_bodies() {
        let resp = client
            .post(format!("{proxy}/v2/tradingview/advanced-chart"))
            .header("x-api-key", &key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let len = resp.bytes().await?.len();
        println!("{status} {ct} {len} bytes  studies={}", body["studies"]);
    }
    let _ = stop.send(());
    task.await??;
    if let Some(server) = mock {
        server.shutdown().await?;
    }
    println!("recorded {} through {upstream_url}", cassette.display());
    Ok(())
}
