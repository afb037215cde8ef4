//! The ports the core talks to. Adapters (in-memory, local files, Firestore, Cloud Storage, Chart-IMG over HTTP,
//! cassette replay) implement them; the core never names an adapter.
//!
//! The traits are shaped after the real services: every state change is one method that an adapter runs as one
//! transaction (which may abort and retry inside the adapter), patches are field-masked, and artifact writes say
//! whether they may replace an object.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::domain::{
    AccountId, AccountQuota, ClaimOutcome, ClaimParams, ClaimToken, ErrorCode, Grant, ImageFormat, ObjectRef, OpId,
    PatchOutcome, RunId, StepPatch, StepSelector, TemplateId, UsageDoc, Window, WindowAsk,
};

/// A failure of a document store. `Unavailable` and `Contention` are worth a redelivery; the others are not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("document store unavailable: {0}")]
    Unavailable(String),
    #[error("transaction gave up after contention: {0}")]
    Contention(String),
    #[error("document {path} cannot be read: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("document store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Contention(_))
    }
}

/// `flow_runs/{runId}`.
#[async_trait]
pub trait FlowRunStore: Send + Sync {
    /// The whole document, or `None` when it does not exist.
    async fn get_run(&self, run: &RunId) -> Result<Option<Value>, StoreError>;

    /// One read-write transaction: read the run, decide with [`crate::domain::step::decide_claim`], write the patch.
    async fn claim_step(
        &self,
        run: &RunId,
        selector: &StepSelector,
        params: &ClaimParams,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Writes `patch` only while the step is RUNNING under the claim `token` ([`crate::domain::step::check_owner`]),
    /// as a field-masked update of `steps.<stepId>.*`. A step already showing the patch's status under `token` (the
    /// first try of a retried commit landed) answers `AlreadyApplied`.
    async fn patch_owned_step(
        &self,
        run: &RunId,
        token: &ClaimToken,
        patch: &StepPatch,
    ) -> Result<PatchOutcome, StoreError>;
}

/// `chart_templates/{chartTemplateId}`.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// The templates that exist among `ids` (one batch read); a missing one is simply absent from the map.
    async fn get_templates(&self, ids: &[TemplateId]) -> Result<HashMap<TemplateId, Value>, StoreError>;
}

/// `chart_img_accounts_usage/{accountId}`. Every method is one transaction over the documents it names.
#[async_trait]
pub trait AccountUsageStore: Send + Sync {
    /// Reserves up to `units` over `accounts` (in order) with [`crate::domain::usage::plan_reservation`].
    /// An empty answer means every account is exhausted or used up today. `op` identifies this reservation across
    /// the retries of its transaction, so it is applied once.
    async fn reserve(
        &self,
        op: &OpId,
        accounts: &[AccountQuota],
        units: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Grant>, StoreError>;

    /// Returns units of a grant that were never sent, once per `op`.
    async fn give_back(
        &self,
        op: &OpId,
        account: &AccountId,
        day: NaiveDate,
        units: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Marks the account exhausted for `day` after a `429 Limit Exceeded`.
    async fn mark_exhausted(
        &self,
        account: &AccountQuota,
        day: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The counter as stored (for reports and tests).
    async fn get_usage(&self, account: &AccountId) -> Result<Option<UsageDoc>, StoreError>;
}

/// `chart_img_rate/{accountId}`: the windows in which one instance at a time calls Chart-IMG with an account's key
/// (the per-key rate shared by every instance). Each reservation is one atomic read-modify-write of that document.
#[async_trait]
pub trait RateWindowStore: Send + Sync {
    /// Reserves the account's next window with [`crate::domain::rate::plan_window`]: it starts when the last
    /// reserved window and its gap end, or at `now`. `ask.op` identifies the reservation across the retries of its
    /// transaction, so a retried commit gets the same window.
    async fn reserve_window(
        &self,
        account: &AccountId,
        ask: &WindowAsk,
        now: DateTime<Utc>,
    ) -> Result<Window, StoreError>;
}

/// Whether an artifact write may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Overwrite,
    /// `ifGenerationMatch=0`: refused with [`ArtifactError::AlreadyExists`] when the object exists.
    CreateOnly,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("object {0} already exists")]
    AlreadyExists(String),
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    #[error("object store error: {0}")]
    Other(String),
}

/// Custom metadata of an object (Cloud Storage's `metadata` map): what its writer recorded about it.
pub type ObjectMetadata = std::collections::BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub bytes: Bytes,
    pub content_type: String,
    /// As written with the object; empty where the store keeps none (`LocalArtifacts`).
    pub metadata: ObjectMetadata,
}

