//! `worker_chart_export`: claims a READY `CHART_EXPORT` step of `flow_runs/{runId}`, renders its charts through
//! Chart-IMG with a pool of accounts and daily quotas, stores the images and a manifest, and finalizes the step.
//!
//! Layout:
//! - [`domain`]: ids, the step document and its pure decisions (claim, ownership, validation), request building,
//!   quota decisions, the manifest and its schema. No I/O.
//! - [`ports`]: the traits the core talks to (flow runs, templates, account usage, chart renderer, artifacts, clock).
//! - [`step_run`]: [`step_run::run_chart_export_step`], the whole flow over the ports, one file per stage;
//!   [`wiring`]: [`Worker`], what a step runs with; [`shutdown`]: the process's stop signal; [`quota`]: accounts and the per-step
//!   quota ledger; [`pacing`]: each key's rate, in this process or shared by every instance through time windows.
//! - [`adapters`]: in-memory and local-file stores (the embedded default), and the Google Cloud adapters.
//! - [`chartimg`]: the Chart-IMG HTTP client and the one function that classifies its answers.
//! - [`config`], [`telemetry`], [`cli`]: the edges of the process; [`report`]: the HTML page of a finished step.
//!
//! Invariants:
//! - Only [`chartimg`] knows Chart-IMG's wire format; the domain does no I/O.
//! - A step is finalized SUCCEEDED only after its manifest is written; the manifest is written create-only.
//! - Every write to a flow run is a field-masked patch of `steps.<stepId>` applied only while this worker owns it.
//! - `usageToday` never counts fewer calls than were sent to Chart-IMG.
//! - API keys live in `SecretString` and never reach a log line, an error, a document, a manifest or a cassette.

pub mod adapters;
pub mod chartimg;
pub mod config;
pub mod domain;
pub mod entry;
pub mod eventarc;
pub mod firestore_codec;
pub mod pacing;
pub mod ports;
pub mod quota;
pub mod renderers;
pub mod report;
pub mod retry;
pub mod shutdown;
pub mod step_run;
pub mod telemetry;
pub mod wiring;

// The entrypoints' usual paths.
#[cfg(feature = "demo")]
pub use crate::entry::demo;
pub use crate::entry::{cli, serve};

pub use crate::step_run::{run_chart_export_step, StepReport};
pub use crate::wiring::{CoreSettings, Worker};
