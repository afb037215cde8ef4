//! The other routes and the gateway's manners over real HTTP: `?key=`, `x-amzn-*` headers, layout charts, the v3
//! exchange routes, storage like the real one, and the realistic latency profile with its gateway timeout.

use chrono::{TimeZone, Utc};
use mock_chart_img::{Config, LatencyProfile, LayoutConfig, ManualClock, Plan};
use serde_json::{json, Value};

use crate::{json_of, msg, small, start, CHART, STORAGE};

fn config() -> Config {
    Config::default()
        .with_key("k-basic", "acc-basic", Plan::BASIC)
        .with_key("k-pro", "acc-pro", Plan::PRO)
        .with_key("k-ent", "acc-ent", Plan::ENTERPRISE)
}

fn post_query(ctx: &crate::Ctx, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
    ctx.http
        .post(format!("{}?key={key}", ctx.url(path)))
        .header("content-type", "application/json")
        .body(body.to_string())
}

#[tokio::test]
async fn the_key_may_come_as_a_query_parameter_on_v2_unless_switched_off() {
    let ctx = start(config()).await;
    let r = post_query(&ctx, CHART, "k-pro", &small()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ctx.server.state().usage("acc-pro").unwrap().used_today, 1);
    let r = post_query(&ctx, CHART, "wrong", &small()).send().await.unwrap();
    assert_eq!(json_of(r).await, (403, msg("Forbidden")));
    ctx.server.shutdown().await.unwrap();

    let mut c = config();
    c.query_key_on_v2 = false;
    let ctx = start(c).await;
    let r = post_query(&ctx, CHART, "k-pro", &small()).send().await.unwrap();
    assert_eq!(json_of(r).await, (403, msg("Forbidden")));
    // v3 always takes it.
    let r = ctx
        .http
        .get(format!("{}?key=k-pro", ctx.url("/v3/tradingview/exchange/list")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_gateway_errors_an_error_type() {
    let mut c = config();
    c.keys.push(mock_chart_img::KeyConfig::new(
        "k-tiny",
        "acc-tiny",
        Plan::custom(mock_chart_img::PlanLimits {
            rate_per_sec: 0.001,
            burst: 1,
            daily_limit: 1,
            ..mock_chart_img::PlanLimits::unlimited()
        }),
    ));
    c.keys.push(mock_chart_img::KeyConfig::new(
        "k-day",
        "acc-day",
        Plan::custom(mock_chart_img::PlanLimits {
            daily_limit: 1,
            ..mock_chart_img::PlanLimits::unlimited()
        }),
    ));
    let ctx = start(c).await;
    let id = |r: &reqwest::Response| {
        r.headers()
            .get("x-amzn-requestid")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let etype = |r: &reqwest::Response| {
        r.headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap().to_string())
    };

    let ok = ctx.chart("k-pro", small()).await;
    let ok2 = ctx.chart("k-pro", small()).await;
    assert!(id(&ok).is_some_and(|i| uuid::Uuid::parse_str(&i).is_ok()));
    assert_ne!(id(&ok), id(&ok2), "one id per answer");
    assert_eq!(etype(&ok), None);

    let forbidden = ctx.chart("nope", small()).await;
    assert_eq!(
        (etype(&forbidden).as_deref(), id(&forbidden).is_some()),
        (Some("ForbiddenException"), true)
    );
    ctx.chart("k-tiny", small()).await;
    let throttled = ctx.chart("k-tiny", small()).await;
    assert_eq!(etype(&throttled).as_deref(), Some("TooManyRequestsException"));
    assert_eq!(json_of(throttled).await, (429, msg("Too Many Requests")));
    ctx.chart("k-day", small()).await;
    let quota = ctx.chart("k-day", small()).await;
    assert_eq!(etype(&quota).as_deref(), Some("LimitExceededException"));
    assert_eq!(json_of(quota).await, (429, msg("Limit Exceeded")));

    // Validation errors come from behind the gateway: an id, no error type.
    let invalid = ctx.chart("k-pro", json!({ "theme": "pink" })).await;
    assert_eq!((etype(&invalid), id(&invalid).is_some()), (None, true));
    let missing = ctx.http.get(ctx.url("/nowhere")).send().await.unwrap();
    assert!(id(&missing).is_some());
}

fn layouts() -> Vec<LayoutConfig> {
    let layout = |id: &str| LayoutConfig {
        id: id.into(),
        symbol: Some("NASDAQ:AAPL".into()),
        interval: Some("1h".into()),
        session_id: None,
        session_sign: None,
        disconnected: false,
    };
    vec![
        layout("PUBLIC1"),
        LayoutConfig {
            session_id: Some("sess".into()),
            session_sign: Some("sign".into()),
            ..layout("PRIVATE1")
        },
        LayoutConfig {
            disconnected: true,
            ..layout("STALE1")
        },
    ]
}

#[tokio::test]
async fn layout_charts_from_the_config_with_sessions() {
    let mut c = config();
    c.layouts = layouts();
    let ctx = start(c).await;
    let layout = |id: &str, body: Value| {
        let path = format!("/v2/tradingview/layout-chart/{id}");
        let ctx = &ctx;
        async move { ctx.post(&path, Some("k-pro"), &body).await }
    };
    let r = layout("PUBLIC1", json!({ "width": 400, "height": 300 })).await;
    assert_eq!(
        (r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()),
        (200, "image/png")
    );
    assert_eq!(
        json_of(layout("NOSUCH", json!({})).await).await,
        (404, msg("Route Not Found"))
    );
    assert_eq!(
        json_of(layout("PRIVATE1", json!({})).await).await,
        (403, msg("Layout Forbidden"))
    );
    let with_session = ctx
        .http
        .post(ctx.url("/v2/tradingview/layout-chart/PRIVATE1"))
        .header("x-api-key", "k-pro")
        .header("tradingview-session-id", "sess")
        .header("tradingview-session-id-sign", "sign")
        .send()
        .await
        .unwrap();
    assert_eq!(with_session.status(), 200);
    assert_eq!(
        json_of(layout("STALE1", json!({})).await).await,
        (409, msg("Session Disconnected"))
    );
    assert_eq!(
        json_of(layout("PUBLIC1", json!({ "zoomIn": 26 })).await).await,
        (
            422,
            json!([{ "value": 26, "msg": "must be an integer between 1 and 25", "param": "zoomIn", "location": "body" }])
        )
    );
    assert_eq!(
        json_of(layout("PUBLIC1", json!({ "width": 1921 })).await).await,
        (403, msg("Exceed Max Usage Resolution Limit (1920x1080)"))
    );
    let r = ctx
        .post(
            "/v2/tradingview/layout-chart/storage/PUBLIC1",
            Some("k-pro"),
            &json!({ "width": 400, "height": 300 }),
        )
        .await;
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200);
    let mut keys: Vec<_> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["etag", "expire", "size", "url"]);
    assert!(body["url"].as_str().unwrap().contains("/tradingview/layout-chart/"));
    let image = ctx
        .http
        .get(body["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(image.len() as u64, body["size"].as_u64().unwrap());
}

#[tokio::test]
async fn v3_exchange_routes_answer_from_the_catalogue() {
    let ctx = start(config()).await;
    let get = |path: &str| ctx.http.get(ctx.url(path)).header("x-api-key", "k-pro").send();
    let (status, list) = json_of(get("/v3/tradingview/exchange/list").await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(list["updatedAt"].is_string());
    let ids: Vec<&str> = list["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 207);
    assert!(ids.contains(&"BINANCE") && ids.contains(&"BIST") && ids.contains(&"BAHRAIN"));

    let (status, binance) = json_of(
        get("/v3/tradingview/exchange/BINANCE?symbol=btc&type=spot")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let payload = binance["payload"].as_array().unwrap();
    assert!(!payload.is_empty());
    let btcusdt = payload.iter().find(|p| p["symbol"] == "BTCUSDT").unwrap();
    assert_eq!(
        btcusdt,
        &json!({
            "symbol": "BTCUSDT", "description": "Bitcoin / USDT", "type": "spot", "exchange": "BINANCE",
            "currency_code": "USDT", "currency-logoid": "crypto/XTVCUSDT", "base-currency-logoid": "crypto/XTVCBTC",
            "provider_id": "binance", "source2": {"id": "BINANCE", "name": "BINANCE", "description": "BINANCE"},
            "source_id": "BINANCE", "typespecs": ["crypto"]
        })
    );
    assert!(payload.iter().all(|p| p["symbol"].as_str().unwrap().contains("BTC")
        || p["description"].as_str().unwrap().to_uppercase().contains("BTC")));
    let (_, swaps) = json_of(get("/v3/tradingview/exchange/BYBIT?type=swap").await.unwrap()).await;
    assert!(swaps["payload"].as_array().unwrap().iter().all(|p| p["type"] == "swap"));
    let (_, empty) = json_of(get("/v3/tradingview/exchange/BVB").await.unwrap()).await;
    assert_eq!(empty["payload"], json!([]));
    assert_eq!(
        json_of(get("/v3/tradingview/exchange/NOPE").await.unwrap()).await,
        (404, msg("Route Not Found"))
    );
    let r = ctx
        .http
        .get(ctx.url("/v3/tradingview/exchange/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, (403, msg("Forbidden")));
}

#[tokio::test]
async fn storage_keeps_each_call_as_a_new_object_for_the_plans_period_then_404() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap());
    let ctx = start(config().with_clock(clock.clone())).await;
    let store = |key: &'static str| {
        let ctx = &ctx;
        async move { json_of(ctx.post(STORAGE, Some(key), &small()).await).await.1 }
    };
    let a = store("k-pro").await;
    let b = store("k-pro").await;
    assert_ne!(a["url"], b["url"], "every call is a new object");
    assert_eq!(a["etag"], b["etag"], "same bytes, same etag");
    assert_eq!(a["expire"], "2026-04-14T12:00:00.000Z", "PRO keeps 30 days");
    let url = a["url"].as_str().unwrap();
    let path = url.strip_prefix(&ctx.server.base_url()).unwrap();
    let parts: Vec<&str> = path.split('/').collect();
    assert_eq!(
        &parts[..5],
        ["", "storage", "20260414", "tradingview", "advanced-chart"],
        "{path}"
    );
    assert!(
        uuid::Uuid::parse_str(parts[5].strip_suffix(".png").unwrap()).is_ok(),
        "{path}"
    );
    for (key, expire) in [
        ("k-basic", "2026-03-29T12:00:00.000Z"),
        ("k-ent", "2026-07-13T12:00:00.000Z"),
    ] {
        assert_eq!(store(key).await["expire"], expire, "{key}");
    }
    assert_eq!(ctx.http.get(url).send().await.unwrap().status(), 200);
    clock.advance(chrono::Duration::days(30));
    assert_eq!(
        json_of(ctx.http.get(url).send().await.unwrap()).await,
        (404, msg("Route Not Found")),
        "expired"
    );
    let basic_gone = ctx
        .http
        .get(ctx.url("/storage/20260329/tradingview/advanced-chart/not-a-uuid.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(basic_gone).await, (404, msg("Route Not Found")));
}

#[tokio::test]
async fn stored_images_survive_a_restart_within_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.storage_dir = Some(dir.path().to_path_buf());
    let ctx = start(c.clone()).await;
    let first = json_of(ctx.post(STORAGE, Some("k-pro"), &small()).await).await.1;
    let size = ctx
        .http
        .get(first["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len() as u64;
    ctx.server.shutdown().await.unwrap();

    // After a restart the image is still there; with a budget of two images, a third call evicts the oldest.
    c.storage_max_bytes = size * 2 + size / 2;
    let ctx = start(c).await;
    let url = |v: &Value| v["url"].as_str().unwrap().to_string();
    let first_url = url(&first);
    let path = first_url.split("/storage/").nth(1).unwrap().to_string();
    let again = ctx.http.get(ctx.url(&format!("/storage/{path}"))).send().await.unwrap();
    assert_eq!(again.status(), 200, "survived the restart");
    let second = json_of(ctx.post(STORAGE, Some("k-pro"), &small()).await).await.1;
    let third = json_of(ctx.post(STORAGE, Some("k-pro"), &small()).await).await.1;
    let get = |u: String| ctx.http.get(u).send();
    assert_eq!(
        get(ctx.url(&format!("/storage/{path}"))).await.unwrap().status(),
        404,
        "oldest evicted"
    );
    assert_eq!(get(url(&second)).await.unwrap().status(), 200);
    assert_eq!(get(url(&third)).await.unwrap().status(), 200);
    let health = ctx.admin_get("/health").await;
    assert_eq!(health["stored_objects"], 2);
}

#[tokio::test]
async fn realistic_latency_is_scaled_and_the_gateway_times_out_past_its_limit() {
    let mut c = config();
    c.latency = LatencyProfile::Realistic;
    c.time_scale = 0.01;
    let ctx = start(c.clone()).await;
    let t = std::time::Instant::now();
    assert_eq!(ctx.chart("k-pro", small()).await.status(), 200);
    let took = t.elapsed();
    // At least ~2.5 s of model time (the log-normal's 0.1 % quantile at 400x300), scaled by 0.01.
    assert!(took >= std::time::Duration::from_millis(20), "took {took:?}");
    // Errors do not wait: validation answers at once.
    let t = std::time::Instant::now();
    assert_eq!(ctx.chart("k-pro", json!({ "theme": "pink" })).await.status(), 422);
    assert!(t.elapsed() < took);
    ctx.server.shutdown().await.unwrap();

    // With a gateway timeout below every possible draw, every chart is a 504 after the (scaled) timeout.
    c.gateway_timeout_ms = 1000;
    let ctx = start(c).await;
    for _ in 0..3 {
        assert_eq!(
            json_of(ctx.chart("k-pro", small()).await).await,
            (504, msg("Endpoint request timed out"))
        );
    }
    // Instant stays the default.
    assert_eq!(Config::default().latency, LatencyProfile::Instant);
}
