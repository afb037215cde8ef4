//! Render benchmark: time to draw and encode one chart, without the cache.
//!
//! `cargo bench -p mock-chart-img --bench render` (release profile). Prints min / median / p99 per case.

use std::time::{Duration, Instant};

use mock_chart_img::{render, request, RenderRequest};
use serde_json::json;

fn main() {
    let iterations: usize = std::env::var("RENDER_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cases = [
        (
            "800x600 png candle light",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "4h" }),
        ),
        (
            "800x600 png candle dark + volume + RSI",
            json!({ "symbol": "BINANCE:ETHUSDT", "interval": "1h", "theme": "dark",
            "studies": [{ "name": "Volume", "forceOverlay": true }, { "name": "Relative Strength Index" }] }),
        ),
        (
            "800x600 png dark + BB + EMA + MACD + RSI",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "1h", "theme": "dark",
            "studies": [{ "name": "Bollinger Bands" }, { "name": "Moving Average Exponential", "input": { "length": 21 } },
                        { "name": "MACD" }, { "name": "Relative Strength Index" }] }),
        ),
        (
            "800x600 png area",
            json!({ "symbol": "NASDAQ:AAPL", "interval": "1D", "style": "area" }),
        ),
        (
            "800x600 jpeg candle",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "4h", "format": "jpeg" }),
        ),
        (
            "1920x1080 png candle",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "4h", "width": 1920, "height": 1080 }),
        ),
    ];
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>9}",
        "case", "min", "median", "p99", "bytes"
    );
    for (name, body) in cases {
        let chart = request::validate(body.as_object().unwrap()).unwrap();
        // Each study's placement comes from the spec, set by the validation.
        let req = RenderRequest::new(chart);
        let mut times = Vec::with_capacity(iterations);
        let mut size = 0;
        for i in 0..iterations {
            // A different seed each time, so nothing can be reused between iterations.
            let t = Instant::now();
            let bytes = render(&req, i as u64).unwrap();
            times.push(t.elapsed());
            size = bytes.len();
        }
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "{name:<44} {:>10} {:>10} {:>10} {size:>9}",
            ms(times[0]),
            ms(pct(0.5)),
            ms(pct(0.99))
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
