//! `run_chart_export_step`: one CHART_EXPORT step from claim to finalize, over the ports only.
//!
//! Stages (each a named method of [`StepRun`]): [`claim`](StepRun::claim) (transaction, new token) →
//! [`validate`](StepRun::validate) → [`manifest_first`](StepRun::manifest_first) (an existing manifest finalizes the
//! step at once) → [`prepare_requests`](StepRun::prepare_requests) (templates → Chart-IMG bodies) →
//! [`find_stored`](StepRun::find_stored) → [`before_calls`](StepRun::before_calls) → [`render_all`](StepRun::render_all)
//! (each call on the fitting key that sends soonest, paced, one unit of quota taken at its slot, retried with
//! backoff, each image uploaded) → settle quota → [`conclude`](StepRun::conclude) (manifest,
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

mod claim;
mod lease;
mod outcome;
mod render;
mod settle;

pub use outcome::{CoreError, StepReport};

use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tracing::{error, info, info_span, Instrument};

use crate::domain::{ErrorCode, RunId, StepId, StepSelector};
use crate::ports::StepObserver;
use crate::quota::QuotaLedger;
use crate::wiring::Worker;
use claim::Claim;
use lease::Guard;
use outcome::Halt;

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
    StepRun {
        w,
        run,
        observer,
        charts: Default::default(),
        rendered: Default::default(),
        stored: Default::default(),
    }
    .run(selector)
    .instrument(span)
    .await
}

struct StepRun<'a> {
    w: &'a Worker,
    run: &'a RunId,
    observer: Option<&'a dyn StepObserver>,
    /// Every object the step's charts may be stored as (known once the step is validated): deleted when the step
    /// ends FAILED, so no chart outlives a step without a manifest.
    charts: std::sync::Mutex<Vec<crate::domain::ObjectRef>>,
    /// Charts this attempt rendered and stored (not the ones it reused): recorded with each lease renewal and the
    /// release, so an attempt that made progress does not use up the step's attempts however it ends
    /// ([`crate::domain::step::CHARTS_RENDERED`]).
    rendered: std::sync::atomic::AtomicU32,
    /// The step's charts on record as stored when it was claimed, and those this attempt found stored (once it
    /// looked): what it records as [`crate::domain::step::CHARTS_STORED`].
    stored: std::sync::Mutex<(u32, Option<u32>)>,
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
    /// The step's charts stored as far as this attempt knows, never less than was on record when it was claimed
    /// ([`crate::domain::step::CHARTS_STORED`]).
    fn charts_stored(&self) -> u32 {
        let (recorded, found) = *self.stored.lock().unwrap_or_else(|e| e.into_inner());
        let rendered = self.rendered.load(std::sync::atomic::Ordering::SeqCst);
        found.map_or(recorded, |f| recorded.max(f.saturating_add(rendered)))
    }

    /// Notes the charts `slots` found stored (for [`Self::charts_stored`]); answers that count and the one on record
    /// when the step was claimed.
    fn note_found(&self, slots: &[render::Slot]) -> (u32, u32) {
        let found = slots.iter().filter(|s| matches!(s, render::Slot::Stored(_))).count();
        let found = u32::try_from(found).unwrap_or(u32::MAX);
        let mut stored = self.stored.lock().unwrap_or_else(|e| e.into_inner());
        stored.1 = Some(found);
        (found, stored.0)
    }

    async fn run(&self, selector: &StepSelector) -> Result<StepReport, CoreError> {
        let (claim, doc) = match self.claim(selector).await? {
            Ok(c) => c,
            Err(report) => return Ok(report),
        };
        tracing::Span::current().record("stepId", claim.step_id.as_str());
        self.run_claimed(&claim, &doc).await
    }

    /// Everything after a successful claim: the stages, with the lease kept alive beside them.
    async fn run_claimed(&self, claim: &Claim, doc: &Value) -> Result<StepReport, CoreError> {
        let (tx, rx) = watch::channel(None);
        let guard = Guard(rx);
        let deadline = claim.started + self.w.settings.lifecycle.step_deadline;
        let result = tokio::select! {
        biased;
        r = self.stages(claim, doc, &guard) => r,
        never = self.keep_alive(claim, &tx, deadline) => match never {}};
        match result {
            Ok(report) => Ok(report),
            Err(Halt::Lost(reason)) => Ok(self.after_lost_lease(claim, doc, reason).await),
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

    /// The stages after the claim, in order.
    async fn stages(&self, claim: &Claim, doc: &Value, guard: &Guard) -> Result<StepReport, Halt> {
        let mut valid = match self.validate(claim, doc) {
            Ok(v) => v,
            Err(f) => return self.finalize_failed(claim, f, Vec::new()).await,
        };
        // Only a step claimed before `chartsGeneratedAt` existed lacks it: its names hold for this attempt alone.
        let now = self.w.clock.now();
        valid
            .charts_generated_at
            .get_or_insert_with(|| now - chrono::Duration::nanoseconds(now.timestamp_subsec_nanos() as i64));
        *self.charts.lock().unwrap_or_else(|e| e.into_inner()) = self.step_chart_objects(&valid, &valid.requests);
        self.stored.lock().unwrap_or_else(|e| e.into_inner()).0 =
            crate::domain::step::charts_stored_of(&doc["steps"][claim.step_id.as_str()]);
        if let Some(report) = self.manifest_first(claim).await? {
            return Ok(report);
        }
        if let Some((code, message)) = &claim.give_up {
            if let Some(report) = self.progress_off_the_record(claim, &valid).await? {
                return Ok(report);
            }
            error!(event = "step_gave_up", code = %code, "{message}");
            return self
                .finalize_failed(claim, outcome::ChartFailure::new(*code, message.clone()), Vec::new())
                .await;
        }
        if let Some(o) = self.observer {
            o.charts_planned(valid.requests.len());
        }
        let slots = self.prepare_requests(&valid).await?;
        let slots = self.find_stored(&valid, slots).await?;
        self.note_found(&slots);
        let key = format!("{}/{}", self.run, claim.step_id);
        let ledger = QuotaLedger::new(&self.w.accounts, self.w.usage.clone(), self.w.clock.as_ref(), &key);
        let slots = self.before_calls(slots, guard)?;
        let results = self.render_all(&valid, &ledger, slots, guard).await;
        let spent = ledger.finish().await;
        info!(event = "quota_settled", spent = ?spent.iter().map(|(a, n)| format!("{a}={n}")).collect::<Vec<_>>(), "quota settled");
        self.conclude(claim, &valid, results, guard).await
    }
}
