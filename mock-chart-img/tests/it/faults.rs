//! Every fault kind, and their scoping by account, route and count.

use std::time::{Duration, Instant};

use mock_chart_img::{Config, FaultSpec, Plan, Route};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{json_of, msg, small, start, CHART, STORAGE};

fn config() -> Config {
    Config::default()
        .with_seed(9)
        .with_key("k1", "acc-1", Plan::ENTERPRISE)
        .with_key("k2", "acc-2", Plan::ENTERPRISE)
}

/// Sends one raw HTTP/1.1 request and reads until the server closes: (bytes received, how reading ended).
async fn raw(ctx: &crate::Ctx, key: &str) -> (Vec<u8>, std::io::Result<()>) {
    let mut s = tokio::net::TcpStream::connect(ctx.server.addr()).await.unwrap();
    let body = small().to_string();
    let req = format!(
        "POST {CHART} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server ends the connection");
    (out, end.map(|_| ()))
}

#[tokio::test]
async fn fixed_latency() {
    let ctx = start(config().with_fault(FaultSpec::latency_ms(300))).await;
    let t = Instant::now();
    assert_eq!(ctx.chart("k1", small()).await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
}

#[tokio::test]
async fn random_latency_stays_in_range() {
    let ctx = start(config().with_fault(FaultSpec::random_latency_ms(40, 90))).await;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(ctx.chart("k1", small()).await.status(), 200);
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(40) && e < Duration::from_millis(1000),
            "{e:?}"
        );
    }
    let journal = ctx.server.state().journal(&Default::default());
    let durations: std::collections::HashSet<_> = journal.iter().map(|e| e.duration_ms / 5).collect();
    assert!(durations.len() > 1, "latency varies: {journal:?}");
}

#[tokio::test]
async fn status_sequence_then_normal() {
    let ctx = start(config().with_fault(FaultSpec::status_sequence([503, 503, 200]))).await;
    assert_eq!(ctx.chart_json("k1", small()).await, (503, msg("Service Unavailable")));
    assert_eq!(ctx.chart_json("k1", small()).await, (503, msg("Service Unavailable")));
    assert_eq!(ctx.chart("k1", small()).await.status(), 200);
    assert_eq!(ctx.chart("k1", small()).await.status(), 200);
    assert!(
        ctx.admin_get("/faults").await.as_array().unwrap().is_empty(),
        "a finished sequence retires"
    );
}

#[tokio::test]
async fn error_rate_extremes_and_middle() {
    let ctx = start(config().with_fault(FaultSpec::error_rate(1.0, 500).for_account("acc-1"))).await;
    for _ in 0..5 {
        assert_eq!(ctx.chart_json("k1", small()).await, (500, msg("Something Went Wrong")));
    }
    let ctx = start(config().with_fault(FaultSpec::error_rate(0.0, 500))).await;
    for _ in 0..5 {
        assert_eq!(ctx.chart("k1", small()).await.status(), 200);
    }
    let ctx = start(config().with_fault(FaultSpec::error_rate(0.5, 502))).await;
    let mut errors = 0;
    for _ in 0..200 {
        if ctx.chart("k1", small()).await.status() == 502 {
            errors += 1;
        }
    }
    assert!((60..=140).contains(&errors), "{errors} of 200 at rate 0.5");
}

#[tokio::test]
async fn connection_reset() {
    let ctx = start(config().with_fault(FaultSpec::connection_reset().times(2))).await;
    let err = ctx
        .http
        .post(ctx.url(CHART))
        .header("x-api-key", "k1")
        .json(&small())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let (bytes, end) = raw(&ctx, "k1").await;
    assert!(bytes.is_empty(), "nothing was sent before the reset");
    assert_eq!(end.unwrap_err().kind(), std::io::ErrorKind::ConnectionReset);
    // `times: 2` is used up.
    assert_eq!(ctx.chart("k1", small()).await.status(), 200);
    let j = ctx.server.state().journal(&Default::default());
    assert_eq!(
        j.iter()
            .filter(|e| e.status.is_none() && e.faults == ["connection_reset"])
            .count(),
        2
    );
}

#[tokio::test]
async fn empty_response() {
    let ctx = start(config().with_fault(FaultSpec::empty_response().times(1))).await;
    let (bytes, end) = raw(&ctx, "k1").await;
    assert!(end.is_ok(), "clean close");
    assert!(bytes.is_empty(), "no bytes: {:?}", String::from_utf8_lossy(&bytes));
}

#[tokio::test]
async fn truncated_body() {
    let ctx = start(config().with_fault(FaultSpec::truncated_body().times(2))).await;
    let r = ctx.chart("k1", small()).await;
    assert_eq!(r.status(), 200);
    let announced: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    assert!(announced > 1000);
    assert!(r.bytes().await.is_err(), "the body cannot be read whole");

    let (bytes, _) = raw(&ctx, "k1").await;
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &bytes[split..];
    assert!(body.starts_with(b"\x89PNG"));
    assert_eq!(body.len(), announced / 2);
}

