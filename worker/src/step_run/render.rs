//! Rendering: templates to Chart-IMG bodies, quota, the calls (rate-limited, retried, rotated across accounts) and
//! the uploads.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::{info, warn};

use super::lease::{Guard, Stop};
use super::outcome::{ChartFailure, Halt};
use super::StepRun;
use crate::domain::manifest::chart_path;
use crate::domain::request::build_request;
use crate::domain::step::{rfc3339, ValidStep};
use crate::domain::text::{clip_details, clip_error};
use crate::domain::{ChartRequest, ErrorCode, ImageFormat, ManifestItem, ObjectRef, TemplateId};
use crate::ports::{ArtifactError, ChartApiError, ChartCall, ObjectMetadata, StoreError, WriteMode};
use crate::quota::{Account, AllExhausted, QuotaLedger};

/// Custom metadata of a stored chart: the SHA-256 of its bytes, and of the request it was rendered from.
const META_SHA256: &str = "sha256";
const META_REQUEST: &str = "chartRequestSha256";

/// A chart of the step as this attempt sees it.
pub(super) enum Slot {
    /// Still to render (and to pay for).
    Render(ChartRequest),
    /// Stored by an earlier attempt, bytes as recorded: reused as it is.
    Stored(ManifestItem),
    Failed(ChartFailure),
}

/// The `generatedAt` of the step's charts (set by [`StepRun::stages`] before any chart is named).
pub(super) fn charts_at(valid: &ValidStep) -> DateTime<Utc> {
    valid.charts_generated_at.unwrap_or_default()
}

/// What identifies the rendering a stored chart came from: its Chart-IMG body and format.
/// When the call on `account` may go: `slot_at` while that slot is still good (within [`Account::slot_lasts`] of
/// its time, the proof in pacing.rs), else the time of a fresh slot waited for. A stop ends the wait at once (the
/// caller then checks the guard); only the shared pacing's store can fail.
async fn fresh_slot(account: &Account, slot_at: Instant, guard: &Guard) -> Result<Instant, StoreError> {
    if slot_at.elapsed() <= account.slot_lasts() {
        return Ok(slot_at);
    }
    tokio::select! {
        r = account.until_ready() => r.map(|()| Instant::now()),
        _ = guard.stopped() => Ok(Instant::now()),
    }
}

fn request_digest(req: &ChartRequest) -> String {
    let body = serde_json::to_vec(&req.body).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(&body);
    h.update(req.format.extension().as_bytes());
    hex::encode(h.finalize())
}

