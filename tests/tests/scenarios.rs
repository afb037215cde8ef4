//! Plays every `scenarios/*.yaml` against the emulators (one insta snapshot of the manifest per scenario), and
//! checks that the snapshot folder holds nothing stale or pending.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cloud_run_kit::{CaptureWriter, CloudLoggingLayer};
use tracing_subscriber::layer::SubscriberExt;

fn emulators() -> Option<tests::runner::Emulators> {
    let mut emu = tests::runner::Emulators::from_env();
    if emu.is_none() {
        let required = chromium_test::required();
        assert!(
            !required,
            "FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST are not set; run the scenarios through scripts/test.sh"
        );
        // Written to stderr directly, past the test harness's capture, so a skip is never mistaken for a pass.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED scenarios: the emulators are not running (FIRESTORE_EMULATOR_HOST / STORAGE_EMULATOR_HOST unset; use scripts/test.sh)");
    }
    if let Some(e) = emu.as_mut() {
        e.serve_bin = Some(env!("CARGO_BIN_EXE_scenario-serve").into());
    }
    emu
}

fn play(path: &Path, emu: &tests::runner::Emulators) -> Option<serde_json::Value> {
    let scenario = tests::scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
    let logs = CaptureWriter::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "info,h2=warn,hyper=warn,tonic=warn,tower=warn",
        ))
        .with(CloudLoggingLayer::new(logs.clone()));
    // One thread for the whole run, so every task logs into this scenario's capture.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = tracing::subscriber::with_default(subscriber, || {
        let l = logs.clone();
        rt.block_on(tests::runner::run(path, scenario, emu, move || l.contents()))
    });
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let outcome = outcome.unwrap_or_else(|e| {
        panic!(
            "scenario {name} could not run: {e:#}\n--- worker log ---\n{}",
            logs.contents()
        )
    });
    if !outcome.differences.is_empty() {
        panic!(
            "scenario {name} failed:\n  {}\n--- mock-chart-img journal ---\n{}\n--- worker log ---\n{}{}",
            outcome.differences.join("\n  "),
            outcome.journal,
            logs.contents(),
            if outcome.deliveries.is_empty() {
                String::new()
            } else {
                format!(
                    "\n--- local eventarc: timeline and deliveries ---\n{}\n--- serve processes ---\n{}",
                    outcome.deliveries, outcome.process_logs
                )
            }
        );
    }
    eprintln!("scenario {name}: ok in {:.1} s", started.elapsed().as_secs_f64());
    outcome.manifest
}

fn utc_seconds(v: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%SZ").is_ok()
}

/// Plays `paths` on `jobs` threads at once (each scenario has its own project, bucket, mock and processes, and its
/// own thread, runtime and log capture); answers each one's manifest or its failure report.
fn play_all(
    paths: Vec<PathBuf>,
    emu: &tests::runner::Emulators,
    jobs: usize,
) -> BTreeMap<PathBuf, Result<Option<serde_json::Value>, String>> {
    let queue = Mutex::new(paths);
    let results = Mutex::new(BTreeMap::new());
    // A failing scenario's report is printed once, by the glob below, not also by the panic hook of its thread.
    let hook = std::sync::Arc::new(std::panic::take_hook());
    let inner = hook.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some(JOB_THREAD) {
            inner(info);
        }
    }));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let job = std::thread::Builder::new().name(JOB_THREAD.into());
            job.spawn_scoped(s, || loop {
                let Some(path) = queue.lock().unwrap().pop() else { break };
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| play(&path, emu))).map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                });
                results.lock().unwrap().insert(path, r);
            })
            .expect("a scenario thread");
        }
    });
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| hook(info)));
    results.into_inner().unwrap()
}

const JOB_THREAD: &str = "scenario-job";

#[test]
fn scenarios() {
    let Some(emu) = emulators() else { return };
    // First the files insta's glob (and INSTA_GLOB_FILTER) selects, then all of them at once, then the snapshots.
    let mut paths = Vec::new();
    insta::glob!("../../scenarios", "*.yaml", |path| paths.push(path.to_path_buf()));
    let jobs = std::env::var("SCENARIO_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let started = std::time::Instant::now();
    let mut results = play_all(paths, &emu, jobs);
    eprintln!(
        "scenarios: played in {:.1} s ({jobs} at a time)",
        started.elapsed().as_secs_f64()
    );
    let played = Arc::new(Mutex::new(0usize));
    insta::glob!("../../scenarios", "*.yaml", |path| {
        *played.lock().unwrap() += 1;
        let result = results
            .remove(path)
            .unwrap_or_else(|| panic!("{} was not played", path.display()));
        let Some(manifest) = result.unwrap_or_else(|report| panic!("{report}")) else {
            return;
        };
        insta::assert_json_snapshot!(manifest, {
            ".createdAt" => insta::dynamic_redaction(|v, _| {
                assert!(v.as_str().is_some_and(utc_seconds), "createdAt {v:?} is not UTC seconds");
                "[utc-seconds]"
            }),
            ".items[].generatedAt" => insta::dynamic_redaction(|v, _| {
                assert!(v.as_str().is_some_and(utc_seconds), "generatedAt {v:?} is not UTC seconds");
                "[utc-seconds]"
            }),
            ".items[].sha256" => insta::dynamic_redaction(|v, _| {
                let s = v.as_str().unwrap_or_default();
                assert!(s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "sha256 {s:?}");
                "[sha256]"
            }),
            ".items[].gcsUri" => insta::dynamic_redaction(|v, _| {
                // gs://<bucket of this run>/runs/<run>/charts/<tf>/<tpl>/<YYYYMMDDTHHMMSSZ>_<symbol>_<tf>_<tpl>.png
                let s = v.as_str().unwrap_or_default();
                let rest = s.strip_prefix("gs://").unwrap_or_else(|| panic!("{s} is not a gs:// URI"));
                let (_, path) = rest.split_once('/').unwrap();
                let (dir, file) = path.rsplit_once('/').unwrap();
                let (stamp, tail) = file.split_once('_').unwrap();
                assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").is_ok(), "time stamp {stamp:?} in {s}");
                format!("gs://[bucket]/{dir}/[yyyymmddThhmmssZ]_{tail}")
            }),
        });
    });
    if std::env::var("INSTA_GLOB_FILTER").is_err() {
        assert!(*played.lock().unwrap() >= 30, "the catalogue has at least 30 scenarios");
    }
}

/// Every snapshot belongs to a scenario that snapshots its manifest, and none is pending review.
#[test]
fn snapshots_are_referenced_and_none_pending() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenarios = root.join("../scenarios");
    let dir = root.join("tests/snapshots");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".snap.new") && !name.ends_with(".pending-snap"),
            "pending snapshot {name}: review it"
        );
        let Some(file) = name
            .strip_prefix("scenarios__scenarios@")
            .and_then(|n| n.strip_suffix(".snap"))
        else {
            panic!("unexpected file {name} in {}", dir.display());
        };
        let text = std::fs::read_to_string(scenarios.join(file))
            .unwrap_or_else(|_| panic!("snapshot {name} has no scenario {file}"));
        let s = tests::scenario::parse(&text).unwrap();
        assert_eq!(
            s.then.manifest.as_deref(),
            Some("snapshot"),
            "snapshot {name}: its scenario does not snapshot a manifest"
        );
    }
}

/// Every scenario file parses: a broken file fails here with its name, field and line, even without emulators.
#[test]
fn every_scenario_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "yaml") {
            tests::scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 30, "{n} scenarios");
}
