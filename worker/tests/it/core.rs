//! The step flow over in-memory adapters, one behaviour of the contract per test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use worker_chart_export::domain::collections::ACCOUNTS_USAGE;
use worker_chart_export::domain::{ErrorCode, ImageFormat, ObjectRef, StepId, StepSelector};
use worker_chart_export::ports::{ArtifactStore, ChartApiError, RenderedChart};
use worker_chart_export::{run_chart_export_step, StepReport};

use crate::support::*;

async fn run(t: &TestWorker) -> StepReport {
    run_chart_export_step(&t.worker, &run_id(), &StepSelector::First, None)
        .await
        .unwrap()
}

async fn run_step(t: &TestWorker, step: &str) -> StepReport {
    let sel = StepSelector::Explicit(StepId::parse(step).unwrap());
    run_chart_export_step(&t.worker, &run_id(), &sel, None).await.unwrap()
}

fn transient(status: u16) -> ChartApiError {
    ChartApiError::Transient {
        status: Some(status),
        message: "Something Went Wrong".into(),
    }
}

#[tokio::test]
async fn happy_path_renders_uploads_writes_the_manifest_and_finalizes() {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    let tpl = ["price_volume", "rsi_14", "macd"];
    t.seed(&flow_run(&tpl, 2), &tpl).await;
    let before = t.run_doc().await;

    let report = run(&t).await;
    let StepReport::Succeeded {
        manifest_uri,
        items,
        failures,
        ..
    } = &report
    else {
        panic!("{report:?}")
    };
    assert_eq!(
        manifest_uri,
        "gs://bucket-1/runs/run-123/steps/charts_4h/charts/manifest.json"
    );
    assert_eq!(items.len(), 3);
    assert!(failures.is_empty());

    // The step: SUCCEEDED with the claim and finalize fields; nothing else in the document changed.
    let after = t.run_doc().await;
    let step = &after["steps"]["charts_4h"];
    assert_eq!(step["status"], "SUCCEEDED");
    assert_eq!(step["claimedBy"], "w-test");
    assert_eq!(step["startedAt"], "2026-11-28T13:25:11Z");
    assert_eq!(step["finishedAt"], "2026-11-28T13:25:11Z");
    assert!(step.get("leaseExpiresAt").is_none(), "a finished step holds no lease");
    assert_eq!(step["attempts"], 1);
    assert!(step["claimToken"].as_str().is_some_and(|t| t.len() == 32), "{step}");
    assert_eq!(step["outputsManifestGcsUri"], json!(manifest_uri));
    assert_eq!(step["inputs"], before["steps"]["charts_4h"]["inputs"]);
    assert_eq!(after["steps"]["summarize"], before["steps"]["summarize"]);
    assert_eq!(after["owner"], before["owner"]);
    assert_eq!(after["scope"], before["scope"]);

    // The request bodies: template fields plus symbol, interval and timezone.
    let calls = r.calls();
    assert_eq!(calls.len(), 3);
    let body = &calls.iter().find(|c| marker(c) == "rsi_14").unwrap().body;
    assert_eq!(body["symbol"], "BINANCE:BTCUSDT");
    assert_eq!(body["interval"], "4h");
    assert_eq!(body["timezone"], "Etc/UTC");
    assert_eq!(body["theme"], "dark");
    assert!(calls.iter().all(|c| c.key == KEY_1));

    // Objects: PNGs at the contract's paths, byte-exact, and a manifest that matches them.
    let objects = t.artifacts.list();
    assert_eq!(objects.len(), 4);
    let manifest_obj = ObjectRef::parse_uri(manifest_uri).unwrap();
    let stored = t.artifacts.get(&manifest_obj).await.unwrap().unwrap();
    assert_eq!(stored.content_type, "application/json");
    let m: Value = serde_json::from_slice(&stored.bytes).unwrap();
    assert_eq!(m["schemaVersion"], 1);
    assert_eq!(
        (m["runId"].as_str(), m["stepId"].as_str()),
        (Some("run-123"), Some("charts_4h"))
    );
    assert_eq!(
        (m["symbol"].as_str(), m["timeframe"].as_str()),
        (Some("BTCUSDT"), Some("4h"))
    );
    assert_eq!((m["minImages"].as_u64(), m["requested"].as_u64()), (Some(2), Some(3)));
    let ids: Vec<&str> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["chartTemplateId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, tpl, "items keep the order of the requests");
    for item in m["items"].as_array().unwrap() {
        let obj = ObjectRef::parse_uri(item["gcsUri"].as_str().unwrap()).unwrap();
        let png = t.artifacts.get(&obj).await.unwrap().unwrap();
        let id = item["chartTemplateId"].as_str().unwrap();
        assert_eq!(
            obj.path,
            format!("runs/run-123/charts/4h/{id}/20261128T132511Z_BTCUSDT_4h_{id}.png")
        );
        assert_eq!(png.content_type, "image/png");
        assert_eq!(png.bytes, png_bytes(id));
        assert_eq!(item["bytes"].as_u64().unwrap() as usize, png.bytes.len());
        use sha2::Digest;
        assert_eq!(item["sha256"], hex::encode(sha2::Sha256::digest(&png.bytes)));
        assert_eq!(item["generatedAt"], "2026-11-28T13:25:11Z");
    }
    // Usage: one unit per call sent, reserved in one batch, nothing left over.
    let u = t.usage("acc-1").await.unwrap();
    assert_eq!(
        (u["usageToday"].as_u64(), u["day"].as_str(), u["dailyLimit"].as_u64()),
        (Some(3), Some("2026-11-28"), Some(50))
    );
}

#[tokio::test]
async fn a_finished_or_running_step_is_a_no_op_that_writes_nothing() {
    for (status, extra) in [
        ("SUCCEEDED", json!({})),
        ("FAILED", json!({"error": {"code": "CHART_API_FAILED"}})),
        (
            "RUNNING",
            json!({"claimedBy": "other", "leaseExpiresAt": "2026-11-28T14:00:00Z"}),
        ),
        ("PENDING", json!({})),
    ] {
        let r = ScriptedRenderer::ok();
        let t = one_account(r.clone());
        let mut doc = flow_run(&["a"], 1);
        doc["steps"]["charts_4h"]["status"] = json!(status);
        for (k, v) in extra.as_object().unwrap() {
            doc["steps"]["charts_4h"][k] = v.clone();
        }
        t.seed(&doc, &["a"]).await;
        let report = run_step(&t, "charts_4h").await;
        if status == "RUNNING" {
            // Held by another live claim: a redelivery should re-check later.
            assert!(
                matches!(report, StepReport::Busy { ref claimed_by, .. } if claimed_by.as_deref() == Some("other")),
                "{report:?}"
            );
            assert!(report.wants_redelivery());
        } else {
            assert!(matches!(report, StepReport::NoOp { .. }), "{status}: {report:?}");
            assert!(!report.wants_redelivery());
        }
        assert!(report.is_ok());
        assert_eq!(t.run_doc().await, doc, "{status}: nothing rewritten");
        assert!(r.calls().is_empty());
        assert!(t.artifacts.list().is_empty());
        assert!(t.usage("acc-1").await.is_none());
    }
}

#[tokio::test]
async fn no_ready_step_and_a_missing_run_are_no_ops() {
    let t = one_account(ScriptedRenderer::ok());
    assert!(matches!(run(&t).await, StepReport::NoOp { ref reason, .. } if reason.contains("does not exist")));
    let mut doc = flow_run(&["a"], 1);
    doc["steps"]["charts_4h"]["status"] = json!("PENDING");
    t.seed(&doc, &["a"]).await;
    assert!(matches!(run(&t).await, StepReport::NoOp { ref reason, .. } if reason == "no READY CHART_EXPORT step"));
}

#[tokio::test]
async fn an_explicit_step_must_exist_and_be_chart_export() {
    let t = one_account(ScriptedRenderer::ok());
    let doc = flow_run(&["a"], 1);
    t.seed(&doc, &["a"]).await;
    let report = run_step(&t, "nope").await;
    let StepReport::Rejected { code, message, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::ValidationFailed);
    assert_eq!(message, "stepId: flow_runs/run-123 has no step \"nope\"");
    let report = run_step(&t, "summarize").await;
    assert!(
        matches!(&report, StepReport::Rejected { message, .. } if message.contains("steps.summarize.stepType")),
        "{report:?}"
    );
    assert!(!report.is_ok());
    assert_eq!(t.run_doc().await, doc);
}

async fn expect_validation_failure(doc: Value, templates: &[&str], want_in_message: &str) {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    t.seed(&doc, templates).await;
    let report = run(&t).await;
    let StepReport::Failed { code, message, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::ValidationFailed);
    assert!(
        message.contains(want_in_message),
        "{message} should contain {want_in_message}"
    );
    let step = t.step().await;
    assert_eq!(step["status"], "FAILED");
    assert_eq!(step["error"]["code"], "VALIDATION_FAILED");
    assert!(step["error"]["message"].as_str().unwrap().contains(want_in_message));
    assert!(step.get("outputsManifestGcsUri").is_none());
    assert!(r.calls().is_empty(), "nothing is sent for an invalid step");
    assert!(t.usage("acc-1").await.is_none(), "no quota taken for an invalid step");
}

#[tokio::test]
async fn step_level_validation_fails_the_step_naming_the_field() {
    let mut dup = flow_run(&["a", "b"], 1);
    dup["steps"]["charts_4h"]["inputs"]["requests"] = json!([{"chartTemplateId": "a"}, {"chartTemplateId": "a"}]);
    expect_validation_failure(
        dup,
        &["a"],
        "steps.charts_4h.inputs.requests[1].chartTemplateId: duplicates requests[0] (a)",
    )
    .await;
    expect_validation_failure(
        flow_run(&["a"], 2),
        &["a"],
        "steps.charts_4h.inputs.minImages: is 2 but only 1 requests",
    )
    .await;
    let mut slash = flow_run(&["a"], 1);
    slash["scope"]["symbol"] = json!("BTC/USDT");
    expect_validation_failure(slash, &["a"], "scope.symbol: must be a bare instrument without '/'").await;
    let mut tf = flow_run(&["a"], 1);
    tf["steps"]["charts_4h"]["inputs"]["timeframe"] = json!("4H");
    expect_validation_failure(tf, &["a"], "steps.charts_4h.inputs.timeframe: unknown timeframe \"4H\"").await;
}

#[tokio::test]
async fn template_problems_fail_their_request_only() {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a", "missing", "bad"], 1), &["a"]).await;
    t.docs
        .put_doc(
            "chart_templates",
            "bad",
            json!({"chartImgSymbolTemplate": "BINANCE:BTC", "request": {}}),
        )
        .await
        .unwrap();
    let report = run(&t).await;
    let StepReport::Succeeded { items, failures, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].chart_template_id, "missing");
    assert_eq!(failures[0].code, ErrorCode::ValidationFailed);
    assert_eq!(failures[0].message, "chart_templates/missing does not exist");
    assert!(failures[1]
        .message
        .starts_with("chart_templates/bad.chartImgSymbolTemplate: must contain {symbol} exactly once"));
    assert_eq!(r.calls().len(), 1);
    assert_eq!(t.usage_today("acc-1").await, 1, "only sendable requests reserve quota");
}

