//! The built `worker-chart-export` binary run on files, against a `wiremock` Chart-IMG.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_worker-chart-export");

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(flow_run_doc: &Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("templates")).unwrap();
        for t in ["price_volume", "rsi_14"] {
            std::fs::write(p.join("templates").join(format!("{t}.json")), template(t).to_string()).unwrap();
        }
        std::fs::write(p.join("accounts.json"), accounts_json(&[("acc-1", KEY_1, 50)])).unwrap();
        std::fs::write(p.join("run-7.json"), flow_run_doc.to_string()).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn run(&self, server: &MockServer, extra: &[&str]) -> Output {
        let p = self.path();
        let mut cmd = Command::new(BIN);
        cmd.arg("run-local")
            .arg(p.join("run-7.json"))
            .arg("--templates")
            .arg(p.join("templates"))
            .arg("--accounts")
            .arg(p.join("accounts.json"))
            .arg("--state-dir")
            .arg(p.join("state"))
            .arg("--base-url")
            .arg(server.uri())
            .args(extra)
            .env_remove("CHART_IMG_ACCOUNTS_JSON")
            .env_remove("CHART_IMG_MODE")
            .env_remove("ARTIFACTS_BUCKET")
            .env_remove("WORKER_STATE_DIR")
            .env_remove("CHART_IMG_BASE_URL")
            .env("RUST_LOG", "info");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn png_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-api-key", KEY_1))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(png_bytes("cli").to_vec()))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn run_local_renders_a_step_then_a_second_run_is_a_no_op() {
    let server = png_server().await;
    let f = Fixture::new(&flow_run(&["price_volume", "rsi_14"], 2));
    let out = f.run(&server, &["--bucket", "demo-bucket"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.starts_with("SUCCEEDED flow_runs/run-7 step charts_4h: 2 of 2 charts"),
        "{stdout}"
    );
    let manifest = f
        .path()
        .join("state/gcs/demo-bucket/runs/run-7/steps/charts_4h/charts/manifest.json");
    assert!(stdout.contains(&manifest.display().to_string()), "{stdout}");
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for item in m["items"].as_array().unwrap() {
        let rel = item["gcsUri"].as_str().unwrap().strip_prefix("gs://").unwrap();
        let bytes = std::fs::read(f.path().join("state/gcs").join(rel)).unwrap();
        assert_eq!(bytes, png_bytes("cli").to_vec());
    }
    let stored: Value =
        serde_json::from_slice(&std::fs::read(f.path().join("state/firestore/flow_runs/run-7.json")).unwrap()).unwrap();
    assert_eq!(stored["steps"]["charts_4h"]["status"], "SUCCEEDED");
    let usage: Value = serde_json::from_slice(
        &std::fs::read(f.path().join("state/firestore/chart_img_accounts_usage/acc-1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(usage["usageToday"], 2);

    let again = f.run(&server, &["--bucket", "demo-bucket"]).await;
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        text(&again.stdout).trim(),
        "NO-OP flow_runs/run-7: no READY CHART_EXPORT step"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "the second run sent nothing"
    );

    // Nothing the binary wrote or printed holds the key.
    let mut all = text(&out.stdout) + &text(&out.stderr) + &text(&again.stderr);
    for entry in walk(&f.path().join("state")) {
        all.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
    }
    assert!(all.contains("charts_4h") && !all.contains(KEY_1));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn json_summary_and_exit_code_of_a_failed_step() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"message": "Exceed Max Usage Resolution Limit (800x600)"})),
        )
        .mount(&server)
        .await;
    let f = Fixture::new(&flow_run(&["price_volume"], 1));
    let out = f.run(&server, &["--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"], "failed");
    assert_eq!(report["code"], "CHART_API_FAILED");
    assert!(report["message"]
        .as_str()
        .unwrap()
        .contains("403 Exceed Max Usage Resolution Limit (800x600)"));
}

#[tokio::test]
async fn bad_files_and_flags_get_one_clear_line_and_no_panic() {
    let server = png_server().await;
    let f = Fixture::new(&flow_run(&["price_volume"], 1));
    std::fs::write(f.path().join("broken.json"), "{\n  \"steps\": {,\n}").unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["--run-id".into(), "a/b".into()], 2, "runId must not contain '/'"),
        (vec!["--mode".into(), "fake".into()], 2, "--mode: unknown mode \"fake\""),
        (
            vec!["--step-id".into(), "nope".into()],
            1,
            "REJECTED flow_runs/run-7: VALIDATION_FAILED: stepId: flow_runs/run-7 has no step \"nope\"",
        ),
    ];
    for (args, code, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = f.run(&server, &args).await;
        let all = text(&out.stdout) + &text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {all}");
        assert!(all.contains(want), "{args:?}: {all}");
        assert!(
            !all.contains("panicked") && !all.contains("backtrace") && !all.contains(KEY_1),
            "{all}"
        );
    }
    // A template file that is not JSON.
    std::fs::write(f.path().join("templates/zz_bad.json"), "nope").unwrap();
    let out = f.run(&server, &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("zz_bad.json is not valid JSON"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(f.path().join("templates/zz_bad.json")).unwrap();
    // A bad accounts file: named, with the field, and the key not echoed.
    std::fs::write(
        f.path().join("accounts.json"),
        format!(r#"[{{"id":"acc-1","apiKey":"{KEY_1}","plan":"GOLD"}}]"#),
    )
    .unwrap();
    let out = f.run(&server, &[]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("accounts.json[0].plan: unknown plan \"GOLD\"") && !err.contains(KEY_1),
        "{err}"
    );
    // A flow-run file that is not JSON: the message names the file, line and column.
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run-local",
        &f.path().join("broken.json").display().to_string(),
        "--state-dir",
    ])
    .arg(f.path().join("state"))
    .env("CHART_IMG_ACCOUNTS_JSON", accounts_json(&[("acc-1", KEY_1, 5)]));
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("broken.json is not valid JSON") && err.contains("line 2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // No accounts at all.
    let out = Command::new(BIN)
        .args(["run-local", &f.path().join("run-7.json").display().to_string()])
        .env_remove("CHART_IMG_ACCOUNTS_JSON")
        .current_dir(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no Chart-IMG account: set CHART_IMG_ACCOUNTS_JSON or pass --accounts <file>"));
}

/// The local backend's file lock holds between processes: four `run-local` processes started at once on one state
/// directory claim the step exactly once, and the quota counter counts each call once.
#[tokio::test]
async fn concurrent_processes_on_one_state_dir_claim_once() {
    let server = png_server().await;
    let f = Fixture::new(&flow_run(&["price_volume", "rsi_14"], 2));
    let runs = (0..4).map(|_| f.run(&server, &[]));
    let outputs = futures::future::join_all(runs).await;
    let mut succeeded = 0;
    let mut noops = 0;
    for out in &outputs {
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
        if stdout.starts_with("SUCCEEDED") {
            succeeded += 1;
        } else if stdout.starts_with("NO-OP") || stdout.starts_with("BUSY") {
            noops += 1;
        }
    }
    assert_eq!((succeeded, noops), (1, 3));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    let usage: Value = serde_json::from_slice(
        &std::fs::read(f.path().join("state/firestore/chart_img_accounts_usage/acc-1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(usage["usageToday"], 2);
}