/// Cloud Storage, or a directory standing in for it.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Writes the object with `metadata` recorded beside it (where the store keeps metadata).
    async fn put_with(
        &self,
        obj: &ObjectRef,
        bytes: Bytes,
        content_type: &str,
        mode: WriteMode,
        metadata: &ObjectMetadata,
    ) -> Result<(), ArtifactError>;
    /// Writes the object without custom metadata.
    async fn put(
        &self,
        obj: &ObjectRef,
        bytes: Bytes,
        content_type: &str,
        mode: WriteMode,
    ) -> Result<(), ArtifactError> {
        self.put_with(obj, bytes, content_type, mode, &ObjectMetadata::new())
            .await
    }
    async fn get(&self, obj: &ObjectRef) -> Result<Option<StoredObject>, ArtifactError>;
    /// Removes the object; `false` when there was none.
    async fn delete(&self, obj: &ObjectRef) -> Result<bool, ArtifactError>;
}

/// One call to Chart-IMG, as the core hands it to a renderer.
#[derive(Debug)]
pub struct ChartCall<'a> {
    pub body: &'a Map<String, Value>,
    pub format: ImageFormat,
    pub account: &'a AccountId,
    pub api_key: &'a SecretString,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenderedChart {
    pub bytes: Bytes,
    pub format: ImageFormat,
}

/// Every answer of Chart-IMG that is not an image, classified once (see `chartimg::classify`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChartApiError {
    /// `429 Limit Exceeded`: the account's daily quota is used up; switch accounts, do not retry this one today.
    #[error("429 Limit Exceeded")]
    LimitExceeded,
    /// `429 Too Many Requests`: the per-second throttle; retry after a backoff.
    #[error("429 Too Many Requests")]
    Throttled,
    /// 5xx, 409 Session Disconnected, timeouts and connection failures: retry after a backoff.
    #[error("{}{message}", status.map(|s| format!("{s} ")).unwrap_or_default())]
    Transient { status: Option<u16>, message: String },
    /// Any other 4xx: the request itself is wrong; retrying changes nothing.
    #[error("{status} {message}")]
    Rejected { status: u16, message: String },
    /// A 200 whose body is not the image asked for.
    #[error("200 with a body that is not {expected}: {detail}")]
    NotAnImage { expected: &'static str, detail: String },
    /// `mock` mode: no recorded interaction answers this request.
    #[error("no recorded interaction matches: {message}")]
    MockMissing { message: String, details: Value },
    /// The answer body exceeded the cap; it was not read.
    #[error("{status} with a body larger than {limit} bytes")]
    TooLarge { status: u16, limit: usize },
    /// `record` mode: the call was answered but the cassette write failed. Not retried: that would pay twice.
    #[error("{message}")]
    NotRecorded { message: String },
}

impl ChartApiError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled | Self::Transient { .. })
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::LimitExceeded => ErrorCode::ChartApiLimitExceeded,
            Self::MockMissing { .. } => ErrorCode::ChartApiMockMissing,
            _ => ErrorCode::ChartApiFailed,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::LimitExceeded | Self::Throttled => Some(429),
            Self::Transient { status, .. } => *status,
            Self::Rejected { status, .. } => Some(*status),
            Self::NotAnImage { .. } => Some(200),
            Self::TooLarge { status, .. } => Some(*status),
            Self::MockMissing { .. } | Self::NotRecorded { .. } => None,
        }
    }
}

/// Renders one chart: exactly one attempt, one call sent (or none, for replay). Retries live in the core, because
/// every attempt that reaches Chart-IMG costs a unit of the account's daily quota and the core does that accounting.
#[async_trait]
pub trait ChartRenderer: Send + Sync {
    async fn render(&self, call: &ChartCall<'_>) -> Result<RenderedChart, ChartApiError>;

    /// Called when the step is over: `Err` with a report of the recorded interactions the step did not use, for a
    /// cassette replayed with `CHART_IMG_ALLOW_UNUSED=false`. Other renderers have nothing to say.
    fn check_unused(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Time, injectable so tests control the day and the lease.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Progress of one step, for the CLI's progress bar. Every method has a no-op default.
pub trait StepObserver: Send + Sync {
    fn charts_planned(&self, _total: usize) {}
    fn chart_done(&self, _template: &TemplateId, _ok: bool) {}
}
