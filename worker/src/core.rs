//! `run_chart_export_step`: one CHART_EXPORT step from claim to finalize, over the ports only.
//!
//! Stages (each a named method of [`StepRun`]): [`claim`](StepRun::claim) (transaction, new token) →
//! [`validate`](StepRun::validate) → [`manifest_first`](StepRun::manifest_first) (an existing manifest finalizes the
//! step at once) → [`prepare_requests`](StepRun::prepare_requests) (templates → Chart-IMG bodies) →
//! [`reserve_quota`](StepRun::reserve_quota) → [`render_all`](StepRun::render_all) (rate-limited per account,
//! retried with backoff, each image uploaded) → settle quota → [`conclude`](StepRun::conclude) (manifest,
//! create-only, then finalize) — or [`release`](StepRun::release) after a transient failure.
//!
//! While the stages run, [`keep_alive`](StepRun::keep_alive) renews the lease every heartbeat, and stops the step
//! when the claim is lost, the step deadline passes or the process shuts down. Both run in the caller's future: no
//! task outlives the request.
//!
//! Invariants: a step is finalized SUCCEEDED only after its manifest is written; nothing is written to a step whose
//! claim token is not ours; a step whose claim was lost writes no manifest and no finalize; an infrastructure failure
//! after the claim releases the step (RUNNING → READY with `attempts`, `notBefore`, `lastError`) until its attempts
//! are used up, then it is FAILED with the last error's code.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::{Lifecycle, RetryPolicy};
use crate::domain::manifest::{chart_path, manifest_path};
use crate::domain::request::build_request;
use crate::domain::step::{release_patch, renew_patch, rfc3339, validate_step, ValidStep};
use crate::domain::text::{clip_details, clip_error};
use crate::domain::{
    ChartRequest, ClaimOutcome, ClaimParams, ClaimToken, ErrorCode, Manifest, ManifestFailure, ManifestItem, ObjectRef,
    PatchOutcome, ReleaseParams, RunId, StepId, StepPatch, StepSelector, TemplateId, WorkerId,
};
use crate::ports::{
    AccountUsageStore, ArtifactError, ArtifactStore, ChartApiError, ChartCall, ChartRenderer, Clock, FlowRunStore,
    StepObserver, StoreError, TemplateStore, WriteMode,
};
use crate::quota::{AccountPool, AcquireError, QuotaLedger};

/// Settings of the core, separate from the process configuration so tests can build them directly.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub worker_id: WorkerId,
    pub bucket: String,
    pub timezone: String,
    /// The memory-safe maximum of charts of one step in flight; the number in flight is computed from the accounts'
    /// plans and the latency seen ([`AccountPool::in_flight`]), at most this.
    pub concurrency: usize,
    /// How long a claim (or its last renewal) holds before another worker may reclaim the step.
    pub lease: Duration,
    /// Retries of one Chart-IMG call.
    pub retry: RetryPolicy,
    /// Heartbeat, step deadline, attempts, release backoff, shutdown grace.
    pub lifecycle: Lifecycle,
}

/// A process-wide "shutting down" signal the steps watch (SIGTERM in `serve`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending half of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    pub fn channel() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// A signal that never fires (the CLI, tests).
    pub fn never() -> Self {
        // One sender for the whole process, never fired and never dropped, so a receiver never sees a closed channel.
        static NEVER: std::sync::OnceLock<watch::Sender<bool>> = std::sync::OnceLock::new();
        Shutdown(NEVER.get_or_init(|| watch::channel(false).0).subscribe())
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::never()
    }
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

/// The ports and settings one worker process runs steps with. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    pub flow_runs: Arc<dyn FlowRunStore>,
    pub templates: Arc<dyn TemplateStore>,
    pub usage: Arc<dyn AccountUsageStore>,
    pub renderer: Arc<dyn ChartRenderer>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub clock: Arc<dyn Clock>,
    pub accounts: AccountPool,
    pub settings: CoreSettings,
    /// Fired on SIGTERM: running steps stop starting calls and finish or release within the grace period.
    pub shutdown: Shutdown,
}

/// A chart that did not make it into the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartFailure {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ChartFailure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            http_status: None,
            details: None,
        }
    }

    fn from_api(e: ChartApiError) -> Self {
        let details = match &e {
            ChartApiError::MockMissing { details, .. } => Some(details.clone()),
            _ => None,
        };
        Self {
            code: e.code(),
            http_status: e.http_status(),
            message: e.to_string(),
            details,
        }
    }

    fn store(e: &StoreError) -> Self {
        Self::new(ErrorCode::StoreFailed, e.to_string())
    }
}

/// What happened to a delivery. Serialized as the CLI's `--format json` and the HTTP answer body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum StepReport {
    Succeeded {
        run_id: String,
        step_id: String,
        manifest_uri: String,
        requested: u32,
        items: Vec<ManifestItem>,
        failures: Vec<ManifestFailure>,
    },
    Failed {
        run_id: String,
        step_id: String,
        code: ErrorCode,
        message: String,
        failures: Vec<ManifestFailure>,
    },
    /// Handed back after a transient failure (RUNNING → READY): claimable again from `not_before`. The release
    /// write is itself a flow-run update, whose delivery carries the retry.
    Released {
        run_id: String,
        step_id: String,
        attempt: u32,
        not_before: String,
        code: ErrorCode,
        message: String,
    },
    /// Another claim holds the step under a live lease: worth a redelivery, which re-checks once it may have ended.
    Busy {
        run_id: String,
        step_id: String,
        claimed_by: Option<String>,
        lease_expires_at: Option<String>,
    },
    /// The step was released and may not be claimed before `not_before`.
    NotYet {
        run_id: String,
        step_id: String,
        not_before: String,
    },
    /// Nothing to do (no claimable step, already finished, run gone); nothing was written.
    NoOp {
        run_id: String,
        step_id: Option<String>,
        reason: String,
    },
    /// The delivery asked for something invalid (explicit step missing or not CHART_EXPORT); nothing was written.
    Rejected {
        run_id: String,
        step_id: Option<String>,
        code: ErrorCode,
        message: String,
    },
    /// Our claim was taken over (our lease expired) before we could finalize; nothing more was written.
    LostClaim {
        run_id: String,
        step_id: String,
        reason: String,
    },
}

