//! Contract suites of the storage ports: the same test functions run against every adapter family.
//! - documents (flow runs, templates, usage, rate windows): `JsonDocs` in memory, `JsonDocs` on local files, `FirestoreStore`
//!   on the Firestore emulator (one project per test);
//! - artifacts: `MemoryArtifacts`, `LocalArtifacts`, `GcsArtifacts` on fake-gcs-server (one bucket per test).
//!
//! Each suite is a list of `async fn(Subject)`; the `doc_suites!` / `artifact_suites!` macros instantiate one
//! `#[tokio::test]` per (adapter, function), named `contract::<adapter>::<function>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};
use worker_chart_export::adapters::{
    FirestoreStore, JsonDocs, LocalArtifacts, LocalBackend, MemoryArtifacts, MemoryBackend,
};
use worker_chart_export::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS, RATE_WINDOWS};
use worker_chart_export::domain::{
    AccountId, AccountQuota, ClaimOutcome, ClaimParams, ClaimToken, ObjectRef, OpId, PatchOutcome, RunId, StepId,
    StepPatch, StepSelector, TemplateId, WindowAsk, WorkerId,
};
use worker_chart_export::ports::{
    AccountUsageStore, ArtifactError, ArtifactStore, FlowRunStore, RateWindowStore, StoreError, TemplateStore,
    WriteMode,
};

use crate::emulators;

// ---------------------------------------------------------------------------------------------------------------
// Subjects

