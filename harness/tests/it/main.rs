//! The harness against the real emulators: the local Eventarc, the fault proxies and the `worker-serve` child.
//! Without the emulators each test prints SKIPPED; with `REQUIRE_EMULATORS=1` (or `CI`) it fails instead.

mod binaries;
mod eventarc;
mod logging;
mod process;
mod proxy;
mod quota;

/// Where the emulators listen (`FIRESTORE_EMULATOR_HOST`, `STORAGE_EMULATOR_HOST`), or `None` after printing
/// SKIPPED — a failure when the run requires them.
pub fn emulators(test: &str) -> Option<(String, String)> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (get("FIRESTORE_EMULATOR_HOST"), get("STORAGE_EMULATOR_HOST")) {
        (Some(f), Some(s)) => Some((f, s.trim_start_matches("http://").trim_end_matches('/').to_owned())),
        _ => {
            let required = chromium_test::required();
            assert!(
                !required,
                "{test}: FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST are not set (REQUIRE_EMULATORS=1)"
            );
            // Past the test harness's output capture, so a skip shows in every run's output.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: the emulators are not running (FIRESTORE_EMULATOR_HOST / STORAGE_EMULATOR_HOST unset)"
            );
            None
        }
    }
}

/// A project id of its own for one test.
pub fn project(prefix: &str) -> String {
    format!("h-{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
