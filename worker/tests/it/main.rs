//! The worker's one integration-test binary. Modules:
//! - `support`: in-memory worker, scripted renderer, fixed clock.
//! - `core`: the step flow over in-memory adapters.
//! - `lifecycle`: lease renewal, deadline, release and give-up, shutdown, on a paused clock.
//! - `contract`: one suite per port, run against every adapter (memory, local files, the emulators).
//! - `emulators`: the emulator skip-check, unique project and bucket ids.
//! - `client`: the Chart-IMG HTTP client against `wiremock`.
//! - `modes`: record through mock-chart-img, then replay offline.
//! - `serve`: the `serve` router with CloudEvents as Eventarc sends them.
//! - `cli`: the built binary run on files.
//! - `deploy`: `deploy-plan`'s commands and refusals.
//! - `documented_defaults`: worker/README.md's configuration table against `Settings`' defaults.
//! - `report`: `worker-chart-export report` on a step rendered against mock-chart-img, in headless Chromium.

mod cli;
mod client;
mod contract;
mod core;
mod deploy;
mod documented_defaults;
mod emulators;
mod lifecycle;
mod modes;
mod report;
mod serve;
mod support;