/// Seeding and raw reads, which are not part of the ports.
#[async_trait]
pub trait Seed: Send + Sync {
    async fn put(&self, collection: &'static str, id: &str, v: Value);
    async fn raw(&self, collection: &'static str, id: &str) -> Option<Value>;
}

#[async_trait]
impl Seed for JsonDocs<MemoryBackend> {
    async fn put(&self, c: &'static str, id: &str, v: Value) {
        self.put_doc(c, id, v).await.unwrap()
    }
    async fn raw(&self, c: &'static str, id: &str) -> Option<Value> {
        self.get_doc(c, id).await.unwrap()
    }
}

#[async_trait]
impl Seed for JsonDocs<LocalBackend> {
    async fn put(&self, c: &'static str, id: &str, v: Value) {
        self.put_doc(c, id, v).await.unwrap()
    }
    async fn raw(&self, c: &'static str, id: &str) -> Option<Value> {
        self.get_doc(c, id).await.unwrap()
    }
}

#[async_trait]
impl Seed for FirestoreStore {
    async fn put(&self, c: &'static str, id: &str, v: Value) {
        self.put_doc(c, id, v).await.unwrap()
    }
    async fn raw(&self, c: &'static str, id: &str) -> Option<Value> {
        self.get_doc(c, id).await.unwrap()
    }
}

/// The three document ports of one adapter, plus seeding. `_keep` holds a temp dir alive.
pub struct Docs {
    pub runs: Arc<dyn FlowRunStore>,
    pub templates: Arc<dyn TemplateStore>,
    pub usage: Arc<dyn AccountUsageStore>,
    pub rate: Arc<dyn RateWindowStore>,
    pub seed: Arc<dyn Seed>,
    pub _keep: Option<tempfile::TempDir>,
}

fn docs_of<S>(s: S, keep: Option<tempfile::TempDir>) -> Docs
where
    S: FlowRunStore + TemplateStore + AccountUsageStore + RateWindowStore + Seed + Clone + 'static,
{
    Docs {
        runs: Arc::new(s.clone()),
        templates: Arc::new(s.clone()),
        usage: Arc::new(s.clone()),
        rate: Arc::new(s.clone()),
        seed: Arc::new(s),
        _keep: keep,
    }
}

pub async fn memory_docs(_test: &str) -> Option<Docs> {
    Some(docs_of(JsonDocs::in_memory(), None))
}

pub async fn local_docs(_test: &str) -> Option<Docs> {
    let dir = tempfile::tempdir().unwrap();
    Some(docs_of(JsonDocs::local(dir.path()).unwrap(), Some(dir)))
}

pub async fn firestore_docs(test: &str) -> Option<Docs> {
    emulators::firestore(test).await.map(|s| docs_of(s, None))
}

pub struct Artifacts {
    pub store: Arc<dyn ArtifactStore>,
    pub bucket: String,
    /// Whether the adapter keeps the content type it was given (the local one derives it from the extension).
    pub keeps_any_content_type: bool,
    pub _keep: Option<tempfile::TempDir>,
}

pub async fn memory_artifacts(_test: &str) -> Option<Artifacts> {
    Some(Artifacts {
        store: Arc::new(MemoryArtifacts::default()),
        bucket: "b".into(),
        keeps_any_content_type: true,
        _keep: None,
    })
}

pub async fn local_artifacts(_test: &str) -> Option<Artifacts> {
    let dir = tempfile::tempdir().unwrap();
    Some(Artifacts {
        store: Arc::new(LocalArtifacts::new(dir.path())),
        bucket: "b".into(),
        keeps_any_content_type: false,
        _keep: Some(dir),
    })
}

pub async fn gcs_artifacts(test: &str) -> Option<Artifacts> {
    let (store, bucket) = emulators::gcs(test).await?;
    Some(Artifacts {
        store: Arc::new(store),
        bucket,
        keeps_any_content_type: true,
        _keep: None,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Fixtures

const STEP: &str = "charts-4h"; // a `-` makes Firestore quote the field path segment.

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn run() -> RunId {
    RunId::parse("run-1").unwrap()
}

fn step() -> StepId {
    StepId::parse(STEP).unwrap()
}

fn worker(w: &str) -> WorkerId {
    WorkerId::parse(w).unwrap()
}

/// The claim token a test's worker `w` uses (one claim per worker name in these suites).
fn tok(w: &str) -> ClaimToken {
    ClaimToken::parse(format!("tok-{w}")).unwrap()
}

fn op(s: &str) -> OpId {
    OpId::parse(s).unwrap()
}

fn params(w: &str, now: &str, lease_secs: i64) -> ClaimParams {
    ClaimParams {
        worker: worker(w),
        token: tok(w),
        now: at(now),
        lease: Duration::seconds(lease_secs),
        max_attempts: 5,
    }
}

fn flow_run() -> Value {
    json!({
        "scope": {"symbol": "BTCUSDT"},
        "owner": {"team": "research", "tags": ["a", "b"]},
        "steps": {
            STEP: {"stepType": "CHART_EXPORT", "status": "READY",
                   "inputs": {"timeframe": "4h", "minImages": 1, "requests": [{"chartTemplateId": "price"}]}},
            "summarize": {"stepType": "LLM_SUMMARY", "status": "PENDING", "inputs": {"x": 1}}
        }
    })
}

fn finalize_patch() -> StepPatch {
    let mut fields = BTreeMap::new();
    fields.insert("status".to_owned(), Some(json!("SUCCEEDED")));
    fields.insert("finishedAt".to_owned(), Some(json!("2026-11-28T10:01:00Z")));
    fields.insert(
        "outputsManifestGcsUri".to_owned(),
        Some(json!("gs://b/runs/run-1/steps/charts-4h/charts/manifest.json")),
    );
    fields.insert("leaseExpiresAt".to_owned(), None);
    StepPatch {
        step_id: step(),
        fields,
    }
}

fn explicit() -> StepSelector {
    StepSelector::Explicit(step())
}

fn acc(id: &str, limit: u32) -> AccountQuota {
    AccountQuota {
        id: AccountId::parse(id).unwrap(),
        daily_limit: limit,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Document suite

pub async fn claim_then_finalize_touches_only_the_step_fields(d: Docs) {
    d.seed.put(FLOW_RUNS, "run-1", flow_run()).await;
    let out = d
        .runs
        .claim_step(
            &run(),
            &StepSelector::First,
            &params("w-1", "2026-11-28T10:00:00Z", 900),
        )
        .await
        .unwrap();
    let ClaimOutcome::Claimed {
        step_id,
        run: doc,
        reclaimed,
        attempt,
        give_up: None,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!((step_id.as_str(), reclaimed, attempt), (STEP, false, 1));
    assert_eq!(doc["steps"][STEP]["status"], "RUNNING");

    let stored = d.runs.get_run(&run()).await.unwrap().unwrap();
    let s = &stored["steps"][STEP];
    assert_eq!(s["status"], "RUNNING");
    assert_eq!(s["claimedBy"], "w-1");
    assert_eq!(s["claimToken"], "tok-w-1");
    assert_eq!(s["attempts"], 1);
    assert_eq!(s["startedAt"], "2026-11-28T10:00:00Z");
    assert_eq!(s["leaseExpiresAt"], "2026-11-28T10:15:00Z");
    assert_eq!(stored, doc, "the claim answers the document as stored");

    let out = d
        .runs
        .patch_owned_step(&run(), &tok("w-1"), &finalize_patch())
        .await
        .unwrap();
    assert_eq!(out, PatchOutcome::Applied);
    let after = d.runs.get_run(&run()).await.unwrap().unwrap();
    let mut want = flow_run();
    want["steps"][STEP] = json!({
        "stepType": "CHART_EXPORT", "status": "SUCCEEDED",
        "inputs": {"timeframe": "4h", "minImages": 1, "requests": [{"chartTemplateId": "price"}]},
        "claimedBy": "w-1", "claimToken": "tok-w-1", "attempts": 1,
        "startedAt": "2026-11-28T10:00:00Z", "finishedAt": "2026-11-28T10:01:00Z",
        "chartsGeneratedAt": "2026-11-28T10:00:00Z",
        "outputsManifestGcsUri": "gs://b/runs/run-1/steps/charts-4h/charts/manifest.json"
    });
    assert_eq!(after, want, "only steps.{STEP}.* changed; leaseExpiresAt deleted");
}

pub async fn repeats_are_no_ops(d: Docs) {
    d.seed.put(FLOW_RUNS, "run-1", flow_run()).await;
    let p = params("w-1", "2026-11-28T10:00:00Z", 900);
    assert!(matches!(
        d.runs.claim_step(&run(), &explicit(), &p).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    let after_claim = d.seed.raw(FLOW_RUNS, "run-1").await;
    // The same claim again (a retried commit whose first try landed) is recognised by its token and writes nothing.
    let again = d.runs.claim_step(&run(), &explicit(), &p).await.unwrap();
    assert!(
        matches!(
            again,
            ClaimOutcome::Claimed {
                attempt: 1,
                reclaimed: false,
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(d.seed.raw(FLOW_RUNS, "run-1").await, after_claim);
    // Another claim of the same worker process (new token) meets a live lease.
    let mut other = p.clone();
    other.token = tok("w-1-second-claim");
    let busy = d.runs.claim_step(&run(), &StepSelector::First, &other).await.unwrap();
    assert!(
        matches!(busy, ClaimOutcome::AlreadyRunning { claimed_by: Some(ref w), .. } if w == "w-1"),
        "{busy:?}"
    );
    assert_eq!(
        d.runs
            .patch_owned_step(&run(), &tok("w-1"), &finalize_patch())
            .await
            .unwrap(),
        PatchOutcome::Applied
    );
    let before = d.seed.raw(FLOW_RUNS, "run-1").await;
    // A retried finalize whose first try landed: applied, once.
    let again = d
        .runs
        .patch_owned_step(&run(), &tok("w-1"), &finalize_patch())
        .await
        .unwrap();
    assert_eq!(again, PatchOutcome::AlreadyApplied);
    let foreign = d
        .runs
        .patch_owned_step(&run(), &tok("w-2"), &finalize_patch())
        .await
        .unwrap();
    assert!(
        matches!(foreign, PatchOutcome::NotOwner { ref status, .. } if status == "SUCCEEDED"),
        "{foreign:?}"
    );
    let claim = d.runs.claim_step(&run(), &explicit(), &other).await.unwrap();
    assert!(
        matches!(claim, ClaimOutcome::AlreadyFinished { ref status, .. } if status == "SUCCEEDED"),
        "{claim:?}"
    );
    assert_eq!(d.seed.raw(FLOW_RUNS, "run-1").await, before, "repeats wrote nothing");
}

pub async fn retried_quota_operations_apply_once(d: Docs) {
    let a = acc("acc-ops", 10);
    let now = at("2026-11-28T10:00:00Z");
    let day = now.date_naive();
    let first = d
        .usage
        .reserve(&op("reserve-1"), std::slice::from_ref(&a), 4, now)
        .await
        .unwrap();
    let again = d
        .usage
        .reserve(&op("reserve-1"), std::slice::from_ref(&a), 4, now)
        .await
        .unwrap();
    assert_eq!(first, again, "a retried reservation answers its first grants");
    assert_eq!(d.usage.get_usage(&a.id).await.unwrap().unwrap().usage_today, 4);
    d.usage.give_back(&op("give-1"), &a.id, day, 3, now).await.unwrap();
    d.usage.give_back(&op("give-1"), &a.id, day, 3, now).await.unwrap();
    let u = d.usage.get_usage(&a.id).await.unwrap().unwrap();
    assert_eq!(
        u.usage_today, 1,
        "a retried give-back subtracts once: usageToday never under-counts"
    );
    assert_eq!(u.recent_ops.len(), 2);
    // Tomorrow the remembered operations are gone with the counter.
    let g = d
        .usage
        .reserve(
            &op("reserve-2"),
            std::slice::from_ref(&a),
            1,
            at("2026-11-29T00:00:01Z"),
        )
        .await
        .unwrap();
    assert_eq!(g[0].units, 1);
    let u = d.usage.get_usage(&a.id).await.unwrap().unwrap();
    assert_eq!((u.usage_today, u.recent_ops.len()), (1, 1));
}

pub async fn a_non_owner_cannot_finalize(d: Docs) {
    d.seed.put(FLOW_RUNS, "run-1", flow_run()).await;
    let refused = d
        .runs
        .patch_owned_step(&run(), &tok("w-2"), &finalize_patch())
        .await
        .unwrap();
    assert!(
        matches!(refused, PatchOutcome::NotOwner { ref status, .. } if status == "READY"),
        "{refused:?}"
    );
    d.runs
        .claim_step(&run(), &explicit(), &params("w-1", "2026-11-28T10:00:00Z", 900))
        .await
        .unwrap();
    let before = d.seed.raw(FLOW_RUNS, "run-1").await;
    let refused = d
        .runs
        .patch_owned_step(&run(), &tok("w-2"), &finalize_patch())
        .await
        .unwrap();
    assert!(
        matches!(refused, PatchOutcome::NotOwner { ref status, claimed_by: Some(ref w) } if status == "RUNNING" && w == "w-1"),
        "{refused:?}"
    );
    assert_eq!(d.seed.raw(FLOW_RUNS, "run-1").await, before);
    let missing = StepPatch {
        step_id: StepId::parse("nope").unwrap(),
        fields: finalize_patch().fields,
    };
    assert_eq!(
        d.runs.patch_owned_step(&run(), &tok("w-1"), &missing).await.unwrap(),
        PatchOutcome::StepMissing
    );
    let gone = RunId::parse("missing-run").unwrap();
    assert_eq!(
        d.runs
            .patch_owned_step(&gone, &tok("w-1"), &finalize_patch())
            .await
            .unwrap(),
        PatchOutcome::StepMissing
    );
    assert_eq!(
        d.runs
            .claim_step(&gone, &StepSelector::First, &params("w-1", "2026-11-28T10:00:00Z", 9))
            .await
            .unwrap(),
        ClaimOutcome::RunNotFound
    );
    assert_eq!(d.runs.get_run(&gone).await.unwrap(), None);
}

pub async fn an_expired_lease_is_reclaimed_and_the_old_owner_refused(d: Docs) {
    d.seed.put(FLOW_RUNS, "run-1", flow_run()).await;
    d.runs
        .claim_step(&run(), &explicit(), &params("w-1", "2026-11-28T10:00:00Z", 60))
        .await
        .unwrap();
    let early = d
        .runs
        .claim_step(&run(), &explicit(), &params("w-2", "2026-11-28T10:00:59Z", 60))
        .await
        .unwrap();
    assert!(matches!(early, ClaimOutcome::AlreadyRunning { .. }), "{early:?}");
    let late = d
        .runs
        .claim_step(&run(), &StepSelector::First, &params("w-2", "2026-11-28T10:01:00Z", 60))
        .await
        .unwrap();
    assert!(
        matches!(late, ClaimOutcome::Claimed { reclaimed: true, .. }),
        "{late:?}"
    );
    let old = d
        .runs
        .patch_owned_step(&run(), &tok("w-1"), &finalize_patch())
        .await
        .unwrap();
    assert!(
        matches!(old, PatchOutcome::NotOwner { claimed_by: Some(ref w), .. } if w == "w-2"),
        "{old:?}"
    );
    assert_eq!(
        d.runs
            .patch_owned_step(&run(), &tok("w-2"), &finalize_patch())
            .await
            .unwrap(),
        PatchOutcome::Applied
    );
}

pub async fn two_claims_at_once_exactly_one_wins(d: Docs) {
    d.seed.put(FLOW_RUNS, "run-1", flow_run()).await;
    let (p1, p2) = (
        params("w-1", "2026-11-28T10:00:00Z", 900),
        params("w-2", "2026-11-28T10:00:00Z", 900),
    );
    let (r, sel) = (run(), explicit());
    let (a, b) = tokio::join!(d.runs.claim_step(&r, &sel, &p1), d.runs.claim_step(&r, &sel, &p2));
    let outcomes = [a.unwrap(), b.unwrap()];
    let won: Vec<&ClaimOutcome> = outcomes
        .iter()
        .filter(|o| matches!(o, ClaimOutcome::Claimed { .. }))
        .collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    let lost = outcomes
        .iter()
        .find(|o| !matches!(o, ClaimOutcome::Claimed { .. }))
        .unwrap();
    let ClaimOutcome::AlreadyRunning {
        claimed_by: Some(winner),
        ..
    } = lost
    else {
        panic!("{lost:?}")
    };
    let stored = d.runs.get_run(&run()).await.unwrap().unwrap();
    assert_eq!(&stored["steps"][STEP]["claimedBy"], winner.as_str());
}

pub async fn documents_round_trip_faithfully(d: Docs) {
    let doc = json!({
        "scope": {"symbol": "ETHUSDT"},
        "numbers": {"int": 42, "neg": -7, "big": 9_007_199_254_740_993i64, "float": 2.5, "zero": 0.0},
        "flags": [true, false, null],
        "nested": {"list": [{"a": [1, 2]}, "x", 3.25], "empty_map": {}, "empty_list": []},
        "odd keys": {"a.b": 1, "x-y": 2, "sp ace": 3, "back`tick": 4, "ünï": 5},
        "steps": {STEP: {"stepType": "CHART_EXPORT", "status": "PENDING"}}
    });
    d.seed.put(FLOW_RUNS, "run-1", doc.clone()).await;
    assert_eq!(d.runs.get_run(&run()).await.unwrap().unwrap(), doc);
}

pub async fn templates_are_read_in_one_batch_missing_ones_absent(d: Docs) {
    let t = json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": {"style": "candle", "studies": [{"name": "Volume"}]}});
    d.seed.put(CHART_TEMPLATES, "price", t.clone()).await;
    d.seed
        .put(
            CHART_TEMPLATES,
            "rsi-14",
            json!({"chartImgSymbolTemplate": "X:{symbol}"}),
        )
        .await;
    let ids: Vec<TemplateId> = ["price", "missing", "rsi-14"]
        .iter()
        .map(|s| TemplateId::parse(*s).unwrap())
        .collect();
    let got = d.templates.get_templates(&ids).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[&ids[0]], t);
    assert!(!got.contains_key(&ids[1]));
    assert!(d.templates.get_templates(&[]).await.unwrap().is_empty());
}

/// A step of many charts (the Firestore adapter reads them 100 per BatchGet): 250 asked, every other one present,
/// each answered under its own id.
pub async fn many_templates_are_all_read(d: Docs) {
    let ids: Vec<TemplateId> = (0..250)
        .map(|i| TemplateId::parse(format!("t-{i:03}")).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        d.seed
            .put(
                CHART_TEMPLATES,
                id.as_str(),
                json!({"chartImgSymbolTemplate": "X:{symbol}", "n": i}),
            )
            .await;
    }
    let got = d.templates.get_templates(&ids).await.unwrap();
    assert_eq!(got.len(), 125);
    for (i, id) in ids.iter().enumerate() {
        match got.get(id) {
            Some(t) => assert_eq!(t["n"], i, "{id}"),
            None => assert!(i % 2 == 1, "{id} is stored but was not read"),
        }
    }
}

pub async fn usage_reserve_give_back_exhaust_and_day_reset(d: Docs) {
    let a = acc("acc-1", 5);
    let now = at("2026-11-28T10:00:00Z");
    let day = now.date_naive();
    let g = d
        .usage
        .reserve(&OpId::random(), std::slice::from_ref(&a), 3, now)
        .await
        .unwrap();
    assert_eq!((g.len(), g[0].units, g[0].day), (1, 3, day));
    let g = d
        .usage
        .reserve(&OpId::random(), std::slice::from_ref(&a), 5, now)
        .await
        .unwrap();
    assert_eq!(g[0].units, 2, "only the remaining 2 are granted");
    assert!(d
        .usage
        .reserve(&OpId::random(), std::slice::from_ref(&a), 1, now)
        .await
        .unwrap()
        .is_empty());
    d.usage.give_back(&OpId::random(), &a.id, day, 1, now).await.unwrap();
    let u = d.usage.get_usage(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (u.usage_today, u.daily_limit, u.exhausted, u.day.as_str()),
        (4, 5, false, "2026-11-28")
    );
    assert_eq!(u.updated_at, "2026-11-28T10:00:00Z");
    // A give-back of yesterday's grant changes nothing.
    d.usage
        .give_back(
            &OpId::random(),
            &a.id,
            NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            4,
            now,
        )
        .await
        .unwrap();
    assert_eq!(d.usage.get_usage(&a.id).await.unwrap().unwrap().usage_today, 4);
    d.usage.mark_exhausted(&a, day, now).await.unwrap();
    assert!(d.usage.get_usage(&a.id).await.unwrap().unwrap().exhausted);
    assert!(d
        .usage
        .reserve(&OpId::random(), std::slice::from_ref(&a), 1, now)
        .await
        .unwrap()
        .is_empty());
    // The next day resets the counter and clears exhaustion; a second account takes the overflow.
    let b = acc("acc-2", 2);
    let tomorrow = at("2026-11-29T00:00:01Z");
    let g = d
        .usage
        .reserve(&OpId::random(), &[a.clone(), b.clone()], 6, tomorrow)
        .await
        .unwrap();
    let got: Vec<(&str, u32)> = g.iter().map(|g| (g.account.as_str(), g.units)).collect();
    assert_eq!(got, vec![("acc-1", 5), ("acc-2", 1)]);
    let u = d.usage.get_usage(&a.id).await.unwrap().unwrap();
    assert_eq!((u.day.as_str(), u.usage_today, u.exhausted), ("2026-11-29", 5, false));
    assert_eq!(
        d.usage
            .get_usage(&AccountId::parse("never-used").unwrap())
            .await
            .unwrap(),
        None
    );
    assert!(d.seed.raw(ACCOUNTS_USAGE, "acc-2").await.is_some());
}

/// H2: a counter already on a later day (another instance's clock passed midnight first) is never moved back: a
/// reservation, a give-back or an exhaustion mark of the earlier day leaves the later day's count as it is.
pub async fn a_counter_of_a_later_day_is_never_rewound(d: Docs) {
    let a = acc("acc-ahead", 50);
    let d1 = at("2026-11-29T00:00:00.200Z");
    d.usage
        .reserve(&op("r-d1"), std::slice::from_ref(&a), 7, d1)
        .await
        .unwrap();
    let behind = at("2026-11-28T23:59:59.900Z");
    let g = d
        .usage
        .reserve(&op("r-d0"), std::slice::from_ref(&a), 3, behind)
        .await
        .unwrap();
    assert_eq!(
        g.iter().map(|g| (g.day.to_string(), g.units)).collect::<Vec<_>>(),
        vec![("2026-11-29".to_owned(), 3)],
        "the late reservation is made on the counter's day"
    );
    d.usage
        .give_back(&op("g-d0"), &a.id, behind.date_naive(), 2, behind)
        .await
        .unwrap();
    d.usage.mark_exhausted(&a, behind.date_naive(), behind).await.unwrap();
    let u = d.usage.get_usage(&a.id).await.unwrap().unwrap();
    assert_eq!((u.day.as_str(), u.usage_today, u.exhausted), ("2026-11-29", 10, false));
    // A retry of the late reservation (its reply lost) still finds it.
    let again = d
        .usage
        .reserve(&op("r-d0"), std::slice::from_ref(&a), 3, behind)
        .await
        .unwrap();
    assert_eq!(again, g);
    assert_eq!(d.usage.get_usage(&a.id).await.unwrap().unwrap().usage_today, 10);
}

pub async fn ten_concurrent_reservations_on_a_limit_of_five(d: Docs) {
    let a = acc("acc-hot", 5);
    let now = at("2026-11-28T10:00:00Z");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let usage = d.usage.clone();
            let a = a.clone();
            tokio::spawn(async move { usage.reserve(&OpId::random(), &[a], 1, now).await })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        let grants = t.await.unwrap().unwrap();
        granted += grants.iter().map(|g| g.units).sum::<u32>();
    }
    assert_eq!(granted, 5);
    assert_eq!(d.usage.get_usage(&a.id).await.unwrap().unwrap().usage_today, 5);
}

pub async fn a_corrupt_usage_document_is_reported_not_retried(d: Docs) {
    d.seed
        .put(ACCOUNTS_USAGE, "acc-bad", json!({"day": 3, "usageToday": "many"}))
        .await;
    let started = std::time::Instant::now();
    let err = d
        .usage
        .reserve(&OpId::random(), &[acc("acc-bad", 5)], 1, at("2026-11-28T10:00:00Z"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref path, .. } if path == "chart_img_accounts_usage/acc-bad"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a decode error must not be retried"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Artifact suite

fn obj(a: &Artifacts, path: &str) -> ObjectRef {
    ObjectRef {
        bucket: a.bucket.clone(),
        path: path.to_owned(),
    }
}

/// Every byte value, CRLFs and a line that looks like a multipart boundary: what a careless upload would mangle.
fn awkward_png() -> Bytes {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend(0u8..=255);
    b.extend_from_slice(b"\r\n--worker-chart-export-boundary\r\nContent-Type: text/plain\r\n\r\n");
    b.extend((0u8..=255).rev());
    Bytes::from(b)
}

/// The record a later attempt checks before reusing a chart, and the delete that removes charts no manifest names.
pub async fn metadata_is_kept_and_objects_are_deleted(a: Artifacts) {
    let png = obj(&a, "runs/run-1/charts/4h/price/20261128T100000Z_BTCUSDT_4h_price.png");
    let meta = worker_chart_export::ports::ObjectMetadata::from([("sha256".to_owned(), "ab12".to_owned())]);
    a.store
        .put_with(&png, awkward_png(), "image/png", WriteMode::Overwrite, &meta)
        .await
        .unwrap();
    let got = a.store.get(&png).await.unwrap().unwrap();
    assert_eq!(got.bytes, awkward_png());
    if a.keeps_any_content_type {
        assert_eq!(got.metadata, meta);
        // Replaced without metadata: the old record goes with the old bytes.
        a.store
            .put(&png, Bytes::from_static(b"other"), "image/png", WriteMode::Overwrite)
            .await
            .unwrap();
        assert!(a.store.get(&png).await.unwrap().unwrap().metadata.is_empty());
    } else {
        assert!(got.metadata.is_empty(), "the local store keeps no metadata");
    }
    assert!(a.store.delete(&png).await.unwrap());
    assert_eq!(a.store.get(&png).await.unwrap(), None);
    assert!(
        !a.store.delete(&png).await.unwrap(),
        "deleting a missing object answers false"
    );
}

pub async fn bytes_and_content_types_are_kept(a: Artifacts) {
    let png = obj(&a, "runs/run-1/charts/4h/price/20261128T100000Z_BTCUSDT_4h_price.png");
    a.store
        .put(&png, awkward_png(), "image/png", WriteMode::Overwrite)
        .await
        .unwrap();
    let got = a.store.get(&png).await.unwrap().unwrap();
    assert_eq!(got.bytes, awkward_png());
    assert_eq!(got.content_type, "image/png");
    let manifest = obj(&a, "runs/run-1/steps/charts-4h/charts/manifest.json");
    let body = Bytes::from_static(br#"{"schemaVersion":1}"#);
    a.store
        .put(&manifest, body.clone(), "application/json", WriteMode::CreateOnly)
        .await
        .unwrap();
    let got = a.store.get(&manifest).await.unwrap().unwrap();
    assert_eq!((got.bytes, got.content_type.as_str()), (body, "application/json"));
    if a.keeps_any_content_type {
        let jpg = obj(&a, "x/no-extension");
        a.store
            .put(
                &jpg,
                Bytes::from_static(b"\xff\xd8\xff"),
                "image/jpeg",
                WriteMode::Overwrite,
            )
            .await
            .unwrap();
        assert_eq!(a.store.get(&jpg).await.unwrap().unwrap().content_type, "image/jpeg");
    }
    let empty = obj(&a, "empty.json");
    a.store
        .put(&empty, Bytes::new(), "application/json", WriteMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(a.store.get(&empty).await.unwrap().unwrap().bytes.len(), 0);
}

pub async fn create_only_is_refused_the_second_time(a: Artifacts) {
    let m = obj(&a, "runs/run-1/steps/charts-4h/charts/manifest.json");
    a.store
        .put(
            &m,
            Bytes::from_static(b"{\"first\":true}"),
            "application/json",
            WriteMode::CreateOnly,
        )
        .await
        .unwrap();
    let err = a
        .store
        .put(
            &m,
            Bytes::from_static(b"{\"second\":true}"),
            "application/json",
            WriteMode::CreateOnly,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::AlreadyExists(ref uri) if *uri == m.uri()),
        "{err:?}"
    );
    assert_eq!(
        a.store.get(&m).await.unwrap().unwrap().bytes,
        Bytes::from_static(b"{\"first\":true}")
    );
    // Overwrite replaces, as PNG uploads do on a retried step.
    a.store
        .put(
            &m,
            Bytes::from_static(b"{\"third\":true}"),
            "application/json",
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(
        a.store.get(&m).await.unwrap().unwrap().bytes,
        Bytes::from_static(b"{\"third\":true}")
    );
}

pub async fn concurrent_create_only_writes_have_one_winner(a: Artifacts) {
    let m = obj(&a, "race/manifest.json");
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let (store, m) = (a.store.clone(), m.clone());
            tokio::spawn(async move {
                store
                    .put(
                        &m,
                        Bytes::from(format!("{{\"writer\":{i}}}")),
                        "application/json",
                        WriteMode::CreateOnly,
                    )
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(ArtifactError::AlreadyExists(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 1);
}

pub async fn a_missing_object_reads_as_none(a: Artifacts) {
    assert!(a.store.get(&obj(&a, "nothing/here.png")).await.unwrap().is_none());
}

/// A reservation of `calls` calls on a 10/s key, `burst_ms` of its tolerance shared.
fn ask(op_id: &str, holder: &str, calls: u32, burst_ms: i64) -> WindowAsk {
    WindowAsk {
        op: op(op_id),
        holder: holder.into(),
        calls,
        period: Duration::milliseconds(100),
        burst: Duration::milliseconds(burst_ms),
    }
}

pub async fn rate_windows_queue_and_a_retried_reservation_gets_its_window_back(d: Docs) {
    let a = AccountId::parse("acc-1").unwrap();
    let t0 = at("2026-12-01T10:00:00Z");
    let ms = Duration::milliseconds;
    let w1 = d
        .rate
        .reserve_window(&a, &ask("w1", "serve-a", 20, 0), t0)
        .await
        .unwrap();
    assert_eq!((w1.start, w1.grid, w1.end), (t0, t0, t0 + ms(2000)));
    // Another instance, 300 ms later: its calls follow the first window's on the key's grid.
    let w2 = d
        .rate
        .reserve_window(&a, &ask("w2", "serve-b", 10, 0), t0 + ms(300))
        .await
        .unwrap();
    assert_eq!((w2.start, w2.end), (t0 + ms(2000), t0 + ms(3000)));
    // A retried commit whose first try landed: the same window, nothing moved.
    let again = d
        .rate
        .reserve_window(&a, &ask("w2", "serve-b", 10, 0), t0 + ms(400))
        .await
        .unwrap();
    assert_eq!(again, w2);
    let stored = d.seed.raw(RATE_WINDOWS, "acc-1").await.unwrap();
    assert_eq!(stored["tatMs"], (t0 + ms(3000)).timestamp_millis(), "{stored}");
    assert_eq!(stored["holder"], "serve-b");
    // Long after: the key is free at once (a holder that died wasted only its window).
    let later = t0 + Duration::seconds(60);
    let w3 = d
        .rate
        .reserve_window(&a, &ask("w3", "serve-a", 10, 0), later)
        .await
        .unwrap();
    assert_eq!(w3.start, later);
    // Other accounts are independent; an idle key lends the shared part of its burst, and a retry of such a
    // window gets its grid back too (10 calls at once, then one per 100 ms).
    let b = AccountId::parse("acc-2").unwrap();
    let burst = d
        .rate
        .reserve_window(&b, &ask("w4", "serve-a", 12, 900), t0)
        .await
        .unwrap();
    assert_eq!((burst.start, burst.grid, burst.end), (t0, t0 - ms(900), t0 + ms(300)));
    let again = d
        .rate
        .reserve_window(&b, &ask("w4", "serve-a", 12, 900), t0 + ms(50))
        .await
        .unwrap();
    assert_eq!(again, burst);
    let p = ms(100);
    let calls: Vec<_> = (0..burst.calls(p))
        .map(|k| (burst.call_at(k, p) - t0).num_milliseconds())
        .collect();
    assert_eq!(calls, vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 200]);
}

pub async fn concurrent_window_reservations_never_overlap(d: Docs) {
    let a = AccountId::parse("acc-1").unwrap();
    let t0 = at("2026-12-01T10:00:00Z");
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (rate, a) = (d.rate.clone(), a.clone());
            tokio::spawn(async move {
                rate.reserve_window(&a, &ask(&format!("c{i}"), &format!("serve-{i}"), 10, 0), t0)
                    .await
            })
        })
        .collect();
    let mut windows = Vec::new();
    for t in tasks {
        windows.push(t.await.unwrap().unwrap());
    }
    windows.sort_by_key(|w| w.start);
    for pair in windows.windows(2) {
        assert!(pair[1].start >= pair[0].end, "overlap: {pair:?}");
    }
    assert_eq!(windows[0].start, t0);
    assert_eq!(windows[5].end, t0 + Duration::milliseconds(6000));
}

// ---------------------------------------------------------------------------------------------------------------
// Instantiation

macro_rules! suite {
    ($module:ident, $subject:path, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let name = concat!(stringify!($module), "::", stringify!($test));
                    let Some(subject) = $subject(name).await else { return };
                    super::$test(subject).await;
                }
            )*
        }
    };
}

macro_rules! doc_suites {
    ($($module:ident => $subject:path),* $(,)?) => {
        $(
            suite!($module, $subject, [
                claim_then_finalize_touches_only_the_step_fields,
                repeats_are_no_ops,
                a_non_owner_cannot_finalize,
                an_expired_lease_is_reclaimed_and_the_old_owner_refused,
                two_claims_at_once_exactly_one_wins,
                documents_round_trip_faithfully,
                templates_are_read_in_one_batch_missing_ones_absent,
                many_templates_are_all_read,
                usage_reserve_give_back_exhaust_and_day_reset,
                retried_quota_operations_apply_once,
                a_counter_of_a_later_day_is_never_rewound,
                ten_concurrent_reservations_on_a_limit_of_five,
                a_corrupt_usage_document_is_reported_not_retried,
                rate_windows_queue_and_a_retried_reservation_gets_its_window_back,
                concurrent_window_reservations_never_overlap,
            ]);
        )*
    };
}

macro_rules! artifact_suites {
    ($($module:ident => $subject:path),* $(,)?) => {
        $(
            suite!($module, $subject, [
                bytes_and_content_types_are_kept,
                metadata_is_kept_and_objects_are_deleted,
                create_only_is_refused_the_second_time,
                concurrent_create_only_writes_have_one_winner,
                a_missing_object_reads_as_none,
            ]);
        )*
    };
}

doc_suites! {
    docs_memory => super::memory_docs,
    docs_local => super::local_docs,
    docs_firestore => super::firestore_docs,
}

artifact_suites! {
    artifacts_memory => super::memory_artifacts,
    artifacts_local => super::local_artifacts,
    artifacts_gcs => super::gcs_artifacts,
}

// ---------------------------------------------------------------------------------------------------------------
// Firestore only: what is stored, and how failures map

mod firestore_only {
    use std::time::Duration;

    use firestore::{FirestoreDb, FirestoreDbOptions};
    use serde_json::Value;
    use worker_chart_export::adapters::FirestoreStore;
    use worker_chart_export::ports::{AccountUsageStore, FlowRunStore, StoreError};
    use worker_chart_export::RetryPolicy;

    use super::*;

    /// The document as the emulator's REST API shows it (independent of the adapter's own decoding).
    async fn rest_doc(store: &FirestoreStore, path: &str) -> Value {
        let host = std::env::var("FIRESTORE_EMULATOR_HOST").unwrap();
        let url = format!("http://{host}/v1/{}/documents/{path}", store.database_path());
        reqwest::Client::new()
            .get(url)
            .bearer_auth("owner")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn worker_times_are_stored_as_timestamps_and_hyphenated_step_ids_as_map_keys() {
        let Some(store) = emulators::firestore("firestore_only::timestamps").await else {
            return;
        };
        store.put(FLOW_RUNS, "run-1", flow_run()).await;
        store
            .claim_step(&run(), &explicit(), &params("w-1", "2026-11-28T10:00:00Z", 900))
            .await
            .unwrap();
        let doc = rest_doc(&store, "flow_runs/run-1").await;
        let step = &doc["fields"]["steps"]["mapValue"]["fields"][STEP]["mapValue"]["fields"];
        assert_eq!(
            step["leaseExpiresAt"]["timestampValue"], "2026-11-28T10:15:00Z",
            "{doc}"
        );
        assert_eq!(step["startedAt"]["timestampValue"], "2026-11-28T10:00:00Z");
        assert_eq!(step["status"]["stringValue"], "RUNNING");
        assert_eq!(
            step["inputs"]["mapValue"]["fields"]["timeframe"]["stringValue"], "4h",
            "inputs kept"
        );
        store
            .reserve(&OpId::random(), &[acc("acc-1", 5)], 1, at("2026-11-28T10:00:00Z"))
            .await
            .unwrap();
        let usage = rest_doc(&store, "chart_img_accounts_usage/acc-1").await;
        assert_eq!(
            usage["fields"]["updatedAt"]["timestampValue"], "2026-11-28T10:00:00Z",
            "{usage}"
        );
        assert_eq!(usage["fields"]["usageToday"]["integerValue"], "1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exhausted_retry_budget_is_contention_and_never_over_grants() {
        let Some(store) = emulators::firestore("firestore_only::budget").await else {
            return;
        };
        let store = store.with_policy(RetryPolicy::NONE);
        let a = acc("acc-tight", 5);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (s, a) = (store.clone(), a.clone());
                tokio::spawn(async move { s.reserve(&OpId::random(), &[a], 1, at("2026-11-28T10:00:00Z")).await })
            })
            .collect();
        let mut granted = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(g) => granted += g.iter().map(|g| g.units).sum::<u32>(),
                Err(StoreError::Contention(_)) => {}
                Err(e) => panic!("only contention may fail a transaction here: {e:?}"),
            }
        }
        assert!(granted <= 5);
        let stored = store
            .get_usage(&a.id)
            .await
            .unwrap()
            .map(|u| u.usage_today)
            .unwrap_or(0);
        assert_eq!(stored, granted, "the counter is exactly what was granted");
    }

    #[tokio::test]
    async fn create_doc_creates_once_and_delete_removes() {
        let Some(store) = emulators::firestore("firestore_only::create").await else {
            return;
        };
        let started = std::time::Instant::now();
        assert!(store.create_doc(FLOW_RUNS, "run-1", flow_run()).await.unwrap());
        assert!(!store
            .create_doc(FLOW_RUNS, "run-1", serde_json::json!({"other": 1}))
            .await
            .unwrap());
        assert_eq!(store.get_doc(FLOW_RUNS, "run-1").await.unwrap(), Some(flow_run()));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an existing document is an answer, not a retry"
        );
        store.delete_doc(FLOW_RUNS, "run-1").await.unwrap();
        assert_eq!(store.get_doc(FLOW_RUNS, "run-1").await.unwrap(), None);
    }

    /// A TCP proxy to the emulator that the test can pull the plug on: the store connects through it, then the
    /// proxy and every connection it carries go away, as a network partition would.
    async fn proxy_to(target: String) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        (addr, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_firestore_is_unavailable_within_the_budget() {
        let Some(host) = emulators::emulator_var("FIRESTORE_EMULATOR_HOST", "firestore_only::unreachable") else {
            return;
        };
        let (addr, proxy) = proxy_to(host).await;
        let options = FirestoreDbOptions {
            firebase_api_url: Some(format!("http://{addr}")),
            ..FirestoreDbOptions::new(emulators::unique("it", "unreachable"))
        };
        let db = FirestoreDb::with_options(options).await.unwrap();
        let store = FirestoreStore::from_db(db)
            .with_policy(RetryPolicy {
                max_retries: 2,
                max_total_delay: Duration::from_secs(5),
                ..RetryPolicy::FIRESTORE
            })
            .with_call_timeout(Duration::from_secs(1));
        assert_eq!(
            store.get_run(&run()).await.unwrap(),
            None,
            "reachable through the proxy"
        );
        proxy.abort();
        let _ = proxy.await;
        let started = std::time::Instant::now();
        let err = store.get_run(&run()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = store
            .claim_step(&run(), &explicit(), &params("w", "2026-11-28T10:00:00Z", 9))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "bounded: {:?}",
            started.elapsed()
        );
    }
}
