//! The facts of `chart-img-api.md` the mock used to get wrong (issue 18), each over real HTTP with the exact body:
//! case-insensitive v3 exchange ids, the v3 symbol object's fields, `Pivot Points Standard` (observed), a layout's
//! own symbol and interval as defaults, and a catalogue under which `strict` refuses no major symbol while `lenient`
//! flags the symbols it does not list.

use mock_chart_img::{Config, LayoutConfig, Plan, SymbolMode};
use serde_json::{json, Value};

use crate::{json_of, msg, start, Ctx};

fn config() -> Config {
    Config::default().with_key("k", "acc", Plan::ULTRA)
}

async fn get(ctx: &Ctx, path: &str) -> (u16, Value) {
    json_of(
        ctx.http
            .get(ctx.url(path))
            .header("x-api-key", "k")
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn v3_exchange_ids_are_case_insensitive_and_symbols_carry_the_v3_fields() {
    let ctx = start(config()).await;
    // The official example is lower case; the answer names the exchange in upper case.
    let (status, body) = get(&ctx, "/v3/tradingview/exchange/binance?symbol=BTCUSDT.P").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "updatedAt": "2026-11-30T00:00:00.000Z",
            "payload": [{
                "symbol": "BTCUSDT.P",
                "description": "Bitcoin / USDT Perpetual",
                "type": "swap",
                "exchange": "BINANCE",
                "currency_code": "USDT",
                "currency-logoid": "crypto/XTVCUSDT",
                "base-currency-logoid": "crypto/XTVCBTC",
                "provider_id": "binance",
                "source2": {"id": "BINANCE", "name": "BINANCE", "description": "BINANCE"},
                "source_id": "BINANCE",
                "typespecs": ["perpetual", "crypto"]
            }]
        })
    );
    let (_, mixed) = get(&ctx, "/v3/tradingview/exchange/Nyse?symbol=GE&type=stock").await;
    let ge = mixed["payload"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["symbol"] == "GE")
        .unwrap();
    assert_eq!(
        ge,
        &json!({
            "symbol": "GE", "description": "GE Aerospace", "type": "stock", "exchange": "NYSE", "currency_code": "USD",
            "currency-logoid": "country/US", "provider_id": "nyse",
            "source2": {"id": "NYSE", "name": "NYSE", "description": "NYSE"}, "source_id": "NYSE",
            "typespecs": ["common"]
        }),
        "a stock has no base currency"
    );
    assert_eq!(
        get(&ctx, "/v3/tradingview/exchange/nosuch").await,
        (404, msg("Route Not Found"))
    );
}

#[tokio::test]
async fn pivot_points_standard_renders_as_an_observed_study() {
    let ctx = start(config()).await;
    let r = ctx
        .chart(
            "k",
            json!({"symbol": "BINANCE:BTCUSDT", "studies": [{"name": "Pivot Points Standard"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(&r.bytes().await.unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    // Only that exact name: a near miss is still a field error.
    assert_eq!(
        ctx.chart_json("k", json!({"studies": [{"name": "Pivot Points"}]}))
            .await,
        (
            422,
            json!([{"value": "Pivot Points", "msg": "must be a supported name", "param": "studies[0].name", "location": "body"}])
        )
    );
}

#[tokio::test]
async fn a_layout_request_defaults_to_the_layouts_own_symbol_and_interval() {
    let mut c = config();
    c.layouts = vec![LayoutConfig {
        id: "Ab12Cd34".into(),
        symbol: Some("NASDAQ:AAPL".into()),
        interval: Some("1W".into()),
        session_id: None,
        session_sign: None,
        disconnected: false,
    }];
    let ctx = start(c).await;
    let path = "/v2/tradingview/layout-chart/Ab12Cd34";
    let r = ctx.post(path, Some("k"), &json!({})).await;
    assert_eq!(r.status(), 200);
    let r = ctx.post(path, Some("k"), &json!({"interval": "1h"})).await;
    assert_eq!(r.status(), 200);
    let journal = ctx.admin_get("/requests").await;
    let seen: Vec<(&str, &str)> = journal
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["symbol"].as_str().unwrap(), e["interval"].as_str().unwrap()))
        .collect();
    // The layout's symbol and interval, not the advanced chart's BINANCE:BTCUSDT 1D; a body's own value wins.
    assert_eq!(seen, [("NASDAQ:AAPL", "1h"), ("NASDAQ:AAPL", "1W")], "newest first");
}

/// The symbols issue 18 found public clients sending that `strict` refused.
const MAJORS: &[&str] = &[
    "NASDAQ:NDX",
    "NASDAQ:IXIC",
    "TVC:DJI",
    "TVC:RUT",
    "FX:XAGUSD",
    "FX:EURGBP",
    "NYSE:GE",
    "NYSE:BAC",
    "TSX:TSX",
    "BINANCE:BTCUSDT.P",
];

#[tokio::test]
async fn strict_renders_the_major_symbols_and_refuses_a_made_up_one() {
    let mut c = config();
    c.symbols = SymbolMode::Strict;
    let ctx = start(c).await;
    for s in MAJORS {
        let r = ctx.chart("k", json!({"symbol": s, "width": 400, "height": 300})).await;
        assert_eq!(r.status(), 200, "{s}: {}", r.text().await.unwrap());
    }
    assert_eq!(
        ctx.chart_json("k", json!({"symbol": "BINANCE:FAKECOINUSDT"})).await,
        (422, msg("Invalid Symbol"))
    );
}

#[tokio::test]
async fn lenient_renders_an_unlisted_symbol_and_flags_it_in_the_journal() {
    let ctx = start(config()).await;
    for s in ["BINANCE:FAKECOINUSDT", "BINANCE:BTCUSDT", "BVB:TLV"] {
        let r = ctx.chart("k", json!({"symbol": s, "width": 400, "height": 300})).await;
        assert_eq!(r.status(), 200, "{s}");
    }
    let journal = ctx.admin_get("/requests").await;
    let flags: Vec<(&str, &Value)> = journal
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["symbol"].as_str().unwrap(), &e["symbol_listed"]))
        .collect();
    assert_eq!(
        flags,
        [
            // An exchange the catalogue has no entries for: not judged, but not listed either.
            ("BVB:TLV", &json!(false)),
            ("BINANCE:BTCUSDT", &json!(true)),
            ("BINANCE:FAKECOINUSDT", &json!(false)),
        ]
    );
    // A repeat comes from the memo of validated requests and keeps its flag.
    ctx.chart(
        "k",
        json!({"symbol": "BINANCE:FAKECOINUSDT", "width": 400, "height": 300}),
    )
    .await;
    assert_eq!(ctx.admin_get("/requests?limit=1").await[0]["symbol_listed"], false);
}
