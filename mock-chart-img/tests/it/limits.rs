//! Rate limiting and daily quotas under concurrent load: exact counts, and roll-over at UTC midnight.

use chrono::{Duration, TimeZone, Utc};
use futures::future::join_all;
use mock_chart_img::{Config, KeyConfig, ManualClock, Plan, PlanLimits};

use crate::{json_of, msg, small, start};

fn custom(rate: f64, burst: u32, daily: u32) -> Plan {
    Plan::custom(PlanLimits {
        rate_per_sec: rate,
        burst,
        daily_limit: daily,
        ..PlanLimits::unlimited()
    })
}

/// Fires `n` requests at once and counts the answers by (status, message).
async fn burst_of(ctx: &crate::Ctx, key: &str, n: usize) -> (usize, usize, usize) {
    let answers = join_all((0..n).map(|_| async { json_or_image(ctx.chart(key, small()).await).await })).await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let throttled = answers
        .iter()
        .filter(|a| a.0 == 429 && a.1 == msg("Too Many Requests"))
        .count();
    let exhausted = answers
        .iter()
        .filter(|a| a.0 == 429 && a.1 == msg("Limit Exceeded"))
        .count();
    assert_eq!(ok + throttled + exhausted, n, "unexpected answers: {answers:?}");
    (ok, throttled, exhausted)
}

async fn json_or_image(r: reqwest::Response) -> (u16, serde_json::Value) {
    if r.status() == 200 {
        let b = r.bytes().await.unwrap();
        assert!(b.starts_with(b"\x89PNG"));
        (200, serde_json::Value::Null)
    } else {
        json_of(r).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_exactly_the_burst() {
    // One cell per 100 s: nothing refills during the test, so the count must be exactly the burst.
    let ctx = start(Config::default().with_key("k", "acc", custom(0.01, 7, 1000))).await;
    let (ok, throttled, exhausted) = burst_of(&ctx, "k", 60).await;
    assert_eq!((ok, throttled, exhausted), (7, 53, 0));
    let u = ctx.server.state().usage("acc").unwrap();
    assert_eq!((u.used_today, u.throttled, u.requests), (7, 53, 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_plan_burst_under_concurrency() {
    let ctx = start(Config::default().with_key("k", "acc", Plan::BASIC)).await;
    let started = std::time::Instant::now();
    let (ok, throttled, _) = burst_of(&ctx, "k", 12).await;
    // Twelve requests arrive within milliseconds; BASIC refills one per second, so a loaded machine may see one more.
    let refill = started.elapsed().as_secs() as usize;
    assert!(ok >= 3 && ok <= 3 + refill, "{ok} passed");
    assert_eq!(ok + throttled, 12);
}

#[tokio::test]
async fn the_rate_refills_over_time() {
    let ctx = start(Config::default().with_key("k", "acc", custom(20.0, 2, 1000))).await;
    // A loaded machine may take long enough over five requests for a cell to refill (one per 50 ms): allow for it.
    let refilled = |t: std::time::Instant| (t.elapsed().as_secs_f64() * 20.0).floor() as usize;
    let t = std::time::Instant::now();
    let (ok, ..) = burst_of(&ctx, "k", 5).await;
    assert!(ok >= 2 && ok <= 2 + refilled(t), "{ok} passed");
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    // 120 ms at 20/s is two cells, capped by the burst of two.
    let t = std::time::Instant::now();
    let (ok, ..) = burst_of(&ctx, "k", 5).await;
    assert!(ok >= 2 && ok <= 2 + refilled(t), "{ok} passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_use_exactly_the_daily_quota() {
    let ctx = start(Config::default().with_key("k", "acc", custom(1e6, 1_000_000, 25))).await;
    let (ok, throttled, exhausted) = burst_of(&ctx, "k", 80).await;
    assert_eq!((ok, throttled, exhausted), (25, 0, 55));
    let u = ctx.server.state().usage("acc").unwrap();
    assert_eq!((u.used_today, u.remaining_today, u.quota_rejected), (25, 0, 55));
}

#[tokio::test]
async fn keys_are_limited_independently() {
    let ctx = start(
        Config::default()
            .with_key("k1", "acc-1", custom(0.01, 2, 100))
            .with_key("k2", "acc-2", custom(0.01, 2, 100)),
    )
    .await;
    assert_eq!(burst_of(&ctx, "k1", 4).await.0, 2);
    assert_eq!(burst_of(&ctx, "k2", 4).await.0, 2);
}

#[tokio::test]
async fn throttled_requests_do_not_use_quota() {
    let ctx = start(Config::default().with_key("k", "acc", custom(0.01, 1, 100))).await;
    burst_of(&ctx, "k", 5).await;
    assert_eq!(ctx.server.state().usage("acc").unwrap().used_today, 1);
}

#[tokio::test]
async fn the_daily_quota_rolls_over_at_utc_midnight() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 0).unwrap());
    let config = Config::default()
        .with_key("k", "acc", custom(1e6, 1_000_000, 2))
        .with_clock(clock.clone());
    let ctx = start(config).await;
    assert_eq!(burst_of(&ctx, "k", 3).await, (2, 0, 1));

    clock.set(Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).unwrap());
    assert_eq!(ctx.chart_json("k", small()).await, (429, msg("Limit Exceeded")));

    clock.advance(Duration::seconds(1));
    let u = ctx.server.state().usage("acc").unwrap();
    assert_eq!((u.day.as_str(), u.used_today), ("2026-11-29", 0));
    assert_eq!(burst_of(&ctx, "k", 3).await, (2, 0, 1));
    assert_eq!(ctx.server.state().usage("acc").unwrap().used_today, 2);

    // A whole day later again.
    clock.advance(Duration::days(1));
    assert_eq!(ctx.chart("k", small()).await.status(), 200);
}

#[tokio::test]
async fn enterprise_overrides_raise_single_limits() {
    let mut key = KeyConfig::new("k", "acc", Plan::ENTERPRISE);
    key.overrides.daily_limit = Some(7000);
    key.overrides.burst = Some(2);
    // A slow refill, so the count below is exact however loaded the machine is.
    key.overrides.rate_per_sec = Some(0.01);
    let ctx = start(Config::default().with_key_config(key)).await;
    let u = ctx.server.state().usage("acc").unwrap();
    assert_eq!(
        (u.limits.daily_limit, u.limits.burst, u.plan.as_str()),
        (7000, 2, "ENTERPRISE")
    );
    assert_eq!(burst_of(&ctx, "k", 4).await.0, 2);
}
