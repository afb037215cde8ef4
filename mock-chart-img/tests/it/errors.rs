//! Every row of the errors table of `chart-img-api.md`, with the exact body.

use mock_chart_img::{Config, FaultSpec, KeyConfig, Plan};
use serde_json::json;

use crate::{json_of, msg, small, start, CHART};

fn config() -> Config {
    let mut inactive = KeyConfig::new("k-off", "acc-off", Plan::PRO);
    inactive.active = false;
    Config::default()
        .with_key("k-basic", "acc-basic", Plan::BASIC)
        .with_key("k-pro", "acc-pro", Plan::PRO)
        .with_key("k-ent", "acc-ent", Plan::ENTERPRISE)
        .with_key_config(inactive)
}

#[tokio::test]
async fn forbidden_for_missing_unknown_and_inactive_keys() {
    let ctx = start(config()).await;
    assert_eq!(
        json_of(ctx.post(CHART, None, &small()).await).await,
        (403, msg("Forbidden"))
    );
    assert_eq!(
        json_of(ctx.post(CHART, Some(""), &small()).await).await,
        (403, msg("Forbidden"))
    );
    assert_eq!(ctx.chart_json("no-such-key", small()).await, (403, msg("Forbidden")));
    assert_eq!(ctx.chart_json("k-off", small()).await, (403, msg("Forbidden")));
}

