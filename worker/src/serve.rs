//! `worker-chart-export serve`: the Cloud Run entrypoint that Eventarc calls with Firestore document events.
//!
//! Routes: `POST /` (an event, any shape [`crate::eventarc::parse`] reads), `GET /health` and `GET /` (200 once the
//! clients are built; Cloud Run reserves some paths ending in `z`, hence not `/healthz`).
//!
//! Answers, following Eventarc's retry rules (anything but 2xx/102 is redelivered with backoff for up to 24 h):
//! - 200 for a handled step (SUCCEEDED or FAILED), a no-op (not a flow run, a delete, no claimable step: our own
//!   writes come back this way), and for a malformed delivery, which no redelivery could fix (logged as ERROR);
//! - 503 only where a retry helps: the store was unavailable or contended (the core released the step), the
//!   re-read of an oversized document failed, or the step was cut short by shutdown (and released).
//!
//! Invariants:
//! - The quick filter ([`has_claimable_step`]) runs on the event's own data before any Firestore call; only a
//!   delivery without data (documents over 10 MiB) costs a read first.
//! - On shutdown the server stops accepting, lets in-flight steps finish within [`AppState::grace`], then aborts
//!   the rest and hands their steps back (RUNNING → READY, only while this worker still owns them).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tracing::{error, info, warn};

use crate::adapters::{FirestoreStore, GcsArtifacts};
use crate::config::Settings;
use crate::core::{run_chart_export_step, CoreError, CoreSettings, StepReport, Worker};
use crate::domain::step::has_claimable_step;
use crate::domain::{PatchOutcome, RunId, StepId, StepPatch, StepSelector};
use crate::eventarc::{self, FirestoreEvent};
use crate::ports::SystemClock;
use crate::quota::AccountPool;

/// Eventarc events carry the document before and after the write, each up to 1 MiB (more is left out).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The ports and settings every step runs with.
    pub worker: Worker,
    /// How long shutdown waits for in-flight steps before aborting and releasing them. Cloud Run allows 10 s
    /// between SIGTERM and SIGKILL, so the default leaves time for the release writes.
    pub grace: Duration,
    /// Steps running now, by a request-local id, so shutdown can abort them and release their claims.
    inflight: Arc<Mutex<HashMap<u64, (RunId, AbortHandle)>>>,
    next_id: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(worker: Worker) -> Self {
        Self { worker, grace: Duration::from_secs(8), inflight: Arc::default(), next_id: Arc::default() }
    }

    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Number of steps running now.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(health).post(event))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

/// The answer to one delivery: its status and a small JSON body for humans and tests.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn ok(outcome: &str, reason: impl Into<String>) -> Answer {
    Answer { status: StatusCode::OK, body: json!({ "result": outcome, "reason": reason.into() }) }
}

fn retry(reason: impl Into<String>) -> Answer {
    Answer { status: StatusCode::SERVICE_UNAVAILABLE, body: json!({ "result": "retry", "reason": reason.into() }) }
}

async fn event(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let ev = match eventarc::parse(&headers, &body) {
        Ok(ev) => ev,
        Err(e) => {
            // A redelivery carries the same bytes: answering non-2xx would only repeat this for 24 hours.
            error!(event = "cloud_event_received", accepted = false, error = %e, bytes = body.len(), "refusing a malformed event");
            return ok("rejected", e.to_string());
        }
    };
    let run = ev.flow_run();
    info!(
        event = "cloud_event_received",
        ceId = %ev.id,
        ceType = %ev.event_type,
        document = %ev.document,
        runId = run.as_ref().map(|r| r.as_str()).unwrap_or(""),
        dataOmitted = ev.data_omitted,
        "cloud event received"
    );
    let Some(run) = run else { return ok("noop", format!("{} is not a flow run", ev.document)) };
    if ev.is_delete() {
        return ok("noop", "the flow run was deleted");
    }
    handle(&state, &ev, run).await
}

async fn handle(state: &AppState, ev: &FirestoreEvent, run: RunId) -> Answer {
    let w = &state.worker;
    let now = w.clock.now();
    let doc = match (&ev.value, ev.data_omitted) {
        (Some(v), _) => v.clone(),
        (None, true) => match w.flow_runs.get_run(&run).await {
            // Eventarc left the data out (documents over 10 MiB): read it.
            Ok(Some(v)) => v,
            Ok(None) => return ok("noop", format!("flow_runs/{run} does not exist")),
            Err(e) if e.is_transient() => return retry(format!("cannot read flow_runs/{run}: {e}")),
            Err(e) => return ok("failed", format!("cannot read flow_runs/{run}: {e}")),
        },
        (None, false) => return ok("noop", "the event carries no document after the write"),
    };
    if !has_claimable_step(&doc, &StepSelector::First, now) {
        return ok("noop", "no claimable CHART_EXPORT step");
    }
    run_step(state, run).await
}

/// Runs the step as its own task, registered so that shutdown can abort and release it.
async fn run_step(state: &AppState, run: RunId) -> Answer {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let worker = state.worker.clone();
    let task_run = run.clone();
    let task = tokio::spawn(async move { run_chart_export_step(&worker, &task_run, &StepSelector::First, None).await });
    state.inflight.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (run.clone(), task.abort_handle()));
    let result = task.await;
    state.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    match result {
        Ok(Ok(report)) => answer_for(report),
        Ok(Err(CoreError::Store(e))) => {
            warn!(event = "step_retry_requested", runId = %run, error = %e, "store failure; asking Eventarc to redeliver");
            retry(format!("store failure (step released): {e}"))
        }
        Err(join) if join.is_cancelled() => retry("the worker shut down mid-step (step released)"),
        Err(join) => {
            error!(event = "step_panicked", runId = %run, error = %join, "the step task panicked");
            retry("internal error")
        }
    }
}

