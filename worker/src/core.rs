//! `run_chart_export_step`: one CHART_EXPORT step from claim to finalize, over the ports only.
//!
//! Flow: claim (transaction) → validate → read templates → build requests → reserve quota → render concurrently
//! (rate-limited per account, retried with backoff) → upload each image → give back unused quota → manifest
//! (schema-checked, create-only) → finalize (field-masked, only while we own the step).
//!
//! Invariants: a step is finalized SUCCEEDED only after its manifest is written; nothing is written to a step we do
//! not own; an infrastructure failure after the claim releases the step (RUNNING → READY) so a redelivery can retry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::RetryPolicy;
use crate::domain::manifest::{chart_path, manifest_path};
use crate::domain::request::build_request;
use crate::domain::step::{rfc3339, validate_step, ValidStep};
use crate::domain::{
    ChartRequest, ClaimOutcome, ClaimParams, ErrorCode, Manifest, ManifestFailure, ManifestItem, ObjectRef, PatchOutcome,
    RunId, StepId, StepPatch, StepSelector, TemplateId, WorkerId,
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
    pub concurrency: usize,
    pub lease: Duration,
    pub retry: RetryPolicy,
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
        Self { code, message: message.into(), http_status: None, details: None }
    }

    fn from_api(e: ChartApiError) -> Self {
        let details = match &e {
            ChartApiError::MockMissing { details, .. } => Some(details.clone()),
            _ => None,
        };
        Self { code: e.code(), http_status: e.http_status(), message: e.to_string(), details }
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
    /// Nothing to do (no claimable step, already running or finished, run gone); nothing was written.
    NoOp { run_id: String, step_id: Option<String>, reason: String },
    /// The delivery asked for something invalid (explicit step missing or not CHART_EXPORT); nothing was written.
    Rejected { run_id: String, step_id: Option<String>, code: ErrorCode, message: String },
    /// The step was finished by us but another worker took it over (our lease expired) before we could finalize.
    LostClaim { run_id: String, step_id: String, reason: String },
}

impl StepReport {
    /// Exit status meaning: SUCCEEDED or a no-op is fine; everything else is not.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::NoOp { .. })
    }
}

/// An infrastructure failure that a redelivery may fix (the step, if claimed, has been released).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
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

fn noop(run: &RunId, step: Option<&StepId>, reason: impl Into<String>) -> StepReport {
    StepReport::NoOp { run_id: run.to_string(), step_id: step.map(|s| s.to_string()), reason: reason.into() }
}

