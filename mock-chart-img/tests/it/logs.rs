//! Logs: Cloud Logging JSON lines, per-request lines only at debug, a traffic summary at info.

use std::{
    io::{BufRead, BufReader},
    sync::{Arc, Mutex},
    time::Duration,
};

use mock_chart_img::{log_summaries, spawn, CloudLoggingLayer, Config, Plan};
use serde_json::{json, Value};
use tracing_subscriber::{filter::LevelFilter, fmt::MakeWriter, layer::SubscriberExt};

use crate::{small, CHART};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

fn with_message<'a>(lines: &'a [Value], m: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == m).collect()
}

/// The summary runs on tokio's clock: nothing before its period, one line after it, nothing for an idle period.
#[tokio::test(start_paused = true)]
async fn a_traffic_summary_every_period_and_no_per_request_line_at_info() {
    let capture = Capture::default();
    let sub = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(CloudLoggingLayer::new(capture.clone()));
    let _guard = tracing::subscriber::set_default(sub);

    let server = spawn(Config::default().with_key("k", "acc", Plan::ENTERPRISE))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}{CHART}", server.base_url());
    for key in ["k", "k", "wrong"] {
        let r = http
            .post(&url)
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(small().to_string());
        r.send().await.unwrap().bytes().await.unwrap();
    }
    assert!(
        with_message(&capture.lines(), "chart request").is_empty(),
        "per-request lines are debug"
    );

    tokio::spawn(log_summaries(server.state().clone(), Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        with_message(&capture.lines(), "traffic summary").is_empty(),
        "nothing before the period"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = capture.lines();
    let summaries = with_message(&lines, "traffic summary");
    assert_eq!(summaries.len(), 1, "{lines:?}");
    let s = summaries[0];
    assert_eq!(
        (s["severity"].as_str(), s["requests"].as_u64(), s["ok"].as_u64()),
        (Some("INFO"), Some(3), Some(2))
    );
    assert_eq!(
        (s["client_errors"].as_u64(), s["cache_hits"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(s["time"].as_str().unwrap().ends_with('Z') && s["target"].is_string());
    // An idle period writes nothing.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(with_message(&capture.lines(), "traffic summary").len(), 1);
}

/// Runs the binary, makes one good and one refused request, stops it, and returns its log lines.
async fn binary_logs(rust_log: Option<&str>) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mock.yaml");
    std::fs::write(&config, "keys:\n  - {key: secret-key-1, account: acc-1, plan: PRO}\n").unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mock-chart-img"));
    cmd.args(["--listen", "127.0.0.1:0", "--log-summary-secs", "0", "--config"])
        .arg(&config);
    cmd.env_remove("RUST_LOG");
    if let Some(l) = rust_log {
        cmd.env("RUST_LOG", l);
    }
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first: Value = serde_json::from_str(&rx.recv_timeout(Duration::from_secs(20)).unwrap()).unwrap();
    let url = format!("http://{}{CHART}", first["listen"].as_str().unwrap());
    let http = reqwest::Client::new();
    for key in ["secret-key-1", "nope"] {
        let r = http
            .post(&url)
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(small().to_string());
        r.send().await.unwrap().bytes().await.unwrap();
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    std::iter::once(first)
        .chain(
            rx.try_iter()
                .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))),
        )
        .collect()
}

#[tokio::test]
async fn the_binary_writes_cloud_logging_lines_and_a_summary_on_exit() {
    let lines = binary_logs(None).await;
    for l in &lines {
        assert!(
            l["severity"].is_string() && l["message"].is_string() && l["time"].is_string(),
            "{l}"
        );
        assert!(!l.to_string().contains("secret-key-1"), "a key in the logs: {l}");
    }
    assert!(
        with_message(&lines, "chart request").is_empty(),
        "no per-request line by default: {lines:?}"
    );
    let summary = with_message(&lines, "traffic summary");
    assert_eq!(summary.len(), 1, "{lines:?}");
    assert_eq!(
        (summary[0]["requests"].as_u64(), summary[0]["ok"].as_u64()),
        (Some(2), Some(1))
    );

    let debug = binary_logs(Some("info,mock_chart_img=debug")).await;
    let per_request = with_message(&debug, "chart request");
    assert_eq!(per_request.len(), 2, "{debug:?}");
    assert_eq!(per_request[0]["severity"], "DEBUG");
    assert_eq!(per_request[0]["account"], json!("acc-1"));
    assert!(!format!("{debug:?}").contains("secret-key-1"));
}
