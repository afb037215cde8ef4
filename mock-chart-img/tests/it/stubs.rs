//! Stubs over HTTP: criteria → a status, a JSON or text body or an image file, with headers and a delay; behind the
//! gateway by default (key, throttle, quota first), before it when asked; listed, counted and removed like faults.

use std::time::{Duration, Instant};

use mock_chart_img::{Config, ConfigFormat, Criteria, Plan, StubAnswer, StubSpec};
use serde_json::{json, Value};

use crate::{json_of, msg, small, start, CHART};

const KEY: &str = "stub-secret-key-1";

fn config() -> Config {
    Config::default().with_key(KEY, "acc-1", Plan::PRO)
}

fn eth() -> Value {
    json!({"symbol": "BINANCE:ETHUSDT", "interval": "4h", "width": 400, "height": 300})
}

#[tokio::test]
async fn a_stub_answers_matching_requests_behind_the_gateway_and_is_listed_counted_and_removed() {
    let ctx = start(config()).await;
    let (status, created) = ctx
        .admin_post(
            "/stubs",
            &json!({"criteria": {"route": CHART, "body": {"symbol": "BINANCE:ETHUSDT"}}, "answer": {"status": 500}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().parse::<u64>().unwrap();

    // The stub: the documented 500 body, and a unit of quota used (it answers past the gateway).
    assert_eq!(ctx.chart_json(KEY, eth()).await, (500, msg("Something Went Wrong")));
    assert_eq!(ctx.server.state().usage("acc-1").unwrap().used_today, 1);
    // Other symbols render.
    assert_eq!(ctx.chart(KEY, small()).await.status(), 200);
    // The gateway comes first: no key, no stub.
    assert_eq!(
        json_of(ctx.post(CHART, None, &eth()).await).await,
        (403, msg("Forbidden"))
    );
    // Even a body the API would refuse gets the stub: it takes priority over validation and rendering.
    let mut bad = eth();
    bad["width"] = json!(10);
    assert_eq!(ctx.chart_json(KEY, bad).await.0, 500);

    let listed = ctx.admin_get("/stubs").await;
    assert_eq!(listed[0]["matched"], 2, "{listed}");
    assert_eq!(listed[0]["origin"], "admin");
    assert_eq!(listed[0]["gateway"], true);
    let journal = ctx.admin_get("/requests?limit=1").await;
    assert_eq!(journal[0]["stub"], id, "the journal names the stub: {journal}");

    let r = ctx
        .http
        .delete(format!("{}/stubs/{id}", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ctx.chart(KEY, eth()).await.status(), 200);
    let r = ctx
        .http
        .delete(format!("{}/stubs/{id}", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn image_json_and_text_answers_with_headers_delay_priority_and_times() {
    let ctx = start(config()).await;
    // An image file: the bytes of a real chart, answered for another symbol.
    let png = ctx.chart(KEY, small()).await.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("canned.png");
    std::fs::write(&file, &png).unwrap();
    ctx.server
        .state()
        .add_stub(StubSpec::new(
            Criteria::any().body("symbol", "NASDAQ:AAPL"),
            StubAnswer::image(&file).header("x-canned", "yes").delay_ms(300),
        ))
        .unwrap();
    let started = Instant::now();
    let r = ctx.chart(KEY, json!({"symbol": "NASDAQ:AAPL"})).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-canned"], "yes");
    assert!(r.headers().contains_key("x-amzn-requestid"));
    assert_eq!(r.bytes().await.unwrap(), png);
    assert!(took >= Duration::from_millis(300), "{took:?}");

    // Two stubs match: the lower priority number wins; `times` retires a stub after its uses.
    ctx.server
        .state()
        .add_stub(StubSpec::new(
            Criteria::any().body("symbol", "NASDAQ:MSFT"),
            StubAnswer::json(json!({"n": 1})),
        ))
        .unwrap();
    ctx.server
        .state()
        .add_stub(
            StubSpec::new(
                Criteria::any().body("symbol", "NASDAQ:MSFT"),
                StubAnswer {
                    status: Some(502),
                    text: Some("<html>bad gateway</html>".into()),
                    ..StubAnswer::default()
                },
            )
            .priority(1)
            .times(1),
        )
        .unwrap();
    let r = ctx.chart(KEY, json!({"symbol": "NASDAQ:MSFT"})).await;
    assert_eq!(r.status(), 502);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(
        r.text().await.unwrap(),
        "<html>bad gateway</html>",
        "a stub's error body is kept as given"
    );
    assert_eq!(
        ctx.chart_json(KEY, json!({"symbol": "NASDAQ:MSFT"})).await,
        (200, json!({"n": 1}))
    );
    assert_eq!(
        ctx.admin_get("/stubs").await.as_array().unwrap().len(),
        2,
        "the times-1 stub retired"
    );
}

#[tokio::test]
async fn a_stub_before_the_gateway_needs_no_key_and_uses_no_quota() {
    let ctx = start(config()).await;
    ctx.server
        .stub(StubSpec::new(Criteria::route(CHART), StubAnswer::status(429)).before_gateway());
    assert_eq!(
        json_of(ctx.post(CHART, None, &small()).await).await,
        (429, msg("Too Many Requests"))
    );
    assert_eq!(ctx.chart_json(KEY, small()).await.0, 429);
    assert_eq!(ctx.server.state().usage("acc-1").unwrap().used_today, 0);
}

#[tokio::test]
async fn stubs_from_the_config_file_and_refusals_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "keys:\n  - {{key: {KEY}, account: acc-1, plan: PRO}}\nstubs:\n  - criteria: {{body: {{symbol: \"BINANCE:ETHUSDT\"}}}}\n    answer: {{status: 422, json: {{message: Invalid Symbol}}}}\n"
    );
    let ctx = start(Config::parse(&yaml, ConfigFormat::Yaml, "stubs.yaml").unwrap()).await;
    assert_eq!(ctx.chart_json(KEY, eth()).await, (422, msg("Invalid Symbol")));
    let listed = ctx.admin_get("/stubs").await;
    assert_eq!(listed[0]["origin"], "config", "{listed}");
    assert_eq!(ctx.admin_get("/config").await["stubs"][0]["answer"]["status"], 422);

    let missing = dir.path().join("nope.png");
    let yaml = format!(
        "stubs:\n  - criteria: {{}}\n    answer:\n      image: {}\n",
        missing.display()
    );
    let err = Config::parse(&yaml, ConfigFormat::Yaml, "stubs.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("stubs.yaml:3: stubs[0]: stub answer.image: cannot read"),
        "{err}"
    );

    for (bad, says) in [
        (
            json!({"answer": {"status": 200}, "criteria": {"status": 500}}),
            "`status`, `since` and `until` cannot",
        ),
        (
            json!({"answer": {"json": {}, "text": "x"}}),
            "at most one of `json`, `text`, `image`",
        ),
        (
            json!({"answer": {"status": 99}}),
            "answer.status: 99 is not an HTTP status",
        ),
        (
            json!({"answer": {"image": "a.gif"}}),
            "is not a .png, .jpg or .jpeg file",
        ),
        (json!({"answer": {}, "criterio": {}}), "unknown field `criterio`"),
        (json!({"criteria": {}}), "missing field `answer`"),
    ] {
        let (status, body) = ctx.admin_post("/stubs", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_stub_on_a_v3_route_matches_its_query() {
    let ctx = start(config()).await;
    ctx.server
        .state()
        .add_stub(StubSpec::new(
            Criteria::route("/v3/tradingview/exchange/{id}")
                .method("GET")
                .query("symbol", "NOPE"),
            StubAnswer::json(json!({"updatedAt": "2025-01-01", "payload": []})),
        ))
        .unwrap();
    let get = |q: &str| {
        ctx.http
            .get(ctx.url(&format!("/v3/tradingview/exchange/BINANCE?{q}")))
            .send()
    };
    let stubbed: Value = get(&format!("symbol=NOPE&key={KEY}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stubbed, json!({"updatedAt": "2025-01-01", "payload": []}));
    let real: Value = get(&format!("symbol=BTC&key={KEY}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!real["payload"].as_array().unwrap().is_empty(), "{real}");
    // Behind the gateway: no key, 403.
    assert_eq!(get("symbol=NOPE").await.unwrap().status(), 403);
    assert_eq!(ctx.admin_get("/stubs").await[0]["matched"], 1);
}

#[tokio::test]
async fn a_reload_replaces_the_config_stubs_and_expectations_and_keeps_those_added_at_run_time() {
    let first = config()
        .with_stub(StubSpec::new(
            Criteria::any().body("symbol", "BINANCE:ETHUSDT"),
            StubAnswer::status(500),
        ))
        .with_expectation(mock_chart_img::Expectation::new(Criteria::any()).at_most(100));
    let ctx = start(first).await;
    let st = ctx.server.state();
    st.add_stub(StubSpec::new(
        Criteria::any().body("symbol", "BINANCE:SOLUSDT"),
        StubAnswer::status(503),
    ))
    .unwrap();
    assert_eq!(ctx.chart(KEY, eth()).await.status(), 500);
    let next = config().with_stub(StubSpec::new(
        Criteria::any().body("symbol", "BINANCE:ETHUSDT"),
        StubAnswer::status(502),
    ));
    st.apply_config(&next).unwrap();
    assert_eq!(ctx.chart(KEY, eth()).await.status(), 502);
    let mut sol = eth();
    sol["symbol"] = json!("BINANCE:SOLUSDT");
    assert_eq!(
        ctx.chart(KEY, sol).await.status(),
        503,
        "the stub added at run time stays"
    );
    let origins: Vec<Value> = ctx
        .admin_get("/stubs")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["origin"].clone())
        .collect();
    assert_eq!(origins, [json!("admin"), json!("config")]);
    assert_eq!(
        ctx.admin_get("/expectations").await,
        json!([]),
        "the config's expectation went with it"
    );
    // A reload with a stub that cannot load is refused whole: the previous stubs stay.
    let bad = config().with_stub(StubSpec::new(Criteria::any(), StubAnswer::image("/nonexistent/x.png")));
    let err = st.apply_config(&bad).unwrap_err().to_string();
    assert!(
        err.contains("stub answer.image: cannot read /nonexistent/x.png"),
        "{err}"
    );
    assert_eq!(ctx.chart(KEY, eth()).await.status(), 502);
}