fn answer_for(report: StepReport) -> Answer {
    let outcome = match &report {
        StepReport::Succeeded { .. } => "succeeded",
        StepReport::Failed { .. } => "failed",
        StepReport::NoOp { .. } => "noop",
        StepReport::Rejected { .. } => "rejected",
        StepReport::LostClaim { .. } => "lost_claim",
    };
    let mut body = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
    if let Some(o) = body.as_object_mut() {
        o.insert("outcome".into(), json!(outcome));
    }
    Answer { status: StatusCode::OK, body }
}

/// Serves until `shutdown` resolves, then drains: in-flight steps get [`AppState::grace`] to finish; the rest are
/// aborted and their steps released.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = router(state.clone());
    let mut server_rx = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = server_rx.wait_for(|s| *s).await;
    });
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        r = &mut server => return r,
        _ = shutdown => {}
    }
    info!(event = "shutdown_started", inFlight = state.in_flight(), "no new requests; draining in-flight steps");
    let _ = stop_tx.send(true);
    let started = Instant::now();
    match tokio::time::timeout(state.grace, &mut server).await {
        Ok(r) => {
            info!(event = "shutdown_finished", waitedMs = started.elapsed().as_millis() as u64, "drained");
            r
        }
        Err(_) => {
            release_in_flight(&state).await;
            Ok(())
        }
    }
}

/// Aborts every in-flight step and hands back the steps this worker still owns (RUNNING → READY).
async fn release_in_flight(state: &AppState) {
    let tasks: Vec<(RunId, AbortHandle)> =
        state.inflight.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, v)| v).collect();
    let w = &state.worker;
    for (run, handle) in tasks {
        handle.abort();
        // Each serve process has its own worker id, so the steps of this run claimed by it are exactly ours.
        let doc = match w.flow_runs.get_run(&run).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                error!(event = "finalize_failed", runId = %run, error = %e, "cannot read the run to release its step; it is reclaimable after its lease");
                continue;
            }
        };
        let ours: Vec<StepId> = doc["steps"]
            .as_object()
            .map(|steps| {
                steps
                    .iter()
                    .filter(|(_, s)| s["status"] == "RUNNING" && s["claimedBy"] == w.settings.worker_id.as_str())
                    .filter_map(|(k, _)| StepId::parse(k.as_str()).ok())
                    .collect()
            })
            .unwrap_or_default();
        for step_id in ours {
            let mut fields = BTreeMap::new();
            fields.insert("status".to_owned(), Some(json!("READY")));
            for f in ["claimedBy", "leaseExpiresAt", "startedAt"] {
                fields.insert(f.to_owned(), None);
            }
            let patch = StepPatch { step_id: step_id.clone(), fields };
            match w.flow_runs.patch_owned_step(&run, &w.settings.worker_id, &patch).await {
                Ok(PatchOutcome::Applied) => warn!(event = "step_released", runId = %run, stepId = %step_id, "released on shutdown"),
                Ok(other) => info!(event = "step_released", runId = %run, stepId = %step_id, outcome = ?other, "not ours any more"),
                Err(e) => error!(event = "finalize_failed", runId = %run, stepId = %step_id, error = %e, "release failed; reclaimable after its lease"),
            }
        }
    }
}

/// Resolves on SIGTERM (Cloud Run's stop signal) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The production worker: Firestore + Cloud Storage (or their emulators) + the renderer of `CHART_IMG_MODE`.
pub async fn worker_from_settings(settings: &Settings) -> anyhow::Result<Worker> {
    if settings.accounts.is_empty() {
        anyhow::bail!("CHART_IMG_ACCOUNTS_JSON: no Chart-IMG account configured");
    }
    let bucket = settings.bucket.clone().context("ARTIFACTS_BUCKET: is not set")?;
    let project = match &settings.project {
        Some(p) => p.clone(),
        None => firestore::gcloud_sdk::GoogleEnvironment::detect_google_project_id()
            .await
            .context("GOOGLE_CLOUD_PROJECT: is not set and no project could be detected from the environment")?,
    };
    let store = FirestoreStore::new(&project).await?;
    let artifacts = GcsArtifacts::new(settings.storage_emulator_host.as_deref()).await?;
    let renderer = crate::renderers::build(settings)?;
    Ok(Worker {
        flow_runs: Arc::new(store.clone()),
        templates: Arc::new(store.clone()),
        usage: Arc::new(store),
        renderer,
        artifacts: Arc::new(artifacts),
        clock: Arc::new(SystemClock),
        accounts: AccountPool::new(settings.accounts.clone()),
        settings: CoreSettings {
            worker_id: crate::cli::worker_id("serve"),
            bucket,
            timezone: settings.timezone.clone(),
            concurrency: settings.concurrency,
            lease: settings.lease,
            retry: settings.retry,
        },
    })
}

/// `serve`: configuration from the environment, `0.0.0.0:$PORT`, until SIGTERM.
pub async fn main_from_env() -> anyhow::Result<()> {
    let settings = Settings::from_env().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let worker = worker_from_settings(&settings).await?;
    let listener = TcpListener::bind(("0.0.0.0", settings.port))
        .await
        .with_context(|| format!("cannot listen on 0.0.0.0:{}", settings.port))?;
    info!(event = "serve_started", port = settings.port, worker = %worker.settings.worker_id, "listening");
    run(listener, AppState::new(worker), shutdown_signal()).await.context("server failed")
}
