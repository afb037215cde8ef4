//! What a step run ends with: the report, the core's own errors, and how the stages halt.

use serde::Serialize;
use serde_json::Value;

use crate::domain::{ErrorCode, ManifestFailure, ManifestItem};
use crate::ports::{ChartApiError, StoreError};

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
    /// A transient infrastructure failure (an upload, the quota store, a rate window that could not be reached):
    /// a step short of its images for it is released with this code, not finalized FAILED.
    #[serde(skip)]
    pub retry_as: Option<ErrorCode>,
}

impl ChartFailure {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            http_status: None,
            details: None,
            retry_as: None,
        }
    }

    /// A failure a later attempt may not meet; the step is released with `step_code` when it leaves it short.
    pub(super) fn transient(code: ErrorCode, step_code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            retry_as: Some(step_code),
            ..Self::new(code, message)
        }
    }

    pub(super) fn from_api(e: ChartApiError) -> Self {
        let details = match &e {
            ChartApiError::MockMissing { details, .. } => Some(details.clone()),
            _ => None,
        };
        Self {
            code: e.code(),
            http_status: e.http_status(),
            message: e.to_string(),
            details,
            retry_as: None,
        }
    }

    pub(super) fn store(e: &StoreError) -> Self {
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
    /// Whether a redelivery may help (`serve` answers 503 then, 2xx with an ERROR log otherwise). A store error
    /// before the claim always may: nothing was written, and a refused permission or a missing database heals when
    /// it is fixed (Eventarc keeps redelivering for a day); the core logged a permanent one at ERROR.
    pub fn wants_redelivery(&self) -> bool {
        match self {
            Self::Store(_) => true,
            Self::ReleaseFailed { .. } => true,
            Self::FinalizeRefused { .. } => false,
        }
    }
}

/// How the stages end when they do not produce a report themselves.
pub(super) enum Halt {
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
