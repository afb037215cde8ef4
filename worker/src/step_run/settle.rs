//! Settling the step: validation, the manifest-first shortcut, the manifest, finalize, release.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::claim::Claim;
use super::lease::{Guard, Stop};
use super::outcome::{ChartFailure, CoreError, Halt, StepReport};
use super::{chrono_of, StepRun};
use crate::domain::manifest::manifest_path;
use crate::domain::step::{release_patch, rfc3339, validate_step, StepInvalid, ValidStep};
use crate::domain::text::{clip_details, clip_error};
use crate::domain::{
    ErrorCode, Manifest, ManifestFailure, ManifestItem, ObjectRef, PatchOutcome, ReleaseParams, StepId, StepPatch,
    TemplateId,
};
use crate::ports::{ArtifactError, StoreError, WriteMode};

/// The step-level code of the first transient infrastructure failure among a step's charts, if any.
fn failures_retry_as(codes: &[ErrorCode]) -> Option<ErrorCode> {
    codes.first().copied()
}

impl StepRun<'_> {
    /// Stage 2: step-level validation of the claimed document.
    pub(super) fn validate(&self, claim: &Claim, doc: &Value) -> Result<ValidStep, ChartFailure> {
        let step = &doc["steps"][claim.step_id.as_str()];
        let max = self.w.settings.max_requests;
        validate_step(doc, &claim.step_id, step)
            .and_then(|v| match v.requests.len() {
                n if n > max => Err(StepInvalid {
                    field: format!("steps.{}.inputs.requests", claim.step_id),
                    problem: format!(
                        "has {n} entries; a step may ask for at most {max} charts (CHART_EXPORT_MAX_REQUESTS)"
                    ),
                }),
                _ => Ok(v),
            })
            .map_err(|invalid| ChartFailure {
                code: ErrorCode::ValidationFailed,
                message: invalid.to_string(),
                http_status: None,
                details: Some(json!({ "field": invalid.field })),
                retry_as: None,
            })
    }

    pub(super) fn manifest_ref(&self, step_id: &StepId) -> ObjectRef {
        ObjectRef {
            bucket: self.w.settings.bucket.clone(),
            path: manifest_path(self.run, step_id),
        }
    }

    /// Stage 3: a manifest already written for this step (an earlier holder succeeded but never finalized) finalizes
    /// it SUCCEEDED at once: nothing is rendered or paid twice. A manifest that cannot be read as one is never
    /// taken for success: the step fails (`MANIFEST_WRITE_FAILED`, naming the object).
    pub(super) async fn manifest_first(&self, claim: &Claim) -> Result<Option<StepReport>, Halt> {
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
        let manifest = match Manifest::from_validated_json(&existing.bytes) {
            Ok(m) if m.run_id == self.run.as_str() && m.step_id == claim.step_id.as_str() => m,
            Ok(m) => {
                return Err(Halt::Permanent(ChartFailure::new(
                    ErrorCode::ManifestWriteFailed,
                    format!("{obj} exists but is the manifest of {}/{}", m.run_id, m.step_id),
                )))
            }
            Err(e) => {
                return Err(Halt::Permanent(ChartFailure::new(
                    ErrorCode::ManifestWriteFailed,
                    clip_error(&format!("{obj} exists but is not a readable manifest: {e}")),
                )))
            }
        };
        info!(event = "manifest_written", uri = %obj, existing = true, "a manifest already exists; finalizing from it");
        self.finalize_succeeded(claim, manifest.requested, &obj, manifest.items, manifest.failures)
            .await
            .map(Some)
    }

    /// Stage 7: SUCCEEDED (manifest, then finalize) when enough charts rendered; otherwise FAILED with the first
    /// failure's code — or, when the step was cut short (deadline, shutdown), released for another attempt.
    pub(super) async fn conclude(
        &self,
        claim: &Claim,
        valid: &ValidStep,
        results: Vec<(TemplateId, Result<ManifestItem, ChartFailure>)>,
        guard: &Guard,
    ) -> Result<StepReport, Halt> {
        let mut items = Vec::new();
        let mut failures = Vec::new();
        let mut first_failure: Option<ChartFailure> = None;
        let mut failed_transiently = Vec::new();
        let mut failed_ids = Vec::new();
        for (id, r) in results {
            match r {
                Ok(item) => items.push(item),
                Err(f) => {
                    failed_transiently.extend(f.retry_as);
                    failed_ids.push(id.clone());
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
            let transient = failures_retry_as(&failed_transiently);
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
            // Short of images because the infrastructure failed for a while: the charts stored so far are kept
            // for the next attempt, which renders only the rest.
            if let Some(code) = transient {
                let message = format!("a transient failure while rendering: {}", summary(&first));
                return Err(Halt::Transient { code, message });
            }
            let details = json!({ "failures": failures, "firstFailure": first.details });
            let f = ChartFailure {
                code: first.code,
                message: summary(&first),
                http_status: first.http_status,
                details: Some(details),
                retry_as: None,
            };
            return self.finalize_failed(claim, f, failures).await;
        }
        let report = self.write_manifest(claim, valid, items, failures).await?;
        // A chart that failed in this attempt may have left an object an earlier attempt stored that did not match
        // its record: the manifest does not name it, so it goes.
        if matches!(report, StepReport::Succeeded { .. }) && !failed_ids.is_empty() {
            self.delete_charts(self.step_chart_objects(valid, &failed_ids)).await;
        }
        Ok(report)
    }

    /// Deletes chart objects no manifest will name. Best effort: a failure is logged, the step's outcome stands.
    pub(super) async fn delete_charts(&self, objs: Vec<ObjectRef>) {
        let mut deleted = 0;
        for obj in objs {
            match self.w.artifacts.delete(&obj).await {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(e) => {
                    warn!(event = "chart_delete_failed", uri = %obj, error = %e, "cannot delete a chart no manifest names")
                }
            }
        }
        if deleted > 0 {
            info!(
                event = "charts_deleted",
                count = deleted,
                "deleted charts no manifest names"
            );
        }
    }

    /// Stage 8: the manifest, schema-checked and create-only, then the finalize.
    pub(super) async fn write_manifest(
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
        self.finalize_succeeded(claim, valid.requests.len() as u32, &obj, items, failures)
            .await
    }

    pub(super) async fn finalize_succeeded(
        &self,
        claim: &Claim,
        requested: u32,
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
            requested,
            items,
            failures,
        };
        self.finalize(claim, patch, report, ErrorCode::ManifestWriteFailed)
            .await
    }

    pub(super) async fn finalize_failed(
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
        let report = self.finalize(claim, patch, report, f.code).await?;
        // FAILED has no manifest: charts earlier attempts stored for it are deleted (the step is final, nobody else
        // writes them now).
        let charts = std::mem::take(&mut *self.charts.lock().unwrap_or_else(|e| e.into_inner()));
        self.delete_charts(charts).await;
        Ok(report)
    }

    /// The guarded final write. A retried commit whose first try landed answers `AlreadyApplied`, which is success.
    pub(super) async fn finalize(
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
    pub(super) async fn release(
        &self,
        claim: &Claim,
        code: ErrorCode,
        message: String,
        shutdown: bool,
    ) -> Result<StepReport, CoreError> {
        let w = self.w;
        let lifecycle = &w.settings.lifecycle;
        let message = clip_error(&message);
        // An attempt that stored charts of its own is handed back whatever its number: the next one starts further on.
        let progressed = self.rendered.load(std::sync::atomic::Ordering::SeqCst) > 0;
        if !shutdown && !progressed && claim.attempt >= lifecycle.max_attempts {
            // The failure may have come after the manifest landed (a finalize that did not get through): a step with
            // a manifest is SUCCEEDED from it, never FAILED.
            match self.manifest_first(claim).await {
                Ok(Some(report)) => return Ok(report),
                Ok(None) | Err(Halt::Permanent(_)) => {}
                Err(Halt::Lost(reason)) => return Ok(self.lost(claim, reason)),
                Err(Halt::Refused(e)) => return Err(e),
                // The manifest cannot be checked now: hand the step back once more; the give-up claim checks again,
                // and if it cannot either, the step is FAILED (bounded: a store that never heals ends the step).
                Err(Halt::Transient { .. } | Halt::Shutdown) if claim.give_up.is_none() => {
                    return self.release_now(claim, code, message, None, None).await
                }
                Err(Halt::Transient { .. } | Halt::Shutdown) => {}
            }
            let f = ChartFailure::new(
                code,
                format!(
                    "gave up after {} attempts; last error: {message}",
                    claim.attempt.min(lifecycle.max_attempts)
                ),
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
        let attempts = shutdown.then(|| claim.attempt.saturating_sub(1));
        self.release_now(claim, code, message, attempts, None).await
    }

    /// After the holder lost its lease (`reason`). At the fence nobody may hold the step yet: a release under this
    /// claim's own token (a transaction that lands only while the token is still the step's) hands the attempt
    /// back, with what it stored on record, and makes the step claimable at once instead of after the lease; while
    /// the step's [`ATTEMPTS_HANDED_BACK`] is below `CHART_EXPORT_MAX_ATTEMPTS`, and not for a give-up claim.
    /// Another token on the step, or a store that cannot take the write: the claim is lost, nothing is written.
    ///
    /// [`ATTEMPTS_HANDED_BACK`]: crate::domain::step::ATTEMPTS_HANDED_BACK
    pub(super) async fn after_lost_lease(&self, claim: &Claim, doc: &Value, reason: String) -> StepReport {
        let handed = crate::domain::step::attempts_handed_back_of(&doc["steps"][claim.step_id.as_str()]);
        let max = self.w.settings.lifecycle.max_attempts;
        if claim.give_up.is_some() || handed >= max {
            return self.lost(claim, reason);
        }
        let message = format!(
            "{reason}; the holder handed its attempt back ({} of {max} such hand-backs)",
            handed + 1
        );
        let back = Some(claim.attempt.saturating_sub(1));
        // Tried until the lease this holder knew of ends (the fence comes `fence_margin` before it): the store that
        // did not confirm the renewal may answer again by then. Safe after it too (the write needs this token).
        let until = tokio::time::Instant::now() + super::lease::fence_margin(self.w.settings.lease);
        loop {
            match self
                .release_now(claim, ErrorCode::StepAbandoned, message.clone(), back, Some(handed + 1))
                .await
            {
                Ok(report) => return report,
                Err(_) if tokio::time::Instant::now() < until => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await
                }
                Err(_) => return self.lost(claim, reason),
            }
        }
    }

    /// At a give-up claim, before the step is given up: the step's charts stored now against those on record
    /// ([`crate::domain::step::CHARTS_STORED`]). More stored than recorded means an earlier holder made progress it
    /// could not record (killed, or fenced by a frozen store, between two lease renewals), so its attempt should not
    /// have counted: the step is handed back for its last attempt instead, with the larger count on record.
    /// `None`: nothing off the record, the step is given up.
    pub(super) async fn progress_off_the_record(
        &self,
        claim: &Claim,
        valid: &ValidStep,
    ) -> Result<Option<StepReport>, Halt> {
        let slots = self.prepare_requests(valid).await?;
        let slots = self.find_stored(valid, slots).await?;
        let (found, recorded) = self.note_found(&slots);
        if found <= recorded {
            return Ok(None);
        }
        let max = self.w.settings.lifecycle.max_attempts;
        let message = format!(
            "out of attempts, but {found} of the step's charts are stored and {recorded} were on record: an earlier \
             holder was cut off before recording its progress, so the step gets its last attempt back"
        );
        warn!(event = "progress_off_the_record", found, recorded, "{message}");
        self.release_now(
            claim,
            ErrorCode::StepAbandoned,
            message,
            Some(max.saturating_sub(1)),
            None,
        )
        .await
        .map(Some)
        .map_err(Halt::Refused)
    }

    /// The release write itself (RUNNING → READY, not before the attempt's backoff).
    /// `attempts`: hands the step back with this attempt count, claimable at once (the attempt was not the step's
    /// fault); `None`: the attempt counts, and the step waits for its backoff.
    async fn release_now(
        &self,
        claim: &Claim,
        code: ErrorCode,
        message: String,
        attempts: Option<u32>,
        handed_back: Option<u32>,
    ) -> Result<StepReport, CoreError> {
        let w = self.w;
        let lifecycle = &w.settings.lifecycle;
        let now = w.clock.now();
        let delay = if attempts.is_some() {
            Duration::ZERO
        } else {
            lifecycle.release_delay(claim.attempt)
        };
        let params = ReleaseParams {
            now,
            not_before: now + chrono_of(delay),
            code: code.as_str().to_owned(),
            message: message.clone(),
            attempts,
            charts_rendered: self.rendered.load(std::sync::atomic::Ordering::SeqCst),
            charts_stored: self.charts_stored(),
            handed_back,
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
                if handed_back.is_some() {
                    // The best-effort release after a lost lease (`after_lost_lease`), which may try again.
                    warn!(event = "release_failed", error = %e, "could not hand the attempt back yet");
                } else {
                    error!(event = "finalize_failed", error = %e, "could not release the step; it is reclaimable after its lease");
                }
                Err(CoreError::ReleaseFailed {
                    cause: message,
                    release: e,
                })
            }
        }
    }
}
