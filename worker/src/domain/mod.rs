//! The domain: identifiers, the step document, request building, quotas and the manifest.
//! Invariant: nothing in here does I/O; adapters call these functions inside their transactions.

pub mod collections;
pub mod ids;
pub mod manifest;
pub mod rate;
pub mod request;
pub mod step;
pub mod text;
pub mod timeframe;
pub mod usage;

pub use ids::{AccountId, ClaimToken, OpId, RunId, StepId, TemplateId, WorkerId};
pub use manifest::{ErrorCode, Manifest, ManifestFailure, ManifestItem, ObjectRef};
pub use rate::{RateDoc, Window, WindowAsk};
pub use request::{ChartRequest, ImageFormat, PlanNeeds};
pub use step::{ClaimOutcome, ClaimParams, PatchOutcome, ReleaseParams, StepPatch, StepSelector};
pub use timeframe::Timeframe;
pub use usage::{AccountQuota, Grant, OpRecord, UsageDoc};
