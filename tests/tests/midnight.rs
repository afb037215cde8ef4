//! The day boundary through the `serve` binary: the worker's clock (libfaketime, Debian's `faketime`, preloaded into
//! the child) and mock-chart-img's (a clock with the same offset from the real one) pass UTC midnight together while a
//! 12-chart step runs on one BASIC key (1 call a second), so about half its calls are sent on each day. The counter
//! must follow the calls onto the new day: `usageToday` of D+1 is what Chart-IMG (the mock) counted on D+1, not the
//! units reserved on D and spent after midnight (review H2).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use harness::process::{ServeProcess, ServeSpec};
use mock_chart_img::{Clock, KeyConfig, Plan};
use serde_json::{json, Value};
use worker_chart_export::adapters::FirestoreStore;
use worker_chart_export::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::eventarc::encode_document_event;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const CHARTS: usize = 12;
/// How long before midnight (in the faked time) the worker starts (5–6 s: the shift has whole seconds). The BASIC
/// key sends two calls at once (the burst a shared key lends), the third 0.8 s later, then one a second: about 7 of
/// the 12 calls before midnight, 5 after (with 7 s it measured 10 and 2 in one run of five).
const BEFORE_MIDNIGHT: i64 = 5;

/// Real time shifted by a whole number of seconds: the same shift libfaketime gives the child with `FAKETIME=+Ns`.
#[derive(Debug)]
struct Shifted(TimeDelta);

