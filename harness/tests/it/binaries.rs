//! The `fault-proxy` and `local-eventarc` binaries: their ready line, their admin endpoints, their errors.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use worker_chart_export::adapters::FirestoreStore;

/// Starts `bin` with `args` and answers the child and its first stdout line (the ready line) as JSON.
async fn start(bin: &str, args: &[&str]) -> (tokio::process::Child, Value) {
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a ready line")
        .unwrap()
        .expect("a line");
    (
        child,
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}")),
    )
}

#[tokio::test]
async fn fault_proxy_applies_rules_from_flags_and_the_admin_api() {
    let Some((_, storage)) = crate::emulators("fault_proxy_applies_rules") else {
        return;
    };
    let rule = r#"{"match": {"pathPrefix": "/_internal/"}, "action": {"kind": "refuse"}, "times": 1}"#;
    let (mut child, ready) = start(
        env!("CARGO_BIN_EXE_fault-proxy"),
        &["--upstream", &storage, "--rule", rule],
    )
    .await;
    assert_eq!(ready["event"], "fault_proxy_ready");
    let (proxy, admin) = (ready["proxy"].as_str().unwrap(), ready["admin"].as_str().unwrap());
    assert!(proxy.starts_with("http://127.0.0.1:") && admin.starts_with("http://127.0.0.1:"));
    let health = format!("{proxy}/_internal/healthcheck");
    assert_eq!(reqwest::get(&health).await.unwrap().status(), 503);
    assert_eq!(reqwest::get(&health).await.unwrap().status(), 200);
    let calls: Value = reqwest::get(format!("{admin}/calls"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["refused", "forwarded"]);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn fault_proxy_names_a_bad_rule_and_exits_2() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fault-proxy"))
        .args([
            "--upstream",
            "127.0.0.1:1",
            "--rule",
            r#"{"action": {"kind": "explode"}}"#,
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rule #1") && err.contains("explode"), "{err}");
}

#[tokio::test]
async fn local_eventarc_delivers_and_lists_deliveries_over_its_admin_endpoint() {
    let Some(_) = crate::emulators("local_eventarc_delivers") else {
        return;
    };
    let project = crate::project("bin-ea");
    let app = axum::Router::new().route("/", axum::routing::post(|| async { "ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let (mut child, ready) = start(
        env!("CARGO_BIN_EXE_local-eventarc"),
        &["--project", &project, "--target", &target, "--time-scale", "0.01"],
    )
    .await;
    assert_eq!(ready["event"], "local_eventarc_ready");
    let admin = ready["admin"].as_str().unwrap().to_owned();
    FirestoreStore::new(&project)
        .await
        .unwrap()
        .put_doc("flow_runs", "run-1", json!({"n": 1}))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let d: Value = reqwest::get(format!("{admin}/deliveries"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !d.as_array().unwrap().is_empty() {
            break d;
        }
        assert!(std::time::Instant::now() < deadline, "no delivery listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed[0]["document"], "flow_runs/run-1");
    assert_eq!(listed[0]["kind"], "created");
    assert_eq!(listed[0]["outcome"], json!({"kind": "status", "code": 200}));
    child.kill().await.unwrap();
}
