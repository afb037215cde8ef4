//! The validation rules of issue 9 over real HTTP, each with the exact status and body (`chart_img_spec` decides;
//! these tests check that the server answers what the spec says, byte for byte).

use mock_chart_img::{Config, Plan, SymbolMode, WatermarkMode};
use serde_json::{json, Value};

use crate::{json_of, msg, start, CHART};

fn config() -> Config {
    Config::default()
        .with_key("k-basic", "acc-basic", Plan::BASIC)
        .with_key("k-pro", "acc-pro", Plan::PRO)
        .with_key("k-ultra", "acc-ultra", Plan::ULTRA)
}

fn field(param: &str, value: Value, m: &str) -> Value {
    json!([{ "value": value, "msg": m, "param": param, "location": "body" }])
}

#[tokio::test]
async fn a_post_without_body_or_content_type_answers_the_default_chart() {
    let ctx = start(config()).await;
    let r = ctx
        .http
        .post(ctx.url(CHART))
        .header("x-api-key", "k-pro")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let bytes = r.bytes().await.unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let info = decoder.read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (800, 600), "the default chart is 800x600");
    // The same as asking for the defaults explicitly.
    let explicit = ctx
        .chart("k-pro", json!({ "symbol": "BINANCE:BTCUSDT", "interval": "1D" }))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes, explicit);
    // An empty JSON body is an empty object too.
    let r = ctx
        .http
        .post(ctx.url(CHART))
        .header("x-api-key", "k-pro")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn study_names_come_from_the_supported_list() {
    let ctx = start(config()).await;
    for name in [
        "RSI",
        "EMA",
        "Exponential Moving Average",
        "MA@tv-basicstudies",
        "ROC (Rate of Change)",
    ] {
        assert_eq!(
            ctx.chart_json("k-pro", json!({ "studies": [{ "name": name }] })).await,
            (422, field("studies[0].name", json!(name), "must be a supported name"))
        );
    }
    let (status, body) = ctx
        .chart_json("k-pro", json!({ "studies": [{ "name": "Volume" }, { "name": "RSI" }] }))
        .await;
    assert_eq!(
        (status, body),
        (422, field("studies[1].name", json!("RSI"), "must be a supported name"))
    );
    let r = ctx.chart("k-pro", json!({ "width": 400, "height": 300, "studies": [{ "name": "Super Trend" }, { "name": "Bollinger Bands %B" }] })).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn study_inputs_are_checked_by_type_and_range_unknown_keys_ignored() {
    let ctx = start(config()).await;
    let bb = |input: Value| json!({ "width": 400, "height": 300, "studies": [{ "name": "Bollinger Bands", "input": input }] });
    assert_eq!(
        ctx.chart_json("k-pro", bb(json!({ "in_1": 51 }))).await,
        (
            422,
            field(
                "studies[0].input.in_1",
                json!(51),
                "must be a number between 0.001 and 50"
            )
        )
    );
    assert_eq!(
        ctx.chart_json("k-pro", bb(json!({ "in_0": 20.5 }))).await,
        (
            422,
            field(
                "studies[0].input.in_0",
                json!(20.5),
                "must be an integer between 1 and 10000"
            )
        )
    );
    assert_eq!(
        ctx.chart_json(
            "k-pro",
            json!({ "studies": [{ "name": "MACD", "input": { "in_3": "median" } }] })
        )
        .await,
        (
            422,
            field(
                "studies[0].input.in_3",
                json!("median"),
                "must be one of: open, high, low, close, hl2, hlc3, ohlc4"
            )
        )
    );
    assert_eq!(
        ctx.chart_json(
            "k-pro",
            json!({ "studies": [{ "name": "Keltner Channels", "input": { "in_0": "maybe" } }] })
        )
        .await,
        (422, field("studies[0].input.in_0", json!("maybe"), "must be a boolean"))
    );
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "studies": [{ "name": "MACD", "input": [12] }] }))
            .await,
        (422, field("studies[0].input", json!([12]), "must be an object"))
    );
    // Strings of digits are numbers to the validator; unknown input keys and study keys are ignored.
    let r = ctx
        .chart(
            "k-pro",
            bb(json!({ "in_0": "20", "in_1": "2.5", "length": "nonsense" })),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn drawings_need_a_supported_name_their_required_inputs_and_a_z_order() {
    let ctx = start(config()).await;
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "drawings": [{ "name": "Circle", "input": {} }] }))
            .await,
        (
            422,
            field("drawings[0].name", json!("Circle"), "must be a supported name")
        )
    );
    assert_eq!(
        ctx.chart_json(
            "k-pro",
            json!({ "drawings": [{ "name": "Horizontal Line", "input": {} }] })
        )
        .await,
        (422, field("drawings[0].input.price", Value::Null, "is required"))
    );
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "drawings": [{ "name": "Horizontal Line" }] }))
            .await,
        (422, field("drawings[0].input", Value::Null, "is required"))
    );
    let (status, body) = ctx
        .chart_json(
            "k-pro",
            json!({ "drawings": [{ "name": "Text", "input": { "datetime": "yesterday", "price": 1 } }] }),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!([
            { "value": "yesterday", "msg": "must be an ISO8601 datetime", "param": "drawings[0].input.datetime", "location": "body" },
            { "value": null, "msg": "is required", "param": "drawings[0].input.text", "location": "body" }
        ])
    );
    assert_eq!(
        ctx.chart_json(
            "k-pro",
            json!({ "drawings": [{ "name": "Horizontal Line", "input": { "price": 1 }, "zOrder": "middle" }] })
        )
        .await,
        (
            422,
            field("drawings[0].zOrder", json!("middle"), "must be one of: top, bottom")
        )
    );
    let ok = json!({ "width": 400, "height": 300, "drawings": [
        { "name": "Horizontal Line", "input": { "price": "100.5" }, "zOrder": "bottom" },
        { "name": "Trend Line", "input": { "startDatetime": "2026-11-01T00:00:00Z", "startPrice": 1, "endDatetime": "2026-11-20T00:00:00.000Z", "endPrice": 2 } }
    ] });
    assert_eq!(ctx.chart("k-pro", ok).await.status(), 200);
}