impl StepRun<'_> {
    async fn run(&self, selector: &StepSelector) -> Result<StepReport, CoreError> {
        let w = self.w;
        let params = ClaimParams {
            worker: w.settings.worker_id.clone(),
            now: w.clock.now(),
            lease: chrono::Duration::from_std(w.settings.lease).unwrap_or(chrono::Duration::minutes(15)),
        };
        let outcome = w.flow_runs.claim_step(self.run, selector, &params).await?;
        let outcome_name = match &outcome {
            ClaimOutcome::Claimed { reclaimed: true, .. } => "reclaimed",
            ClaimOutcome::Claimed { .. } => "claimed",
            ClaimOutcome::RunNotFound => "run_not_found",
            ClaimOutcome::NoClaimableStep => "no_claimable_step",
            ClaimOutcome::StepNotFound { .. } => "step_not_found",
            ClaimOutcome::WrongStepType { .. } => "wrong_step_type",
            ClaimOutcome::AlreadyRunning { .. } => "already_running",
            ClaimOutcome::AlreadyFinished { .. } => "already_finished",
            ClaimOutcome::NotClaimable { .. } => "not_claimable",
        };
        info!(event = "claim_attempt", outcome = outcome_name, worker = %w.settings.worker_id, "claim {outcome_name}");
        let run = self.run;
        let (step_id, doc) = match outcome {
            ClaimOutcome::Claimed { step_id, run, .. } => (step_id, run),
            ClaimOutcome::RunNotFound => return Ok(noop(run, None, format!("flow_runs/{run} does not exist"))),
            ClaimOutcome::NoClaimableStep => return Ok(noop(run, None, "no READY CHART_EXPORT step")),
            ClaimOutcome::AlreadyRunning { step_id, claimed_by } => {
                let by = claimed_by.unwrap_or_else(|| "an unknown worker".into());
                return Ok(noop(run, Some(&step_id), format!("step {step_id} is already RUNNING (claimed by {by})")));
            }
            ClaimOutcome::AlreadyFinished { step_id, status } => {
                return Ok(noop(run, Some(&step_id), format!("step {step_id} is already {status}")));
            }
            ClaimOutcome::NotClaimable { step_id, status } => {
                return Ok(noop(run, Some(&step_id), format!("step {step_id} is {status}, not READY")));
            }
            ClaimOutcome::StepNotFound { step_id } => {
                let message = format!("stepId: flow_runs/{run} has no step \"{step_id}\"");
                return Ok(StepReport::Rejected {
                    run_id: run.to_string(),
                    step_id: Some(step_id.to_string()),
                    code: ErrorCode::ValidationFailed,
                    message,
                });
            }
            ClaimOutcome::WrongStepType { step_id, step_type } => {
                let message = format!("steps.{step_id}.stepType: is {step_type:?}, not CHART_EXPORT");
                return Ok(StepReport::Rejected {
                    run_id: run.to_string(),
                    step_id: Some(step_id.to_string()),
                    code: ErrorCode::ValidationFailed,
                    message,
                });
            }
        };
        tracing::Span::current().record("stepId", step_id.as_str());
        match self.claimed(&step_id, &doc).await {
            Ok(report) => Ok(report),
            Err(e) => {
                // Infrastructure failed mid-way: hand the step back so a redelivery (or another worker) can run it.
                error!(event = "step_released", error = %e, "releasing the step after an infrastructure failure");
                let mut fields = BTreeMap::new();
                fields.insert("status".to_owned(), Some(json!("READY")));
                for f in ["claimedBy", "leaseExpiresAt", "startedAt"] {
                    fields.insert(f.to_owned(), None);
                }
                let patch = StepPatch { step_id: step_id.clone(), fields };
                if let Err(e2) = w.flow_runs.patch_owned_step(run, &w.settings.worker_id, &patch).await {
                    error!(event = "finalize_failed", error = %e2, "could not release the step; it will be reclaimable after its lease");
                }
                Err(e)
            }
        }
    }

    /// Everything after a successful claim. `Err` only for infrastructure failures worth a redelivery.
    async fn claimed(&self, step_id: &StepId, doc: &Value) -> Result<StepReport, CoreError> {
        let w = self.w;
        let step = &doc["steps"][step_id.as_str()];
        let valid = match validate_step(doc, step_id, step) {
            Ok(v) => v,
            Err(invalid) => {
                let f = ChartFailure {
                    code: ErrorCode::ValidationFailed,
                    message: invalid.to_string(),
                    http_status: None,
                    details: Some(json!({ "field": invalid.field })),
                };
                return self.finalize_failed(step_id, f, Vec::new()).await;
            }
        };
        if let Some(o) = self.observer {
            o.charts_planned(valid.requests.len());
        }
        let templates = w.templates.get_templates(&valid.requests).await?;
        // Per-request preparation: a missing or malformed template fails that request only.
        let mut slots: Vec<Result<ChartRequest, ChartFailure>> = valid
            .requests
            .iter()
            .map(|id| match templates.get(id) {
                None => Err(ChartFailure::new(ErrorCode::ValidationFailed, format!("chart_templates/{id} does not exist"))),
                // Checked as Chart-IMG would before any quota is reserved for it (chart-img-spec).
                Some(t) => build_request(id, t, &valid.symbol, valid.timeframe, &w.settings.timezone)
                    .and_then(|r| w.accounts.check(r))
                    .map_err(|e| ChartFailure::new(ErrorCode::ValidationFailed, e.to_string())),
            })
            .collect();
        let sendable = slots.iter().filter(|s| s.is_ok()).count() as u32;
        let ledger = QuotaLedger::new(&w.accounts, w.usage.as_ref(), w.clock.as_ref());
        if sendable > 0 {
            if w.accounts.is_empty() {
                for s in slots.iter_mut().filter(|s| s.is_ok()) {
                    *s = Err(ChartFailure::new(ErrorCode::ChartApiFailed, "no Chart-IMG account is configured (CHART_IMG_ACCOUNTS_JSON)"));
                }
            } else {
                ledger.reserve(sendable).await?;
            }
        }
        let remaining = std::sync::atomic::AtomicU32::new(sendable);
        let results: Vec<(TemplateId, Result<ManifestItem, ChartFailure>)> = futures::stream::iter(
            valid.requests.iter().cloned().zip(slots),
        )
        .map(|(id, slot)| {
            let ledger = &ledger;
            let valid = &valid;
            let remaining = &remaining;
            async move {
                let out = match slot {
                    Err(f) => Err(f),
                    Ok(req) => {
                        let r = self.render_and_store(&req, valid, ledger, remaining).await;
                        remaining.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        r
                    }
                };
                if let Some(o) = self.observer {
                    o.chart_done(&id, out.is_ok());
                }
                (id, out)
            }
        })
        .buffered(w.settings.concurrency.max(1))
        .collect()
        .await;
        let spent = ledger.finish().await;
        info!(event = "quota_settled", spent = ?spent.iter().map(|(a, n)| format!("{a}={n}")).collect::<Vec<_>>(), "quota settled");

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
        if (items.len() as u32) < valid.min_images {
            let first = first_failure.unwrap_or_else(|| ChartFailure::new(ErrorCode::ChartApiFailed, "no chart was rendered"));
            let message = format!(
                "{} of {} charts rendered, {} required; first failure: {} {}",
                items.len(),
                valid.requests.len(),
                valid.min_images,
                failures.first().map(|f| f.chart_template_id.as_str()).unwrap_or("-"),
                first.message
            );
            let details = json!({ "failures": failures, "firstFailure": first.details });
            let f = ChartFailure { code: first.code, message, http_status: first.http_status, details: Some(details) };
            return self.finalize_failed(step_id, f, failures).await;
        }
        let manifest = Manifest {
            schema_version: 1,
            run_id: self.run.to_string(),
            step_id: step_id.to_string(),
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
                let f = ChartFailure::new(ErrorCode::ValidationFailed, format!("manifest does not match its schema: {e}"));
                return self.finalize_failed(step_id, f, failures).await;
            }
        };
        let obj = ObjectRef { bucket: w.settings.bucket.clone(), path: manifest_path(self.run, step_id) };
        match w.artifacts.put(&obj, Bytes::from(bytes), "application/json", WriteMode::CreateOnly).await {
            Ok(()) => info!(event = "manifest_written", uri = %obj, items = items.len(), failures = failures.len(), "manifest written"),
            Err(ArtifactError::AlreadyExists(_)) => {
                // A manifest is only ever written for a successful step, create-only. Finding one means an earlier
                // holder of this step (whose lease expired before it could finalize) already succeeded: point at it.
                warn!(event = "manifest_written", uri = %obj, existing = true, "manifest already exists; keeping the first one");
            }
            Err(e) => {
                let f = ChartFailure::new(ErrorCode::ManifestWriteFailed, format!("cannot write {obj}: {e}"));
                return self.finalize_failed(step_id, f, failures).await;
            }
        }
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), Some(json!("SUCCEEDED")));
        fields.insert("finishedAt".to_owned(), Some(json!(rfc3339(w.clock.now()))));
        fields.insert("outputsManifestGcsUri".to_owned(), Some(json!(obj.uri())));
        let report = StepReport::Succeeded {
            run_id: self.run.to_string(),
            step_id: step_id.to_string(),
            manifest_uri: obj.uri(),
            requested: valid.requests.len() as u32,
            items,
            failures,
        };
        self.finalize(step_id, fields, report).await
    }

    async fn finalize_failed(&self, step_id: &StepId, f: ChartFailure, failures: Vec<ManifestFailure>) -> Result<StepReport, CoreError> {
        let mut error = json!({ "code": f.code, "message": f.message });
        if let Some(d) = &f.details {
            error["details"] = d.clone();
        }
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), Some(json!("FAILED")));
        fields.insert("finishedAt".to_owned(), Some(json!(rfc3339(self.w.clock.now()))));
        fields.insert("error".to_owned(), Some(error));
        let report = StepReport::Failed {
            run_id: self.run.to_string(),
            step_id: step_id.to_string(),
            code: f.code,
            message: f.message,
            failures,
        };
        self.finalize(step_id, fields, report).await
    }

    async fn finalize(&self, step_id: &StepId, fields: BTreeMap<String, Option<Value>>, report: StepReport) -> Result<StepReport, CoreError> {
        let w = self.w;
        let patch = StepPatch { step_id: step_id.clone(), fields };
        let status = match &report {
            StepReport::Succeeded { .. } => "SUCCEEDED",
            _ => "FAILED",
        };
        match w.flow_runs.patch_owned_step(self.run, &w.settings.worker_id, &patch).await {
            Ok(PatchOutcome::Applied) => {
                info!(event = "step_completed", status, "step {status}");
                Ok(report)
            }
            Ok(other) => {
                let reason = format!("finalize skipped, the step is no longer ours: {other:?}");
                warn!(event = "finalize_failed", status, reason = %reason, "finalize skipped");
                Ok(StepReport::LostClaim { run_id: self.run.to_string(), step_id: step_id.to_string(), reason })
            }
            Err(e) => {
                error!(event = "finalize_failed", status, error = %e, "finalize failed");
                Err(e.into())
            }
        }
    }

    async fn render_and_store(
        &self,
        req: &ChartRequest,
        valid: &ValidStep,
        ledger: &QuotaLedger<'_>,
        remaining: &std::sync::atomic::AtomicU32,
    ) -> Result<ManifestItem, ChartFailure> {
        let w = self.w;
        let image = self.render_with_retry(req, ledger, remaining).await?;
        let generated_at: DateTime<Utc> = w.clock.now();
        let path = chart_path(self.run, valid.timeframe, &req.template_id, &valid.symbol, generated_at, image.format);
        let obj = ObjectRef { bucket: w.settings.bucket.clone(), path };
        let sha256 = hex::encode(Sha256::digest(&image.bytes));
        let size = image.bytes.len() as u64;
        w.artifacts
            .put(&obj, image.bytes, image.format.content_type(), WriteMode::Overwrite)
            .await
            .map_err(|e| ChartFailure::new(ErrorCode::GcsWriteFailed, format!("cannot write {obj}: {e}")))?;
        Ok(ManifestItem {
            chart_template_id: req.template_id.to_string(),
            gcs_uri: obj.uri(),
            content_type: image.format.content_type().to_owned(),
            bytes: size,
            sha256,
            generated_at: rfc3339(generated_at),
        })
    }

    /// Attempts with backoff on throttles and transient failures. Inside one attempt, `429 Limit Exceeded` moves
    /// straight to the next account without waiting.
    async fn render_with_retry(
        &self,
        req: &ChartRequest,
        ledger: &QuotaLedger<'_>,
        remaining: &std::sync::atomic::AtomicU32,
    ) -> Result<crate::ports::RenderedChart, ChartFailure> {
        enum AttemptError {
            Api(ChartApiError),
            Fatal(ChartFailure),
        }
        let w = self.w;
        let policy = w.settings.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_retries)
            .with_total_delay(Some(policy.max_total_delay))
            .with_jitter();
        let template = req.template_id.as_str();
        let attempt = || async {
            loop {
                let top_up = remaining.load(std::sync::atomic::Ordering::SeqCst);
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
                    Err(e @ AcquireError::Store(_)) => return Err(AttemptError::Fatal(ChartFailure::new(ErrorCode::ChartApiFailed, e.to_string()))),
                };
                account.until_ready().await;
                let id = &account.config.id;
                info!(event = "chart_api_call_start", chartTemplateId = template, account = %id, "calling Chart-IMG");
                let started = std::time::Instant::now();
                let call = ChartCall { body: &req.body, format: req.format, account: id, api_key: &account.config.api_key };
                let result = w.renderer.render(&call).await;
                let ms = started.elapsed().as_millis() as u64;
                match &result {
                    Ok(img) => info!(event = "chart_api_call_finished", chartTemplateId = template, account = %id, ok = true, bytes = img.bytes.len(), ms, "Chart-IMG answered an image"),
                    Err(e) => {
                        let error = w.accounts.redact(&e.to_string());
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
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, AttemptError::Api(api) if api.is_retryable()))
            .notify(|e, after| {
                if let AttemptError::Api(api) = e {
                    let error = w.accounts.redact(&api.to_string());
                    warn!(event = "chart_api_retry", chartTemplateId = template, error = %error, after_ms = after.as_millis() as u64, "retrying Chart-IMG call");
                }
            })
            .await
            .map_err(|e| {
                let mut f = match e {
                    AttemptError::Api(api) => ChartFailure::from_api(api),
                    AttemptError::Fatal(f) => f,
                };
                f.message = w.accounts.redact(&f.message);
                if let Some(d) = f.details.take() {
                    let text = w.accounts.redact(&d.to_string());
                    f.details = Some(serde_json::from_str(&text).unwrap_or(Value::String(text)));
                }
                f
            })
    }
}
