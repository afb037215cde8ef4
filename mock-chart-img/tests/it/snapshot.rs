//! `POST /__admin/snapshot`: a session against the mock written as a recorder cassette (keys as placeholders,
//! images as sidecar bodies) that replays byte for byte, here through a second mock's strict `replay:` and the
//! recorder's `Vcr` (the worker's `mock` mode replays one in the worker's tests).

use mock_chart_img::{Config, Plan};
use serde_json::{json, Value};

use crate::{start, CHART};

const KEY: &str = "snap-secret-key-1";
const KEY_2: &str = "snap-secret-key-2";

fn chart(symbol: &str) -> Value {
    json!({"symbol": symbol, "interval": "4h", "width": 400, "height": 300})
}

#[tokio::test]
async fn a_snapshot_is_a_cassette_that_replays_the_session_byte_for_byte() {
    let ctx = start(
        Config::default()
            .with_key(KEY, "acc-1", Plan::PRO)
            .with_key(KEY_2, "acc-2", Plan::PRO),
    )
    .await;
    let btc = ctx.chart(KEY, chart("BINANCE:BTCUSDT")).await.bytes().await.unwrap();
    let eth = ctx.chart(KEY_2, chart("BINANCE:ETHUSDT")).await.bytes().await.unwrap();
    let refused = ctx.chart_json(KEY, json!({"interval": "4H"})).await;
    assert_eq!(refused.0, 422);
    // The key as a query parameter, on a v3 route.
    let list = ctx
        .http
        .get(ctx.url(&format!("/v3/tradingview/exchange/BINANCE?symbol=BTC&key={KEY_2}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("session");
    let (status, outcome) = ctx.admin_post("/snapshot", &json!({"dir": cassette})).await;
    assert_eq!(status, 201, "{outcome}");
    assert_eq!(
        (outcome["interactions"].as_u64(), outcome["skipped"].as_u64()),
        (Some(4), Some(0))
    );

    // Keys are placeholders; images are sidecar files named by their hash.
    let text = std::fs::read_to_string(cassette.join(recorder::CASSETTE_FILE)).unwrap();
    assert!(!text.contains("snap-secret"), "a key reached the cassette: {text}");
    assert!(
        text.contains("<CHART_IMG_API_KEY:acc-1>") && text.contains("<CHART_IMG_API_KEY:acc-2>"),
        "{text}"
    );
    let bodies: Vec<_> = std::fs::read_dir(cassette.join("bodies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies.iter().all(|b| b.extension().unwrap() == "png"));
    let lint = recorder::lint(
        std::slice::from_ref(&cassette),
        &recorder::Secrets::new().with_account("acc-1", KEY.into()),
    )
    .unwrap();
    assert!(lint.is_empty(), "{lint:?}");

    // The recorder replays it: same bytes, and the recorded 422 and v3 answers.
    let secrets = recorder::Secrets::new().with_account("acc-2", KEY_2.into());
    let vcr = recorder::Vcr::open(&cassette, recorder::VcrConfig::default(), secrets).unwrap();
    let replay = |body: Value| vcr.replay(&recorder::Request::post_json(CHART, &body)).unwrap();
    assert_eq!(replay(chart("BINANCE:BTCUSDT")).body, btc);
    assert_eq!(replay(chart("BINANCE:ETHUSDT")).body, eth);
    let r = replay(json!({"interval": "4H"}));
    assert_eq!(
        (r.status, serde_json::from_slice::<Value>(&r.body).unwrap()),
        (422, refused.1)
    );
    let v3 = vcr
        .replay(
            &recorder::Request::new("GET", "/v3/tradingview/exchange/BINANCE")
                .with_query("symbol", "BTC")
                // A key in the query is matched by its account's placeholder (the recorder's rule).
                .with_query("key", KEY_2),
        )
        .unwrap();
    assert_eq!(String::from_utf8(v3.body.to_vec()).unwrap(), list);

    // A second mock answers from it in strict replay mode.
    let replayer = start(
        Config::default()
            .with_key("other-key", "acc-9", Plan::PRO)
            .with_replay(&cassette, true),
    )
    .await;
    let r = replayer.chart("other-key", chart("BINANCE:ETHUSDT")).await;
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap(), eth);
    assert_eq!(replayer.admin_get("/requests?limit=1").await[0]["replayed"], true);

    // Criteria select; a directory that already holds a cassette is refused.
    let only_eth = dir.path().join("eth");
    let (status, outcome) = ctx
        .admin_post(
            "/snapshot",
            &json!({"dir": only_eth, "criteria": {"account": "acc-2", "method": "POST"}}),
        )
        .await;
    assert_eq!((status, outcome["interactions"].as_u64()), (201, Some(1)), "{outcome}");
    let (status, body) = ctx.admin_post("/snapshot", &json!({"dir": only_eth})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("already holds a cassette"),
        "{body}"
    );
    let (status, body) = ctx
        .admin_post(
            "/snapshot",
            &json!({"dir": dir.path().join("none"), "criteria": {"account": "acc-7"}}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("no journaled interaction to write (0 matching records without their bodies or answer)")
        )
    );
    let (status, body) = ctx.admin_post("/snapshot", &json!({})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("missing field `dir`"),
        "{body}"
    );
}

#[tokio::test]
async fn records_past_the_body_budget_are_skipped_and_counted() {
    let mut config = Config::default().with_key(KEY, "acc-1", Plan::PRO);
    config.journal_body_budget = 9_000;
    let ctx = start(config).await;
    for s in ["BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "BINANCE:SOLUSDT"] {
        assert_eq!(ctx.chart(KEY, chart(s)).await.status(), 200);
    }
    // A dropped connection has no answer to write.
    ctx.server
        .state()
        .add_fault(mock_chart_img::FaultSpec::connection_reset().times(1));
    assert!(ctx
        .http
        .post(ctx.url(CHART))
        .header("x-api-key", KEY)
        .send()
        .await
        .is_err());
    let dir = tempfile::tempdir().unwrap();
    let (status, outcome) = ctx.admin_post("/snapshot", &json!({"dir": dir.path().join("c")})).await;
    assert_eq!(status, 201, "{outcome}");
    assert_eq!(
        (outcome["interactions"].as_u64(), outcome["skipped"].as_u64()),
        (Some(1), Some(3)),
        "{outcome}"
    );
}
