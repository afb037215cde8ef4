//! The domain: identifiers, the step document, request building, quotas and the manifest.
//! Invariant: nothing in here does I/O; adapters call these functions inside their transactions.

pub mod ids;
pub mod manifest;
pub mod request;
pub mod step;
pub mod timeframe;
pub mod usage;

pub use ids::{AccountId, RunId, StepId, TemplateId, WorkerId};
pub use manifest::{ErrorCode, Manifest, ManifestFailure, ManifestItem, ObjectRef};
pub use request::{ChartRequest, ImageFormat, PlanNeeds};
pub use step::{ClaimOutcome, ClaimParams, PatchOutcome, StepPatch, StepSelector};
pub use timeframe::Timeframe;
pub use usage::{AccountQuota, Grant, UsageDoc};
