//! The admin API over HTTP.

use mock_chart_img::{Config, Plan};
use serde_json::{json, Value};

use crate::{small, start};

fn config() -> Config {
    Config::default()
        .with_key("secret-key-one", "acc-1", Plan::PRO)
        .with_key("secret-key-two", "acc-2", Plan::PRO)
}

#[tokio::test]
async fn health() {
    let ctx = start(config()).await;
    let h = ctx.admin_get("/health").await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["keys"], 2);
}

#[tokio::test]
async fn journal_newest_first_with_filters_and_no_keys() {
    let ctx = start(config()).await;
    ctx.chart("secret-key-one", small()).await;
    ctx.chart("secret-key-two", small()).await;
    ctx.chart("secret-key-two", json!({ "interval": "4H" })).await;
    ctx.chart("secret-key-wrong", small()).await;

    let all = ctx.admin_get("/requests").await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 4);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 3, 2, 1], "newest first");
    assert_eq!(all[0]["account"], Value::Null);
    assert_eq!(all[0]["key_status"], "unknown");
    assert_eq!(all[1]["error"], "interval: must be a supported interval (\"4H\")");

    let acc2 = ctx.admin_get("/requests?account=acc-2").await;
    assert_eq!(acc2.as_array().unwrap().len(), 2);
    let s422 = ctx.admin_get("/requests?status=422").await;
    assert_eq!(s422.as_array().unwrap().len(), 1);
    assert_eq!(s422[0]["account"], "acc-2");
    let both = ctx.admin_get("/requests?account=acc-2&status=200").await;
    assert_eq!(both.as_array().unwrap().len(), 1);
    assert_eq!(ctx.admin_get("/requests?limit=1").await.as_array().unwrap().len(), 1);

    // No admin answer shows a key.
    for path in ["/requests", "/usage", "/keys", "/health"] {
        let text = ctx
            .http
            .get(format!("{}{path}", ctx.server.admin_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("secret-key"), "{path} leaks a key: {text}");
    }
}

#[tokio::test]
async fn a_client_names_itself_under_via_and_the_journal_times_its_arrival() {
    let ctx = start(config()).await;
    let before = chrono::Utc::now();
    let r = ctx
        .post(
            &format!("/__via/serve-1{}", crate::CHART),
            Some("secret-key-one"),
            &small(),
        )
        .await;
    assert_eq!(r.status(), 200);
    ctx.chart("secret-key-two", small()).await;
    let j = ctx.admin_get("/requests").await;
    let (direct, via) = (&j[0], &j[1]);
    assert_eq!(via["via"], "serve-1");
    assert_eq!(via["path"], crate::CHART, "the route, without the prefix");
    assert_eq!(via["account"], "acc-1");
    assert_eq!(direct.get("via"), None, "no label without the prefix");
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(time(&via["received_at"]) >= before);
    assert!(time(&via["received_at"]) <= time(&via["at"]));
}

#[tokio::test]
async fn journal_is_bounded() {
    let ctx = start(config().with_journal_capacity(5)).await;
    for _ in 0..12 {
        ctx.chart("secret-key-one", small()).await;
    }
    let j = ctx.admin_get("/requests").await;
    let seqs: Vec<u64> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [12, 11, 10, 9, 8]);
}