impl StepReport {
    /// Exit status meaning: SUCCEEDED or nothing to do here (a no-op, a step someone else holds or that waits for
    /// its not-before time) is fine; everything else is not.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            Self::Succeeded { .. } | Self::NoOp { .. } | Self::Busy { .. } | Self::NotYet { .. }
        )
    }

    /// Whether a redelivery of the same event could do more: the step is held elsewhere, not due yet, or its claim
    /// was lost. A lost claim may mean another instance holds it (the redelivery then meets its lease, 503, until it
    /// finishes) or only that this instance could not renew in time (a hung store call, a network cut): then nobody
    /// holds it and no write of anyone's will trigger a new event, so only a redelivery recovers it once the lease
    /// has expired.
    pub fn wants_redelivery(&self) -> bool {
        matches!(self, Self::Busy { .. } | Self::NotYet { .. } | Self::LostClaim { .. })
    }

    /// A short name for logs and answers.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Released { .. } => "released",
            Self::Busy { .. } => "busy",
            Self::NotYet { .. } => "not_yet",
            Self::NoOp { .. } => "noop",
            Self::Rejected { .. } => "rejected",
            Self::LostClaim { .. } => "lost_claim",
        }
    }
}

/// An infrastructure failure the core could not settle in the step document.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The store failed before anything was claimed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The step failed transiently and its release failed too: it is left to its lease.
    #[error("{cause}; the release failed too ({release}); the step is reclaimable once its lease expires")]
    ReleaseFailed { cause: String, release: StoreError },
    /// Even the final write was refused for good (permission, corrupt document): nothing a redelivery can fix.
    #[error("cannot finalize the step {status} ({code}): {error}")]
    FinalizeRefused {
        status: &'static str,
        code: ErrorCode,
        error: StoreError,
    },
}

impl CoreError {
    /// Whether a redelivery may help (`serve` answers 503 then, 2xx with an ERROR log otherwise).
    pub fn wants_redelivery(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::ReleaseFailed { .. } => true,
            Self::FinalizeRefused { .. } => false,
        }
    }
}

/// Runs the step selected by `selector` of `flow_runs/{run}`.
pub async fn run_chart_export_step(
    w: &Worker,
    run: &RunId,
    selector: &StepSelector,
    observer: Option<&dyn StepObserver>,
) -> Result<StepReport, CoreError> {
    let span = info_span!("step", runId = %run, stepId = tracing::field::Empty);
    if let StepSelector::Explicit(s) = selector {
        span.record("stepId", s.as_str());
    }
    StepRun { w, run, observer }.run(selector).instrument(span).await
}

struct StepRun<'a> {
    w: &'a Worker,
    run: &'a RunId,
    observer: Option<&'a dyn StepObserver>,
}

/// The claim this run holds.
struct Claim {
    step_id: StepId,
    token: ClaimToken,
    /// 1 for the first claim of the step.
    attempt: u32,
    /// When the claim transaction started: the lease it wrote counts from then, however long the commit took.
    started: Instant,
    /// Held by each of this claim's own writes to the flow run (a lease renewal, the finalize), so they never run as
    /// two transactions at once: on Firestore's pessimistic locks two read-write transactions of one holder on one
    /// document wait on each other's read locks until one is aborted, and a renewal stuck behind the finalize (or
    /// the finalize behind a renewal) loses the lease or the result.
    writes: tokio::sync::Mutex<()>,
}

/// Why the step must stop starting work, in rising order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stop {
    /// The step deadline passed: calls in flight finish, no new one starts.
    Deadline,
    /// SIGTERM: no new call starts; calls in flight get most of the grace period to finish.
    Draining,
    /// The grace period is nearly over: calls in flight are abandoned, the step ends (releases) now.
    Shutdown,
    /// The claim is no longer ours (or cannot be proven ours): write nothing more.
    Lost,
}

/// The running step's view of [`Stop`].
struct Guard(watch::Receiver<Option<Stop>>);

impl Guard {
    fn current(&self) -> Option<Stop> {
        *self.0.borrow()
    }

    /// Resolves once the step must abandon calls in flight (end of the grace period, or a lost claim).
    async fn abandon(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|s| matches!(s, Some(Stop::Shutdown | Stop::Lost))).await;
    }
}

fn set_stop(tx: &watch::Sender<Option<Stop>>, stop: Stop) {
    tx.send_if_modified(|cur| {
        if cur.is_none_or(|c| stop > c) {
            *cur = Some(stop);
            true
        } else {
            false
        }
    });
}

/// Time kept at the end of the shutdown grace period for the release write.
fn release_margin(grace: Duration) -> Duration {
    (grace / 2).min(Duration::from_secs(2))
}