#[tokio::test]
async fn timezones_come_from_the_fixed_list() {
    let ctx = start(config()).await;
    for tz in ["Europe/Vaduz", "UTC", "Mars/Olympus"] {
        assert_eq!(
            ctx.chart_json("k-pro", json!({ "timezone": tz })).await,
            (422, field("timezone", json!(tz), "must be a supported timezone"))
        );
    }
    for tz in ["Etc/UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
        assert_eq!(
            ctx.chart("k-pro", json!({ "timezone": tz, "width": 400, "height": 300 }))
                .await
                .status(),
            200,
            "{tz}"
        );
    }
}

#[tokio::test]
async fn numbers_are_read_as_express_validator_reads_them() {
    let ctx = start(config()).await;
    for ok in [json!(800), json!(800.0), json!("800")] {
        assert_eq!(ctx.chart("k-pro", json!({ "width": ok })).await.status(), 200, "{ok}");
    }
    for bad in [json!(800.5), json!("800.0"), json!("800px")] {
        assert_eq!(
            ctx.chart_json("k-pro", json!({ "width": bad })).await,
            (
                422,
                field("width", bad.clone(), "must be an integer greater than or equal to 400")
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn every_documented_v2_exchange_is_accepted_and_the_six_others_are_invalid_symbols() {
    // A key without rate limit: 207 requests in a row.
    let ctx = start(config().with_key(
        "k-fast",
        "acc-fast",
        Plan::custom(mock_chart_img::PlanLimits::unlimited()),
    ))
    .await;
    for ex in chart_img_spec::exchanges() {
        let body = json!({ "symbol": format!("{}:ABC", ex.id), "width": 400, "height": 300 });
        let r = ctx.chart("k-fast", body).await;
        if ex.v2 {
            assert_eq!(r.status(), 200, "{} is documented for v2", ex.id);
        } else {
            assert_eq!(json_of(r).await, (422, msg("Invalid Symbol")), "{} is not on v2", ex.id);
        }
    }
    let off: Vec<_> = chart_img_spec::exchanges().iter().filter(|e| !e.v2).collect();
    assert_eq!(off.len(), 6);
}

#[tokio::test]
async fn symbols_lenient_by_default_strict_on_request() {
    let mut lenient = config();
    lenient.invalid_symbols = vec!["TVC:NOTREAL".into()];
    let ctx = start(lenient).await;
    let small = |s: &str| json!({ "symbol": s, "width": 400, "height": 300 });
    assert_eq!(
        ctx.chart("k-pro", small("BINANCE:NOTACOIN")).await.status(),
        200,
        "lenient: unknown tickers pass"
    );
    assert_eq!(
        ctx.chart_json("k-pro", small("TVC:NOTREAL")).await,
        (422, msg("Invalid Symbol"))
    );
    assert_eq!(
        ctx.chart_json("k-pro", small("NASDAQ:AAPL/TVC:NOTREAL")).await,
        (422, msg("Invalid Symbol")),
        "per part of a formula"
    );
    ctx.server.shutdown().await.unwrap();

    let mut strict = config();
    strict.symbols = SymbolMode::Strict;
    let ctx = start(strict).await;
    assert_eq!(
        ctx.chart_json("k-pro", small("BINANCE:NOTACOIN")).await,
        (422, msg("Invalid Symbol"))
    );
    // As observed live: `FWB:DAX` and `INDEX:DAX` are refused, `TVC:DAX` renders.
    assert_eq!(
        ctx.chart_json("k-pro", small("FWB:DAX")).await,
        (422, msg("Invalid Symbol"))
    );
    assert_eq!(
        ctx.chart_json("k-pro", small("INDEX:DAX")).await,
        (422, msg("Invalid Symbol"))
    );
    for ok in [
        "BINANCE:BTCUSDT",
        "TVC:DAX",
        "NASDAQ:AAPL",
        "BIST:THYAO",
        "TWSE:2330",
        "WHITEBIT:BTCUSDT",
    ] {
        assert_eq!(
            ctx.chart("k-pro", small(ok)).await.status(),
            200,
            "{ok} is in the built-in catalogue"
        );
    }
    assert_eq!(
        ctx.chart("k-pro", small("BVB:TLV")).await.status(),
        200,
        "an exchange the catalogue has no entries for is not judged"
    );
}

#[tokio::test]
async fn a_symbol_catalogue_file_replaces_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("symbols.yaml");
    std::fs::write(
        &file,
        "exchanges:\n  BINANCE:\n    - {symbol: ONLYONE, description: The only one, type: spot, currency_code: USDT}\n",
    )
    .unwrap();
    let mut c = config();
    c.symbols = SymbolMode::Strict;
    c.symbol_catalogue = Some(file);
    let ctx = start(c).await;
    let small = |s: &str| json!({ "symbol": s, "width": 400, "height": 300 });
    assert_eq!(ctx.chart("k-pro", small("BINANCE:ONLYONE")).await.status(), 200);
    assert_eq!(
        ctx.chart_json("k-pro", small("BINANCE:BTCUSDT")).await,
        (422, msg("Invalid Symbol"))
    );
}

#[tokio::test]
async fn watermark_text_is_for_ultra_and_enterprise_size_and_opacity_are_checked() {
    let ctx = start(config()).await;
    let mark =
        json!({ "width": 400, "height": 300, "watermark": "MINE", "watermarkSize": 64, "watermarkOpacity": 0.5 });
    // Ignored below ULTRA (the default): the PRO image is the one without a watermark.
    let pro_marked = ctx.chart("k-pro", mark.clone()).await.bytes().await.unwrap();
    let pro_plain = ctx
        .chart("k-pro", json!({ "width": 400, "height": 300 }))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(pro_marked, pro_plain);
    let ultra_marked = ctx.chart("k-ultra", mark).await.bytes().await.unwrap();
    assert_ne!(ultra_marked, pro_plain, "ULTRA draws the custom text");
    // BASIC images always carry the CHART-IMG watermark.
    let basic = ctx
        .chart("k-basic", json!({ "width": 400, "height": 300 }))
        .await
        .bytes()
        .await
        .unwrap();
    assert_ne!(basic, pro_plain);
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "watermarkSize": 20 })).await,
        (
            422,
            field("watermarkSize", json!(20), "must be one of: 16, 32, 64, 128")
        )
    );
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "watermarkOpacity": 0.05 })).await,
        (
            422,
            field("watermarkOpacity", json!(0.05), "must be a number between 0.1 and 1")
        )
    );
    ctx.server.shutdown().await.unwrap();

    let mut refuse = config();
    refuse.custom_watermark = WatermarkMode::Refuse;
    let ctx = start(refuse).await;
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "watermark": "MINE" })).await,
        (
            422,
            field(
                "watermark",
                json!("MINE"),
                "custom watermark requires the ULTRA or ENTERPRISE plan"
            )
        )
    );
    assert_eq!(
        ctx.chart("k-ultra", json!({ "watermark": "MINE", "width": 400, "height": 300 }))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn checks_run_in_order_body_fields_plan_semantic() {
    let ctx = start(config()).await;
    // A field error outranks the plan limit, which outranks the unknown exchange.
    let (status, body) = ctx
        .chart_json(
            "k-basic",
            json!({ "symbol": "NOPE:X", "width": 1920, "height": 1080, "theme": "pink" }),
        )
        .await;
    assert_eq!(
        (status, body),
        (422, field("theme", json!("pink"), "must be one of: light, dark"))
    );
    assert_eq!(
        ctx.chart_json("k-basic", json!({ "symbol": "NOPE:X", "width": 1920, "height": 1080 }))
            .await,
        (403, msg("Exceed Max Usage Resolution Limit (800x600)"))
    );
    assert_eq!(
        ctx.chart_json("k-basic", json!({ "symbol": "NOPE:X" })).await,
        (422, msg("Invalid Symbol"))
    );
}

#[tokio::test]
async fn chart_options_ranges_and_shifts_are_field_errors() {
    let ctx = start(config()).await;
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "override": { "mainPaneHeight": 99 } }))
            .await,
        (
            422,
            field(
                "override.mainPaneHeight",
                json!(99),
                "must be an integer between 100 and 1800"
            )
        )
    );
    assert_eq!(
        ctx.chart_json(
            "k-pro",
            json!({ "override": { "priceRange": { "from": 1, "to": 2, "margin": 0.5 } } })
        )
        .await,
        (
            422,
            field(
                "override.priceRange.margin",
                json!(0.5),
                "must be a number between 0.001 and 0.1"
            )
        )
    );
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "override": { "showLegend": "sometimes" } }))
            .await,
        (
            422,
            field("override.showLegend", json!("sometimes"), "must be a boolean")
        )
    );
    assert_eq!(
        ctx.chart_json("k-pro", json!({ "shiftRight": 1001 })).await,
        (
            422,
            field("shiftRight", json!(1001), "must be an integer between 1 and 1000")
        )
    );
    assert_eq!(
        ctx.chart_json(
            "k-pro",
            json!({ "range": { "from": "2026-02-01", "to": "2026-01-01" } })
        )
        .await,
        (
            422,
            field(
                "range",
                json!({ "from": "2026-02-01", "to": "2026-01-01" }),
                "`from` must be before `to`"
            )
        )
    );
    let ok = json!({ "width": 400, "height": 300, "range": "YTD", "shiftLeft": "5",
                     "override": { "mainPaneHeight": 300, "showLegend": false, "priceRange": { "from": 1, "to": 2, "margin": 0.05 } } });
    assert_eq!(ctx.chart("k-pro", ok).await.status(), 200);
}