#[tokio::test]
async fn usage_and_reset() {
    let ctx = start(config()).await;
    for _ in 0..3 {
        ctx.chart("secret-key-one", small()).await;
    }
    let u = ctx.admin_get("/usage/acc-1").await;
    assert_eq!(
        (
            u["used_today"].as_u64(),
            u["remaining_today"].as_u64(),
            u["plan"].as_str()
        ),
        (Some(3), Some(497), Some("PRO"))
    );
    let all = ctx.admin_get("/usage").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let r = ctx
        .http
        .get(format!("{}/usage/nobody", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = ctx
        .http
        .post(format!("{}/reset", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ctx.admin_get("/usage/acc-1").await["used_today"], 0);
    assert!(ctx.admin_get("/requests").await.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn keys_at_run_time() {
    let ctx = start(config()).await;
    let admin = ctx.server.admin_url();
    assert_eq!(ctx.chart("new-key", small()).await.status(), 403);
    let r = ctx
        .http
        .post(format!("{admin}/keys"))
        .json(&json!({ "key": "new-key", "account": "acc-new", "plan": "BASIC" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(ctx.chart("new-key", small()).await.status(), 200);
    let keys = ctx.admin_get("/keys").await;
    assert!(keys
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["account"] == "acc-new" && k["plan"] == "BASIC"));

    // Custom limits, and a clash of account ids.
    let r = ctx
        .http
        .post(format!("{admin}/keys"))
        .json(&json!({ "key": "k-custom", "account": "acc-custom", "plan": {
            "rate_per_sec": 5.0, "burst": 5, "daily_limit": 9, "max_width": 1000, "max_height": 1000, "max_params": 2 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(ctx.admin_get("/usage/acc-custom").await["limits"]["daily_limit"], 9);
    let r = ctx
        .http
        .post(format!("{admin}/keys"))
        .json(&json!({ "key": "other", "account": "acc-new" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = ctx
        .http
        .post(format!("{admin}/keys"))
        .json(&json!({ "key": "x", "account": "y", "plan": "GOLD" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());

    let r = ctx.http.delete(format!("{admin}/keys/acc-new")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ctx.chart("new-key", small()).await.status(), 403);
    let r = ctx.http.delete(format!("{admin}/keys/acc-new")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn faults_at_run_time() {
    let ctx = start(config()).await;
    let admin = ctx.server.admin_url();
    let r = ctx
        .http
        .post(format!("{admin}/faults"))
        .json(&json!({ "kind": "error_rate", "rate": 1.0, "status": 500, "account": "acc-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id: Value = r.json().await.unwrap();
    let id = id["id"].as_str().unwrap().to_string();
    assert_eq!(ctx.chart("secret-key-one", small()).await.status(), 500);
    assert_eq!(ctx.chart("secret-key-two", small()).await.status(), 200);

    let list = ctx.admin_get("/faults").await;
    assert_eq!(list[0]["kind"], "error_rate");
    assert_eq!(list[0]["fired"], 1);
    assert_eq!(list[0]["origin"], "admin");

    let r = ctx.http.delete(format!("{admin}/faults/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ctx.chart("secret-key-one", small()).await.status(), 200);

    // A malformed fault is refused with a reason.
    let r = ctx
        .http
        .post(format!("{admin}/faults"))
        .json(&json!({ "kind": "latency" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("ms"), "{e}");

    // Clear all.
    ctx.http
        .post(format!("{admin}/faults"))
        .json(&json!({ "kind": "connection_reset" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ctx.http
            .delete(format!("{admin}/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(ctx.chart("secret-key-one", small()).await.status(), 200);
}

#[tokio::test]
async fn openapi_document_lists_every_admin_route() {
    let ctx = start(config()).await;
    let doc = ctx.admin_get("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/__admin/health",
        "/__admin/requests",
        "/__admin/usage",
        "/__admin/usage/{account}",
        "/__admin/reset",
        "/__admin/keys",
        "/__admin/keys/{account}",
        "/__admin/faults",
        "/__admin/faults/{id}",
        "/__admin/openapi.json",
        "/__admin/requests/count",
        "/__admin/requests/find",
        "/__admin/requests/unmatched",
        "/__admin/expectations",
        "/__admin/expectations/{id}",
        "/__admin/verify",
        "/__admin/stubs",
        "/__admin/stubs/{id}",
        "/__admin/snapshot",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
    }
    for schema in [
        "FaultSpec",
        "Criteria",
        "Expectation",
        "VerifyReport",
        "StubSpec",
        "SnapshotRequest",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
}
