//! `fleet-sim` refuses bad options with exit 2 and a message naming them, before it starts anything.

use std::process::Command;

fn fleet_sim(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .args(args)
        // Never reached: the options are refused first (nothing listens here).
        .env("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
        .env("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
        .output()
        .expect("fleet-sim runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_timeout_that_is_not_a_positive_number_is_refused_by_name() {
    let (code, err) = fleet_sim(&["--timeout-secs=-1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--timeout-secs must be a positive number of seconds, got -1"),
        "{err}"
    );
}

#[test]
fn no_emulators_is_refused_with_what_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .env_remove("FIRESTORE_EMULATOR_HOST")
        .env_remove("STORAGE_EMULATOR_HOST")
        .output()
        .expect("fleet-sim runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST must be set"),
        "{err}"
    );
}

#[test]
fn chaos_and_judging_options_out_of_range_are_refused_by_name() {
    for (arg, message) in [
        (
            "--freeze-firestore-every-secs=0",
            "--freeze-firestore-every-secs must be a positive number, got 0",
        ),
        (
            "--freeze-max-secs=-2",
            "--freeze-max-secs must be a positive number, got -2",
        ),
        (
            "--max-over-count-pct=-1",
            "--max-over-count-pct must be a number ≥ 0, got -1",
        ),
        (
            "--max-bound-ratio=0",
            "--max-bound-ratio must be a positive number, got 0",
        ),
        (
            "--max-in-order-ratio=-1",
            "--max-in-order-ratio must be a positive number, got -1",
        ),
        (
            "--max-calls-per-chart=0.5",
            "--max-calls-per-chart must be a number ≥ 1 (a chart costs at least one call), got 0.5",
        ),
        (
            "--max-calls-per-chart-beyond-kills=NaN",
            "--max-calls-per-chart-beyond-kills must be a number ≥ 1 (a chart costs at least one call), got NaN",
        ),
    ] {
        let (code, err) = fleet_sim(&[arg]);
        assert_eq!(code, 2, "{arg}: {err}");
        assert!(err.contains(message), "{arg}: {err}");
    }
}
