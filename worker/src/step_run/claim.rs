//! Stage 1: the claim transaction, with a token new to this attempt.

use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info};

use super::outcome::{CoreError, StepReport};
use super::{chrono_of, noop, StepRun};
use crate::domain::{ClaimOutcome, ClaimParams, ClaimToken, ErrorCode, StepId, StepSelector};

/// The claim this run holds.
pub(super) struct Claim {
    pub(super) step_id: StepId,
    pub(super) token: ClaimToken,
    /// 1 for the first claim of the step.
    pub(super) attempt: u32,
    /// Past the last attempt: this claim only settles the step (SUCCEEDED from its manifest, else FAILED with this
    /// code and message) and renders nothing.
    pub(super) give_up: Option<(ErrorCode, String)>,
    /// When the claim transaction started: the lease it wrote counts from then, however long the commit took.
    pub(super) started: Instant,
    /// Held by each of this claim's own writes to the flow run (a lease renewal, the finalize), so they never run as
    /// two transactions at once: on Firestore's pessimistic locks two read-write transactions of one holder on one
    /// document wait on each other's read locks until one is aborted, and a renewal stuck behind the finalize (or
    /// the finalize behind a renewal) loses the lease or the result.
    pub(super) writes: tokio::sync::Mutex<()>,
}

impl StepRun<'_> {
    /// Stage 1: the claim transaction, with a token new to this attempt. `Err(report)` when there is nothing to run.
    pub(super) async fn claim(&self, selector: &StepSelector) -> Result<Result<(Claim, Value), StepReport>, CoreError> {
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
        let outcome = match w.flow_runs.claim_step(run, selector, &params).await {
            Ok(o) => o,
            Err(e) => {
                // Transient or not, the step stays as it was: answered with a redelivery (a refused permission or
                // a missing database heals when it is fixed, and Eventarc retries for a day).
                if !e.is_transient() {
                    error!(event = "claim_failed", error = %e, "the claim was refused by the store; asking for a redelivery");
                }
                return Err(e.into());
            }
        };
        let outcome_name = match &outcome {
            ClaimOutcome::Claimed { give_up: Some(_), .. } => "give_up",
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
                give_up,
                ..
            } => {
                // The lease as written (a store may count it from a later attempt of its transaction than `now`):
                // the holder's lease runs from the matching instant, never from later than this one.
                let written = doc["steps"][step_id.as_str()]["leaseExpiresAt"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc));
                let later = written
                    .and_then(|t| (t - (params.now + chrono_of(w.settings.lease))).to_std().ok())
                    .unwrap_or_default()
                    .min(started.elapsed());
                let started = started + later;
                return Ok(Ok((
                    Claim {
                        step_id,
                        token: params.token,
                        attempt,
                        give_up: give_up
                            .map(|g| (ErrorCode::parse(&g.code).unwrap_or(ErrorCode::StepAbandoned), g.message)),
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
        }))
    }
}
