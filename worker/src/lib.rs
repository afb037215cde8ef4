//! `worker_chart_export`: claims a READY `CHART_EXPORT` step of `flow_runs/{runId}`, renders its charts through
//! Chart-IMG with a pool of accounts and daily quotas, stores the images and a manifest, and finalizes the step.
//!
//! # The front door
//! What other crates (the scenario runner, the harness, fleet-sim, the benches, the integration tests) may use;
//! every other module is private, so a path not listed here does not compile outside the crate.
//! - The step: [`run_chart_export_step`] → [`StepReport`] or [`CoreError`], run with a [`Worker`] (the ports and
//!   [`CoreSettings`]; built with [`Worker::with_documents`], or [`Worker::on_google_cloud`] from [`config::Settings`]),
//!   stopped early by a [`Shutdown`].
//! - [`domain`]: ids, the step document and its pure decisions, requests, the manifest. No I/O.
//! - [`ports`]: the traits a step talks through; [`adapters`]: their embedded (memory, local files) and Google Cloud
//!   implementations; [`AccountPool`] (the keys and their pacing), [`HttpChartImg`] and [`CassetteChartImg`] (the
//!   renderers), [`RetryPolicy`].
//! - [`config`]: [`config::Settings`], read from the environment once.
//! - [`entry`]: the binary's [`entry::main_with`], [`entry::cli`] (run-local), [`entry::serve`] (the router) and
//!   [`entry::deploy`] (the deployment plan and the trigger types it subscribes to).
//! - The Firestore event wire, shared with the harness's local Eventarc: [`eventarc`] (parse and encode a delivery,
//!   the generated `proto` types) and [`firestore_codec`] (JSON ↔ Firestore values, field paths).
//! - [`ideal_bound`], [`ideal_bound_for`] and [`ideal_bound_in_order`]: the earliest finish the keys allow, which the benches and fleet-sim
//!   judge by.
//!
//! # Inside
//! `step_run/` (the lifecycle, one file per stage), `wiring` (`Worker`), `shutdown`, `quota` (accounts and the
//! per-step ledger), `pacing` (each key's rate, local or shared through rate windows), `chartimg` (the only code that
//! knows Chart-IMG's wire format), `renderers` (which renderer a mode uses), `retry`, `telemetry`, `report` (the HTML
//! page of a finished step).
//!
//! Invariants:
//! - Only `chartimg` knows Chart-IMG's wire format; the domain does no I/O.
//! - A step is finalized SUCCEEDED only after its manifest is written; the manifest is written create-only.
//! - Every write to a flow run is a field-masked patch of `steps.<stepId>` applied only while this worker owns it.
//! - `usageToday` never counts fewer calls than were sent to Chart-IMG.
//! - API keys live in `SecretString` and never reach a log line, an error, a document, a manifest or a cassette.

pub mod adapters;
mod chartimg;
pub mod config;
pub mod domain;
pub mod entry;
pub mod eventarc;
pub mod firestore_codec;
mod pacing;
pub mod ports;
mod quota;
mod renderers;
mod report;
mod retry;
mod shutdown;
mod step_run;
mod telemetry;
mod wiring;

pub use chartimg::{CassetteChartImg, HttpChartImg, MAX_BODY_BYTES};
pub use quota::{ideal_bound, ideal_bound_for, ideal_bound_in_order, AccountPool};
pub use retry::RetryPolicy;
pub use shutdown::Shutdown;
pub use step_run::{run_chart_export_step, CoreError, StepReport};
pub use wiring::{CoreSettings, Worker};