#[tokio::test]
async fn non_image_body() {
    let ctx = start(config().with_fault(FaultSpec::non_image_body().times(1))).await;
    let r = ctx.chart("k1", small()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let b = r.bytes().await.unwrap();
    assert!(!b.starts_with(b"\x89PNG") && !b.is_empty());
    // The fault can also claim another content type and body.
    let mut f = FaultSpec::non_image_body().times(1);
    f.content_type = Some("application/json".into());
    f.body = Some(r#"{"ok":true}"#.into());
    ctx.server.state().add_fault(f);
    let r = ctx.chart("k1", small()).await;
    assert_eq!(json_of(r).await, (200, json!({ "ok": true })));
}

#[tokio::test]
async fn faults_are_scoped_by_account_and_route() {
    let ctx = start(
        config()
            .with_fault(FaultSpec::status_sequence([500; 3]).for_account("acc-1"))
            .with_fault(FaultSpec::status_sequence([409; 3]).on_route(Route::Storage)),
    )
    .await;
    assert_eq!(ctx.chart("k2", small()).await.status(), 200, "other account unaffected");
    assert_eq!(ctx.chart("k1", small()).await.status(), 500);
    let r = ctx.post(STORAGE, Some("k2"), &small()).await;
    assert_eq!(json_of(r).await, (409, msg("Session Disconnected")));
    assert_eq!(
        ctx.chart("k2", small()).await.status(),
        200,
        "storage-only fault does not touch the direct route"
    );
}

#[tokio::test]
async fn global_faults_hit_requests_without_a_key_too() {
    let ctx = start(config().with_fault(FaultSpec::status_sequence([504]))).await;
    let r = ctx.post(CHART, None, &small()).await;
    assert_eq!(json_of(r).await, (504, msg("Endpoint request timed out")));
}

#[tokio::test]
async fn latency_adds_to_a_status_fault() {
    let ctx = start(
        config()
            .with_fault(FaultSpec::latency_ms(150).times(1))
            .with_fault(FaultSpec::status_sequence([503])),
    )
    .await;
    let t = Instant::now();
    assert_eq!(ctx.chart("k1", small()).await.status(), 503);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let j = ctx.server.state().journal(&Default::default());
    assert_eq!(j[0].faults, ["latency", "status_sequence"]);
}

#[tokio::test]
async fn faulted_requests_use_no_quota() {
    let ctx = start(config().with_fault(FaultSpec::status_sequence([503, 503]))).await;
    ctx.chart("k1", small()).await;
    ctx.chart("k1", small()).await;
    assert_eq!(ctx.server.state().usage("acc-1").unwrap().used_today, 0);
}

/// A client that gives up (a timeout, a killed process) still leaves its request in the journal: no status,
/// `client_closed`, and — past the gateway, as here under realistic latency — a unit of the quota spent, as the
/// real API counts a call whose client went away. Before the guard, hyper dropped the handler mid-way and the
/// request was counted but never journaled.
#[tokio::test]
async fn a_request_whose_client_gives_up_is_journaled_and_counted() {
    let mut c = config();
    c.latency = mock_chart_img::LatencyProfile::Realistic;
    c.time_scale = 0.2; // 4–10 s per chart at 1.0: at least 0.8 s here
    let ctx = start(c).await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let err = quick
        .post(format!("http://{}{CHART}", ctx.server.addr()))
        .header("x-api-key", "k1")
        .json(&small())
        .send()
        .await
        .expect_err("the client gives up first");
    assert!(err.is_timeout(), "{err}");
    // The server notices the closed connection on its next poll.
    let deadline = Instant::now() + Duration::from_secs(5);
    let journal = loop {
        let j = ctx.server.state().journal(&Default::default());
        if !j.is_empty() || Instant::now() > deadline {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(journal.len(), 1, "{journal:?}");
    let e = &journal[0];
    assert!(e.client_closed, "{e:?}");
    assert_eq!(e.status, None);
    assert_eq!(e.account.as_deref(), Some("acc-1"));
    assert_eq!(e.error.as_deref(), Some(mock_chart_img::CLIENT_CLOSED));
    assert!(
        e.duration_ms < 800,
        "journaled when the client left, not when the answer was due: {e:?}"
    );
    assert_eq!(ctx.server.state().usage("acc-1").unwrap().used_today, 1);
    // In the JSON a test reads too.
    let listed = ctx.admin_get("/requests").await;
    assert_eq!(listed[0]["client_closed"], json!(true), "{listed}");
}
