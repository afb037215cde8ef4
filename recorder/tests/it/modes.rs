//! Every mode's behaviour, the exhaustion policy and the match rules, through `Vcr::handle` with a counting upstream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use recorder::{Mode, OnExhausted, Request, Vcr, VcrConfig, VcrError};
use serde_json::json;

use crate::support::*;

fn req(interval: &str) -> Request {
    chart_request(KEY1, &json!({"symbol": "BINANCE:BTCUSDT", "interval": interval}))
}

async fn call(
    vcr: &Vcr,
    r: Request,
    calls: &Arc<AtomicUsize>,
    answer: &str,
) -> Result<String, VcrError<std::io::Error>> {
    vcr.handle(r, text_upstream(calls, answer))
        .await
        .map(|resp| String::from_utf8(resp.body.to_vec()).unwrap())
}

/// Records `answers` in order for `req("4h")` into a fresh cassette.
async fn cassette_with(answers: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let vcr = open(dir.path(), Mode::NewEpisodes);
    let calls = Arc::new(AtomicUsize::new(0));
    for a in answers {
        // new_episodes records again once every recorded answer was played.
        assert_eq!(call(&vcr, req("4h"), &calls, a).await.unwrap(), *a);
    }
    assert_eq!(calls.load(Ordering::SeqCst), answers.len());
    dir
}

#[test]
fn mode_names_round_trip() {
    for m in Mode::ALL {
        assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
    }
    assert_eq!("new_episodes".parse::<Mode>().unwrap(), Mode::NewEpisodes);
    assert!("record"
        .parse::<Mode>()
        .unwrap_err()
        .to_string()
        .contains("new_episodes"));
    assert_eq!("error".parse::<OnExhausted>().unwrap(), OnExhausted::Error);
    assert_eq!(VcrConfig::default().mode, Mode::None);
}

