//! Each plan's limits, as documented, enforced per key.

use mock_chart_img::{Config, Plan};
use serde_json::json;

use crate::{msg, start};

/// (plan, key, req/s, burst, per day, max W, max H, studies+drawings) from the plans table.
type Row = (Plan, &'static str, f64, u32, u32, u32, u32, u32);
const PLANS: &[Row] = &[
    (Plan::BASIC, "k-basic", 1.0, 3, 50, 800, 600, 3),
    (Plan::PRO, "k-pro", 10.0, 15, 500, 1920, 1080, 5),
    (Plan::MEGA, "k-mega", 15.0, 25, 1000, 1920, 1600, 10),
    (Plan::ULTRA, "k-ultra", 35.0, 50, 3000, 2048, 1920, 25),
    (Plan::ENTERPRISE, "k-enterprise", 35.0, 50, 5000, 2048, 1920, 50),
];

fn config() -> Config {
    PLANS.iter().fold(Config::default(), |c, p| {
        c.with_key(p.1, format!("acc-{}", &p.1[2..]), p.0)
    })
}

#[tokio::test]
async fn usage_shows_the_documented_limits() {
    let ctx = start(config()).await;
    for (_, key, rate, burst, daily, w, h, params) in PLANS {
        let u = ctx.admin_get(&format!("/usage/acc-{}", &key[2..])).await;
        let l = &u["limits"];
        assert_eq!(
            (
                l["rate_per_sec"].as_f64().unwrap(),
                l["burst"].as_u64().unwrap() as u32,
                l["daily_limit"].as_u64().unwrap() as u32
            ),
            (*rate, *burst, *daily),
            "{key}"
        );
        assert_eq!(
            (
                l["max_width"].as_u64().unwrap() as u32,
                l["max_height"].as_u64().unwrap() as u32,
                l["max_params"].as_u64().unwrap() as u32
            ),
            (*w, *h, *params),
            "{key}"
        );
    }
}

#[tokio::test]
async fn resolution_limit_of_each_plan() {
    let ctx = start(config()).await;
    for (_, key, _, _, _, w, h, _) in PLANS {
        let expected = msg(&format!("Exceed Max Usage Resolution Limit ({w}x{h})"));
        assert_eq!(
            ctx.chart_json(key, json!({ "width": w + 1, "height": 300 })).await,
            (403, expected.clone()),
            "{key}"
        );
        assert_eq!(
            ctx.chart_json(key, json!({ "width": 400, "height": h + 1 })).await,
            (403, expected),
            "{key}"
        );
    }
    // Exactly the maximum is allowed (BASIC and PRO; the bigger ones cost render time for no new information).
    assert_eq!(
        ctx.chart("k-basic", json!({ "width": 800, "height": 600 }))
            .await
            .status(),
        200
    );
    assert_eq!(
        ctx.chart("k-pro", json!({ "width": 1920, "height": 1080 }))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn parameter_limit_of_each_plan_counts_studies_and_drawings() {
    let ctx = start(config()).await;
    for (_, key, _, _, _, _, _, max) in PLANS {
        // Half studies, half drawings, one over the limit.
        let n = *max as usize + 1;
        let studies: Vec<_> = (0..n / 2)
            .map(|_| json!({ "name": "Relative Strength Index" }))
            .collect();
        let drawings: Vec<_> = (0..n - n / 2)
            .map(|_| json!({ "name": "Horizontal Line", "input": { "price": 1 } }))
            .collect();
        let body = json!({ "width": 400, "height": 300, "studies": studies, "drawings": drawings });
        assert_eq!(
            ctx.chart_json(key, body).await,
            (403, msg(&format!("Exceed Max Usage Parameter Limit ({max})"))),
            "{key}"
        );
        // At the limit: accepted.
        let studies: Vec<_> = (0..*max)
            .map(|_| json!({ "name": "Moving Average", "forceOverlay": true }))
            .collect();
        let r = ctx
            .chart(key, json!({ "width": 400, "height": 300, "studies": studies }))
            .await;
        assert_eq!(r.status(), 200, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_of_each_plan() {
    let ctx = start(config()).await;
    for (_, key, rate, burst, ..) in PLANS {
        let started = std::time::Instant::now();
        let answers =
            futures::future::join_all((0..burst + 10).map(|_| async { ctx.chart(key, crate::small()).await.status() }))
                .await;
        // Cells that may have refilled while the requests were being sent.
        let refill = (started.elapsed().as_secs_f64() * rate).ceil() as usize;
        let ok = answers.iter().filter(|s| s.as_u16() == 200).count();
        let throttled = answers.iter().filter(|s| s.as_u16() == 429).count();
        assert_eq!(ok + throttled, answers.len(), "{key}: {answers:?}");
        assert!(
            ok >= *burst as usize && ok <= *burst as usize + refill,
            "{key}: {ok} passed, burst {burst}, refill {refill}"
        );
    }
}
