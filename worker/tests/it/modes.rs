//! `CHART_IMG_MODE=record` and `mock` through the real binary: record a step through `mock-chart-img` over HTTP,
//! replay it with no server at all and get the same bytes; a request the cassette lacks fails with
//! `CHART_API_MOCK_MISSING` and a report naming the closest recorded request.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_worker-chart-export");

fn write_inputs(dir: &Path, run: &Value, templates: &[(&str, Value)]) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    for (id, t) in templates {
        std::fs::write(dir.join("templates").join(format!("{id}.json")), t.to_string()).unwrap();
    }
    std::fs::write(dir.join("run-9.json"), run.to_string()).unwrap();
}

fn real_template(theme: &str) -> Value {
    serde_json::json!({"chartImgSymbolTemplate": "BINANCE:{symbol}",
                       "request": {"style": "candle", "theme": theme, "width": 800, "height": 600}})
}

async fn run_bin(dir: &Path, state: &str, extra: &[&str], accounts: &str) -> Output {
    run_bin_env(dir, state, extra, accounts, None).await
}

async fn run_bin_env(dir: &Path, state: &str, extra: &[&str], accounts: &str, allow_unused: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("run-local")
        .arg(dir.join("run-9.json"))
        .arg("--templates")
        .arg(dir.join("templates"))
        .arg("--state-dir")
        .arg(dir.join(state))
        .args(["--format", "json"])
        .args(extra)
        .env("CHART_IMG_ACCOUNTS_JSON", accounts)
        .env_remove("CHART_IMG_MODE")
        .env_remove("CHART_IMG_VCR_MODE")
        .env_remove("CHART_IMG_BASE_URL")
        .env_remove("CHART_IMG_CASSETTE_DIR");
    match allow_unused {
        Some(v) => cmd.env("CHART_IMG_ALLOW_UNUSED", v),
        None => cmd.env_remove("CHART_IMG_ALLOW_UNUSED"),
    };
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn images(dir: &Path, report: &Value) -> Vec<Vec<u8>> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            std::fs::read(
                dir.join("gcs")
                    .join(i["gcsUri"].as_str().unwrap().strip_prefix("gs://").unwrap()),
            )
            .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn record_through_the_mock_server_then_replay_offline_byte_exact() {
    let server =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY_1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_inputs(
        p,
        &flow_run(&["dark", "light"], 2),
        &[("dark", real_template("dark")), ("light", real_template("light"))],
    );
    let cassette = p.join("cassette");
    let accounts = accounts_json(&[("acc-1", KEY_1, 50)]);
    let cassette_arg = cassette.display().to_string();

    let rec = run_bin(
        p,
        "state-rec",
        &[
            "--mode",
            "record",
            "--base-url",
            &server.base_url(),
            "--cassette-dir",
            &cassette_arg,
        ],
        &accounts,
    )
    .await;
    assert_eq!(rec.status.code(), Some(0), "{}", String::from_utf8_lossy(&rec.stderr));
    let rec_report: Value = serde_json::from_slice(&rec.stdout).unwrap();
    let recorded = images(&p.join("state-rec"), &rec_report);
    assert!(recorded.iter().all(|b| b.starts_with(b"\x89PNG")));
    assert_ne!(recorded[0], recorded[1], "two templates, two different charts");
    assert_eq!(server.state().usage("acc-1").unwrap().used_today, 2);
    server.shutdown().await.unwrap();

    // Nothing secret reached the cassette.
    let cassette_text = std::fs::read_to_string(cassette.join(recorder::CASSETTE_FILE)).unwrap();
    assert!(
        !cassette_text.contains(KEY_1) && cassette_text.contains("<CHART_IMG_API_KEY:acc-1>"),
        "{cassette_text}"
    );

    // Replay with the server gone (and a base URL nobody listens on): same bytes.
    let rep = run_bin(
        p,
        "state-rep",
        &[
            "--mode",
            "mock",
            "--base-url",
            "http://127.0.0.1:9",
            "--cassette-dir",
            &cassette_arg,
        ],
        &accounts,
    )
    .await;
    assert_eq!(rep.status.code(), Some(0), "{}", String::from_utf8_lossy(&rep.stderr));
    let rep_report: Value = serde_json::from_slice(&rep.stdout).unwrap();
    assert_eq!(images(&p.join("state-rep"), &rep_report), recorded);

    // A request the cassette does not hold: CHART_API_MOCK_MISSING, with the closest recorded request named.
    write_inputs(
        p,
        &flow_run(&["dark", "light"], 2),
        &[("dark", real_template("dark")), ("light", real_template("light"))],
    );
    let mut changed = flow_run(&["dark"], 1);
    changed["steps"]["charts_4h"]["inputs"]["timeframe"] = serde_json::json!("1D");
    std::fs::write(p.join("run-9.json"), changed.to_string()).unwrap();
    let miss = run_bin(
        p,
        "state-miss",
        &["--mode", "mock", "--cassette-dir", &cassette_arg],
        &accounts,
    )
    .await;
    assert_eq!(miss.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&miss.stdout).unwrap();
    assert_eq!(report["code"], "CHART_API_MOCK_MISSING", "{report}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(p.join("state-miss/firestore/flow_runs/run-9.json")).unwrap()).unwrap();
    let error = &state["steps"]["charts_4h"]["error"];
    assert_eq!(error["code"], "CHART_API_MOCK_MISSING");
    let details = error["details"].to_string();
    assert!(details.contains("interval"), "the differing field is named: {details}");
    assert!(!details.contains(KEY_1) && !String::from_utf8_lossy(&miss.stderr).contains(KEY_1));
}

/// B9: in record mode a cassette that cannot be written fails that chart's recording, clearly, and the paid call is
/// sent once (never re-sent as if it were a transient failure).
#[tokio::test]
async fn a_failed_cassette_write_fails_the_chart_and_never_resends_the_paid_call() {
    let server =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY_1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_inputs(p, &flow_run(&["dark"], 1), &[("dark", real_template("dark"))]);
    // The bodies folder is a file: opening the cassette works, storing the answer's body does not.
    let cassette = p.join("cassette");
    std::fs::create_dir_all(&cassette).unwrap();
    std::fs::write(cassette.join("bodies"), b"not a folder").unwrap();
    let accounts = accounts_json(&[("acc-1", KEY_1, 50)]);
    let cassette_arg = cassette.display().to_string();
    let out = run_bin(
        p,
        "state",
        &[
            "--mode",
            "record",
            "--base-url",
            &server.base_url(),
            "--cassette-dir",
            &cassette_arg,
        ],
        &accounts,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["code"], "CHART_API_FAILED", "{report}");
    assert!(
        report["message"].as_str().unwrap().contains("could not be recorded"),
        "{report}"
    );
    assert_eq!(
        server.state().usage("acc-1").unwrap().used_today,
        1,
        "the paid call was sent exactly once"
    );
    server.shutdown().await.unwrap();
}

/// `CHART_IMG_ALLOW_UNUSED=false`: a step that leaves recorded interactions unused fails at its end (exit 1, the
/// unused ones listed on stderr), even though every chart it asked for was replayed.
#[tokio::test]
async fn mock_mode_with_allow_unused_false_fails_a_step_that_left_interactions_unused() {
    let server =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY_1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let templates = [("dark", real_template("dark")), ("light", real_template("light"))];
    write_inputs(p, &flow_run(&["dark", "light"], 2), &templates);
    let cassette = p.join("cassette").display().to_string();
    let accounts = accounts_json(&[("acc-1", KEY_1, 50)]);
    let record = [
        "--mode",
        "record",
        "--base-url",
        &server.base_url(),
        "--cassette-dir",
        &cassette,
    ];
    let rec = run_bin(p, "state-rec", &record, &accounts).await;
    assert_eq!(rec.status.code(), Some(0), "{}", String::from_utf8_lossy(&rec.stderr));
    server.shutdown().await.unwrap();

    let replay = |state: &'static str, allow: &'static str| {
        let (p, cassette, accounts) = (p.to_path_buf(), cassette.clone(), accounts.clone());
        async move {
            let mock = ["--mode", "mock", "--cassette-dir", &cassette];
            run_bin_env(&p, state, &mock, &accounts, Some(allow)).await
        }
    };
    // Only the dark chart this time: the light one stays unused.
    write_inputs(p, &flow_run(&["dark"], 1), &templates);
    let out = replay("state-one", "false").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["result"], "succeeded",
        "the step itself rendered what it asked for: {report}"
    );
    assert!(stderr.contains("1 of 2 recorded interactions"), "{stderr}");
    assert!(stderr.contains("\"light\"") && !stderr.contains(KEY_1), "{stderr}");

    // Allowed (the default): the same step exits 0.
    let out = replay("state-two", "true").await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // Both charts: nothing unused, exit 0 under allow_unused false.
    write_inputs(p, &flow_run(&["dark", "light"], 2), &templates);
    let out = replay("state-three", "false").await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A cassette that went through HAR (exported, then imported as a new cassette) replays through `mock` mode with the
/// same bytes as the recording, under `CHART_IMG_ALLOW_UNUSED=false`.
#[tokio::test]
async fn a_cassette_imported_from_har_replays_through_mock_mode() {
    let server =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY_1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let templates = [("dark", real_template("dark")), ("light", real_template("light"))];
    write_inputs(p, &flow_run(&["dark", "light"], 2), &templates);
    let recorded_dir = p.join("cassette");
    let cassette = recorded_dir.display().to_string();
    let accounts = accounts_json(&[("acc-1", KEY_1, 50)]);
    let record = [
        "--mode",
        "record",
        "--base-url",
        &server.base_url(),
        "--cassette-dir",
        &cassette,
    ];
    let rec = run_bin(p, "state-rec", &record, &accounts).await;
    assert_eq!(rec.status.code(), Some(0), "{}", String::from_utf8_lossy(&rec.stderr));
    let recorded = images(&p.join("state-rec"), &serde_json::from_slice(&rec.stdout).unwrap());
    server.shutdown().await.unwrap();

    let har = p.join("session.har");
    std::fs::write(
        &har,
        recorder::har::export_json(&recorded_dir, recorder::har::DEFAULT_BASE_URL).unwrap(),
    )
    .unwrap();
    let imported = p.join("from-har");
    let report = recorder::har::import(
        &har,
        &imported,
        &["api.chart-img.com".into()],
        &recorder::Secrets::new(),
    )
    .unwrap();
    assert_eq!(report.imported, 2);

    let from_har = imported.display().to_string();
    let mock = ["--mode", "mock", "--cassette-dir", &from_har];
    let out = run_bin_env(p, "state-har", &mock, &accounts, Some("false")).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(images(&p.join("state-har"), &report), recorded);
}

/// A session of the worker against `mock-chart-img` in `real` mode, saved with `POST /__admin/snapshot`, replays
/// through the worker's `mock` mode with no server: the snapshot is a cassette like a recorded one.
#[tokio::test]
async fn a_snapshot_of_a_session_against_the_mock_replays_in_mock_mode() {
    let server =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY_1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_inputs(
        p,
        &flow_run(&["dark", "light"], 2),
        &[("dark", real_template("dark")), ("light", real_template("light"))],
    );
    let accounts = accounts_json(&[("acc-1", KEY_1, 50)]);
    let live = run_bin(
        p,
        "state-live",
        &["--mode", "real", "--base-url", &server.base_url()],
        &accounts,
    )
    .await;
    assert_eq!(live.status.code(), Some(0), "{}", String::from_utf8_lossy(&live.stderr));
    let live_images = images(&p.join("state-live"), &serde_json::from_slice(&live.stdout).unwrap());
    assert_eq!(live_images.len(), 2);

    let cassette = p.join("snapshot");
    let answer = reqwest::Client::new()
        .post(format!("{}/snapshot", server.admin_url()))
        .json(&serde_json::json!({"dir": cassette, "criteria": {"route": "/v2/tradingview/advanced-chart"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let outcome: Value = answer.json().await.unwrap();
    assert_eq!(outcome["interactions"], 2, "{outcome}");
    server.shutdown().await.unwrap();
    let text = std::fs::read_to_string(cassette.join(recorder::CASSETTE_FILE)).unwrap();
    assert!(
        !text.contains(KEY_1) && text.contains("<CHART_IMG_API_KEY:acc-1>"),
        "{text}"
    );

    let cassette_arg = cassette.display().to_string();
    let rep = run_bin(
        p,
        "state-rep",
        &[
            "--mode",
            "mock",
            "--base-url",
            "http://127.0.0.1:9",
            "--cassette-dir",
            &cassette_arg,
        ],
        &accounts,
    )
    .await;
    assert_eq!(rep.status.code(), Some(0), "{}", String::from_utf8_lossy(&rep.stderr));
    let rep_report: Value = serde_json::from_slice(&rep.stdout).unwrap();
    assert_eq!(images(&p.join("state-rep"), &rep_report), live_images);
}
