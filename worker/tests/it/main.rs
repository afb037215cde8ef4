//! The worker's one integration-test binary. Modules:
//! - `support`: in-memory worker, scripted renderer, fixed clock.
//! - `core`: the step flow over in-memory adapters.
//! - `client`: the Chart-IMG HTTP client against `wiremock`.
//! - `cli`: the built binary run on files.
//! - `lifecycle`: lease renewal, deadline, release and give-up, shutdown, on a paused clock.
//! - `report`: `worker-chart-export report` on a step rendered against mock-chart-img, in headless Chromium.

mod cli;
mod client;
mod contract;
mod core;
mod deploy;
mod emulators;
mod lifecycle;
mod modes;
mod report;
mod serve;
mod support;