#[tokio::test]
async fn none_replays_and_never_calls_upstream() {
    let dir = cassette_with(&["v1"]).await;
    let vcr = open(dir.path(), Mode::None);
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(call(&vcr, req("4h"), &calls, "live").await.unwrap(), "v1");
    assert!(matches!(
        call(&vcr, req("1h"), &calls, "live").await,
        Err(VcrError::Miss(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn once_records_only_into_a_new_cassette() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let vcr = open(dir.path(), Mode::Once);
        assert_eq!(call(&vcr, req("4h"), &calls, "v1").await.unwrap(), "v1");
        assert_eq!(call(&vcr, req("1h"), &calls, "h1").await.unwrap(), "h1");
        // Within the recording session a repeat replays (on_exhausted = repeat).
        assert_eq!(call(&vcr, req("4h"), &calls, "v2").await.unwrap(), "v1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let vcr = open(dir.path(), Mode::Once);
    assert_eq!(call(&vcr, req("4h"), &calls, "live").await.unwrap(), "v1");
    let miss = call(&vcr, req("1D"), &calls, "live").await.unwrap_err();
    assert!(
        matches!(miss, VcrError::Miss(_)),
        "the cassette exists: once must not record"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn new_episodes_replays_known_and_records_new_and_extra() {
    let dir = cassette_with(&["v1"]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let vcr = open(dir.path(), Mode::NewEpisodes);
        assert_eq!(call(&vcr, req("4h"), &calls, "live").await.unwrap(), "v1");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(call(&vcr, req("1h"), &calls, "h1").await.unwrap(), "h1");
        // The only recorded 4h answer is played: a second 4h call is a new episode.
        assert_eq!(call(&vcr, req("4h"), &calls, "v2").await.unwrap(), "v2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
    let vcr = open(dir.path(), Mode::None);
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(call(&vcr, req("4h"), &calls, "x").await.unwrap(), "v1");
    assert_eq!(call(&vcr, req("4h"), &calls, "x").await.unwrap(), "v2");
    assert_eq!(call(&vcr, req("1h"), &calls, "x").await.unwrap(), "h1");
    assert_eq!(vcr.len(), 3);
}

#[tokio::test]
async fn all_always_calls_upstream_and_replaces_old_interactions() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let vcr = open(dir.path(), Mode::NewEpisodes);
        call(&vcr, req("4h"), &calls, "old-a").await.unwrap();
        call(&vcr, req("4h"), &calls, "old-b").await.unwrap();
        call(&vcr, req("1h"), &calls, "kept").await.unwrap();
    }
    {
        let vcr = open(dir.path(), Mode::All);
        assert_eq!(call(&vcr, req("4h"), &calls, "new").await.unwrap(), "new");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let text = cassette_text(dir.path());
    assert!(text.contains("\"new\"") && text.contains("\"kept\""), "{text}");
    assert!(
        !text.contains("old-a") && !text.contains("old-b"),
        "all replaces what it re-recorded: {text}"
    );
}

#[tokio::test]
async fn spy_replays_matches_and_records_the_rest() {
    let dir = cassette_with(&["v1"]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let vcr = open(dir.path(), Mode::Spy);
        assert_eq!(call(&vcr, req("4h"), &calls, "live").await.unwrap(), "v1");
        assert_eq!(
            call(&vcr, req("4h"), &calls, "live").await.unwrap(),
            "v1",
            "repeat: replay the last"
        );
        assert_eq!(call(&vcr, req("1h"), &calls, "h1").await.unwrap(), "h1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
    assert!(cassette_text(dir.path()).contains("\"h1\""));
    // With on_exhausted = error, spy passes an exhausted request through instead of failing.
    let vcr = Vcr::open(
        dir.path(),
        VcrConfig {
            mode: Mode::Spy,
            on_exhausted: OnExhausted::Error,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    assert_eq!(call(&vcr, req("4h"), &calls, "live").await.unwrap(), "v1");
    assert_eq!(call(&vcr, req("4h"), &calls, "v2").await.unwrap(), "v2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn repeated_requests_replay_in_order_then_repeat_or_error() {
    let dir = cassette_with(&["a", "b", "c"]).await;
    let vcr = open(dir.path(), Mode::None);
    let got: Vec<String> = (0..5)
        .map(|_| String::from_utf8(vcr.replay(&req("4h")).unwrap().body.to_vec()).unwrap())
        .collect();
    assert_eq!(got, ["a", "b", "c", "c", "c"]);
    vcr.rewind();
    assert_eq!(vcr.replay(&req("4h")).unwrap().body, "a");

    let strict = Vcr::open(
        dir.path(),
        VcrConfig {
            on_exhausted: OnExhausted::Error,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    for expected in ["a", "b", "c"] {
        assert_eq!(strict.replay(&req("4h")).unwrap().body, expected);
    }
    let miss = strict.replay(&req("4h")).unwrap_err();
    assert_eq!(miss.reason, recorder::MissReason::Exhausted { recorded: 3 });
    assert!(miss.to_string().contains("all 3 recorded answers"), "{miss}");
}

#[tokio::test]
async fn matching_ignores_key_order_number_format_and_ignored_fields() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let recorded = json!({"symbol": "BINANCE:BTCUSDT", "interval": "4h", "width": 800, "timezone": "Etc/UTC"});
    call(
        &open(dir.path(), Mode::NewEpisodes),
        chart_request(KEY1, &recorded),
        &calls,
        "png",
    )
    .await
    .unwrap();

    // Same JSON, other key order and `800.0`, another account's key: matches by default.
    let reordered = Request::post_json(CHART_PATH, &json!(null))
        .with_body(r#"{"timezone":"Etc/UTC","width":800.0,"interval":"4h","symbol":"BINANCE:BTCUSDT"}"#)
        .with_header("x-api-key", KEY2);
    let vcr = open(dir.path(), Mode::None);
    assert_eq!(vcr.replay(&reordered).unwrap().body, "png");

    // Another timezone misses, unless timezone is ignored.
    let berlin = json!({"symbol": "BINANCE:BTCUSDT", "interval": "4h", "width": 800, "timezone": "Europe/Berlin"});
    assert!(vcr.replay(&chart_request(KEY1, &berlin)).is_err());
    let lenient = Vcr::open(
        dir.path(),
        VcrConfig {
            ignore_json_fields: vec!["timezone".into()],
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    assert_eq!(lenient.replay(&chart_request(KEY1, &berlin)).unwrap().body, "png");

    // Matching on the account: the key placeholder must then be the same.
    let per_account = Vcr::open(
        dir.path(),
        VcrConfig {
            match_headers: vec!["x-api-key".into()],
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    assert!(per_account.replay(&chart_request(KEY1, &recorded)).is_ok());
    let miss = per_account.replay(&chart_request(KEY2, &recorded)).unwrap_err();
    assert_eq!(miss.diffs.len(), 1);
    assert_eq!(miss.diffs[0].field, "header.x-api-key");
    assert_eq!(miss.diffs[0].actual.as_deref(), Some("\"<CHART_IMG_API_KEY:acc-2>\""));
}

#[tokio::test]
async fn latency_is_recorded_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let vcr = Vcr::open(
        dir.path(),
        VcrConfig {
            mode: Mode::NewEpisodes,
            record_latency: true,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    vcr.handle(req("4h"), |_| async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        Ok::<_, std::io::Error>(recorder::Response::new(200).with_body("slow"))
    })
    .await
    .unwrap();
    drop(vcr);
    assert!(cassette_text(dir.path()).contains("\"latencyMs\""));
    let (_, latency) = open(dir.path(), Mode::None).replay_with_latency(&req("4h")).unwrap();
    assert!(latency.unwrap() >= std::time::Duration::from_millis(30));

    let plain = cassette_with(&["x"]).await;
    assert!(!cassette_text(plain.path()).contains("latencyMs"));
    assert!(!cassette_text(plain.path()).contains("recordedAt"));
}
