//! API v1 over real HTTP (`v1: emulate`): the GET routes with query parameters, `Authorization: Bearer` and `?key=`,
//! v1 defaults and minimums, study codes, the storage answer and its URL, the v1 error bodies; plans, quota and
//! faults as on v2. And `v1: off` (the default): every v1 path is an unknown route.

use chrono::{TimeZone, Utc};
use mock_chart_img::{Config, FaultSpec, KeyConfig, LimitOverrides, ManualClock, Plan, SymbolMode, V1Mode};
use serde_json::{json, Value};

use crate::{json_of, msg, start, Ctx};

const ADVANCED: &str = "/v1/tradingview/advanced-chart";
const MINI: &str = "/v1/tradingview/mini-chart";

fn config() -> Config {
    let mut c = Config::default()
        .with_key("k-pro", "acc-pro", Plan::PRO)
        .with_key("k-basic", "acc-basic", Plan::BASIC);
    c.v1 = V1Mode::Emulate;
    c
}

async fn bearer(ctx: &Ctx, path_and_query: &str, key: &str) -> reqwest::Response {
    ctx.http
        .get(ctx.url(path_and_query))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap()
}

async fn png_size(r: reqwest::Response) -> (usize, usize) {
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let size = imagesize::blob_size(&r.bytes().await.unwrap()).unwrap();
    (size.width, size.height)
}

#[tokio::test]
async fn off_by_default_every_v1_path_is_an_unknown_route() {
    let ctx = start(Config::default().with_key("k", "acc", Plan::PRO)).await;
    for path in [
        ADVANCED,
        MINI,
        "/v1/tradingview/advanced-chart/storage",
        "/v1/storage/pub/x.png",
    ] {
        assert_eq!(
            json_of(bearer(&ctx, path, "k").await).await,
            (404, msg("Route Not Found")),
            "{path}"
        );
    }
    assert_eq!(ctx.server.state().usage("acc").unwrap().used_today, 0);
}

