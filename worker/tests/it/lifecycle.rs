//! The step lifecycle over in-memory adapters, on tokio's paused clock: lease renewal, a lost claim, the step
//! deadline, release with attempts and not-before, giving up after N attempts, permanent errors, manifest first,
//! shutdown, and a failed recording that must not re-send a paid call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use worker_chart_export::config::Lifecycle;
use worker_chart_export::domain::{ErrorCode, ObjectRef, StepSelector, TemplateId};
use worker_chart_export::ports::{
    ArtifactStore, ChartApiError, ChartCall, ChartRenderer, Clock, RenderedChart, StoreError, TemplateStore, WriteMode,
};
use worker_chart_export::Shutdown;
use worker_chart_export::{run_chart_export_step, StepReport};

use crate::support::{flow_run, one_account, png_bytes, run_id, ScriptedRenderer, TestWorker};

/// Wall-clock time that follows tokio's (paused) clock, so leases written to documents move with the test.
struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: DateTime::parse_from_rfc3339("2026-11-28T13:25:11Z")
                .unwrap()
                .with_timezone(&Utc),
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(self.start.elapsed()).unwrap()
    }
}

/// Answers a PNG after `delay`, counting calls; `hook` runs at the start of the call with its number.
struct Slow {
    delay: Duration,
    calls: AtomicUsize,
    hook: Box<dyn Fn(usize) + Send + Sync>,
}

