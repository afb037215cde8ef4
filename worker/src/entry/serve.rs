//! `worker-chart-export serve`: the Cloud Run entrypoint that Eventarc calls with Firestore document events.
//!
//! Routes: `POST /` (an event, any shape [`crate::eventarc::parse`] reads), `GET /health` and `GET /` (200 once the
//! clients are built; Cloud Run reserves some paths ending in `z`, hence not `/healthz`).
//!
//! Answers: what `serve` answers in each case, and why, is the table "The answers to Eventarc" in worker/README.md,
//! the one statement of that policy. Here `event` answers from the delivery and its data, before any Firestore call,
//! and `answer_for` from a step's report (`StepReport::wants_redelivery`).
//!
//! Invariants:
//! - The quick filter ([`event_verdict`]) runs on the event's own data before any Firestore call; only a delivery
//!   without data (documents over 10 MiB) costs a read first.
//! - A step runs inside its request's future: nothing outlives the request.
//! - On SIGTERM the server stops accepting and fires the steps' shutdown signal: each stops starting calls and
//!   finishes or releases its step within [`AppState::grace`]; what cannot be released by then is left to its lease.
//! - Each delivery runs in a [`cloud_run_kit::request_span`]: its log lines carry the trace of the request's
//!   `traceparent` (or `X-Cloud-Trace-Context`) header as `logging.googleapis.com/trace`
//!   (`projects/<GOOGLE_CLOUD_PROJECT>/traces/<id>`) and `logging.googleapis.com/spanId`, so Logs Explorer groups
//!   one delivery's lines; its ERROR lines are in Error Reporting's shape (the layer's).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cloud_run_kit::shutdown_signal;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tracing::{error, info, warn, Instrument as _};

use crate::config::Settings;
use crate::domain::step::{event_verdict, EventVerdict};
use crate::domain::{RunId, StepSelector};
use crate::eventarc::{self, FirestoreEvent};
use crate::shutdown::{InFlight, Shutdown, ShutdownTrigger};
use crate::step_run::{run_chart_export_step, StepReport};
use crate::wiring::Worker;

/// The largest event Eventarc delivers: its Pub/Sub transport carries messages of up to 10 MB (Firestore leaves the
/// data out of bigger events), base64-encoded inside a push envelope when Eventarc falls back to one. Anything larger
/// is refused as malformed (200 and an ERROR log: the same bytes could never succeed).
pub const MAX_EVENT_BYTES: usize = 10 * 1024 * 1024;
pub const MAX_BODY: usize = MAX_EVENT_BYTES / 3 * 4 + 64 * 1024;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The ports and settings every step runs with; its shutdown signal is this state's.
    pub worker: Worker,
    /// How long shutdown waits for in-flight steps to finish or release. Cloud Run allows 10 s between SIGTERM and
    /// SIGKILL (`CHART_EXPORT_SHUTDOWN_GRACE_SECONDS`, default 8 s).
    pub grace: Duration,
    /// Steps running now.
    inflight: Arc<InFlight>,
    /// Fires the steps' shutdown signal.
    trigger: Arc<ShutdownTrigger>,
    /// The Firestore database id this instance works on (`FIRESTORE_DATABASE`); events from another are not run.
    database: String,
    /// The project a delivery's trace belongs to (`GOOGLE_CLOUD_PROJECT`); without it lines carry no trace.
    project: Option<String>,
}

impl AppState {
    pub fn new(mut worker: Worker) -> Self {
        let (trigger, shutdown): (ShutdownTrigger, Shutdown) = Shutdown::channel();
        worker.shutdown = shutdown;
        let grace = worker.settings.lifecycle.shutdown_grace;
        let database = crate::config::DEFAULT_FIRESTORE_DATABASE.to_owned();
        Self {
            worker,
            grace,
            inflight: Arc::default(),
            trigger: Arc::new(trigger),
            database,
            project: None,
        }
    }

    /// The project of the deliveries' traces (`projects/<project>/traces/<id>`).
    pub fn with_project(mut self, project: Option<String>) -> Self {
        self.project = project.filter(|p| !p.is_empty());
        self
    }

    /// The Firestore database id events must come from (default `(default)`).
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self.worker.settings.lifecycle.shutdown_grace = grace;
        self
    }

    /// Number of steps running now.
    pub fn in_flight(&self) -> usize {
        self.inflight.get()
    }

    /// Tells running steps to stop starting calls and finish or release now.
    pub fn begin_shutdown(&self) {
        self.trigger.fire();
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(health).post(event))
        .route("/health", get(health))
        // The body is read under `MAX_BODY` by the handler itself, so an oversized event is answered like any other
        // malformed delivery rather than with a 413 that Eventarc would redeliver for a day.
        .layer(DefaultBodyLimit::disable())
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
    Answer {
        status: StatusCode::OK,
        body: json!({ "result": outcome, "reason": reason.into() }),
    }
}

fn retry(reason: impl Into<String>) -> Answer {
    Answer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: json!({ "result": "retry", "reason": reason.into() }),
    }
}