#[tokio::test]
async fn bad_request_for_non_json_bodies() {
    let ctx = start(config()).await;
    let send = |ct: Option<&'static str>, body: &'static str| {
        let mut rb = ctx.http.post(ctx.url(CHART)).header("x-api-key", "k-ent").body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        rb.send()
    };
    for (ct, body) in [
        (Some("application/json"), "{not json"),
        (Some("application/json"), "[1,2]"),
        (Some("application/json"), "\"a string\""),
        (Some("application/json"), "null"),
        (Some("text/plain"), "{}"),
        (None, "{}"),
    ] {
        let (status, body_json) = json_of(send(ct, body).await.unwrap()).await;
        assert_eq!(status, 400, "{ct:?} {body:?}");
        assert_eq!(body_json, msg("Bad Request"));
    }
    // A body that validated as JSON is still refused under another content type.
    assert_eq!(
        send(Some("application/json"), r#"{"width":400,"height":300}"#)
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body_json) = json_of(send(Some("text/plain"), r#"{"width":400,"height":300}"#).await.unwrap()).await;
    assert_eq!((status, body_json), (400, msg("Bad Request")));
    // A charset parameter is still JSON.
    let r = send(Some("application/json; charset=utf-8"), "{}").await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn field_errors_use_the_array_form() {
    let ctx = start(config()).await;
    let (status, body) = ctx.chart_json("k-ent", json!({ "symbol": "BTCUSDT" })).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!([{ "value": "BTCUSDT", "msg": "must be a valid tradingview EXCHANGE:SYMBOL", "param": "symbol", "location": "body" }])
    );

    let (status, body) = ctx
        .chart_json(
            "k-ent",
            json!({ "width": 399, "height": "tall", "style": "pie", "theme": "blue", "format": "gif",
                    "shiftLeft": 0, "range": "2D", "studies": [{ "input": {} }],
                    "drawings": [{ "name": "Horizontal Line", "zOrder": "middle" }] }),
        )
        .await;
    assert_eq!(status, 422);
    let params: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["param"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "width",
            "height",
            "style",
            "theme",
            "format",
            "range",
            "studies[0].name",
            "drawings[0].input",
            "drawings[0].zOrder",
            "shiftLeft"
        ]
    );
    for e in body.as_array().unwrap() {
        assert_eq!(e["location"], "body");
        assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(body[0]["value"], 399);
}

#[tokio::test]
async fn intervals_outside_the_list_are_field_errors_and_unknown_exchanges_invalid_symbols() {
    let ctx = start(config().with_seed(1)).await;
    for bad in [json!("4H"), json!("7m"), json!("2m"), json!(4)] {
        assert_eq!(
            ctx.chart_json("k-ent", json!({ "interval": bad })).await,
            (
                422,
                json!([{ "value": bad, "msg": "must be a supported interval", "param": "interval", "location": "body" }])
            )
        );
    }
    assert_eq!(
        ctx.chart_json("k-ent", json!({ "symbol": "NOWHERE:BTCUSDT" })).await,
        (422, msg("Invalid Symbol"))
    );
}

#[tokio::test]
async fn invalid_interval_only_where_the_config_marks_it_unsupported_on_an_exchange() {
    let mut c = config();
    c.unsupported_intervals
        .insert("BIST".into(), vec!["1m".into(), "45m".into()]);
    let ctx = start(c).await;
    let (status, body) = ctx
        .chart_json("k-ent", json!({ "symbol": "BIST:THYAO", "interval": "45m" }))
        .await;
    assert_eq!((status, body), (422, msg("Invalid Interval")));
    let r = ctx
        .chart(
            "k-ent",
            json!({ "symbol": "BIST:THYAO", "interval": "1h", "width": 400, "height": 300 }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = ctx
        .chart(
            "k-ent",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "45m", "width": 400, "height": 300 }),
        )
        .await;
    assert_eq!(r.status(), 200, "another exchange keeps 45m");
}

#[tokio::test]
async fn configured_invalid_symbols_and_extra_exchanges() {
    let mut c = config();
    c.invalid_symbols = vec!["BINANCE:NOTACOIN".into()];
    c.extra_exchanges = vec!["MYEX".into()];
    let ctx = start(c).await;
    assert_eq!(
        ctx.chart_json("k-ent", json!({ "symbol": "BINANCE:NOTACOIN" })).await,
        (422, msg("Invalid Symbol"))
    );
    let r = ctx
        .chart("k-ent", json!({ "symbol": "MYEX:ABC", "width": 400, "height": 300 }))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn resolution_and_parameter_limits() {
    let ctx = start(config()).await;
    assert_eq!(
        ctx.chart_json("k-basic", json!({ "width": 801 })).await,
        (403, msg("Exceed Max Usage Resolution Limit (800x600)"))
    );
    let studies: Vec<_> = (0..4).map(|_| json!({ "name": "Volume" })).collect();
    assert_eq!(
        ctx.chart_json("k-basic", json!({ "studies": studies })).await,
        (403, msg("Exceed Max Usage Parameter Limit (3)"))
    );
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let ctx = start(config()).await;
    let mut body = small();
    body["notAField"] = json!({ "deep": [1, 2, 3] });
    body["studies"] = json!([{ "name": "Relative Strength Index", "inputs": { "length": 14 }, "extra": true }]);
    let r = ctx.chart("k-pro", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
}

/// 401, 409, 500, 504 (and 429 `Limit Exceeded`) only happen upstream; faults produce them with the documented body.
#[tokio::test]
async fn upstream_statuses_have_their_documented_bodies() {
    let ctx = start(config()).await;
    let cases = [
        (401, "Invalid Request"),
        (409, "Session Disconnected"),
        (500, "Something Went Wrong"),
        (504, "Endpoint request timed out"),
        (429, "Too Many Requests"),
    ];
    ctx.server
        .state()
        .add_fault(FaultSpec::status_sequence(cases.iter().map(|c| c.0)).for_account("acc-pro"));
    for (status, message) in cases {
        assert_eq!(ctx.chart_json("k-pro", small()).await, (status, msg(message)));
    }
    ctx.server
        .state()
        .add_fault(FaultSpec::status_sequence([429]).with_message("Limit Exceeded"));
    assert_eq!(ctx.chart_json("k-pro", small()).await, (429, msg("Limit Exceeded")));
    // The sequences are used up: back to normal.
    assert_eq!(ctx.chart("k-pro", small()).await.status(), 200);
}

#[tokio::test]
async fn unknown_paths_answer_json_404() {
    let ctx = start(config()).await;
    let r = ctx.http.get(ctx.url("/v2/nope")).send().await.unwrap();
    assert_eq!(json_of(r).await, (404, msg("Route Not Found")));
    // v1 paths and wrong methods on known paths are the same JSON 404 (never an empty 405).
    let r = ctx
        .post("/v1/tradingview/advanced-chart", Some("k-pro"), &small())
        .await;
    assert_eq!(json_of(r).await, (404, msg("Route Not Found")));
    for (method, path) in [
        ("GET", CHART),
        ("PUT", crate::STORAGE),
        ("DELETE", "/v2/tradingview/layout-chart/abc"),
        ("POST", "/v3/tradingview/exchange/list"),
    ] {
        let r = ctx
            .http
            .request(method.parse().unwrap(), ctx.url(path))
            .header("x-api-key", "k-pro")
            .send()
            .await
            .unwrap();
        assert_eq!(json_of(r).await, (404, msg("Route Not Found")), "{method} {path}");
    }
    // Even what the HTTP framework refuses by itself (a body over its 2 MB limit) is JSON.
    let huge = format!("{{\"symbol\":\"{}\"}}", "A".repeat(3 * 1024 * 1024));
    let r = ctx
        .http
        .post(ctx.url(CHART))
        .header("x-api-key", "k-pro")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, (413, msg("Payload Too Large")));
}

#[tokio::test]
async fn storage_variant_answers_url_etag_expire_served_by_the_mock() {
    let ctx = start(config()).await;
    let r = ctx.post(crate::STORAGE, Some("k-pro"), &small()).await;
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200);
    let obj = body.as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["etag", "expire", "url"]);
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with(&ctx.server.base_url()), "{url}");
    assert!(url.ends_with(".png"));
    let expire = body["expire"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(expire).is_ok() && expire.ends_with('Z'),
        "{expire}"
    );

    let stored = ctx.http.get(url).send().await.unwrap();
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.headers()["content-type"], "image/png");
    let stored = stored.bytes().await.unwrap();
    let direct = ctx.chart("k-pro", small()).await.bytes().await.unwrap();
    assert_eq!(stored, direct, "the stored image is the one the direct route renders");

    // Errors on the storage route are the same as on the direct one.
    assert_eq!(
        json_of(ctx.post(crate::STORAGE, Some("nope"), &small()).await).await,
        (403, msg("Forbidden"))
    );
}