impl StepRun<'_> {
    /// Stage 4: one Chart-IMG request per template; a missing or malformed template fails that request only.
    pub(super) async fn prepare_requests(
        &self,
        valid: &ValidStep,
    ) -> Result<Vec<Result<ChartRequest, ChartFailure>>, Halt> {
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

    /// Stage 5: the charts an earlier attempt of this step already stored. Their names are fixed per step
    /// ([`ValidStep::charts_generated_at`]), so each is looked up where this attempt would write it; one whose bytes
    /// match the `sha256` recorded with it, rendered from the same request, is reused without a call. Any other
    /// object under the name is rendered again and replaced.
    pub(super) async fn find_stored(
        &self,
        valid: &ValidStep,
        slots: Vec<Result<ChartRequest, ChartFailure>>,
    ) -> Result<Vec<Slot>, Halt> {
        let looked: Vec<Result<Slot, Halt>> = futures::stream::iter(slots)
            .map(|slot| async move {
                let req = match slot {
                    Err(f) => return Ok(Slot::Failed(f)),
                    Ok(req) => req,
                };
                let obj = self.chart_object(valid, &req.template_id, req.format);
                let stored = match self.w.artifacts.get(&obj).await {
                    Ok(Some(o)) => o,
                    Ok(None) => return Ok(Slot::Render(req)),
                    Err(e @ ArtifactError::Unavailable(_)) => {
                        return Err(Halt::Transient {
                            code: ErrorCode::GcsWriteFailed,
                            message: format!("cannot look for the stored chart {obj}: {e}"),
                        })
                    }
                    Err(e) => {
                        warn!(event = "chart_stored_unreadable", uri = %obj, error = %e, "cannot read the stored chart; rendering it again");
                        return Ok(Slot::Render(req));
                    }
                };
                let sha256 = hex::encode(Sha256::digest(&stored.bytes));
                let recorded = stored.metadata.get(META_SHA256).map(String::as_str);
                let same_request = stored.metadata.get(META_REQUEST).map(String::as_str) == Some(&request_digest(&req));
                if recorded != Some(sha256.as_str()) || !same_request {
                    warn!(event = "chart_stored_mismatch", uri = %obj, recorded = recorded.unwrap_or("-"), actual = %sha256, sameRequest = same_request, "a stored chart does not match its record; rendering it again");
                    return Ok(Slot::Render(req));
                }
                info!(event = "chart_reused", chartTemplateId = %req.template_id, uri = %obj, "reusing the chart an earlier attempt stored");
                Ok(Slot::Stored(ManifestItem {
                    chart_template_id: req.template_id.to_string(),
                    gcs_uri: obj.uri(),
                    content_type: req.format.content_type().to_owned(),
                    bytes: stored.bytes.len() as u64,
                    sha256,
                    generated_at: rfc3339(charts_at(valid)),
                }))
            })
            .buffered(8)
            .collect()
            .await;
        looked.into_iter().collect()
    }

    /// Where this step's chart of `template` lives (contract §6, with the step's fixed `generatedAt`).
    pub(super) fn chart_object(&self, valid: &ValidStep, template: &TemplateId, format: ImageFormat) -> ObjectRef {
        ObjectRef {
            bucket: self.w.settings.bucket.clone(),
            path: chart_path(
                self.run,
                valid.timeframe,
                template,
                &valid.symbol,
                charts_at(valid),
                format,
            ),
        }
    }

    /// Every object this step's charts could be stored as (each template in each format).
    pub(super) fn step_chart_objects<'t>(
        &self,
        valid: &ValidStep,
        templates: impl IntoIterator<Item = &'t TemplateId>,
    ) -> Vec<ObjectRef> {
        templates
            .into_iter()
            .flat_map(|t| [ImageFormat::Png, ImageFormat::Jpeg].map(|f| self.chart_object(valid, t, f)))
            .collect()
    }

    /// Stage 6: the stops and the accounts checked before any call. Quota is not reserved here: each call takes its
    /// unit from the key it goes to, once it holds that key's rate slot ([`QuotaLedger`]).
    pub(super) fn before_calls(&self, mut slots: Vec<Slot>, guard: &Guard) -> Result<Vec<Slot>, Halt> {
        if !slots.iter().any(|s| matches!(s, Slot::Render(_))) {
            return Ok(slots);
        }
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
        if self.w.accounts.is_empty() {
            for s in slots.iter_mut().filter(|s| matches!(s, Slot::Render(_))) {
                *s = Slot::Failed(ChartFailure::new(
                    ErrorCode::ChartApiFailed,
                    "no Chart-IMG account is configured (CHART_IMG_ACCOUNTS_JSON)",
                ));
            }
        }
        Ok(slots)
    }

    /// Stage 7: render and upload every chart still missing, as many at a time as the accounts' rates use at the
    /// latency seen ([`AccountPool::in_flight`], at most `concurrency`); stored ones are taken as they are.
    pub(super) async fn render_all(
        &self,
        valid: &ValidStep,
        ledger: &QuotaLedger<'_>,
        slots: Vec<Slot>,
        guard: &Guard,
    ) -> Vec<(TemplateId, Result<ManifestItem, ChartFailure>)> {
        futures::stream::iter(valid.requests.iter().cloned().zip(slots))
            .map(|(id, slot)| async move {
                let out = match slot {
                    Slot::Failed(f) => Err(f),
                    Slot::Stored(item) => Ok(item),
                    Slot::Render(req) => self.render_and_store(&req, valid, ledger, guard).await,
                };
                if let Some(o) = self.observer {
                    o.chart_done(&id, out.is_ok());
                }
                (id, out)
            })
            .buffered(self.w.accounts.in_flight(self.w.settings.concurrency))
            .collect()
            .await
    }

    pub(super) async fn render_and_store(
        &self,
        req: &ChartRequest,
        valid: &ValidStep,
        ledger: &QuotaLedger<'_>,
        guard: &Guard,
    ) -> Result<ManifestItem, ChartFailure> {
        let w = self.w;
        let work = async {
            let image = self.render_with_retry(req, ledger, guard).await?;
            let obj = self.chart_object(valid, &req.template_id, image.format);
            let sha256 = hex::encode(Sha256::digest(&image.bytes));
            let size = image.bytes.len() as u64;
            // The record a later attempt checks before reusing the object instead of paying for it again.
            let metadata = ObjectMetadata::from([
                (META_SHA256.to_owned(), sha256.clone()),
                (META_REQUEST.to_owned(), request_digest(req)),
            ]);
            let put = w.artifacts.put_with(
                &obj,
                image.bytes,
                image.format.content_type(),
                WriteMode::Overwrite,
                &metadata,
            );
            put.await.map_err(|e| {
                let message = clip_error(&format!("cannot write {obj}: {e}"));
                match e {
                    ArtifactError::Unavailable(_) => {
                        ChartFailure::transient(ErrorCode::GcsWriteFailed, ErrorCode::GcsWriteFailed, message)
                    }
                    _ => ChartFailure::new(ErrorCode::GcsWriteFailed, message),
                }
            })?;
            self.rendered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(ManifestItem {
                chart_template_id: req.template_id.to_string(),
                gcs_uri: obj.uri(),
                content_type: image.format.content_type().to_owned(),
                bytes: size,
                sha256,
                generated_at: rfc3339(charts_at(valid)),
            })
        };
        tokio::select! {
            biased;
            r = work => r,
            // On shutdown or a lost claim whatever is left (a retry's backoff, an upload) is abandoned. Callers
            // queued for a rate slot have given their unit back already: they stop at the first stop of any kind.
            _ = guard.abandon() => Err(ChartFailure::new(ErrorCode::ChartApiFailed, "abandoned: the step was stopped mid-call")),
        }
    }

    /// Attempts with backoff on throttles and transient failures (the one [`RetryPolicy`]). Inside one attempt,
    /// `429 Limit Exceeded` moves straight to the next account without waiting. No attempt starts once the step is
    /// stopped (deadline, shutdown, lost claim).
    pub(super) async fn render_with_retry(
        &self,
        req: &ChartRequest,
        ledger: &QuotaLedger<'_>,
        guard: &Guard,
    ) -> Result<crate::ports::RenderedChart, ChartFailure> {
        enum AttemptError {
            Api(ChartApiError),
            /// The rate window could not be reserved (the store did not answer): retried like a 5xx, and if it
            /// never heals the step is released, not failed.
            Window(String),
            Fatal(ChartFailure),
        }
        let w = self.w;
        let template = req.template_id.as_str();
        // The retry budget runs from the first call sent, not from the wait for the first rate slot.
        let first_call: std::sync::Mutex<Option<tokio::time::Instant>> = Default::default();
        // The rate window could not be had: nothing was sent, and the attempt is retried like a 5xx.
        let window_failed = |account: &crate::domain::AccountId, e: &crate::ports::StoreError| {
            AttemptError::Window(format!("cannot reserve a rate window for {account}: {e}"))
        };
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
                let exhausted = |names: String| {
                    let mut f = ChartFailure::new(
                        ErrorCode::ChartApiLimitExceeded,
                        format!("every Chart-IMG account is exhausted for today ({names})"),
                    );
                    f.http_status = Some(429);
                    AttemptError::Fatal(f)
                };
                // The key that sends soonest among those that fit; its rate slot first, the unit after, so a caller
                // stopped while it waits holds no quota.
                let queued = match ledger.choose(req.needs) {
                    Ok(q) => q,
                    Err(AllExhausted(names)) => return Err(exhausted(names)),
                };
                let account = queued.account();
                // The unit's reservation (when the process holds none on the key) runs in the last moments of the
                // caller's wait for its slot.
                let waited = ledger.until_slot(&queued);
                let ready = tokio::select! {
                    r = waited => r,
                    // Still queued for a rate slot at the deadline, SIGTERM or a lost claim: nothing taken, nothing sent.
                    _ = guard.stopped() => continue,
                };
                if guard.current().is_some() {
                    continue;
                }
                // The slot's own time, not when the wait came back: the unit's reservation may have returned after it.
                let slot_at = match ready {
                    Ok(at) => at,
                    // No call was sent and no unit taken: the attempt is retried like a 5xx.
                    Err(e) => return Err(window_failed(&account.config.id, &e)),
                };
                // A slot is only good near its time (the proof in pacing.rs). One that went stale while the unit's
                // reservation ran (a frozen or busy usage document) is replaced by a fresh one before the unit is
                // taken: every caller queued behind a slow reservation comes back stale at once, and each would
                // otherwise hold a unit while it waits its turn, so a process killed then left one unit counted per
                // waiting caller instead of at most one reservation (ARCHITECTURE.md, "A dead process").
                let slot_at = match fresh_slot(account, slot_at, guard).await {
                    Ok(at) => at,
                    Err(e) => return Err(window_failed(&account.config.id, &e)),
                };
                if guard.current().is_some() {
                    continue;
                }
                let unit = match ledger.take(queued).await {
                    Ok(Some(u)) => u,
                    // The key's quota for today is used up: the step stops choosing it, and the call picks another.
                    Ok(None) => continue,
                    // The store's failure, not Chart-IMG's: transient ones release the step, a usage document the
                    // worker cannot read fails it.
                    Err(e) => {
                        let message = format!("cannot reserve Chart-IMG quota: {e}");
                        return Err(AttemptError::Fatal(if e.is_transient() {
                            ChartFailure::transient(ErrorCode::ChartApiFailed, ErrorCode::StoreFailed, message)
                        } else {
                            ChartFailure::new(ErrorCode::StoreFailed, message)
                        }));
                    }
                };
                // Still only near its slot: a call sent later than the pacing allows (the take had to reserve, and that
                // took long) could meet the next caller's on-time call closer than the key's rate and burst allow, so
                // it waits for a fresh slot, unit in hand (the proof in pacing.rs).
                if let Err(e) = fresh_slot(account, slot_at, guard).await {
                    ledger.refund(unit).await;
                    return Err(window_failed(&account.config.id, &e));
                }
                // A stop that came while this caller reserved: the unit goes back, nothing is sent.
                if guard.current().is_some() {
                    ledger.refund(unit).await;
                    continue;
                }
                let id = &account.config.id;
                info!(event = "chart_api_call_start", chartTemplateId = template, account = %id, "calling Chart-IMG");
                let started = tokio::time::Instant::now();
                first_call
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(started);
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
                    Err(ChartApiError::LimitExceeded) => ledger.exhaust(unit).await,
                    Err(e) => return Err(AttemptError::Api(e)),
                    Ok(img) => return Ok(img),
                }
            }
        };
        w.settings
            .retry
            .run_timed_from(
                || *first_call.lock().unwrap_or_else(|p| p.into_inner()),
                attempt,
                |e| matches!(e, AttemptError::Window(_)) || matches!(e, AttemptError::Api(api) if api.is_retryable()),
                |e, after| {
                    let error = match e {
                        AttemptError::Api(api) => clip_error(&w.accounts.redact(&api.to_string())),
                        AttemptError::Window(m) => clip_error(m),
                        AttemptError::Fatal(_) => return,
                    };
                    warn!(event = "chart_api_retry", chartTemplateId = template, error = %error, after_ms = after.as_millis() as u64, "retrying Chart-IMG call");
                },
            )
            .await
            .map_err(|e| {
                let mut f = match e {
                    AttemptError::Api(api) => ChartFailure::from_api(api),
                    AttemptError::Window(m) => ChartFailure::transient(ErrorCode::ChartApiFailed, ErrorCode::StoreFailed, m),
                    AttemptError::Fatal(f) => f};
                f.message = clip_error(&w.accounts.redact(&f.message));
                if let Some(d) = f.details.take() {
                    let text = w.accounts.redact(&d.to_string());
                    f.details = Some(clip_details(serde_json::from_str(&text).unwrap_or(Value::String(text))));
                }
                f
            })
    }
}