impl Slow {
    fn new(delay: Duration) -> Arc<Self> {
        Self::with_hook(delay, |_| {})
    }
    fn with_hook(delay: Duration, hook: impl Fn(usize) + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            delay,
            calls: AtomicUsize::new(0),
            hook: Box::new(hook),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ChartRenderer for Slow {
    async fn render(&self, call: &ChartCall<'_>) -> Result<RenderedChart, ChartApiError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        (self.hook)(n);
        tokio::time::sleep(self.delay).await;
        let tag = call.body.get("_t").and_then(Value::as_str).unwrap_or("");
        Ok(RenderedChart {
            bytes: png_bytes(tag),
            format: worker_chart_export::domain::ImageFormat::Png,
        })
    }
}

/// A worker with a short lease (30 s, heartbeat 10 s) on a clock that follows tokio's.
fn short_lease(renderer: Arc<dyn ChartRenderer>) -> TestWorker {
    let mut t = one_account(renderer);
    t.worker.clock = TokioClock::new();
    t.worker.settings.lease = Duration::from_secs(30);
    t.worker.settings.lifecycle = Lifecycle {
        step_deadline: Duration::from_secs(120),
        ..Lifecycle::for_lease(Duration::from_secs(30))
    };
    t.worker.settings.concurrency = 1;
    t
}

async fn run(t: &TestWorker) -> StepReport {
    run_chart_export_step(&t.worker, &run_id(), &StepSelector::First, None)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_step_slower_than_its_lease_is_renewed_and_never_reclaimed() {
    let slow = Slow::new(Duration::from_secs(25));
    let t = short_lease(slow.clone());
    let tpl = ["a", "b", "c"];
    t.seed(&flow_run(&tpl, 3), &tpl).await;
    let step_run = run(&t);
    let watch = async {
        // At 50 s the step has run longer than its 30 s lease; a second worker must still find it held.
        tokio::time::sleep(Duration::from_secs(50)).await;
        let step = t.step().await;
        assert_eq!(step["status"], "RUNNING");
        let lease = DateTime::parse_from_rfc3339(step["leaseExpiresAt"].as_str().unwrap()).unwrap();
        assert!(lease.with_timezone(&Utc) > t.worker.clock.now(), "renewed: {step}");
        let mut other = t.worker.clone();
        other.settings.worker_id = worker_chart_export::domain::WorkerId::parse("w-other").unwrap();
        run_chart_export_step(&other, &run_id(), &StepSelector::First, None)
            .await
            .unwrap()
    };
    let (report, other) = tokio::join!(step_run, watch);
    assert!(matches!(other, StepReport::Busy { .. }), "{other:?}");
    assert!(
        matches!(report, StepReport::Succeeded { ref items, .. } if items.len() == 3),
        "{report:?}"
    );
    assert_eq!(slow.calls(), 3, "no second holder rendered");
}

#[tokio::test(start_paused = true)]
async fn a_lost_claim_stops_new_calls_and_writes_no_manifest_or_finalize() {
    let docs: Arc<
        Mutex<Option<worker_chart_export::adapters::JsonDocs<worker_chart_export::adapters::MemoryBackend>>>,
    > = Arc::default();
    let d = docs.clone();
    // While the first chart renders, another claim takes the step over.
    let slow = Slow::with_hook(Duration::from_secs(15), move |n| {
        if n == 0 {
            let docs = d.lock().unwrap().clone().unwrap();
            tokio::spawn(async move {
                let mut doc = docs.get_doc("flow_runs", "run-123").await.unwrap().unwrap();
                doc["steps"]["charts_4h"]["claimToken"] = json!("someone-else");
                doc["steps"]["charts_4h"]["claimedBy"] = json!("w-other");
                docs.put_doc("flow_runs", "run-123", doc).await.unwrap();
            });
        }
    });
    let t = short_lease(slow.clone());
    *docs.lock().unwrap() = Some(t.docs.clone());
    let tpl = ["a", "b", "c"];
    t.seed(&flow_run(&tpl, 1), &tpl).await;
    let report = run(&t).await;
    assert!(matches!(report, StepReport::LostClaim { .. }), "{report:?}");
    assert_eq!(slow.calls(), 1, "no call starts after the renewal found the claim lost");
    let step = t.step().await;
    assert_eq!(
        (step["status"].as_str(), step["claimedBy"].as_str()),
        (Some("RUNNING"), Some("w-other"))
    );
    assert!(
        t.artifacts
            .list()
            .iter()
            .all(|(o, _)| !o.path.ends_with("manifest.json")),
        "no manifest"
    );
}

#[tokio::test(start_paused = true)]
async fn past_the_deadline_no_call_starts_and_what_rendered_is_kept() {
    let slow = Slow::new(Duration::from_secs(50));
    let t = short_lease(slow.clone());
    let tpl = ["a", "b", "c", "d"];
    t.seed(&flow_run(&tpl, 2), &tpl).await;
    let started = tokio::time::Instant::now();
    let report = run(&t).await;
    // 120 s deadline, 50 s per chart, one at a time: a and b render, c is in flight at the deadline and finishes, d
    // never starts.
    let StepReport::Succeeded { items, failures, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(items.len(), 3, "{report:?}");
    assert_eq!(failures.len(), 1);
    assert!(failures[0].message.contains("deadline"), "{failures:?}");
    assert_eq!(slow.calls(), 3);
    assert!(started.elapsed() < Duration::from_secs(160), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_below_min_images_releases_the_step_with_its_attempt_and_not_before() {
    let slow = Slow::new(Duration::from_secs(70));
    let t = short_lease(slow.clone());
    let tpl = ["a", "b", "c", "d"];
    t.seed(&flow_run(&tpl, 4), &tpl).await;
    let report = run(&t).await;
    let StepReport::Released {
        attempt,
        ref not_before,
        ..
    } = report
    else {
        panic!("{report:?}")
    };
    assert_eq!(attempt, 1);
    let step = t.step().await;
    assert_eq!(step["status"], "READY");
    assert_eq!(step["attempts"], 1);
    assert_eq!(step["notBefore"].as_str(), Some(not_before.as_str()));
    assert!(
        step["lastError"]["message"].as_str().unwrap().contains("deadline"),
        "{step}"
    );
    assert!(
        step.get("leaseExpiresAt").is_none() && step.get("claimedBy").is_none(),
        "{step}"
    );
    // Nothing claims it before its not-before time; the usage counts the calls sent (2), never fewer.
    assert!(matches!(run(&t).await, StepReport::NotYet { .. }));
    assert!(t.usage_today("acc-1").await >= 2);
    assert_eq!(slow.calls(), 2);

    // The next attempt renders only the two charts still missing and reuses the two stored ones.
    let wait = DateTime::parse_from_rfc3339(not_before).unwrap().with_timezone(&Utc) - t.worker.clock.now();
    tokio::time::sleep(wait.to_std().unwrap() + Duration::from_secs(1)).await;
    let report = run(&t).await;
    let StepReport::Succeeded { items, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(items.len(), 4);
    assert_eq!(slow.calls(), 4, "each chart paid for once");
    let pngs = t
        .artifacts
        .list()
        .iter()
        .filter(|(o, _)| o.path.ends_with(".png"))
        .count();
    assert_eq!(pngs, 4, "one object per chart");
}

/// Templates that cannot be read: transient (unavailable) or for good (refused).
struct BrokenTemplates(StoreError);

#[async_trait]
impl TemplateStore for BrokenTemplates {
    async fn get_templates(&self, _ids: &[TemplateId]) -> Result<HashMap<TemplateId, Value>, StoreError> {
        Err(match &self.0 {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            other => StoreError::Other(other.to_string()),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn transient_failures_release_with_growing_not_before_until_the_last_attempt_fails_the_step() {
    let r = ScriptedRenderer::ok();
    let mut t = short_lease(r.clone());
    t.worker.templates = Arc::new(BrokenTemplates(StoreError::Unavailable("UNAVAILABLE: injected".into())));
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let mut not_befores = Vec::new();
    for attempt in 1..=4 {
        let report = run(&t).await;
        let StepReport::Released {
            attempt: a,
            not_before,
            code,
            ..
        } = report
        else {
            panic!("{report:?}")
        };
        assert_eq!((a, code), (attempt, ErrorCode::StoreFailed));
        // Not claimable before its time: a delivery now is told to come back.
        assert!(matches!(run(&t).await, StepReport::NotYet { .. }));
        let wait = DateTime::parse_from_rfc3339(&not_before).unwrap().with_timezone(&Utc) - t.worker.clock.now();
        not_befores.push(wait.num_seconds());
        tokio::time::sleep(wait.to_std().unwrap()).await;
    }
    assert_eq!(not_befores, vec![10, 20, 40, 80]);
    let last = run(&t).await;
    assert!(
        matches!(last, StepReport::Failed { code: ErrorCode::StoreFailed, ref message, .. } if message.contains("gave up after 5 attempts")),
        "{last:?}"
    );
    let step = t.step().await;
    assert_eq!(
        (step["status"].as_str(), step["error"]["code"].as_str()),
        (Some("FAILED"), Some("STORE_FAILED"))
    );
    assert!(r.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_permanent_store_error_fails_the_step_at_once() {
    let mut t = short_lease(ScriptedRenderer::ok());
    t.worker.templates = Arc::new(BrokenTemplates(StoreError::Other("PERMISSION_DENIED: injected".into())));
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let report = run(&t).await;
    assert!(
        matches!(
            report,
            StepReport::Failed {
                code: ErrorCode::StoreFailed,
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(t.step().await["status"], "FAILED");
}

#[tokio::test(start_paused = true)]
async fn an_existing_manifest_finalizes_the_step_without_any_call() {
    let r = ScriptedRenderer::ok();
    let t = short_lease(r.clone());
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let manifest = json!({"schemaVersion": 1, "runId": "run-123", "stepId": "charts_4h", "createdAt": "2026-11-28T13:00:00Z",
        "symbol": "BTCUSDT", "timeframe": "4h", "minImages": 1, "requested": 1,
        "items": [{"chartTemplateId": "a", "gcsUri": "gs://bucket-1/runs/run-123/charts/4h/a/x.png", "contentType": "image/png",
                   "bytes": 9, "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "generatedAt": "2026-11-28T13:00:00Z"}], "failures": []});
    let obj = ObjectRef {
        bucket: "bucket-1".into(),
        path: "runs/run-123/steps/charts_4h/charts/manifest.json".into(),
    };
    t.artifacts
        .put(
            &obj,
            Bytes::from(manifest.to_string()),
            "application/json",
            WriteMode::CreateOnly,
        )
        .await
        .unwrap();
    let report = run(&t).await;
    assert!(
        matches!(report, StepReport::Succeeded { ref items, .. } if items.len() == 1),
        "{report:?}"
    );
    assert!(r.calls().is_empty(), "nothing rendered twice");
    assert_eq!(t.artifacts.list().len(), 1, "no new PNG");
    assert!(t.usage("acc-1").await.is_none(), "no quota taken");
    assert_eq!(t.step().await["outputsManifestGcsUri"], json!(obj.uri()));
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_the_call_in_flight_and_releases_without_using_an_attempt() {
    let slow = Slow::new(Duration::from_secs(3600));
    let mut t = short_lease(slow.clone());
    let (trigger, shutdown) = Shutdown::channel();
    t.worker.shutdown = shutdown;
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let fire = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        trigger.fire();
    };
    let (report, ()) = tokio::join!(run(&t), fire);
    assert!(matches!(report, StepReport::Released { .. }), "{report:?}");
    let step = t.step().await;
    assert_eq!(
        (step["status"].as_str(), step["attempts"].as_u64()),
        (Some("READY"), Some(0))
    );
    assert_eq!(
        t.usage_today("acc-1").await,
        1,
        "the abandoned call may have been sent: its unit stays spent"
    );
}

#[tokio::test]
async fn a_failed_recording_is_not_retried() {
    let r = ScriptedRenderer::new(|_, _| {
        Err(ChartApiError::NotRecorded {
            message: "the call was answered but could not be recorded: disk full".into(),
        })
    });
    let t = one_account(r.clone());
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let report = run(&t).await;
    assert!(
        matches!(report, StepReport::Failed { code: ErrorCode::ChartApiFailed, ref message, .. } if message.contains("could not be recorded")),
        "{report:?}"
    );
    assert_eq!(r.calls().len(), 1, "the paid call is sent once");
}

#[tokio::test]
async fn error_texts_are_clipped_before_they_reach_the_step() {
    let long = "x".repeat(100_000);
    let r = ScriptedRenderer::new(move |_, _| {
        Err(ChartApiError::Rejected {
            status: 400,
            message: long.clone(),
        })
    });
    let t = one_account(r);
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    run(&t).await;
    let step = t.step().await;
    let message = step["error"]["message"].as_str().unwrap();
    assert!(message.len() <= 2048, "{}", message.len());
    assert!(step.to_string().len() < 16 * 1024, "{}", step.to_string().len());
}

/// The lease renewal on the Firestore emulator: a step twice as long as its lease stays ours and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_firestore_a_step_longer_than_its_lease_is_renewed() {
    let Some(store) = crate::emulators::firestore("lifecycle::renewal").await else {
        return;
    };
    let slow = Slow::new(Duration::from_millis(2500));
    let mut t = one_account(slow.clone());
    t.worker.flow_runs = Arc::new(store.clone());
    t.worker.clock = Arc::new(worker_chart_export::ports::SystemClock);
    t.worker.settings.lease = Duration::from_millis(1500);
    t.worker.settings.lifecycle = Lifecycle::for_lease(Duration::from_millis(1500));
    t.worker.settings.concurrency = 1;
    t.seed(&flow_run(&["a", "b"], 2), &["a", "b"]).await;
    store
        .put_doc("flow_runs", "run-123", flow_run(&["a", "b"], 2))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = run(&t).await;
    assert!(
        matches!(report, StepReport::Succeeded { .. }),
        "{report:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(slow.calls(), 2);
}

/// A flow-run store whose owned-step writes take `write_time` each, recording how many ran at once.
struct SlowWrites {
    inner: Arc<dyn worker_chart_export::ports::FlowRunStore>,
    write_time: Duration,
    now: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl worker_chart_export::ports::FlowRunStore for SlowWrites {
    async fn get_run(&self, run: &worker_chart_export::domain::RunId) -> Result<Option<Value>, StoreError> {
        self.inner.get_run(run).await
    }
    async fn claim_step(
        &self,
        run: &worker_chart_export::domain::RunId,
        selector: &StepSelector,
        params: &worker_chart_export::domain::ClaimParams,
    ) -> Result<worker_chart_export::domain::ClaimOutcome, StoreError> {
        self.inner.claim_step(run, selector, params).await
    }
    async fn patch_owned_step(
        &self,
        run: &worker_chart_export::domain::RunId,
        token: &worker_chart_export::domain::ClaimToken,
        patch: &worker_chart_export::domain::StepPatch,
    ) -> Result<worker_chart_export::domain::PatchOutcome, StoreError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(self.write_time).await;
        let out = self.inner.patch_owned_step(run, token, patch).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

/// On Firestore two read-write transactions of one holder on one document wait on each other's read locks until
/// one is aborted; the holder's renewal and its finalize must therefore never overlap. Here the finalize starts
/// just before a heartbeat and takes most of one.
#[tokio::test(start_paused = true)]
async fn a_holder_never_runs_its_renewal_and_its_finalize_at_once() {
    // Heartbeat every 10 s (30 s lease); the one chart is done at 9.5 s, the finalize then takes 8 s.
    let mut t = short_lease(Slow::new(Duration::from_millis(9_500)));
    let slow = Arc::new(SlowWrites {
        inner: t.worker.flow_runs.clone(),
        write_time: Duration::from_secs(8),
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    t.worker.flow_runs = slow.clone();
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let report = run(&t).await;
    assert!(
        matches!(report, StepReport::Succeeded { ref items, .. } if items.len() == 1),
        "{report:?}"
    );
    assert_eq!(
        slow.most.load(Ordering::SeqCst),
        1,
        "the renewal ran beside the finalize"
    );
    assert_eq!(t.step().await["status"], "SUCCEEDED");
}
