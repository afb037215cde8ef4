//! Rendering: templates to Chart-IMG bodies, quota, the calls (rate-limited, retried, rotated across accounts) and
//! the uploads.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::lease::{Guard, Stop};
use super::outcome::{ChartFailure, Halt};
use super::StepRun;
use crate::domain::manifest::chart_path;
use crate::domain::request::build_request;
use crate::domain::step::{rfc3339, ValidStep};
use crate::domain::text::{clip_details, clip_error};
use crate::domain::{ChartRequest, ErrorCode, ManifestItem, ObjectRef, TemplateId};
use crate::ports::{ChartApiError, ChartCall, WriteMode};
use crate::quota::{AcquireError, QuotaLedger};

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

    /// Stage 5: the step's quota in one batched reservation.
    pub(super) async fn reserve_quota(
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
    pub(super) async fn render_all(
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

    pub(super) async fn render_and_store(
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
        _ = guard.abandon() => Err(ChartFailure::new(ErrorCode::ChartApiFailed, "abandoned: the step was stopped mid-call"))}
    }

    /// Attempts with backoff on throttles and transient failures (the one [`RetryPolicy`]). Inside one attempt,
    /// `429 Limit Exceeded` moves straight to the next account without waiting. No attempt starts once the step is
    /// stopped (deadline, shutdown, lost claim).
    pub(super) async fn render_with_retry(
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
                let unit = match ledger.acquire_for(top_up, req.needs).await {
                    Ok(u) => u,
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
                let account = unit.account;
                if let Err(e) = account.until_ready().await {
                    // No call was sent: the unit goes back to the step, and the attempt is retried like a 5xx.
                    ledger.refund(unit).await;
                    let message = format!("cannot reserve a rate window for {}: {e}", account.config.id);
                    return Err(AttemptError::Api(ChartApiError::Transient { status: None, message }));
                }
                if !ledger.is_current(&unit) {
                    // The rate slot came after midnight: the call needs a unit of the new day.
                    ledger.refund(unit).await;
                    continue;
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
                    Err(ChartApiError::LimitExceeded) => ledger.exhaust(unit).await,
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
