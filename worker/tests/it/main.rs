//! The worker's one integration-test binary. Modules:
//! - `support`: in-memory worker, scripted renderer, fixed clock.
//! - `core`: the step flow over in-memory adapters.
//! - `client`: the Chart-IMG HTTP client against `wiremock`.
//! - `cli`: the built binary run on files.
//! - `lifecycle`: lease renewal, deadline, release and give-up, shutdown, on a paused clock.

mod cli;
mod client;
mod contract;
mod core;
mod deploy;
mod lifecycle;
mod modes;
mod emulators;
mod serve;
mod support;