impl Clock for Shifted {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

fn required() -> bool {
    chromium_test::required()
}

fn skip(why: &str) {
    assert!(!required(), "{why} (required here: CI or REQUIRE_EMULATORS=1)");
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED midnight: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_across_midnight_counts_each_call_on_the_day_it_was_sent() {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(firestore), Some(storage)) = (get("FIRESTORE_EMULATOR_HOST"), get("STORAGE_EMULATOR_HOST")) else {
        return skip("the emulators are not running (FIRESTORE_EMULATOR_HOST / STORAGE_EMULATOR_HOST unset)");
    };
    if !std::path::Path::new(LIBFAKETIME).exists() {
        return skip(&format!("{LIBFAKETIME} is missing (apt-get install faketime)"));
    }
    let storage = storage.trim_end_matches('/').to_owned();
    let storage_url = if storage.starts_with("http") {
        storage
    } else {
        format!("http://{storage}")
    };
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (project, bucket) = (format!("midnight-{id}"), format!("midnight-{id}"));
    reqwest::Client::new()
        .post(format!("{storage_url}/storage/v1/b?project={project}"))
        .json(&json!({ "name": bucket }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    // The faked time starts BEFORE_MIDNIGHT seconds before the next UTC midnight.
    let real = Utc::now();
    let midnight = (real.date_naive() + TimeDelta::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let shift = TimeDelta::seconds((midnight - real).num_seconds() - BEFORE_MIDNIGHT);
    let clock = std::sync::Arc::new(Shifted(shift));
    let key = format!("k-midnight-{id}");
    let mock = mock_chart_img::spawn(
        mock_chart_img::Config::default()
            .with_key_config(KeyConfig::new(
                key.clone(),
                "acc-1",
                Plan::Named(chart_img_spec::Plan::Basic),
            ))
            .with_clock(clock.clone()),
    )
    .await
    .unwrap();

    let fs = FirestoreStore::new(&project).await.unwrap();
    let requests: Vec<Value> = (0..CHARTS)
        .map(|i| json!({"chartTemplateId": format!("t{i:02}")}))
        .collect();
    let run = json!({
        "scope": {"symbol": "BTCUSDT"},
        "owner": {"team": "research"},
        "steps": {"charts": {"stepType": "CHART_EXPORT", "status": "READY",
                             "inputs": {"timeframe": "4h", "minImages": CHARTS, "requests": requests}}}
    });
    fs.put_doc(FLOW_RUNS, "run-1", run.clone()).await.unwrap();
    for i in 0..CHARTS {
        let t = json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": {"style": "candle", "width": 800, "height": 600}});
        fs.put_doc(CHART_TEMPLATES, &format!("t{i:02}"), t).await.unwrap();
    }

    let accounts = json!([{"id": "acc-1", "apiKey": key, "dailyLimit": 50, "plan": "BASIC"}]).to_string();
    let spec = ServeSpec::new("serve-midnight", env!("CARGO_BIN_EXE_scenario-serve"))
        .env("FIRESTORE_EMULATOR_HOST", firestore)
        .env("STORAGE_EMULATOR_HOST", storage_url)
        .env("GOOGLE_CLOUD_PROJECT", project.clone())
        .env("ARTIFACTS_BUCKET", bucket)
        .env("CHART_IMG_ACCOUNTS_JSON", accounts)
        .env("CHART_IMG_BASE_URL", mock.base_url())
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", format!("{:+}", shift.num_seconds()))
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut serve = ServeProcess::start(spec).await.unwrap();
    let started = serve
        .json_logs()
        .into_iter()
        .find(|l| l["event"] == "serve_started")
        .expect("a serve_started line");
    let child_time: DateTime<Utc> = started["time"]
        .as_str()
        .or(started["timestamp"].as_str())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time in {started}"));
    assert!(
        (child_time - clock.now()).num_seconds().abs() <= 2,
        "the child's clock is not shifted as the mock's: {child_time} against {}",
        clock.now()
    );

    let name = format!("projects/{project}/databases/(default)/documents/flow_runs/run-1");
    let answer = reqwest::Client::new()
        .post(serve.url())
        .header("content-type", "application/protobuf")
        .header("ce-specversion", "1.0")
        .header("ce-id", "midnight-1")
        .header(
            "ce-source",
            format!("//firestore.googleapis.com/projects/{project}/databases/(default)"),
        )
        .header("ce-type", "google.cloud.firestore.document.v1.updated")
        .header("ce-subject", "documents/flow_runs/run-1")
        .header("ce-time", Utc::now().to_rfc3339())
        .header("ce-database", "(default)")
        .header("ce-namespace", "(default)")
        .header("ce-document", "flow_runs/run-1")
        .header("ce-location", "nam5")
        .header("ce-project", project.clone())
        .body(encode_document_event(&name, &run, &["steps"]))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    let logs = serve.logs().join("\n");
    serve.kill().await;
    assert!(status.is_success(), "{status} {body}\n{logs}");

    let step = &fs.get_doc(FLOW_RUNS, "run-1").await.unwrap().unwrap()["steps"]["charts"];
    assert_eq!(step["status"], "SUCCEEDED", "{step}\n{logs}");
    let journal = mock.state().journal(&mock_chart_img::JournalQuery::default());
    // The journal's times are the mock's clock: real time shifted as the child's.
    let journal: Vec<_> = journal
        .into_iter()
        .filter(|e| e.account.as_deref() == Some("acc-1"))
        .collect();
    let next_day = midnight.date_naive();
    let calls_before = journal.iter().filter(|e| e.at.date_naive() < next_day).count();
    let calls_after = journal.iter().filter(|e| e.at.date_naive() >= next_day).count();
    assert_eq!(calls_before + calls_after, CHARTS, "{journal:?}");
    assert!(
        calls_before >= 3 && calls_after >= 3,
        "the step did not straddle midnight: {calls_before} calls before, {calls_after} after"
    );
    let u = fs.get_doc(ACCOUNTS_USAGE, "acc-1").await.unwrap().unwrap();
    let mock_usage = mock.state().usage("acc-1").unwrap();
    assert_eq!(mock_usage.day, next_day.to_string());
    assert_eq!(u["day"], next_day.to_string(), "{u}");
    let counted = u["usageToday"].as_u64().unwrap() as i64;
    let received = i64::from(mock_usage.used_today);
    eprintln!(
        "midnight: {calls_before} calls before, {calls_after} after; usageToday {counted} of {next_day}, mock {received}"
    );
    // The call sent last before midnight may arrive just after it (the network's few ms): counted on D by the worker
    // and on D+1 by Chart-IMG. Any other difference is a unit spent on the wrong day.
    assert!(
        (received - 1..=received).contains(&counted),
        "usageToday of {next_day} is {counted}, the mock received {received} calls on that day\n{u}"
    );
}