#[tokio::test]
async fn charts_with_bearer_or_query_key_v1_defaults_and_study_codes() {
    let ctx = start(config()).await;
    // advanced-chart: 800x600 by default; the key as a Bearer token or as ?key=.
    assert_eq!(png_size(bearer(&ctx, ADVANCED, "k-pro").await).await, (800, 600));
    let r = ctx
        .http
        .get(ctx.url(&format!(
            "{ADVANCED}?symbol=NASDAQ:AAPL&interval=4h&width=320&height=220&key=k-pro"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(png_size(r).await, (320, 220), "v1's minimums are below v2's 400x300");
    // Studies as repeated CODE:args parameters, as public clients send them.
    let q = "?symbol=BINANCE:BTCUSDT&interval=1h&theme=dark&style=heikinAshi&studies=EMA:20&studies=RSI:14,close&studies=MACD&studies=BB&studies=Volume";
    assert_eq!(
        png_size(bearer(&ctx, &format!("{ADVANCED}{q}"), "k-pro").await).await,
        (800, 600)
    );
    // mini-chart: 350x220 by default; its interval is a period, case-insensitive.
    assert_eq!(png_size(bearer(&ctx, MINI, "k-pro").await).await, (350, 220));
    assert_eq!(
        png_size(bearer(&ctx, &format!("{MINI}?symbol=BINANCE:ETHUSDT&interval=1y"), "k-pro").await).await,
        (350, 220)
    );

    let journal = ctx.admin_get("/requests").await;
    let last = &journal[0];
    assert_eq!(
        (last["path"].as_str(), last["symbol"].as_str(), last["status"].as_u64()),
        (Some(MINI), Some("BINANCE:ETHUSDT"), Some(200))
    );
    assert_eq!(
        ctx.server.state().usage("acc-pro").unwrap().used_today,
        5,
        "v1 calls use the same quota"
    );
    // The key sent as `?key=` or Bearer is nowhere in what the admin API shows.
    for path in ["/requests", "/usage", "/health", "/config"] {
        let shown = ctx.admin_get(path).await.to_string();
        assert!(!shown.contains("k-pro") && !shown.contains("key="), "{path}: {shown}");
    }
}

#[tokio::test]
async fn v1_error_bodies() {
    let mut c = config();
    c.symbols = SymbolMode::Strict;
    let ctx = start(c).await;
    let get = |q: String| {
        let ctx = &ctx;
        async move { json_of(bearer(ctx, &q, "k-pro").await).await }
    };
    let entry =
        |value: Value, msg: &str, param: &str| json!({"value": value, "msg": msg, "param": param, "location": "query"});
    assert_eq!(
        get(format!("{ADVANCED}?interval=6h&width=300")).await,
        (
            422,
            json!({"errors": [
                entry(json!("6h"), "must be a supported interval", "interval"),
                entry(json!("300"), "must be an integer greater than or equal to 320", "width"),
            ]})
        )
    );
    assert_eq!(
        get(format!("{ADVANCED}?studies=ICHIMOKU")).await,
        (
            422,
            json!({"errors": [entry(json!("ICHIMOKU"), "must be a supported study", "studies[0]")]})
        )
    );
    // The checks v1 shares with v2 answer in v1's shape too.
    assert_eq!(
        get(format!("{ADVANCED}?symbol=btcusdt")).await,
        (
            422,
            json!({"errors": [entry(json!("btcusdt"), "must be a valid tradingview EXCHANGE:SYMBOL", "symbol")]})
        )
    );
    assert_eq!(
        get(format!("{ADVANCED}?symbol=BINANCE:FAKECOINUSDT")).await,
        (422, json!({"error": "Invalid symbol."}))
    );
    // Plan limits and the gateway keep their (gateway) bodies.
    assert_eq!(
        json_of(bearer(&ctx, &format!("{ADVANCED}?width=1920&height=1080"), "k-basic").await).await,
        (403, msg("Exceed Max Usage Resolution Limit (800x600)"))
    );
    let anonymous = ctx.http.get(ctx.url(ADVANCED)).send().await.unwrap();
    assert_eq!(json_of(anonymous).await, (403, msg("Forbidden")));
    assert_eq!(
        get("/v1/tradingview/nothing".into()).await,
        (404, json!({"message": "Route not found."}))
    );
    assert_eq!(
        get("/v1/storage/pub/none.png".into()).await,
        (404, json!({"message": "Route not found."}))
    );
}

#[tokio::test]
async fn faults_and_the_daily_quota_apply_as_on_v2() {
    let mut c = config();
    c.keys.push(KeyConfig {
        overrides: LimitOverrides {
            daily_limit: Some(3),
            ..LimitOverrides::default()
        },
        ..KeyConfig::new("k-small", "acc-small", Plan::PRO)
    });
    let ctx = start(c.with_fault(FaultSpec::status_sequence([500, 504, 200]).for_account("acc-small"))).await;
    let get = || bearer(&ctx, ADVANCED, "k-small");
    assert_eq!(json_of(get().await).await, (500, json!({"error": "Server error."})));
    assert_eq!(json_of(get().await).await, (504, json!({"error": "Process timeout."})));
    for _ in 0..3 {
        assert_eq!(get().await.status(), 200);
    }
    assert_eq!(
        json_of(get().await).await,
        (429, msg("Limit Exceeded")),
        "three calls passed the gateway"
    );
}

#[tokio::test]
async fn storage_answers_the_v1_shape_with_a_url_on_this_host() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
    let ctx = start(config().with_clock(clock.clone())).await;
    let r = bearer(
        &ctx,
        &format!("{ADVANCED}/storage?symbol=BINANCE:BTCUSDT&interval=4h"),
        "k-basic",
    )
    .await;
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().unwrap();
    let prefix = format!("{}/v1/storage/pub/", ctx.server.base_url());
    assert!(url.starts_with(&prefix) && url.ends_with(".png"), "{url}");
    assert_eq!(
        uuid::Uuid::parse_str(&url[prefix.len()..url.len() - 4]).map(|_| ()),
        Ok(())
    );
    let etag = body["etag"].as_str().unwrap();
    assert!(etag.len() == 32 && etag.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        body,
        json!({
            "url": url, "size": body["size"], "cors": url, "etag": etag,
            "expireAt": "2026-03-29T12:00:00.000Z", "createdAt": "2026-03-15T12:00:00.000Z"
        }),
        "BASIC keeps images 14 days"
    );
    let image = ctx.http.get(url).send().await.unwrap();
    assert_eq!(image.headers()["content-type"], "image/png");
    assert_eq!(
        image.bytes().await.unwrap().len() as u64,
        body["size"].as_u64().unwrap()
    );
    // Gone once expired.
    clock.advance(chrono::Duration::days(15));
    assert_eq!(
        json_of(ctx.http.get(url).send().await.unwrap()).await,
        (404, json!({"message": "Route not found."}))
    );
}