#[tokio::test]
async fn partial_failure_below_min_images_fails_with_the_first_failure_code() {
    let r = ScriptedRenderer::new(|c, _| match marker(c).as_str() {
        "b" => Err(ChartApiError::Rejected {
            status: 422,
            message: "Invalid Symbol".into(),
        }),
        "c" => Err(transient(500)),
        _ => Ok(png(c)),
    });
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a", "b", "c"], 2), &["a", "b", "c"]).await;
    let report = run(&t).await;
    let StepReport::Failed {
        code,
        message,
        failures,
        ..
    } = &report
    else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::ChartApiFailed);
    assert!(
        message.starts_with("1 of 3 charts rendered, 2 required; first failure: b 422 Invalid Symbol"),
        "{message}"
    );
    assert_eq!(failures[0].http_status, Some(422));
    assert_eq!(failures[1].http_status, Some(500));
    let step = t.step().await;
    assert_eq!(step["error"]["code"], "CHART_API_FAILED");
    assert_eq!(step["error"]["details"]["failures"][1]["chartTemplateId"], "c");
    assert!(
        t.artifacts
            .list()
            .iter()
            .all(|(o, _)| !o.path.ends_with("manifest.json")),
        "no manifest for a failed step"
    );
    // 1 call for a, 1 for b (not retried), 1 + 3 retries for c.
    assert_eq!((r.calls_for("a"), r.calls_for("b"), r.calls_for("c")), (1, 1, 4));
    assert_eq!(
        t.usage_today("acc-1").await,
        6,
        "usage equals the calls sent, retries included"
    );
}

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let r = ScriptedRenderer::new(|c, n| if n < 2 { Err(transient(503)) } else { Ok(png(c)) });
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    assert!(matches!(run(&t).await, StepReport::Succeeded { .. }));
    assert_eq!(r.calls_for("a"), 3);
    assert_eq!(t.usage_today("acc-1").await, 3);
}