/// How the stages end when they do not produce a report themselves.
enum Halt {
    /// A failure a later attempt may not meet: release the step (bounded by its attempts).
    Transient { code: ErrorCode, message: String },
    /// A failure no retry fixes: finalize FAILED.
    Permanent(ChartFailure),
    /// The claim is gone: write nothing more.
    Lost(String),
    /// The process is shutting down: release without counting the attempt.
    Shutdown,
    /// The final write was refused for good.
    Refused(CoreError),
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            Halt::Transient {
                code: ErrorCode::StoreFailed,
                message: e.to_string(),
            }
        } else {
            Halt::Permanent(ChartFailure::store(&e))
        }
    }
}

fn noop(run: &RunId, step: Option<&StepId>, reason: impl Into<String>) -> StepReport {
    StepReport::NoOp {
        run_id: run.to_string(),
        step_id: step.map(|s| s.to_string()),
        reason: reason.into(),
    }
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(60))
}

impl StepRun<'_> {
    async fn run(&self, selector: &StepSelector) -> Result<StepReport, CoreError> {
        let (claim, doc) = match self.claim(selector).await? {
            Ok(c) => c,
            Err(report) => return Ok(report),
        };
        tracing::Span::current().record("stepId", claim.step_id.as_str());
        self.run_claimed(&claim, &doc).await
    }

    /// Stage 1: the claim transaction, with a token new to this attempt. `Err(report)` when there is nothing to run.
    async fn claim(&self, selector: &StepSelector) -> Result<Result<(Claim, Value), StepReport>, CoreError> {
        let w = self.w;
        let run = self.run;
        let started = Instant::now();
        let params = ClaimParams {
            worker: w.settings.worker_id.clone(),
            token: ClaimToken::random(),
            now: w.clock.now(),
            lease: chrono_of(w.settings.lease),
            max_attempts: w.settings.lifecycle.max_attempts,
        };
        let outcome = w.flow_runs.claim_step(run, selector, &params).await?;
        let outcome_name = match &outcome {
            ClaimOutcome::Claimed { reclaimed: true, .. } => "reclaimed",
            ClaimOutcome::Claimed { .. } => "claimed",
            ClaimOutcome::RunNotFound => "run_not_found",
            ClaimOutcome::NoClaimableStep => "no_claimable_step",
            ClaimOutcome::StepNotFound { .. } => "step_not_found",
            ClaimOutcome::WrongStepType { .. } => "wrong_step_type",
            ClaimOutcome::AlreadyRunning { .. } => "already_running",
            ClaimOutcome::NotYet { .. } => "not_yet",
            ClaimOutcome::AlreadyFinished { .. } => "already_finished",
            ClaimOutcome::NotClaimable { .. } => "not_claimable",
            ClaimOutcome::GaveUp { .. } => "gave_up",
        };
        info!(event = "claim_attempt", outcome = outcome_name, worker = %w.settings.worker_id, "claim {outcome_name}");
        let rejected = |step_id: StepId, message: String| StepReport::Rejected {
            run_id: run.to_string(),
            step_id: Some(step_id.to_string()),
            code: ErrorCode::ValidationFailed,
            message,
        };
        Ok(Err(match outcome {
            ClaimOutcome::Claimed {
                step_id,
                run: doc,
                attempt,
                ..
            } => {
                return Ok(Ok((
                    Claim {
                        step_id,
                        token: params.token,
                        attempt,
                        started,
                        writes: tokio::sync::Mutex::new(()),
                    },
                    doc,
                )));
            }
            ClaimOutcome::RunNotFound => noop(run, None, format!("flow_runs/{run} does not exist")),
            ClaimOutcome::NoClaimableStep => noop(run, None, "no READY CHART_EXPORT step"),
            ClaimOutcome::AlreadyRunning {
                step_id,
                claimed_by,
                lease_expires_at,
            } => StepReport::Busy {
                run_id: run.to_string(),
                step_id: step_id.to_string(),
                claimed_by,
                lease_expires_at,
            },
            ClaimOutcome::NotYet { step_id, not_before } => StepReport::NotYet {
                run_id: run.to_string(),
                step_id: step_id.to_string(),
                not_before,
            },
            ClaimOutcome::AlreadyFinished { step_id, status } => {
                noop(run, Some(&step_id), format!("step {step_id} is already {status}"))
            }
            ClaimOutcome::NotClaimable { step_id, status } => {
                noop(run, Some(&step_id), format!("step {step_id} is {status}, not READY"))
            }
            ClaimOutcome::StepNotFound { step_id } => {
                let message = format!("stepId: flow_runs/{run} has no step \"{step_id}\"");
                rejected(step_id, message)
            }
            ClaimOutcome::WrongStepType { step_id, step_type } => {
                let message = format!("steps.{step_id}.stepType: is {step_type:?}, not CHART_EXPORT");
                rejected(step_id, message)
            }
            ClaimOutcome::GaveUp { step_id, code, message } => {
                error!(event = "step_completed", status = "FAILED", code = %code, "{message}");
                StepReport::Failed {
                    run_id: run.to_string(),
                    step_id: step_id.to_string(),
                    code: ErrorCode::parse(&code).unwrap_or(ErrorCode::StepAbandoned),
                    message,
                    failures: Vec::new(),
                }
            }
        }))
    }

    /// Everything after a successful claim: the stages, with the lease kept alive beside them.
    async fn run_claimed(&self, claim: &Claim, doc: &Value) -> Result<StepReport, CoreError> {
        let (tx, rx) = watch::channel(None);
        let guard = Guard(rx);
        let deadline = claim.started + self.w.settings.lifecycle.step_deadline;
        let result = tokio::select! {
            biased;
            r = self.stages(claim, doc, &guard) => r,
            never = self.keep_alive(claim, &tx, deadline) => match never {},
        };
        match result {
            Ok(report) => Ok(report),
            Err(Halt::Lost(reason)) => Ok(self.lost(claim, reason)),
            Err(Halt::Transient { code, message }) => self.release(claim, code, message, false).await,
            Err(Halt::Shutdown) => {
                let message = "the worker shut down mid-step".to_owned();
                self.release(claim, ErrorCode::StepAbandoned, message, true).await
            }
            Err(Halt::Permanent(f)) => match self.finalize_failed(claim, f, Vec::new()).await {
                Ok(r) => Ok(r),
                Err(Halt::Lost(reason)) => Ok(self.lost(claim, reason)),
                Err(Halt::Transient { code, message }) => self.release(claim, code, message, false).await,
                Err(Halt::Refused(e)) => Err(e),
                Err(Halt::Permanent(_) | Halt::Shutdown) => {
                    unreachable!("finalize ends in a report, a loss, a release or a refusal")
                }
            },
            Err(Halt::Refused(e)) => {
                error!(event = "finalize_failed", error = %e, "the step's final write was refused");
                Err(e)
            }
        }
    }

    fn lost(&self, claim: &Claim, reason: String) -> StepReport {
        warn!(event = "finalize_failed", reason = %reason, "the claim was lost; nothing more is written");
        StepReport::LostClaim {
            run_id: self.run.to_string(),
            step_id: claim.step_id.to_string(),
            reason,
        }
    }

    /// Renews the lease every heartbeat and raises [`Stop`]s: `Lost` when a renewal finds another claim (or the lease
    /// ran out before a renewal got through), `Deadline` at the step deadline, `Shutdown` on SIGTERM. Never returns;
    /// it is dropped with the stages.
    async fn keep_alive(
        &self,
        claim: &Claim,
        tx: &watch::Sender<Option<Stop>>,
        deadline: Instant,
    ) -> std::convert::Infallible {
        let w = self.w;
        let lease = w.settings.lease;
        let heartbeat = w.settings.lifecycle.heartbeat.max(Duration::from_millis(50));
        // The lease was written as `now + lease` with `now` read before the claim transaction: count from there, and
        // renew at once if the claim itself took longer than a heartbeat.
        let mut confirmed_until = claim.started + lease;
        let mut next = claim.started + heartbeat;
        let (mut deadline_seen, mut shutdown_seen, mut lost) = (false, false, false);
        let grace = w.settings.lifecycle.shutdown_grace;
        // Far away until SIGTERM; then the moment calls in flight are abandoned so the release fits in the grace.
        let mut abandon_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next), if !lost => {
                    let sent = Instant::now();
                    let patch = renew_patch(&claim.step_id, w.clock.now() + chrono_of(lease));
                    let renewal = tokio::time::timeout_at(confirmed_until, async {
                        let _own = claim.writes.lock().await;
                        w.flow_runs.patch_owned_step(self.run, &claim.token, &patch).await
                    });
                    match renewal.await {
                        Ok(Ok(o)) if o.landed() => confirmed_until = sent + lease,
                        Ok(Ok(other)) => {
                            warn!(event = "lease_lost", outcome = ?other, "lease renewal found the step no longer ours");
                            lost = true;
                        }
                        Ok(Err(e)) => warn!(event = "lease_renewal_failed", error = %e, "lease renewal failed; retrying at the next heartbeat"),
                        Err(_) => warn!(event = "lease_renewal_failed", "lease renewal did not answer before the lease ran out"),
                    }
                    if !lost && Instant::now() >= confirmed_until {
                        warn!(event = "lease_lost", "the lease ran out before a renewal got through");
                        lost = true;
                    }
                    if lost {
                        set_stop(tx, Stop::Lost);
                    }
                    next = Instant::now() + heartbeat;
                }
                _ = tokio::time::sleep_until(deadline), if !deadline_seen => {
                    deadline_seen = true;
                    warn!(event = "step_deadline", "step deadline reached: no new Chart-IMG call starts");
                    set_stop(tx, Stop::Deadline);
                }
                _ = w.shutdown.wait(), if !shutdown_seen => {
                    shutdown_seen = true;
                    warn!(event = "step_draining", graceMs = grace.as_millis() as u64, "shutting down: no new Chart-IMG call starts");
                    set_stop(tx, Stop::Draining);
                    abandon_at = Some(Instant::now() + grace.saturating_sub(release_margin(grace)));
                }
                _ = tokio::time::sleep_until(abandon_at.unwrap_or_else(Instant::now)), if abandon_at.is_some() => {
                    abandon_at = None;
                    warn!(event = "step_abandoned_calls", "grace period nearly over: abandoning calls in flight to release the step");
                    set_stop(tx, Stop::Shutdown);
                }
            }
        }
    }

    /// The stages after the claim, in order.
    async fn stages(&self, claim: &Claim, doc: &Value, guard: &Guard) -> Result<StepReport, Halt> {
        let valid = match self.validate(claim, doc) {
            Ok(v) => v,
            Err(f) => return self.finalize_failed(claim, f, Vec::new()).await,
        };
        if let Some(report) = self.manifest_first(claim, &valid).await? {
            return Ok(report);
        }
        if let Some(o) = self.observer {
            o.charts_planned(valid.requests.len());
        }
        let slots = self.prepare_requests(&valid).await?;
        let key = format!("{}/{}", self.run, claim.step_id);
        let ledger = QuotaLedger::new(&self.w.accounts, self.w.usage.as_ref(), self.w.clock.as_ref(), &key);
        let slots = self.reserve_quota(&ledger, slots, guard).await?;
        let results = self.render_all(&valid, &ledger, slots, guard).await;
        let spent = ledger.finish().await;
        info!(event = "quota_settled", spent = ?spent.iter().map(|(a, n)| format!("{a}={n}")).collect::<Vec<_>>(), "quota settled");
        self.conclude(claim, &valid, results, guard).await
    }

    /// Stage 2: step-level validation of the claimed document.
    fn validate(&self, claim: &Claim, doc: &Value) -> Result<ValidStep, ChartFailure> {
        let step = &doc["steps"][claim.step_id.as_str()];
        validate_step(doc, &claim.step_id, step).map_err(|invalid| ChartFailure {
            code: ErrorCode::ValidationFailed,
            message: invalid.to_string(),
            http_status: None,
            details: Some(json!({ "field": invalid.field })),
        })
    }

    fn manifest_ref(&self, step_id: &StepId) -> ObjectRef {
        ObjectRef {
            bucket: self.w.settings.bucket.clone(),
            path: manifest_path(self.run, step_id),
        }
    }

    /// Stage 3: a manifest already written for this step (an earlier holder succeeded but never finalized) finalizes
    /// it SUCCEEDED at once: nothing is rendered or paid twice.
    async fn manifest_first(&self, claim: &Claim, valid: &ValidStep) -> Result<Option<StepReport>, Halt> {
        let obj = self.manifest_ref(&claim.step_id);
        let existing = match self.w.artifacts.get(&obj).await {
            Ok(o) => o,
            Err(e @ ArtifactError::Unavailable(_)) => {
                return Err(Halt::Transient {
                    code: ErrorCode::GcsWriteFailed,
                    message: format!("cannot check for {obj}: {e}"),
                });
            }
            Err(e) => {
                return Err(Halt::Permanent(ChartFailure::new(
                    ErrorCode::GcsWriteFailed,
                    format!("cannot check for {obj}: {e}"),
                )))
            }
        };
        let Some(existing) = existing else { return Ok(None) };
        let manifest: Option<Manifest> = serde_json::from_slice(&existing.bytes).ok();
        info!(event = "manifest_written", uri = %obj, existing = true, "a manifest already exists; finalizing from it");
        let (items, failures) = manifest.map(|m| (m.items, m.failures)).unwrap_or_default();
        self.finalize_succeeded(claim, valid, &obj, items, failures)
            .await
            .map(Some)
    }

    /// Stage 4: one Chart-IMG request per template; a missing or malformed template fails that request only.
    async fn prepare_requests(&self, valid: &ValidStep) -> Result<Vec<Result<ChartRequest, ChartFailure>>, Halt> {
        let w = self.w;
        let templates = w.templates.get_templates(&valid.requests).await?;
        Ok(valid
            .requests
            .iter()
            .map(|id| match templates.get(id) {
                None => Err(ChartFailure::new(
                    ErrorCode::ValidationFailed,
                    format!("chart_templates/{id} does not exist"),
                )),
                // Checked as Chart-IMG would before any quota is reserved for it (chart-img-spec).
                Some(t) => build_request(id, t, &valid.symbol, valid.timeframe, &w.settings.timezone)
                    .and_then(|r| w.accounts.check(r))
                    .map_err(|e| ChartFailure::new(ErrorCode::ValidationFailed, e.to_string())),
            })
            .collect())
    }

    /// Stage 5: the step's quota in one batched reservation.
    async fn reserve_quota(
        &self,
        ledger: &QuotaLedger<'_>,
        mut slots: Vec<Result<ChartRequest, ChartFailure>>,
        guard: &Guard,
    ) -> Result<Vec<Result<ChartRequest, ChartFailure>>, Halt> {
        match guard.current() {
            Some(Stop::Lost) => return Err(Halt::Lost("the lease renewal found the step no longer ours".into())),
            Some(Stop::Shutdown | Stop::Draining) => return Err(Halt::Shutdown),
            Some(Stop::Deadline) => {
                return Err(Halt::Transient {
                    code: ErrorCode::ChartApiFailed,
                    message: "the step deadline passed before any chart was rendered".into(),
                })
            }
            None => {}
        }
        let sendable = slots.iter().filter(|s| s.is_ok()).count() as u32;
        if sendable == 0 {
            return Ok(slots);
        }
        if self.w.accounts.is_empty() {
            for s in slots.iter_mut().filter(|s| s.is_ok()) {
                *s = Err(ChartFailure::new(
                    ErrorCode::ChartApiFailed,
                    "no Chart-IMG account is configured (CHART_IMG_ACCOUNTS_JSON)",
                ));
            }
            return Ok(slots);
        }
        ledger.reserve(sendable).await?;
        Ok(slots)
    }

    /// Stage 6: render and upload every chart, as many at a time as the accounts' rates use at the latency seen
    /// ([`AccountPool::in_flight`], at most `concurrency`).
    async fn render_all(
        &self,
        valid: &ValidStep,
        ledger: &QuotaLedger<'_>,
        slots: Vec<Result<ChartRequest, ChartFailure>>,
        guard: &Guard,
    ) -> Vec<(TemplateId, Result<ManifestItem, ChartFailure>)> {
        let sendable = slots.iter().filter(|s| s.is_ok()).count() as u32;
        let remaining = AtomicU32::new(sendable);
        futures::stream::iter(valid.requests.iter().cloned().zip(slots))
            .map(|(id, slot)| {
                let remaining = &remaining;
                async move {
                    let out = match slot {
                        Err(f) => Err(f),
                        Ok(req) => {
                            let r = self.render_and_store(&req, valid, ledger, remaining, guard).await;
                            remaining.fetch_sub(1, Ordering::SeqCst);
                            r
                        }
                    };
                    if let Some(o) = self.observer {
                        o.chart_done(&id, out.is_ok());
                    }
                    (id, out)
                }
            })
            .buffered(self.w.accounts.in_flight(self.w.settings.concurrency))
            .collect()
            .await
    }

    /// Stage 7: SUCCEEDED (manifest, then finalize) when enough charts rendered; otherwise FAILED with the first
    /// failure's code — or, when the step was cut short (deadline, shutdown), released for another attempt.
    async fn conclude(
        &self,
        claim: &Claim,
        valid: &ValidStep,
        results: Vec<(TemplateId, Result<ManifestItem, ChartFailure>)>,
        guard: &Guard,
    ) -> Result<StepReport, Halt> {
        let mut items = Vec::new();
        let mut failures = Vec::new();
        let mut first_failure: Option<ChartFailure> = None;
        for (id, r) in results {
            match r {
                Ok(item) => items.push(item),
                Err(f) => {
                    failures.push(ManifestFailure {
                        chart_template_id: id.to_string(),
                        code: f.code,
                        message: f.message.clone(),
                        http_status: f.http_status,
                    });
                    first_failure.get_or_insert(f);
                }
            }
        }
        let stop = guard.current();
        if stop == Some(Stop::Lost) {
            return Err(Halt::Lost("the lease renewal found the step no longer ours".into()));
        }
        let enough = crate::domain::manifest::enough_images(items.len(), valid.min_images);
        let summary = |first: &ChartFailure| {
            format!(
                "{} of {} charts rendered, {} required; first failure: {} {}",
                items.len(),
                valid.requests.len(),
                valid.min_images,
                failures.first().map(|f| f.chart_template_id.as_str()).unwrap_or("-"),
                first.message
            )
        };
        if !enough {
            let first =
                first_failure.unwrap_or_else(|| ChartFailure::new(ErrorCode::ChartApiFailed, "no chart was rendered"));
            match stop {
                Some(Stop::Shutdown | Stop::Draining) => return Err(Halt::Shutdown),
                Some(Stop::Deadline) => {
                    let message = format!("the step deadline passed: {}", summary(&first));
                    return Err(Halt::Transient {
                        code: first.code,
                        message,
                    });
                }
                _ => {}
            }
            let details = json!({ "failures": failures, "firstFailure": first.details });
            let f = ChartFailure {
                code: first.code,
                message: summary(&first),
                http_status: first.http_status,
                details: Some(details),
            };
            return self.finalize_failed(claim, f, failures).await;
        }
        self.write_manifest(claim, valid, items, failures).await
    }

    /// Stage 8: the manifest, schema-checked and create-only, then the finalize.
    async fn write_manifest(
        &self,
        claim: &Claim,
        valid: &ValidStep,
        items: Vec<ManifestItem>,
        failures: Vec<ManifestFailure>,
    ) -> Result<StepReport, Halt> {
        let w = self.w;
        let manifest = Manifest {
            schema_version: 1,
            run_id: self.run.to_string(),
            step_id: claim.step_id.to_string(),
            created_at: rfc3339(w.clock.now()),
            symbol: valid.symbol.clone(),
            timeframe: valid.timeframe.to_string(),
            min_images: valid.min_images,
            requested: valid.requests.len() as u32,
            items: items.clone(),
            failures: failures.clone(),
        };
        let bytes = match manifest.to_validated_json() {
            Ok(b) => b,
            Err(e) => {
                let f = ChartFailure::new(
                    ErrorCode::ValidationFailed,
                    format!("manifest does not match its schema: {e}"),
                );
                return self.finalize_failed(claim, f, failures).await;
            }
        };
        let obj = self.manifest_ref(&claim.step_id);
        match w
            .artifacts
            .put(&obj, Bytes::from(bytes), "application/json", WriteMode::CreateOnly)
            .await
        {
            Ok(()) => {
                info!(event = "manifest_written", uri = %obj, items = items.len(), failures = failures.len(), "manifest written")
            }
            Err(ArtifactError::AlreadyExists(_)) => {
                // A manifest is only ever written for a successful step, create-only. Finding one means an earlier
                // holder of this step already succeeded (or our own retried upload landed): point at it.
                warn!(event = "manifest_written", uri = %obj, existing = true, "manifest already exists; keeping the first one");
            }
            Err(e @ ArtifactError::Unavailable(_)) => {
                // Every chart is stored: another attempt finds them paid for only if the manifest lands, so retry the
                // step rather than failing it.
                return Err(Halt::Transient {
                    code: ErrorCode::ManifestWriteFailed,
                    message: format!("cannot write {obj}: {e}"),
                });
            }
            Err(e) => {
                let f = ChartFailure::new(ErrorCode::ManifestWriteFailed, format!("cannot write {obj}: {e}"));
                return self.finalize_failed(claim, f, failures).await;
            }
        }
        self.finalize_succeeded(claim, valid, &obj, items, failures).await
    }

    async fn finalize_succeeded(
        &self,
        claim: &Claim,
        valid: &ValidStep,
        obj: &ObjectRef,
        items: Vec<ManifestItem>,
        failures: Vec<ManifestFailure>,
    ) -> Result<StepReport, Halt> {
        let mut patch = StepPatch {
            step_id: claim.step_id.clone(),
            fields: Default::default(),
        };
        patch.fields.insert("status".to_owned(), Some(json!("SUCCEEDED")));
        patch
            .fields
            .insert("finishedAt".to_owned(), Some(json!(rfc3339(self.w.clock.now()))));
        patch
            .fields
            .insert("outputsManifestGcsUri".to_owned(), Some(json!(obj.uri())));
        patch.fields.insert("leaseExpiresAt".to_owned(), None);
        let report = StepReport::Succeeded {
            run_id: self.run.to_string(),
            step_id: claim.step_id.to_string(),
            manifest_uri: obj.uri(),
            requested: valid.requests.len() as u32,
            items,
            failures,
        };
        self.finalize(claim, patch, report, ErrorCode::ManifestWriteFailed)
            .await
    }

    async fn finalize_failed(
        &self,
        claim: &Claim,
        f: ChartFailure,
        failures: Vec<ManifestFailure>,
    ) -> Result<StepReport, Halt> {
        let message = clip_error(&f.message);
        let mut error = json!({ "code": f.code, "message": message });
        if let Some(d) = f.details {
            error["details"] = clip_details(d);
        }
        let mut patch = StepPatch {
            step_id: claim.step_id.clone(),
            fields: Default::default(),
        };
        patch.fields.insert("status".to_owned(), Some(json!("FAILED")));
        patch
            .fields
            .insert("finishedAt".to_owned(), Some(json!(rfc3339(self.w.clock.now()))));
        patch.fields.insert("error".to_owned(), Some(error));
        patch.fields.insert("leaseExpiresAt".to_owned(), None);
        let report = StepReport::Failed {
            run_id: self.run.to_string(),
            step_id: claim.step_id.to_string(),
            code: f.code,
            message,
            failures,
        };
        self.finalize(claim, patch, report, f.code).await
    }

    /// The guarded final write. A retried commit whose first try landed answers `AlreadyApplied`, which is success.
    async fn finalize(
        &self,
        claim: &Claim,
        patch: StepPatch,
        report: StepReport,
        code: ErrorCode,
    ) -> Result<StepReport, Halt> {
        let status = match &report {
            StepReport::Succeeded { .. } => "SUCCEEDED",
            _ => "FAILED",
        };
        let outcome = {
            let _own = claim.writes.lock().await;
            self.w.flow_runs.patch_owned_step(self.run, &claim.token, &patch).await
        };
        match outcome {
            Ok(o) if o.landed() => {
                info!(
                    event = "step_completed",
                    status,
                    repeated = (o == PatchOutcome::AlreadyApplied),
                    "step {status}"
                );
                Ok(report)
            }
            Ok(other) => Err(Halt::Lost(format!(
                "finalize skipped, the step is no longer ours: {other:?}"
            ))),
            Err(e) if e.is_transient() => {
                error!(event = "finalize_failed", status, error = %e, "finalize failed; releasing the step");
                Err(Halt::Transient {
                    code,
                    message: format!("cannot finalize the step {status}: {e}"),
                })
            }
            Err(e) => Err(Halt::Refused(CoreError::FinalizeRefused { status, code, error: e })),
        }
    }

    /// Hands the step back (RUNNING → READY) with its attempt count, a not-before time and the error; past the last
    /// attempt the step is FAILED with that error instead. A shutdown release does not count the attempt and may be
    /// claimed at once.
    async fn release(
        &self,
        claim: &Claim,
        code: ErrorCode,
        message: String,
        shutdown: bool,
    ) -> Result<StepReport, CoreError> {
        let w = self.w;
        let lifecycle = &w.settings.lifecycle;
        let message = clip_error(&message);
        if !shutdown && claim.attempt >= lifecycle.max_attempts {
            let f = ChartFailure::new(
                code,
                format!("gave up after {} attempts; last error: {message}", claim.attempt),
            );
            return match self.finalize_failed(claim, f, Vec::new()).await {
                Ok(r) => Ok(r),
                Err(Halt::Lost(reason)) => Ok(self.lost(claim, reason)),
                Err(Halt::Refused(e)) => Err(e),
                Err(_) => Err(CoreError::ReleaseFailed {
                    cause: message,
                    release: StoreError::Unavailable("the final FAILED write did not get through".into()),
                }),
            };
        }
        let now = w.clock.now();
        let delay = if shutdown {
            Duration::ZERO
        } else {
            lifecycle.release_delay(claim.attempt)
        };
        let params = ReleaseParams {
            now,
            not_before: now + chrono_of(delay),
            code: code.as_str().to_owned(),
            message: message.clone(),
            attempts: shutdown.then(|| claim.attempt.saturating_sub(1)),
        };
        let patch = release_patch(&claim.step_id, &params);
        match w.flow_runs.patch_owned_step(self.run, &claim.token, &patch).await {
            Ok(o) if o.landed() => {
                warn!(event = "step_released", attempt = claim.attempt, notBefore = %rfc3339(params.not_before), code = %code, error = %message, "step released");
                Ok(StepReport::Released {
                    run_id: self.run.to_string(),
                    step_id: claim.step_id.to_string(),
                    attempt: claim.attempt,
                    not_before: rfc3339(params.not_before),
                    code,
                    message,
                })
            }
            Ok(other) => Ok(self.lost(claim, format!("release skipped, the step is no longer ours: {other:?}"))),
            Err(e) => {
                error!(event = "finalize_failed", error = %e, "could not release the step; it is reclaimable after its lease");
                Err(CoreError::ReleaseFailed {
                    cause: message,
                    release: e,
                })
            }
        }
    }

    async fn render_and_store(
        &self,
        req: &ChartRequest,
        valid: &ValidStep,
        ledger: &QuotaLedger<'_>,
        remaining: &AtomicU32,
        guard: &Guard,
    ) -> Result<ManifestItem, ChartFailure> {
        let w = self.w;
        let work = async {
            let image = self.render_with_retry(req, ledger, remaining, guard).await?;
            let generated_at: DateTime<Utc> = w.clock.now();
            let path = chart_path(
                self.run,
                valid.timeframe,
                &req.template_id,
                &valid.symbol,
                generated_at,
                image.format,
            );
            let obj = ObjectRef {
                bucket: w.settings.bucket.clone(),
                path,
            };
            let sha256 = hex::encode(Sha256::digest(&image.bytes));
            let size = image.bytes.len() as u64;
            w.artifacts
                .put(&obj, image.bytes, image.format.content_type(), WriteMode::Overwrite)
                .await
                .map_err(|e| {
                    ChartFailure::new(
                        ErrorCode::GcsWriteFailed,
                        clip_error(&format!("cannot write {obj}: {e}")),
                    )
                })?;
            Ok(ManifestItem {
                chart_template_id: req.template_id.to_string(),
                gcs_uri: obj.uri(),
                content_type: image.format.content_type().to_owned(),
                bytes: size,
                sha256,
                generated_at: rfc3339(generated_at),
            })
        };
        tokio::select! {
            r = work => r,
            // On shutdown or a lost claim the call in flight is abandoned; its unit stays spent (it may have been sent).
            _ = guard.abandon() => Err(ChartFailure::new(ErrorCode::ChartApiFailed, "abandoned: the step was stopped mid-call")),
        }
    }

    /// Attempts with backoff on throttles and transient failures (the one [`RetryPolicy`]). Inside one attempt,
    /// `429 Limit Exceeded` moves straight to the next account without waiting. No attempt starts once the step is
    /// stopped (deadline, shutdown, lost claim).
    async fn render_with_retry(
        &self,
        req: &ChartRequest,
        ledger: &QuotaLedger<'_>,
        remaining: &AtomicU32,
        guard: &Guard,
    ) -> Result<crate::ports::RenderedChart, ChartFailure> {
        enum AttemptError {
            Api(ChartApiError),
            Fatal(ChartFailure),
        }
        let w = self.w;
        let template = req.template_id.as_str();
        let attempt = || async {
            loop {
                if let Some(stop) = guard.current() {
                    let why = match stop {
                        Stop::Deadline => "the step deadline passed",
                        Stop::Draining | Stop::Shutdown => "the worker is shutting down",
                        Stop::Lost => "the step's claim was lost",
                    };
                    return Err(AttemptError::Fatal(ChartFailure::new(
                        ErrorCode::ChartApiFailed,
                        format!("not rendered: {why} before this chart's call"),
                    )));
                }
                let top_up = remaining.load(Ordering::SeqCst);
                let account = match ledger.acquire_for(top_up, req.needs).await {
                    Ok(a) => a,
                    Err(AcquireError::AllExhausted(names)) => {
                        let mut f = ChartFailure::new(
                            ErrorCode::ChartApiLimitExceeded,
                            format!("every Chart-IMG account is exhausted for today ({names})"),
                        );
                        f.http_status = Some(429);
                        return Err(AttemptError::Fatal(f));
                    }
                    Err(e @ AcquireError::Store(_)) => {
                        return Err(AttemptError::Fatal(ChartFailure::new(
                            ErrorCode::ChartApiFailed,
                            e.to_string(),
                        )))
                    }
                };
                if let Err(e) = account.until_ready().await {
                    // No call was sent: the unit goes back to the step, and the attempt is retried like a 5xx.
                    ledger.refund(account).await;
                    let message = format!("cannot reserve a rate window for {}: {e}", account.config.id);
                    return Err(AttemptError::Api(ChartApiError::Transient { status: None, message }));
                }
                let id = &account.config.id;
                info!(event = "chart_api_call_start", chartTemplateId = template, account = %id, "calling Chart-IMG");
                let started = tokio::time::Instant::now();
                let call = ChartCall {
                    body: &req.body,
                    format: req.format,
                    account: id,
                    api_key: &account.config.api_key,
                };
                let result = w.renderer.render(&call).await;
                let took = started.elapsed();
                let ms = took.as_millis() as u64;
                if result.is_ok() {
                    // Only rendered charts: fast refusals and timeouts say nothing about the time a chart takes.
                    w.accounts.latency().observe(took);
                }
                match &result {
                    Ok(img) => {
                        info!(event = "chart_api_call_finished", chartTemplateId = template, account = %id, ok = true, bytes = img.bytes.len(), ms, "Chart-IMG answered an image")
                    }
                    Err(e) => {
                        let error = clip_error(&w.accounts.redact(&e.to_string()));
                        warn!(event = "chart_api_call_finished", chartTemplateId = template, account = %id, ok = false, error = %error, httpStatus = e.http_status(), ms, "Chart-IMG call failed")
                    }
                }
                match result {
                    Err(ChartApiError::LimitExceeded) => ledger.exhaust(account).await,
                    Err(e) => return Err(AttemptError::Api(e)),
                    Ok(img) => return Ok(img),
                }
            }
        };
        w.settings
            .retry
            .run(
                attempt,
                |e| matches!(e, AttemptError::Api(api) if api.is_retryable()),
                |e, after| {
                    if let AttemptError::Api(api) = e {
                        let error = clip_error(&w.accounts.redact(&api.to_string()));
                        warn!(event = "chart_api_retry", chartTemplateId = template, error = %error, after_ms = after.as_millis() as u64, "retrying Chart-IMG call");
                    }
                },
            )
            .await
            .map_err(|e| {
                let mut f = match e {
                    AttemptError::Api(api) => ChartFailure::from_api(api),
                    AttemptError::Fatal(f) => f,
                };
                f.message = clip_error(&w.accounts.redact(&f.message));
                if let Some(d) = f.details.take() {
                    let text = w.accounts.redact(&d.to_string());
                    f.details = Some(clip_details(serde_json::from_str(&text).unwrap_or(Value::String(text))));
                }
                f
            })
    }
}

/// Counts steps running in this process (for `serve`'s shutdown log and tests).
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts one step until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
}

pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}
