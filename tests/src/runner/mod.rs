//! Runs one scenario for real, phase by phase: [`setup`] (a fresh Firestore project and bucket on the emulators,
//! mock-chart-img with the scenario's keys and faults), [`delivery`] (the worker through its real entrypoints —
//! in-process, or `serve` child processes fed by the local Eventarc through fault proxies), [`readback`] (what the
//! run left in Firestore and Cloud Storage, or the local state of `run_local`) and [`checks`] (every `then`). A
//! failure comes back as a report: what differed (expected vs actual per field), the mock's journal, the worker's
//! log lines and the local Eventarc's deliveries.

use std::path::{Path, PathBuf};

use crate::scenario::Scenario;

pub mod checks;
pub mod delivery;
pub mod live;
pub mod readback;
pub mod setup;

/// Where the emulators listen (`host:port`, as in `FIRESTORE_EMULATOR_HOST` / `STORAGE_EMULATOR_HOST`).
#[derive(Debug, Clone)]
pub struct Emulators {
    pub firestore: String,
    pub storage: String,
    /// The `serve` binary of `via: local_eventarc` (the tests crate's `scenario-serve`, through
    /// `CARGO_BIN_EXE_scenario-serve`); `None`: the harness's `worker-serve` next to the running executable.
    pub serve_bin: Option<PathBuf>,
}

impl Emulators {
    pub fn from_env() -> Option<Emulators> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Emulators {
            firestore: get("FIRESTORE_EMULATOR_HOST")?,
            storage: get("STORAGE_EMULATOR_HOST")?,
            serve_bin: None,
        })
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// What a run leaves for the caller: the manifest to snapshot, and the report of every check that failed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub manifest: Option<serde_json::Value>,
    pub differences: Vec<String>,
    pub journal: String,
    /// `local_eventarc`: every delivery attempt, one line each, and the log lines of every `serve` process.
    pub deliveries: String,
    pub process_logs: String,
}

/// Runs `scenario` (from `path`) against `emu`. In-process logs go wherever the caller's subscriber sends them; the
/// caller passes their text back through `logs` once the run is over.
pub async fn run(
    path: &Path,
    scenario: Scenario,
    emu: &Emulators,
    logs: impl Fn() -> String,
) -> anyhow::Result<Outcome> {
    let world = setup::setup(path, scenario, emu).await?;
    let delivered = delivery::deliver(&world).await?;
    let mut all_logs = logs();
    if let Some(live) = &delivered.live {
        all_logs.push('\n');
        all_logs.push_str(&live.process_logs);
    }
    let mut outcome = checks::check(&world, &delivered, &all_logs).await?;
    if let Some(live) = &delivered.live {
        outcome.deliveries = live.describe();
        outcome.process_logs = live.process_logs.clone();
    }
    Ok(outcome)
}