#[tokio::test]
async fn throttling_is_retried_and_a_200_without_an_image_is_a_failure() {
    let r = ScriptedRenderer::new(|c, n| match (marker(c).as_str(), n) {
        ("a", 0) => Err(ChartApiError::Throttled),
        ("b", _) => Err(ChartApiError::NotAnImage {
            expected: "image/png",
            detail: "body \"<html>\"".into(),
        }),
        _ => Ok(png(c)),
    });
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a", "b"], 1), &["a", "b"]).await;
    let report = run(&t).await;
    let StepReport::Succeeded { failures, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(failures[0].code, ErrorCode::ChartApiFailed);
    assert_eq!(failures[0].http_status, Some(200));
    assert!(failures[0].message.contains("not image/png"));
    assert_eq!((r.calls_for("a"), r.calls_for("b")), (2, 1));
    assert!(
        t.artifacts.list().iter().all(|(o, _)| !o.path.contains("/b/")),
        "a non-image is never stored"
    );
}

#[tokio::test]
async fn limit_exceeded_moves_to_the_next_account_and_marks_the_first_exhausted() {
    // The step's first account (its preference order) is used up at Chart-IMG; the other renders.
    let [(first, first_key), (second, _)] = two_accounts_in_step_order();
    let r = ScriptedRenderer::new(move |c, _| {
        if c.key == first_key {
            Err(ChartApiError::LimitExceeded)
        } else {
            Ok(png(c))
        }
    });
    let t = worker_with(r.clone(), &accounts_json(&[("acc-1", KEY_1, 50), ("acc-2", KEY_2, 50)]));
    t.seed(&flow_run(&["a", "b", "c"], 3), &["a", "b", "c"]).await;
    let report = run(&t).await;
    assert!(matches!(report, StepReport::Succeeded { .. }), "{report:?}");
    let u1 = t.usage(first).await.unwrap();
    assert_eq!(u1["exhausted"], true);
    let sent_1 = r.calls().iter().filter(|c| c.account == first).count() as u64;
    let sent_2 = r.calls().iter().filter(|c| c.account == second).count() as u64;
    assert!(sent_1 >= 1 && sent_2 == 3, "{sent_1} {sent_2}");
    assert_eq!(
        u1["usageToday"].as_u64().unwrap(),
        sent_1,
        "the first account counts exactly the calls it was sent"
    );
    assert_eq!(t.usage_today(second).await, sent_2);
}

/// L12: a step asking for more charts than `CHART_EXPORT_MAX_REQUESTS` fails `VALIDATION_FAILED` naming the count and
/// the variable, before any template is read, quota reserved or call sent.
#[tokio::test]
async fn a_step_over_the_request_limit_fails_validation_before_any_call() {
    let r = ScriptedRenderer::new(|c, _| Ok(png(c)));
    let mut t = one_account(r.clone());
    t.worker.settings.max_requests = 2;
    t.seed(&flow_run(&["a", "b", "c"], 1), &["a", "b", "c"]).await;
    let report = run(&t).await;
    let StepReport::Failed { code, message, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::ValidationFailed);
    assert_eq!(
        message,
        "steps.charts_4h.inputs.requests: has 3 entries; a step may ask for at most 2 charts (CHART_EXPORT_MAX_REQUESTS)"
    );
    let step = t.step().await;
    assert_eq!(step["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(step["error"]["details"]["field"], "steps.charts_4h.inputs.requests");
    assert!(r.calls().is_empty());
    // At the limit it runs.
    t.worker.settings.max_requests = 3;
    t.seed(&flow_run(&["a", "b", "c"], 1), &["a", "b", "c"]).await;
    assert!(matches!(run(&t).await, StepReport::Succeeded { .. }));
}

#[tokio::test]
async fn all_accounts_exhausted_fails_with_limit_exceeded() {
    let r = ScriptedRenderer::new(|_, _| Err(ChartApiError::LimitExceeded));
    let t = worker_with(r.clone(), &accounts_json(&[("acc-1", KEY_1, 50), ("acc-2", KEY_2, 50)]));
    t.seed(&flow_run(&["a", "b"], 1), &["a", "b"]).await;
    let report = run(&t).await;
    let StepReport::Failed { code, message, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::ChartApiLimitExceeded);
    assert!(
        message.contains("every Chart-IMG account is exhausted for today (acc-1, acc-2)"),
        "{message}"
    );
    assert_eq!(t.step().await["error"]["code"], "CHART_API_LIMIT_EXCEEDED");
    for acc in ["acc-1", "acc-2"] {
        let u = t.usage(acc).await.unwrap();
        assert_eq!(u["exhausted"], true);
        let sent = r.calls().iter().filter(|c| c.account == acc).count() as u64;
        assert_eq!(u["usageToday"].as_u64().unwrap(), sent, "{acc}");
    }
}

#[tokio::test]
async fn a_used_up_daily_limit_is_never_exceeded_and_yesterdays_counter_is_reset() {
    let r = ScriptedRenderer::ok();
    let t = worker_with(r.clone(), &accounts_json(&[("acc-1", KEY_1, 2)]));
    t.docs
        .put_doc(
            ACCOUNTS_USAGE,
            "acc-1",
            json!({"day": "2026-11-28", "usageToday": 1, "dailyLimit": 2, "exhausted": false, "updatedAt": "x"}),
        )
        .await
        .unwrap();
    t.seed(&flow_run(&["a", "b", "c"], 1), &["a", "b", "c"]).await;
    let report = run(&t).await;
    let StepReport::Succeeded { items, failures, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!((items.len(), failures.len()), (1, 2));
    assert_eq!(failures[0].code, ErrorCode::ChartApiLimitExceeded);
    assert_eq!(t.usage_today("acc-1").await, 2);
    assert_eq!(r.calls().len(), 1);

    // Next day: the counter reads as fresh.
    let t = worker_with(ScriptedRenderer::ok(), &accounts_json(&[("acc-1", KEY_1, 2)]));
    t.docs
        .put_doc(
            ACCOUNTS_USAGE,
            "acc-1",
            json!({"day": "2026-11-27", "usageToday": 2, "dailyLimit": 2, "exhausted": true, "updatedAt": "x"}),
        )
        .await
        .unwrap();
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    assert!(matches!(run(&t).await, StepReport::Succeeded { .. }));
    let u = t.usage("acc-1").await.unwrap();
    assert_eq!(
        (u["day"].as_str(), u["usageToday"].as_u64(), u["exhausted"].as_bool()),
        (Some("2026-11-28"), Some(1), Some(false))
    );
}

#[tokio::test]
async fn an_unreachable_bucket_releases_the_step_and_the_next_attempt_pays_only_for_what_is_missing() {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    t.artifacts.set_unavailable(true);
    t.seed(&flow_run(&["a", "b"], 2), &["a", "b"]).await;
    let report = run(&t).await;
    // A transient upload failure is not the step's fault: released (READY, attempt counted), not FAILED.
    let StepReport::Released { code, message, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::GcsWriteFailed);
    assert!(
        message.contains("cannot write gs://bucket-1/runs/run-123/charts/4h/a/"),
        "{message}"
    );
    let step = t.step().await;
    assert_eq!(
        (step["status"].as_str(), step["lastError"]["code"].as_str()),
        (Some("READY"), Some("GCS_WRITE_FAILED"))
    );
    assert_eq!(r.calls().len(), 2);
    assert!(t.artifacts.list().is_empty());
}

#[tokio::test]
async fn an_unreadable_manifest_is_never_replaced_nor_taken_for_success() {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let obj = ObjectRef {
        bucket: "bucket-1".into(),
        path: "runs/run-123/steps/charts_4h/charts/manifest.json".into(),
    };
    let first = bytes::Bytes::from_static(b"{\"first\":true}");
    t.artifacts
        .put(
            &obj,
            first.clone(),
            "application/json",
            worker_chart_export::ports::WriteMode::CreateOnly,
        )
        .await
        .unwrap();
    let report = run(&t).await;
    let StepReport::Failed { code, message, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::ManifestWriteFailed);
    assert!(
        message.contains("manifest.json exists but is not a readable manifest"),
        "{message}"
    );
    assert_eq!(t.artifacts.get(&obj).await.unwrap().unwrap().bytes, first);
    assert!(t.step().await.get("outputsManifestGcsUri").is_none());
    assert!(r.calls().is_empty());
}

#[tokio::test]
async fn repeated_runs_are_no_ops_and_usage_is_counted_once() {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a", "b"], 2), &["a", "b"]).await;
    assert!(matches!(run(&t).await, StepReport::Succeeded { .. }));
    let after_first = t.run_doc().await;
    for _ in 0..3 {
        assert!(matches!(run_step(&t, "charts_4h").await, StepReport::NoOp { .. }));
    }
    assert_eq!(t.run_doc().await, after_first);
    assert_eq!(r.calls().len(), 2);
    assert_eq!(t.usage_today("acc-1").await, 2);
}

#[tokio::test]
async fn concurrent_deliveries_claim_once() {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a", "b"], 2), &["a", "b"]).await;
    let runs = (0..10).map(|_| run(&t));
    let reports = futures::future::join_all(runs).await;
    let succeeded = reports
        .iter()
        .filter(|r| matches!(r, StepReport::Succeeded { .. }))
        .count();
    let others = reports
        .iter()
        .filter(|r| matches!(r, StepReport::NoOp { .. } | StepReport::Busy { .. }))
        .count();
    assert_eq!((succeeded, others), (1, 9), "{reports:?}");
    assert_eq!(r.calls().len(), 2);
    assert_eq!(t.usage_today("acc-1").await, 2);
}

#[tokio::test]
async fn a_step_reclaimed_after_its_lease_cannot_be_finalized_by_the_first_worker() {
    // The renderer plays the other worker: while our step renders, it takes the step over (as if our lease expired).
    let t_holder: Arc<
        std::sync::Mutex<Option<worker_chart_export::adapters::JsonDocs<worker_chart_export::adapters::MemoryBackend>>>,
    > = Arc::default();
    let h = t_holder.clone();
    let r = ScriptedRenderer::new(move |c, _| {
        let docs = h.lock().unwrap().clone().unwrap();
        let handle = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            handle.block_on(async {
                let mut d = docs.get_doc("flow_runs", "run-123").await.unwrap().unwrap();
                d["steps"]["charts_4h"]["claimedBy"] = json!("w-other");
                d["steps"]["charts_4h"]["claimToken"] = json!("token-of-w-other");
                docs.put_doc("flow_runs", "run-123", d).await.unwrap();
            })
        })
        .join()
        .unwrap();
        Ok(png(c))
    });
    let t = one_account(r);
    *t_holder.lock().unwrap() = Some(t.docs.clone());
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let report = run(&t).await;
    assert!(matches!(report, StepReport::LostClaim { .. }), "{report:?}");
    let step = t.step().await;
    assert_eq!(
        (step["status"].as_str(), step["claimedBy"].as_str()),
        (Some("RUNNING"), Some("w-other"))
    );
    assert!(step.get("finishedAt").is_none());
}

#[tokio::test]
async fn an_expired_lease_is_reclaimed() {
    let t = one_account(ScriptedRenderer::ok());
    let mut doc = flow_run(&["a"], 1);
    doc["steps"]["charts_4h"]["status"] = json!("RUNNING");
    doc["steps"]["charts_4h"]["claimedBy"] = json!("crashed-worker");
    doc["steps"]["charts_4h"]["leaseExpiresAt"] = json!("2026-11-28T14:00:00Z");
    t.seed(&doc, &["a"]).await;
    assert!(
        matches!(run(&t).await, StepReport::Busy { .. }),
        "the lease is still live at 13:25"
    );
    assert!(matches!(run_step(&t, "charts_4h").await, StepReport::Busy { .. }));
    t.clock.set("2026-11-28T14:00:01Z");
    assert!(matches!(run(&t).await, StepReport::Succeeded { .. }));
    assert_eq!(t.step().await["claimedBy"], "w-test");
}

#[tokio::test]
async fn jpeg_templates_are_stored_as_jpeg() {
    let r = ScriptedRenderer::new(|_, _| {
        Ok(RenderedChart {
            bytes: bytes::Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xE0, 1]),
            format: ImageFormat::Jpeg,
        })
    });
    let t = one_account(r);
    t.seed(&flow_run(&["a"], 1), &[]).await;
    t.docs
        .put_doc(
            "chart_templates",
            "a",
            json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": {"format": "jpeg"}}),
        )
        .await
        .unwrap();
    let StepReport::Succeeded { items, .. } = run(&t).await else {
        panic!()
    };
    assert!(items[0].gcs_uri.ends_with("_BTCUSDT_4h_a.jpg"));
    assert_eq!(items[0].content_type, "image/jpeg");
}

