//! Record through the proxy against a live upstream, then replay with the upstream gone: byte-identical PNGs.

use recorder::{Mode, ProxyConfig, Vcr, VcrConfig};
use sha2::{Digest, Sha256};

use crate::support::*;

#[tokio::test]
async fn record_through_proxy_then_replay_offline_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("demo");
    let upstream = Upstream::start().await;
    let upstream_url = upstream.url();
    let proxy = Proxy::start(upstream_url.clone(), open(&cassette, Mode::NewEpisodes)).await;
    let client = reqwest::Client::new();

    let mut recorded = Vec::new();
    for body in demo_bodies() {
        let (status, ct, png) = post_chart(&client, &proxy.url(), KEY1, &body).await;
        assert_eq!((status, ct.as_str()), (200, "image/png"));
        assert_eq!(
            png,
            fake_png(&serde_json::to_vec(&body).unwrap()),
            "the proxy must pass the body through untouched"
        );
        recorded.push(png);
    }
    proxy.stop().await;
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 3);
    upstream.stop().await;

    // Sidecar files named by their SHA-256, one per distinct PNG; the key is nowhere.
    for png in &recorded {
        let name = format!("{}.png", hex::encode(Sha256::digest(png)));
        assert_eq!(
            std::fs::read(cassette.join("bodies").join(&name)).unwrap(),
            png.as_ref()
        );
    }
    assert_no_keys(&cassette);
    let text = cassette_text(&cassette);
    assert!(text.contains("\"x-api-key\": \"<CHART_IMG_API_KEY:acc-1>\""), "{text}");
    assert!(text.contains("\"formatVersion\": 1"));
    assert!(
        !text.contains("x-request-id"),
        "volatile response headers must not be recorded"
    );

    // Replay in the library, no upstream at all.
    let vcr = open(&cassette, Mode::None);
    for (body, png) in demo_bodies().iter().zip(&recorded) {
        let resp = vcr.replay(&chart_request(KEY2, body)).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("image/png"));
        assert_eq!(&resp.body, png);
    }

    // Replay through a proxy whose upstream is stopped (its port now refuses connections).
    let proxy = Proxy::start(upstream_url, open(&cassette, Mode::None)).await;
    for (body, png) in demo_bodies().iter().zip(&recorded) {
        let (status, ct, bytes) = post_chart(&client, &proxy.url(), KEY1, body).await;
        assert_eq!((status, ct.as_str()), (200, "image/png"));
        assert_eq!(&bytes, png);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn proxy_miss_is_404_with_a_redacted_report() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start("http://127.0.0.1:9".into(), open(dir.path(), Mode::None)).await;
    let client = reqwest::Client::new();
    let (status, ct, body) = post_chart(&client, &proxy.url(), KEY1, &demo_bodies()[0]).await;
    proxy.stop().await;
    assert_eq!((status, ct.as_str()), (404, "application/json"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "CHART_API_MOCK_MISSING");
    assert_eq!(
        json["details"]["request"]["headers"]["x-api-key"],
        "<CHART_IMG_API_KEY:acc-1>"
    );
    assert!(!String::from_utf8_lossy(&body).contains(KEY1));
}

#[tokio::test]
async fn upstream_down_is_502_without_key() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) is closed on the test machine; the URL carries a key in its query to prove redaction.
    let vcr = open(dir.path(), Mode::NewEpisodes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(recorder::run_proxy(
        listener,
        ProxyConfig::new("http://127.0.0.1:9", vcr),
        async {
            let _ = rx.await;
        },
    ));
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{CHART_PATH}?key={KEY1}"))
        .header("x-api-key", KEY1)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("UPSTREAM_UNAVAILABLE"), "{text}");
    assert!(!text.contains(KEY1), "{text}");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    assert!(
        !dir.path().join(recorder::CASSETTE_FILE).exists(),
        "a failed call records nothing"
    );
}

#[tokio::test]
async fn unknown_key_and_echoed_key_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.url(), open(dir.path(), Mode::NewEpisodes)).await;
    let client = reqwest::Client::new();
    let stranger = "zzUnknownKey0000aaaaBBBBcccc1111";
    let (status, _, body) = post_chart(&client, &proxy.url(), stranger, &demo_bodies()[0]).await;
    assert_eq!(status, 403);
    assert_eq!(body.as_ref(), br#"{"message":"Forbidden"}"#);
    // The upstream echoes the key in its answer: the client sees it, the cassette must not.
    let echoed = client
        .post(format!("{}/echo-key", proxy.url()))
        .header("x-api-key", KEY2)
        .send()
        .await
        .unwrap();
    assert!(echoed.text().await.unwrap().contains(KEY2));
    proxy.stop().await;
    upstream.stop().await;

    let text = cassette_text(dir.path());
    assert!(text.contains("<CHART_IMG_API_KEY:unknown>"), "{text}");
    assert!(!text.contains(stranger));
    assert!(text.contains("bad key <CHART_IMG_API_KEY:acc-2>"), "{text}");
    assert_no_keys(dir.path());
}