async fn event(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Answer {
    let trace = cloud_run_kit::TraceContext::from_headers(|k| headers.get(k).and_then(|v| v.to_str().ok()));
    let span = cloud_run_kit::request_span(trace.as_ref(), state.project.as_deref());
    delivery(state, headers, body).instrument(span).await
}

/// One delivery, inside its request span.
async fn delivery(state: AppState, headers: HeaderMap, body: Body) -> Answer {
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            error!(event = "cloud_event_received", accepted = false, limit = MAX_BODY, error = %e, "refusing an oversized or unreadable event body");
            return ok(
                "rejected",
                format!("the event body could not be read within {MAX_BODY} bytes: {e}"),
            );
        }
    };
    if state.worker.shutdown.is_set() {
        // Draining: another instance will take it.
        return retry("the instance is shutting down");
    }
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
    if let Some(db) = ev.database.as_deref().filter(|db| *db != state.database) {
        // A trigger on another database routed here: no redelivery changes that, so 2xx, logged, never run.
        warn!(event = "cloud_event_other_database", ceId = %ev.id, database = db, expected = %state.database, "ignoring an event for another Firestore database");
        return ok(
            "ignored",
            format!(
                "the event is for Firestore database {db:?}, this worker uses {:?} (FIRESTORE_DATABASE)",
                state.database
            ),
        );
    }
    let Some(run) = run else {
        return ok("noop", format!("{} is not a flow run", ev.document));
    };
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
            Err(e) => {
                error!(event = "cloud_event_received", runId = %run, error = %e, "cannot read the flow run");
                return retry(format!("cannot read flow_runs/{run}: {e}"));
            }
        },
        (None, false) => return ok("noop", "the event carries no document after the write"),
    };
    match event_verdict(&doc, &StepSelector::First, now) {
        EventVerdict::Claimable => run_step(state, run).await,
        EventVerdict::NotYet { not_before } => retry(format!(
            "the step was released and is not claimable before {not_before}"
        )),
        EventVerdict::HeldLive => ok(
            "noop",
            "the step is RUNNING under a live lease (the holder's own write)",
        ),
        EventVerdict::Nothing => ok("noop", "no claimable CHART_EXPORT step"),
    }
}

/// Runs the step inside this request (no detached task), counted for shutdown.
async fn run_step(state: &AppState, run: RunId) -> Answer {
    let _counted = state.inflight.enter();
    match run_chart_export_step(&state.worker, &run, &StepSelector::First, None).await {
        Ok(report) => answer_for(report),
        Err(e) if e.wants_redelivery() => {
            warn!(event = "step_retry_requested", runId = %run, error = %e, "asking Eventarc to redeliver");
            retry(e.to_string())
        }
        Err(e) => {
            // Nothing a redelivery could fix: answering non-2xx would only repeat this for a day.
            error!(event = "step_failed_unrecorded", runId = %run, error = %e, "the step could not be settled; not asking for a redelivery");
            ok("failed", e.to_string())
        }
    }
}

fn answer_for(report: StepReport) -> Answer {
    let outcome = report.outcome();
    let status = if report.wants_redelivery() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut body = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
    if let Some(o) = body.as_object_mut() {
        o.insert("outcome".into(), json!(outcome));
    }
    Answer { status, body }
}

/// Serves until `shutdown` resolves, then drains: new connections are refused, running steps are told to stop
/// starting calls, and they get [`AppState::grace`] to finish or release their steps. What is still running then is
/// dropped with the process; its step is reclaimable once its lease expires.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
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
    let started = Instant::now();
    info!(
        event = "shutdown_started",
        inFlight = state.in_flight(),
        graceMs = state.grace.as_millis() as u64,
        "no new requests; stopping in-flight steps"
    );
    let _ = stop_tx.send(true);
    state.begin_shutdown();
    let retries = crate::adapters::firestore::retry_counts();
    match tokio::time::timeout(state.grace, &mut server).await {
        Ok(r) => {
            info!(
                event = "shutdown_finished",
                waitedMs = started.elapsed().as_millis() as u64,
                contentionRetries = retries.contention(),
                otherRetries = retries.other(),
                "drained"
            );
            r
        }
        Err(_) => {
            error!(
                event = "shutdown_finished",
                waitedMs = started.elapsed().as_millis() as u64,
                inFlight = state.in_flight(),
                contentionRetries = retries.contention(),
                otherRetries = retries.other(),
                "grace period over; steps still running are left to their leases"
            );
            Ok(())
        }
    }
}

/// `serve`: configuration from the environment, `$HOST:$PORT` (default `0.0.0.0:8080`), until SIGTERM.
pub async fn main_from_env() -> anyhow::Result<()> {
    let settings = Settings::from_env().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let worker = Worker::on_google_cloud(&settings).await?;
    let listener = TcpListener::bind((settings.host, settings.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
    info!(event = "serve_started", port = settings.port, worker = %worker.settings.worker_id, "listening");
    let state = AppState::new(worker)
        .with_database(settings.firestore_database.clone())
        .with_project(settings.project.clone());
    run(listener, state, shutdown_signal()).await.context("server failed")
}