/// Backoff with tokio's paused clock: the delays are really waited (virtual time advances), bounded in count.
#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_within_their_bounds() {
    let r = ScriptedRenderer::new(|_, _| Err(ChartApiError::Throttled));
    let mut t = one_account(r.clone());
    t.worker.settings.retry = worker_chart_export::RetryPolicy {
        max_retries: 4,
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        max_total_delay: Duration::from_secs(30),
    };
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let started = tokio::time::Instant::now();
    let report = run(&t).await;
    let waited = started.elapsed();
    assert!(
        matches!(
            report,
            StepReport::Failed {
                code: ErrorCode::ChartApiFailed,
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(r.calls().len(), 5, "1 attempt + 4 retries");
    // Jittered delays: each is between d and 2d for d = 100, 200, 400, 800 ms.
    assert!(
        waited >= Duration::from_millis(1500) && waited <= Duration::from_millis(3100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_retry_delay_is_bounded() {
    let r = ScriptedRenderer::new(|_, _| Err(transient(503)));
    let mut t = one_account(r.clone());
    t.worker.settings.retry = worker_chart_export::RetryPolicy {
        max_retries: 100,
        min_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(2),
        max_total_delay: Duration::from_secs(5),
    };
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let started = tokio::time::Instant::now();
    run(&t).await;
    assert!(started.elapsed() <= Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(r.calls().len() < 10, "{} attempts", r.calls().len());
}

#[tokio::test]
async fn a_request_the_api_would_refuse_fails_before_any_quota_or_call() {
    let r = ScriptedRenderer::ok();
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a", "rsi"], 1), &["a"]).await;
    t.docs
        .put_doc(
            "chart_templates",
            "rsi",
            json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": {"studies": [{"name": "RSI"}]}}),
        )
        .await
        .unwrap();
    let report = run(&t).await;
    let StepReport::Succeeded { items, failures, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!((items.len(), failures.len()), (1, 1));
    assert_eq!(failures[0].code, ErrorCode::ValidationFailed);
    assert_eq!(
        failures[0].message,
        "chart_templates/rsi.request.studies[0].name: Chart-IMG would refuse it with 422 studies[0].name: must be a supported name (\"RSI\")"
    );
    assert_eq!(r.calls().len(), 1, "no call for the refused request");
    assert_eq!(t.usage_today("acc-1").await, 1, "no unit reserved for it");
}

fn plans_json(accounts: &[(&str, &str, &str)]) -> String {
    let items: Vec<Value> = accounts
        .iter()
        .map(|(id, key, plan)| json!({"id": id, "apiKey": key, "dailyLimit": 50, "plan": plan}))
        .collect();
    Value::Array(items).to_string()
}

#[tokio::test]
async fn a_large_chart_goes_to_an_account_whose_plan_fits_or_fails_saying_none_does() {
    let hd = json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": {"width": 1920, "height": 1080}});
    let r = ScriptedRenderer::ok();
    let t = worker_with(
        r.clone(),
        &plans_json(&[("acc-basic", KEY_1, "BASIC"), ("acc-pro", KEY_2, "PRO")]),
    );
    t.seed(&flow_run(&["a", "hd"], 2), &["a"]).await;
    t.docs.put_doc("chart_templates", "hd", hd.clone()).await.unwrap();
    let report = run(&t).await;
    assert!(
        matches!(report, StepReport::Succeeded { ref failures, .. } if failures.is_empty()),
        "{report:?}"
    );
    let hd_call = r.calls().into_iter().find(|c| c.body["width"] == 1920).unwrap();
    assert_eq!(hd_call.account, "acc-pro");
    let sent = |acc: &str| r.calls().iter().filter(|c| c.account == acc).count() as u64;
    assert_eq!(
        t.usage_today("acc-basic").await,
        sent("acc-basic"),
        "units reserved on BASIC for the big chart were given back"
    );
    assert_eq!(t.usage_today("acc-pro").await, sent("acc-pro"));

    let r = ScriptedRenderer::ok();
    let t = worker_with(r.clone(), &plans_json(&[("acc-basic", KEY_1, "BASIC")]));
    t.seed(&flow_run(&["hd"], 1), &[]).await;
    t.docs.put_doc("chart_templates", "hd", hd).await.unwrap();
    let report = run(&t).await;
    let StepReport::Failed { code, message, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(*code, ErrorCode::ValidationFailed);
    assert!(
        message.contains("chart_templates/hd.request.width: 1920x1080: no configured account's plan fits (the largest, BASIC, allows 800x600"),
        "{message}"
    );
    assert_eq!(r.calls().len(), 0);
    assert_eq!(t.usage("acc-basic").await, None, "no reservation at all");
}

/// Chart-IMG (mock-chart-img on a clock the test moves) answered by a renderer that, once armed, moves the worker's
/// clock and the mock's past midnight while the answer is on its way back.
struct AnsweredAfterMidnight {
    inner: worker_chart_export::HttpChartImg,
    worker_clock: Arc<FixedClock>,
    mock_clock: Arc<mock_chart_img::ManualClock>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl worker_chart_export::ports::ChartRenderer for AnsweredAfterMidnight {
    async fn render(&self, call: &worker_chart_export::ports::ChartCall<'_>) -> Result<RenderedChart, ChartApiError> {
        let answer = self.inner.render(call).await;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.worker_clock.set("2026-11-29T00:00:00.500Z");
            self.mock_clock.set("2026-11-29T00:00:00.500Z".parse().unwrap());
        }
        answer
    }
}

/// M7: a call sent at 23:59:59.5 on an account Chart-IMG has used up for the day is answered `429 Limit Exceeded`
/// after midnight. That marks the day the call was sent; the new day's quota stays usable.
#[tokio::test]
async fn a_limit_exceeded_answered_after_midnight_marks_the_day_the_call_was_sent() {
    let mock_clock = mock_chart_img::ManualClock::new("2026-11-28T13:00:00Z".parse().unwrap());
    let mut key = mock_chart_img::KeyConfig::new(KEY_1, "acc-1", mock_chart_img::Plan::PRO);
    key.overrides.daily_limit = Some(1);
    let mock = mock_chart_img::spawn(
        mock_chart_img::Config::default()
            .with_key_config(key)
            .with_clock(mock_clock.clone()),
    )
    .await
    .unwrap();
    let worker_clock = FixedClock::at("2026-11-28T13:00:00Z");
    let renderer = Arc::new(AnsweredAfterMidnight {
        inner: worker_chart_export::HttpChartImg::new(&mock.base_url(), Duration::from_secs(10)).unwrap(),
        worker_clock: worker_clock.clone(),
        mock_clock: mock_clock.clone(),
        armed: Default::default(),
    });
    let mut t = worker_with(renderer.clone(), &accounts_json(&[("acc-1", KEY_1, 50)]));
    t.worker.clock = worker_clock.clone();
    t.clock = worker_clock.clone();
    let step = |tpl: &str| {
        json!({"stepType": "CHART_EXPORT", "status": "READY",
               "inputs": {"timeframe": "4h", "minImages": 1, "requests": [{"chartTemplateId": tpl}]}})
    };
    let run = json!({"scope": {"symbol": "BTCUSDT"}, "owner": {"team": "research"},
                     "steps": {"noon": step("price"), "late": step("rsi"), "next_day": step("macd")}});
    t.seed(&run, &["price", "rsi", "macd"]).await;

    // Noon: the mock's one call of the 28th.
    run_step(&t, "noon").await;
    assert_eq!(t.run_doc().await["steps"]["noon"]["status"], "SUCCEEDED");
    // 23:59:59.5: used up; the answer comes at 00:00:00.5.
    worker_clock.set("2026-11-28T23:59:59.500Z");
    mock_clock.set("2026-11-28T23:59:59.500Z".parse().unwrap());
    renderer.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    run_step(&t, "late").await;
    let late = &t.run_doc().await["steps"]["late"];
    assert_eq!(late["status"], "FAILED", "{late}");
    let u = t.usage("acc-1").await.unwrap();
    assert_eq!(
        (u["day"].as_str(), u["exhausted"].as_bool()),
        (Some("2026-11-28"), Some(true)),
        "{u}"
    );
    // The 29th: the account renders.
    run_step(&t, "next_day").await;
    let next = &t.run_doc().await["steps"]["next_day"];
    assert_eq!(next["status"], "SUCCEEDED", "{next}");
    let u = t.usage("acc-1").await.unwrap();
    assert_eq!(
        (u["day"].as_str(), u["usageToday"].as_u64()),
        (Some("2026-11-29"), Some(1)),
        "{u}"
    );
    assert_eq!(mock.state().usage("acc-1").unwrap().used_today, 1);
}

/// A usage store whose first reservation takes `freeze` (a frozen or busy usage document); every other call answers
/// at once.
struct FirstReservationFrozen {
    inner: Arc<dyn worker_chart_export::ports::AccountUsageStore>,
    freeze: Duration,
    reservations: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl worker_chart_export::ports::AccountUsageStore for FirstReservationFrozen {
    async fn reserve(
        &self,
        op: &worker_chart_export::domain::OpId,
        accounts: &[worker_chart_export::domain::AccountQuota],
        units: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<worker_chart_export::domain::Grant>, worker_chart_export::ports::StoreError> {
        if self.reservations.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(self.freeze).await;
        }
        self.inner.reserve(op, accounts, units, now).await
    }
    async fn give_back(
        &self,
        op: &worker_chart_export::domain::OpId,
        account: &worker_chart_export::domain::AccountId,
        day: chrono::NaiveDate,
        units: u32,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), worker_chart_export::ports::StoreError> {
        self.inner.give_back(op, account, day, units, now).await
    }
    async fn mark_exhausted(
        &self,
        account: &worker_chart_export::domain::AccountQuota,
        day: chrono::NaiveDate,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), worker_chart_export::ports::StoreError> {
        self.inner.mark_exhausted(account, day, now).await
    }
    async fn get_usage(
        &self,
        account: &worker_chart_export::domain::AccountId,
    ) -> Result<Option<worker_chart_export::domain::UsageDoc>, worker_chart_export::ports::StoreError> {
        self.inner.get_usage(account).await
    }
}

/// A renderer that notes, as each call starts, how many units the usage document counts beyond the calls started:
/// what a process killed at that moment would leave counted.
struct CountedAhead {
    docs: worker_chart_export::adapters::JsonDocs<worker_chart_export::adapters::MemoryBackend>,
    started: std::sync::atomic::AtomicU64,
    most_ahead: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl worker_chart_export::ports::ChartRenderer for CountedAhead {
    async fn render(&self, call: &worker_chart_export::ports::ChartCall<'_>) -> Result<RenderedChart, ChartApiError> {
        use std::sync::atomic::Ordering::SeqCst;
        use worker_chart_export::ports::AccountUsageStore as _;
        let started = self.started.fetch_add(1, SeqCst) + 1;
        let counted = self
            .docs
            .get_usage(call.account)
            .await
            .unwrap()
            .map_or(0, |u| u64::from(u.usage_today));
        self.most_ahead.fetch_max(counted.saturating_sub(started), SeqCst);
        Ok(RenderedChart {
            bytes: png_bytes("x"),
            format: ImageFormat::Png,
        })
    }
}

/// #17: callers queued behind a slow reservation (the usage document frozen for 1.5 s while 30 callers wait on a
/// PRO key: its burst and 1.5 s of its rate go stale) take their units only at fresh slots, so the units counted
/// beyond the calls started — what a kill would leave — stay within one reservation (one second of the key's rate,
/// 10), not one per waiting caller (29 when each took its unit before waiting for a fresh slot).
#[tokio::test]
async fn callers_behind_a_slow_reservation_hold_no_unit_while_they_wait_for_a_fresh_slot() {
    let accounts = format!(r#"[{{"id":"acc-1","apiKey":"{KEY_1}","dailyLimit":500,"plan":"PRO"}}]"#);
    let docs = worker_chart_export::adapters::JsonDocs::in_memory();
    let renderer = Arc::new(CountedAhead {
        docs: docs.clone(),
        started: Default::default(),
        most_ahead: Default::default(),
    });
    let mut t = worker_with(renderer.clone(), &accounts);
    t.docs = docs.clone();
    t.worker.flow_runs = Arc::new(docs.clone());
    t.worker.templates = Arc::new(docs.clone());
    t.worker.usage = Arc::new(FirstReservationFrozen {
        inner: Arc::new(docs.clone()),
        freeze: Duration::from_millis(1500),
        reservations: Default::default(),
    });
    t.worker.settings.concurrency = 30;
    let templates: Vec<String> = (0..30).map(|i| format!("c{i:02}")).collect();
    let names: Vec<&str> = templates.iter().map(String::as_str).collect();
    t.seed(&flow_run(&names, 30), &names).await;
    let report = run(&t).await;
    assert_eq!(t.step().await["status"], "SUCCEEDED", "{report:?}");
    assert_eq!(t.usage_today("acc-1").await, 30, "usage = calls");
    let ahead = renderer.most_ahead.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        ahead <= 10,
        "units counted beyond the calls started reached {ahead}: more than one reservation's worth"
    );
}
