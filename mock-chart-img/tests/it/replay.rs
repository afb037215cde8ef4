//! Replay from cassettes written by the `recorder` crate.

use bytes::Bytes;
use mock_chart_img::{Config, Plan, MISS_MESSAGE, MISS_STATUS};
use recorder::{Mode, Request, Response, Secrets, Vcr, VcrConfig};
use serde_json::json;

use crate::{json_of, msg, start};

const RECORDED_PNG: &[u8] = b"\x89PNG\r\n\x1a\nrecorded-by-the-real-service";

/// Writes a cassette with two interactions, as `record` mode would have.
async fn cassette(dir: &std::path::Path) {
    let vcr = Vcr::open(
        dir,
        VcrConfig {
            mode: Mode::All,
            ..VcrConfig::default()
        },
        Secrets::new(),
    )
    .unwrap();
    let path = "/v2/tradingview/advanced-chart";
    let ok = Request::post_json(
        path,
        &json!({ "symbol": "BINANCE:BTCUSDT", "interval": "4h", "theme": "dark" }),
    );
    vcr.handle(ok, |_| async {
        Ok::<_, std::io::Error>(
            Response::new(200)
                .with_header("content-type", "image/png")
                .with_body(Bytes::from_static(RECORDED_PNG)),
        )
    })
    .await
    .unwrap();
    let bad = Request::post_json(path, &json!({ "symbol": "BINANCE:GONE" }));
    vcr.handle(bad, |_| async {
        Ok::<_, std::io::Error>(
            Response::new(422)
                .with_header("content-type", "application/json")
                .with_body(r#"{"message":"Invalid Symbol"}"#),
        )
    })
    .await
    .unwrap();
    vcr.flush().unwrap();
}

fn config(dir: &std::path::Path, strict: bool) -> Config {
    Config::default()
        .with_key("k", "acc", Plan::PRO)
        .with_replay(dir, strict)
}

#[tokio::test]
async fn recorded_answers_are_replayed_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    cassette(dir.path()).await;
    let ctx = start(config(dir.path(), false)).await;

    // Same meaning, other key order: matched.
    let r = ctx
        .chart(
            "k",
            json!({ "theme": "dark", "interval": "4h", "symbol": "BINANCE:BTCUSDT" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap(), RECORDED_PNG);
    // A recorded error of the real service comes back as it was (the mock alone would accept this symbol).
    assert_eq!(
        ctx.chart_json("k", json!({ "symbol": "BINANCE:GONE" })).await,
        (422, msg("Invalid Symbol"))
    );
    // No match: rendered.
    let r = ctx
        .chart(
            "k",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "1h", "width": 400, "height": 300 }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let b = r.bytes().await.unwrap();
    assert!(b.starts_with(b"\x89PNG") && b.len() > 1000);
    // The gateway still applies: no key, no replay.
    assert_eq!(
        json_of(ctx.post(crate::CHART, None, &json!({ "symbol": "BINANCE:GONE" })).await).await,
        (403, msg("Forbidden"))
    );

    let j = ctx.server.state().journal(&Default::default());
    let replayed: Vec<_> = j.iter().map(|e| e.replayed).collect();
    assert_eq!(replayed, [None, Some(false), Some(true), Some(true)]);
}

#[tokio::test]
async fn strict_mode_names_the_closest_recording_and_the_differences() {
    let dir = tempfile::tempdir().unwrap();
    cassette(dir.path()).await;
    let ctx = start(config(dir.path(), true)).await;
    let (status, body) = ctx
        .chart_json(
            "k",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "1h", "theme": "dark" }),
        )
        .await;
    assert_eq!(status, MISS_STATUS);
    assert_eq!(body["message"], MISS_MESSAGE);
    assert_eq!(body["closest"]["body"]["interval"], "4h", "{body}");
    let diffs = body["diffs"].as_array().unwrap();
    assert!(diffs.iter().any(|d| d["field"] == "body.interval"), "{body}");
    assert!(!body.to_string().contains("\"k\""), "the key is not in the report");
    // A match still replays in strict mode.
    let r = ctx
        .chart(
            "k",
            json!({ "symbol": "BINANCE:BTCUSDT", "interval": "4h", "theme": "dark" }),
        )
        .await;
    assert_eq!(r.bytes().await.unwrap(), RECORDED_PNG);
}

#[tokio::test]
async fn a_missing_cassette_directory_is_a_clear_error() {
    let err = mock_chart_img::spawn(config(std::path::Path::new("/nonexistent/cassettes"), true))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cassettes"), "{err}");
}
