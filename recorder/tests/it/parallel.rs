//! Parallel use: many replays of one cassette at once, and several recorders writing one cassette.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use recorder::{Mode, OnExhausted, Request, Response, Vcr, VcrConfig};
use serde_json::json;

use crate::support::*;

fn numbered(i: usize) -> Request {
    chart_request(
        KEY1,
        &json!({"symbol": "BINANCE:BTCUSDT", "interval": "4h", "width": 800 + i}),
    )
}

async fn record_numbered(vcr: &Vcr, range: std::ops::Range<usize>) {
    for i in range {
        vcr.handle(numbered(i), |_| async move {
            Ok::<_, std::io::Error>(
                Response::new(200)
                    .with_header("content-type", "image/png")
                    .with_body(fake_png(&i.to_be_bytes())),
            )
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_replay_one_cassette_at_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let vcr = open(dir.path(), Mode::NewEpisodes);
        record_numbered(&vcr, 0..20).await;
        let calls = Arc::new(AtomicUsize::new(0));
        for n in 0..8 {
            // Eight episodes of one request: each parallel replay must get a distinct one.
            vcr.handle(
                Request::new("GET", "/poll"),
                text_upstream(&calls, &format!("episode-{n}")),
            )
            .await
            .unwrap();
        }
    }
    // One shared `Vcr` that repeats (the numbered charts are asked for many times), one that counts (/poll).
    let repeating = open(dir.path(), Mode::None);
    let strict = Vcr::open(
        dir.path(),
        VcrConfig {
            on_exhausted: OnExhausted::Error,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (repeating, strict) = (repeating.clone(), strict.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..50 {
                let i = (t * 7 + round) % 20;
                let resp = repeating.replay(&numbered(i)).unwrap();
                assert_eq!(resp.body, fake_png(&i.to_be_bytes()));
            }
            String::from_utf8(strict.replay(&Request::new("GET", "/poll")).unwrap().body.to_vec()).unwrap()
        }));
    }
    let mut episodes = BTreeSet::new();
    for t in tasks {
        episodes.insert(t.await.unwrap());
    }
    assert_eq!(
        episodes,
        (0..8).map(|n| format!("episode-{n}")).collect::<BTreeSet<_>>()
    );
    assert!(
        strict.replay(&Request::new("GET", "/poll")).is_err(),
        "all eight episodes were played"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_recorders_writing_one_cassette_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Separate `open`s: separate in-memory state, only the file lock and the merge keep them consistent.
    let a = open(dir.path(), Mode::NewEpisodes);
    let b = open(dir.path(), Mode::NewEpisodes);
    let (ra, rb) = (a.clone(), b.clone());
    let ta = tokio::spawn(async move { record_numbered(&ra, 0..40).await });
    let tb = tokio::spawn(async move { record_numbered(&rb, 40..80).await });
    ta.await.unwrap();
    tb.await.unwrap();
    drop((a, b));

    let vcr = open(dir.path(), Mode::None);
    assert_eq!(vcr.len(), 80);
    for i in 0..80 {
        assert_eq!(
            vcr.replay(&numbered(i)).unwrap().body,
            fake_png(&i.to_be_bytes()),
            "interaction {i}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_proxies_recording_one_cassette_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let p1 = Proxy::start(upstream.url(), open(dir.path(), Mode::NewEpisodes)).await;
    let p2 = Proxy::start(upstream.url(), open(dir.path(), Mode::NewEpisodes)).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..30usize {
        let base = if i % 2 == 0 { p1.url() } else { p2.url() };
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"symbol": "BINANCE:ETHUSDT", "interval": "1h", "height": 300 + i});
            let (status, _, png) = post_chart(&client, &base, KEY2, &body).await;
            assert_eq!(status, 200);
            (body, png)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    p1.stop().await;
    p2.stop().await;
    upstream.stop().await;

    assert_no_keys(dir.path());
    let vcr = open(dir.path(), Mode::None);
    assert_eq!(vcr.len(), 30);
    for (body, png) in results {
        assert_eq!(vcr.replay(&chart_request(KEY1, &body)).unwrap().body, png);
    }
}

#[test]
fn recorders_on_separate_threads_each_with_its_own_runtime() {
    // Like separate test binaries or processes: no shared runtime, no shared `Vcr`, one directory.
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let vcr = open(&path, Mode::NewEpisodes);
                rt.block_on(record_numbered(&vcr, t * 10..t * 10 + 10));
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let vcr = open(dir.path(), Mode::None);
    assert_eq!(vcr.len(), 40);
    assert!((0..40).all(|i| vcr.replay(&numbered(i)).is_ok()));
}