#[tokio::test]
async fn binary_body_holding_a_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vcr = Vcr::open(
        dir.path(),
        VcrConfig {
            mode: Mode::NewEpisodes,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    let mut png = fake_png(b"x").to_vec();
    png.extend_from_slice(KEY1.as_bytes());
    let err = vcr
        .handle(chart_request(KEY1, &demo_bodies()[0]), |_| async move {
            Ok::<_, std::io::Error>(
                recorder::Response::new(200)
                    .with_header("content-type", "image/png")
                    .with_body(png),
            )
        })
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("acc-1") && !message.contains(KEY1), "{message}");
    assert!(!dir.path().join("bodies").exists() || std::fs::read_dir(dir.path().join("bodies")).unwrap().count() == 0);
}

#[tokio::test]
async fn record_against_mock_chart_img_then_replay_with_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mock =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    let upstream_url = mock.base_url();
    let proxy = Proxy::start(upstream_url.clone(), open(dir.path(), Mode::NewEpisodes)).await;
    let client = reqwest::Client::new();
    let mut live = Vec::new();
    for body in demo_bodies() {
        let (status, ct, png) = post_chart(&client, &proxy.url(), KEY1, &body).await;
        assert_eq!((status, ct.as_str()), (200, "image/png"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        live.push(png);
    }
    // A 4xx from the mock is recorded and replayed like any answer.
    let mut bad = demo_bodies()[0].clone();
    bad["interval"] = serde_json::json!("4H");
    let (bad_status, _, bad_body) = post_chart(&client, &proxy.url(), KEY1, &bad).await;
    assert_eq!(bad_status, 422);
    proxy.stop().await;
    mock.shutdown().await.unwrap();
    assert_no_keys(dir.path());

    let proxy = Proxy::start(upstream_url, open(dir.path(), Mode::None)).await;
    for (body, png) in demo_bodies().iter().zip(&live) {
        let (status, _, bytes) = post_chart(&client, &proxy.url(), KEY1, body).await;
        assert_eq!(status, 200);
        assert_eq!(&bytes, png, "replayed PNG must be byte-identical");
    }
    let (status, _, body) = post_chart(&client, &proxy.url(), KEY1, &bad).await;
    assert_eq!((status, body), (422, bad_body));
    proxy.stop().await;
}

#[test]
fn committed_demo_cassette_replays_and_is_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cassettes/demo");
    let vcr = open(&dir, Mode::None);
    assert_eq!(vcr.len(), 3);
    for body in demo_bodies() {
        let resp = vcr.replay(&chart_request("any-key", &body)).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("image/png"));
        assert!(resp.body.starts_with(b"\x89PNG"));
    }
    assert_eq!(recorder::lint(&[&dir], &secrets()).unwrap(), vec![]);
}

/// The `recorder proxy` binary batches writes: a recorded interaction reaches the cassette within the flush
/// interval while the proxy keeps running, with the key replaced by its placeholder.
#[tokio::test]
async fn the_proxy_binary_writes_batched_interactions_while_running() {
    use crate::support::*;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("c");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_recorder"))
        .args([
            "proxy",
            "--upstream",
            &upstream.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--flush-ms",
            "100",
        ])
        .arg("--cassette")
        .arg(&cassette)
        .env(recorder::ACCOUNTS_ENV, accounts_json())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(format!("{base}{CHART_PATH}"))
            .header("x-api-key", KEY1)
            .header("content-type", "application/json")
            .body(r#"{"symbol":"BINANCE:BTCUSDT","interval":"4h"}"#)
            .send()
            .await
        {
            answered = Some(r.status().as_u16());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(answered, Some(200));
    let file = cassette.join(recorder::CASSETTE_FILE);
    let mut text = String::new();
    for _ in 0..40 {
        text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
    assert!(text.contains("<CHART_IMG_API_KEY:acc-1>"), "{text}");
    assert!(!text.contains(KEY1));
    upstream.stop().await;
}

/// An upstream answer over the cap is refused (502) and nothing is recorded: the proxy never buffers it whole.
#[tokio::test]
async fn an_oversized_upstream_answer_is_refused_and_not_recorded() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        CHART_PATH,
        post(|| async { vec![0u8; recorder::MAX_UPSTREAM_BODY + 1] }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("big");
    let proxy = Proxy::start(upstream, open(&cassette, Mode::NewEpisodes)).await;
    let client = reqwest::Client::new();
    let (status, _, body) = post_chart(
        &client,
        &proxy.url(),
        KEY1,
        &serde_json::json!({"symbol": "BINANCE:BTCUSDT"}),
    )
    .await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("larger than"));
    proxy.stop().await;
    server.abort();
    assert!(!cassette.join("bodies").exists() || std::fs::read_dir(cassette.join("bodies")).unwrap().count() == 0);
}
