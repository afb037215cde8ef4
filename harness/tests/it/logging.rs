//! Cloud Run's logging conventions, read back from the real `serve` binary's stdout: a delivery's lines carry the
//! trace of its `traceparent` / `X-Cloud-Trace-Context` header, and an error line is in Error Reporting's shape.

use std::time::Duration;

use harness::process::{ServeProcess, ServeSpec};
use serde_json::{json, Value};

const TRACE: &str = "logging.googleapis.com/trace";
const SPAN: &str = "logging.googleapis.com/spanId";

/// A binary-mode CloudEvent for `flow_runs/<run>` whose document has no READY step (answered without a store call).
fn event(client: &reqwest::Client, url: &str, project: &str, id: &str) -> reqwest::RequestBuilder {
    let name = format!("projects/{project}/databases/(default)/documents/flow_runs/run-log");
    client
        .post(url)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header(
            "ce-source",
            format!("//firestore.googleapis.com/projects/{project}/databases/(default)"),
        )
        .header("ce-type", "google.cloud.firestore.document.v1.written")
        .header("ce-subject", "documents/flow_runs/run-log")
        .header("ce-time", "2026-12-07T10:00:00Z")
        .header("ce-database", "(default)")
        .header("ce-document", "flow_runs/run-log")
        .body(json!({"value": {"name": name, "fields": {"n": {"integerValue": "1"}}}}).to_string())
}

fn line_of<'a>(lines: &'a [Value], pred: impl Fn(&Value) -> bool, what: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| pred(l))
        .unwrap_or_else(|| panic!("no log line for {what} in {lines:#?}"))
}

#[tokio::test]
async fn a_deliverys_lines_carry_its_trace_and_an_error_line_has_the_error_reporting_shape() {
    let Some((firestore, storage)) = crate::emulators("a_deliverys_lines_carry_its_trace") else {
        return;
    };
    let project = crate::project("trace");
    let spec = ServeSpec::new("serve-trace", env!("CARGO_BIN_EXE_worker-serve"))
        .env("FIRESTORE_EMULATOR_HOST", &firestore)
        .env("STORAGE_EMULATOR_HOST", format!("http://{storage}"))
        .env("GOOGLE_CLOUD_PROJECT", &project)
        .env("ARTIFACTS_BUCKET", "unused")
        .env("K_SERVICE", "chart-export-worker")
        .env("K_REVISION", "chart-export-worker-00007-abc")
        .env(
            "CHART_IMG_ACCOUNTS_JSON",
            r#"[{"id":"acc-1","apiKey":"k-trace-test-secret","dailyLimit":5}]"#,
        );
    let mut serve = ServeProcess::start(spec).await.unwrap();
    let url = format!("{}/", serve.url());
    let client = reqwest::Client::new();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // 1. A W3C traceparent (what Eventarc's push carries).
    let r = event(&client, &url, &project, "ev-traceparent")
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 2. Only Google's X-Cloud-Trace-Context (decimal span id).
    let r = event(&client, &url, &project, "ev-cloud-trace")
        .header("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/123;o=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 3. No trace header.
    let r = event(&client, &url, &project, "ev-untraced").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // 4. A malformed delivery: answered 200 and logged at ERROR, within its trace.
    let r = client
        .post(&url)
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body("not an event")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = serve.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(t.by_itself, "{t:?}");

    let lines = serve.json_logs();
    let received = |id: &'static str| move |l: &Value| l["event"] == "cloud_event_received" && l["ceId"] == id;
    let a = line_of(&lines, received("ev-traceparent"), "the traceparent delivery");
    assert_eq!(
        a[TRACE],
        format!("projects/{project}/traces/4bf92f3577b34da6a3ce929d0e0e4736"),
        "{a}"
    );
    assert_eq!(a[SPAN], "00f067aa0ba902b7", "{a}");
    assert_eq!(a["logging.googleapis.com/trace_sampled"], true, "{a}");
    let b = line_of(&lines, received("ev-cloud-trace"), "the X-Cloud-Trace-Context delivery");
    assert_eq!(
        b[TRACE],
        format!("projects/{project}/traces/105445aa7843bc8bf206b12000100000"),
        "{b}"
    );
    assert_eq!(b[SPAN], format!("{:016x}", 123), "{b}");
    let c = line_of(&lines, received("ev-untraced"), "the untraced delivery");
    assert!(c.get(TRACE).is_none() && c.get(SPAN).is_none(), "{c}");
    // Lines outside a delivery carry no trace.
    let started = line_of(&lines, |l| l["event"] == "serve_started", "serve_started");
    assert!(started.get(TRACE).is_none(), "{started}");

    let e = line_of(
        &lines,
        |l| l["event"] == "cloud_event_received" && l["accepted"] == false,
        "the malformed delivery",
    );
    assert_eq!(e["severity"], "ERROR", "{e}");
    assert_eq!(
        e[TRACE],
        format!("projects/{project}/traces/0af7651916cd43dd8448eb211c80319c"),
        "{e}"
    );
    assert_eq!(
        e["@type"], "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent",
        "{e}"
    );
    assert_eq!(
        e["serviceContext"],
        json!({"service": "chart-export-worker", "version": "chart-export-worker-00007-abc"}),
        "{e}"
    );
    let loc = &e["context"]["reportLocation"];
    assert!(
        loc["filePath"].as_str().is_some_and(|f| f.ends_with("serve.rs")) && loc["lineNumber"].as_u64() > Some(0),
        "{e}"
    );
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    // Only error lines have Error Reporting's type; no key anywhere.
    assert!(lines
        .iter()
        .filter(|l| l.get("@type").is_some())
        .all(|l| l["severity"] == "ERROR"));
    assert!(!serve.logs().iter().any(|l| l.contains("k-trace-test-secret")));
}
