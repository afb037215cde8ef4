//! Verification over HTTP: count and find by criteria, the unmatched requests, expectations checked by
//! `/__admin/verify` (exact past the ring's capacity), and the Rust handle failing a test on drop.

use mock_chart_img::{Config, ConfigFormat, Criteria, Expectation, Plan};
use serde_json::{json, Value};

use crate::{small, start, Ctx, CHART};

const KEY_1: &str = "verify-secret-key-1";
const KEY_2: &str = "verify-secret-key-2";

fn config() -> Config {
    Config::default()
        .with_key(KEY_1, "acc-1", Plan::PRO)
        .with_key(KEY_2, "acc-2", Plan::PRO)
}

impl Ctx {
    /// POSTs JSON to an admin path: status and JSON body.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.server.admin_url()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn count(&self, criteria: Value) -> Value {
        let (status, body) = self.admin_post("/requests/count", &criteria).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn chart(symbol: &str) -> Value {
    json!({"symbol": symbol, "interval": "4h", "width": 400, "height": 300})
}

/// A mixed session: three charts, a 422, a v3 query with the key in the query string, an unknown path, a wrong
/// method, a missing key and an unknown key.
async fn session(ctx: &Ctx) {
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:BTCUSDT")).await.status(), 200);
    assert_eq!(ctx.chart(KEY_2, chart("BINANCE:ETHUSDT")).await.status(), 200);
    let macd = json!({"symbol": "BINANCE:BTCUSDT", "interval": "1h", "width": 400, "height": 300,
                      "studies": [{"name": "MACD"}]});
    assert_eq!(ctx.chart(KEY_1, macd).await.status(), 200);
    assert_eq!(ctx.chart(KEY_1, json!({"interval": "4H"})).await.status(), 422);
    let v3 = ctx
        .http
        .get(ctx.url(&format!("/v3/tradingview/exchange/BINANCE?symbol=BTC&key={KEY_2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(v3.status(), 200);
    assert_eq!(
        ctx.post("/v1/nothing-here", Some(KEY_1), &json!({})).await.status(),
        404
    );
    assert_eq!(ctx.http.get(ctx.url(CHART)).send().await.unwrap().status(), 404);
    assert_eq!(ctx.post(CHART, None, &small()).await.status(), 403);
    assert_eq!(ctx.chart("verify-wrong-key", small()).await.status(), 403);
}

#[tokio::test]
async fn count_and_find_by_method_route_account_status_query_body_and_time() {
    let ctx = start(config()).await;
    let before = chrono::Utc::now();
    session(&ctx).await;
    let after = chrono::Utc::now();

    let n = |v: Value| v["count"].as_u64().unwrap();
    assert_eq!(n(ctx.count(json!({})).await), 9);
    assert_eq!(ctx.count(json!({})).await["complete"], true);
    // Two charts of acc-1 and the two refused for their key (`small()` is a BTC chart too).
    assert_eq!(
        n(ctx
            .count(json!({"route": CHART, "body": {"symbol": "BINANCE:BTCUSDT"}}))
            .await),
        4
    );
    assert_eq!(
        n(ctx
            .count(json!({"route": CHART, "body": {"symbol": "BINANCE:BTCUSDT", "interval": "1h"}}))
            .await),
        1
    );
    assert_eq!(n(ctx.count(json!({"body": {"studies.0.name": "MACD"}})).await), 1);
    assert_eq!(n(ctx.count(json!({"body": {"/studies/0/name": "MACD"}})).await), 1);
    assert_eq!(n(ctx.count(json!({"account": "acc-2"})).await), 2);
    assert_eq!(n(ctx.count(json!({"status": 422})).await), 1);
    assert_eq!(n(ctx.count(json!({"method": "get"})).await), 2);
    assert_eq!(
        n(ctx
            .count(json!({"route": "/v3/tradingview/exchange/{id}", "query": {"symbol": "BTC"}}))
            .await),
        1
    );
    assert_eq!(n(ctx.count(json!({"since": before, "until": after})).await), 9);
    assert_eq!(
        n(ctx.count(json!({"since": after + chrono::Duration::hours(1)})).await),
        0
    );

    // find: the entries themselves, newest first, with the query (no key parameter) and the limit.
    let (status, found) = ctx.admin_post("/requests/find", &json!({"account": "acc-1"})).await;
    assert_eq!(status, 200);
    let seqs: Vec<u64> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [6, 4, 3, 1], "{found}");
    let (_, v3) = ctx
        .admin_post("/requests/find?limit=1", &json!({"method": "GET", "account": "acc-2"}))
        .await;
    assert_eq!(v3.as_array().unwrap().len(), 1);
    assert_eq!(v3[0]["query"], json!([["symbol", "BTC"]]), "{v3}");

    // Criteria that cannot be evaluated are refused with a message naming the field.
    for (bad, says) in [
        (json!({"metod": "POST"}), "unknown field `metod`"),
        (json!({"route": "v2/x"}), "criteria.route: `v2/x` must start with `/`"),
        (json!({"status": 1000}), "criteria.status: 1000 is not an HTTP status"),
        (json!({"method": "PO ST"}), "criteria.method"),
        (json!({"since": after, "until": before}), "`since` is after `until`"),
    ] {
        let (status, body) = ctx.admin_post("/requests/count", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{bad}: {body}");
    }

    // No answer of these routes holds a key.
    let (_, all) = ctx.admin_post("/requests/find", &json!({})).await;
    let text = all.to_string();
    assert!(
        !text.contains("verify-secret") && !text.contains("verify-wrong"),
        "{text}"
    );
}

#[tokio::test]
async fn unmatched_lists_unknown_routes_wrong_methods_and_requests_without_a_known_key() {
    let ctx = start(config()).await;
    session(&ctx).await;
    let unmatched = ctx.admin_get("/requests/unmatched").await;
    let rows: Vec<(String, String, Value, bool)> = unmatched
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!("{} {}", e["method"].as_str().unwrap(), e["path"].as_str().unwrap()),
                e["key_status"].as_str().unwrap().to_string(),
                e["status"].clone(),
                e["routed"].as_bool().unwrap(),
            )
        })
        .collect();
    let row = |r: &str, k: &str, s: u16, routed: bool| (r.to_string(), k.to_string(), json!(s), routed);
    assert_eq!(
        rows,
        [
            row("POST /v2/tradingview/advanced-chart", "unknown", 403, true),
            row("POST /v2/tradingview/advanced-chart", "missing", 403, true),
            row("GET /v2/tradingview/advanced-chart", "missing", 404, false),
            row("POST /v1/nothing-here", "valid", 404, false),
        ],
        "{unmatched}"
    );
    assert_eq!(
        unmatched[3]["account"], "acc-1",
        "an unrouted request still names its account"
    );
    // Admin paths are not journaled as unmatched.
    let r = ctx
        .http
        .get(format!("{}/nothing", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(ctx.admin_get("/requests/unmatched").await.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn expectations_count_exactly_past_the_ring_and_verify_lists_each_unmet_one_with_its_closest_requests() {
    // A ring of 3 records; the config brings one expectation, the admin API two more.
    let yaml = format!(
        "keys:\n  - {{key: {KEY_1}, account: acc-1, plan: PRO}}\njournal_capacity: 3\nexpectations:\n  - name: five BTC charts\n    criteria: {{route: {CHART}, body: {{symbol: \"BINANCE:BTCUSDT\"}}}}\n    count: 5\n"
    );
    let config = Config::parse(&yaml, ConfigFormat::Yaml, "verify.yaml").unwrap();
    let ctx = start(config).await;
    let (status, created) = ctx
        .admin_post(
            "/expectations",
            &json!({"name": "two ETH charts", "criteria": {"route": CHART, "body": {"symbol": "BINANCE:ETHUSDT"}},
                    "count": 2}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = ctx
        .admin_post("/expectations", &json!({"criteria": {"status": 500}, "max": 0}))
        .await;
    assert_eq!(status, 201);

    for _ in 0..5 {
        assert_eq!(ctx.chart(KEY_1, chart("BINANCE:BTCUSDT")).await.status(), 200);
    }
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:ETHUSDT")).await.status(), 200);
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:SOLUSDT")).await.status(), 200);
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:BTCUSDC")).await.status(), 200);

    // The ring kept 3 of 8 requests; a scan says it is not complete, the expectation counted all 5.
    let c = ctx
        .count(json!({"route": CHART, "body": {"symbol": "BINANCE:BTCUSDT"}}))
        .await;
    assert_eq!(c, json!({"count": 0, "complete": false}));
    let listed = ctx.admin_get("/expectations").await;
    assert_eq!(listed[0]["matched"], 5, "{listed}");
    assert_eq!(listed[0]["origin"], "config");

    let r = ctx
        .http
        .get(format!("{}/verify", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 417);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        (report["ok"].clone(), report["unmet"].clone()),
        (json!(false), json!(1)),
        "{report}"
    );
    let eth = &report["expectations"][1];
    assert_eq!(
        (eth["wanted"].as_str(), eth["matched"].as_u64()),
        (Some("exactly 2"), Some(1))
    );
    // Closest first: the requests in the ring that fail only on the symbol, newest first.
    let closest: Vec<(u64, String)> = eth["closest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["seq"].as_u64().unwrap(),
                n["differs"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        closest,
        [
            (
                8,
                "body symbol: wanted \"BINANCE:ETHUSDT\", got \"BINANCE:BTCUSDC\"".to_string()
            ),
            (
                7,
                "body symbol: wanted \"BINANCE:ETHUSDT\", got \"BINANCE:SOLUSDT\"".to_string()
            ),
        ],
        "{eth}"
    );
    assert!(report["expectations"][0]["ok"].as_bool().unwrap());
    assert!(report["expectations"][2]["ok"].as_bool().unwrap());

    // One more ETH chart: every expectation holds, 200. A reset starts the counts over.
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:ETHUSDT")).await.status(), 200);
    let ok = ctx.admin_get("/verify").await;
    assert_eq!(ok["ok"], true, "{ok}");
    let r = ctx
        .http
        .post(format!("{}/reset", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ctx.admin_get("/expectations").await[0]["matched"], 0);

    // Too many: the report lists the matching requests.
    ctx.server
        .state()
        .add_expectation(Expectation::new(Criteria::route(CHART)).at_most(0).named("none"))
        .unwrap();
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:ETHUSDT")).await.status(), 200);
    let report = ctx.server.verify().unwrap_err();
    let text = report.to_string();
    assert!(
        text.contains("expectation 4 \"none\": wanted at most 0 matching"),
        "{text}"
    );
    assert!(
        text.contains("#10 POST /v2/tradingview/advanced-chart (acc-1, 200): matches"),
        "{text}"
    );
    // Bad expectations are refused with the reason.
    let (status, body) = ctx
        .admin_post("/expectations", &json!({"criteria": {}, "min": 3, "max": 1}))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("expectation: `min` (3) is above `max` (1)"))
    );
    let (status, body) = ctx.admin_post("/expectations", &json!({"criteria": {}})).await;
    assert_eq!(status, 400, "{body}");
    let r = ctx
        .http
        .delete(format!("{}/expectations", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ctx.admin_get("/verify").await["ok"], true);
}

#[tokio::test]
#[should_panic(expected = "expectation 1 \"two BTC charts\": wanted exactly 2 matching")]
async fn dropping_the_server_with_an_unmet_expectation_fails_the_test() {
    let ctx = start(config()).await;
    ctx.server.expect(
        Expectation::new(Criteria::route(CHART).body("symbol", "BINANCE:BTCUSDT"))
            .times(2)
            .named("two BTC charts"),
    );
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:BTCUSDT")).await.status(), 200);
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:ETHUSDT")).await.status(), 200);
    // Dropped here, one call short: the drop panics with the report.
    drop(ctx);
}

#[tokio::test]
async fn shutdown_checks_expectations_and_a_met_one_drops_quietly() {
    let ctx = start(config()).await;
    ctx.server
        .expect(Expectation::new(Criteria::route(CHART).account("acc-2")).times(1));
    assert_eq!(ctx.chart(KEY_1, small()).await.status(), 200);
    let err = ctx.server.shutdown().await.unwrap_err().to_string();
    assert!(err.contains("wanted exactly 1 matching {\"route\":"), "{err}");
    assert!(err.contains("account: wanted acc-2, got acc-1"), "{err}");

    let ctx = start(config()).await;
    ctx.server
        .expect(Expectation::new(Criteria::route(CHART)).between(1, 2));
    assert_eq!(ctx.chart(KEY_2, small()).await.status(), 200);
    ctx.server.shutdown().await.unwrap();

    let ctx = start(config()).await;
    ctx.server
        .expect(Expectation::new(Criteria::any().method("GET")).at_most(0));
    drop(ctx); // met: no panic
}

#[tokio::test]
async fn past_the_body_budget_the_oldest_records_let_their_bodies_go_first() {
    let mut config = config();
    // About one small PNG: each new image pushes the previous record's bodies out.
    config.journal_body_budget = 9_000;
    let ctx = start(config).await;
    for s in ["BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "BINANCE:SOLUSDT"] {
        let r = ctx.chart(KEY_1, chart(s)).await;
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().len() < 9_000);
    }
    let all = ctx.admin_get("/requests").await;
    let kept: Vec<bool> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["bodies_kept"].as_bool().unwrap())
        .collect();
    assert_eq!(kept, [true, false, false], "{all}");
    let c = ctx.count(json!({"body": {"interval": "4h"}})).await;
    assert_eq!(
        c,
        json!({"count": 1, "complete": false}),
        "body criteria cannot see released bodies"
    );
    // A budget of 0 keeps none, and expectations still count by body (before the bodies go).
    let mut config = self::config();
    config.journal_body_budget = 0;
    let ctx =
        start(config.with_expectation(Expectation::new(Criteria::any().body("symbol", "BINANCE:ETHUSDT")).times(1)))
            .await;
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:ETHUSDT")).await.status(), 200);
    assert_eq!(ctx.admin_get("/requests").await[0]["bodies_kept"], false);
    ctx.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_are_each_counted_once_by_an_expectation() {
    // 200 requests at once through a 10-record ring: throttled or not, each is counted exactly once.
    let ctx = start(config().with_journal_capacity(10)).await;
    ctx.server
        .expect(Expectation::new(Criteria::route(CHART).account("acc-1")).times(200));
    let sent = futures::future::join_all((0..200).map(|_| ctx.chart(KEY_1, small()))).await;
    let ok = sent.iter().filter(|r| r.status() == 200).count();
    assert!(ok >= 15, "a PRO burst passes at least: {ok}");
    assert_eq!(ctx.admin_get("/expectations").await[0]["matched"], 200);
    assert_eq!(ctx.admin_get("/requests").await.as_array().unwrap().len(), 10);
    ctx.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn among_equally_close_requests_one_with_a_differing_value_comes_before_one_without_the_field() {
    let ctx = start(config()).await;
    ctx.server
        .expect(Expectation::new(Criteria::any().body("symbol", "BINANCE:XRPUSDT")).times(1));
    assert_eq!(ctx.chart(KEY_1, chart("BINANCE:ETHUSDT")).await.status(), 200);
    assert_eq!(ctx.http.get(ctx.url("/v1/later")).send().await.unwrap().status(), 404);
    let report = ctx.server.verify().unwrap_err();
    let closest: Vec<&str> = report.expectations[0]
        .closest
        .iter()
        .map(|n| n.request.as_str())
        .collect();
    assert_eq!(
        closest,
        ["POST /v2/tradingview/advanced-chart", "GET /v1/later"],
        "{report}"
    );
    ctx.server.shutdown().await.unwrap_err();
}

#[tokio::test]
async fn a_key_a_client_put_in_a_body_field_is_a_placeholder_in_the_report() {
    let ctx = start(config()).await;
    ctx.server
        .expect(Expectation::new(Criteria::any().body("note", "hello")).times(1));
    let mut body = chart("BINANCE:BTCUSDT");
    body["note"] = json!(KEY_2);
    assert_eq!(ctx.chart(KEY_1, body).await.status(), 200);
    let r = ctx
        .http
        .get(format!("{}/verify", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 417);
    let text = r.text().await.unwrap();
    assert!(!text.contains(KEY_2), "{text}");
    assert!(
        text.contains(r#"body note: wanted \"hello\", got \"<CHART_IMG_API_KEY:acc-2>\""#),
        "{text}"
    );
    ctx.server.shutdown().await.unwrap_err();
}
