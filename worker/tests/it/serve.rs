//! The Cloud Run entrypoint: `serve::router` / `serve::run` answering Eventarc deliveries.
//! - on the emulators: a CloudEvent built exactly as Eventarc sends it (binary mode, protobuf `DocumentEventData`)
//!   runs the step end to end; ten concurrent repeats of the same event change nothing more;
//! - in memory: the quick filter answers our own writes without a store call, malformed deliveries get 2xx,
//!   documents sent without data are re-read, and shutdown releases a step cut short.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use worker_chart_export::config::parse_accounts;
use worker_chart_export::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::domain::{
    ClaimOutcome, ClaimParams, ClaimToken, PatchOutcome, RunId, StepPatch, StepSelector,
};
use worker_chart_export::entry::serve::{self, AppState};
use worker_chart_export::eventarc::encode_document_event;
use worker_chart_export::ports::{
    ChartApiError, ChartCall, ChartRenderer, FlowRunStore, RenderedChart, StoreError, SystemClock,
};
use worker_chart_export::AccountPool;
use worker_chart_export::HttpChartImg;
use worker_chart_export::{CoreSettings, Worker};

use crate::emulators;
use crate::support::{self, fast_retry, png_bytes, KEY_1};

const STEP: &str = "charts-4h";

fn flow_run() -> Value {
    json!({
        "scope": {"symbol": "BTCUSDT"},
        "owner": {"team": "research"},
        "steps": {
            STEP: {"stepType": "CHART_EXPORT", "status": "READY",
                   "inputs": {"timeframe": "4h", "minImages": 2,
                              "requests": [{"chartTemplateId": "price"}, {"chartTemplateId": "rsi-14"}]}},
            "summarize": {"stepType": "LLM_SUMMARY", "status": "PENDING"}
        }
    })
}

fn template() -> Value {
    json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": {"style": "candle", "width": 800, "height": 600}})
}

/// The HTTP request Eventarc sends for an update of `flow_runs/<run>` in project `project`: binary-mode CloudEvent
/// headers and a protobuf `DocumentEventData` body.
fn eventarc_request(project: &str, run: &str, doc: Option<&Value>, id: &str) -> Request<Body> {
    let name = format!("projects/{project}/databases/(default)/documents/flow_runs/{run}");
    let body = doc
        .map(|d| encode_document_event(&name, d, &["steps"]))
        .unwrap_or_default();
    Request::post("/")
        .header("content-type", "application/protobuf")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", format!("//firestore.googleapis.com/projects/{project}/databases/(default)"))
        .header("ce-type", "google.cloud.firestore.document.v1.updated")
        .header("ce-subject", format!("documents/flow_runs/{run}"))
        .header("ce-time", "2026-11-28T13:25:11.123456Z")
        .header(
            "ce-dataschema",
            "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto",
        )
        .header("ce-database", "(default)")
        .header("ce-namespace", "(default)")
        .header("ce-document", format!("flow_runs/{run}"))
        .header("ce-location", "nam5")
        .header("ce-project", project)
        .body(Body::from(body))
        .unwrap()
}

/// The same request sent over TCP to a running server.
async fn post(client: &reqwest::Client, base: &str, req: Request<Body>) -> (StatusCode, Value) {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut r = client.post(format!("{base}/")).body(bytes.to_vec());
    for (k, v) in &parts.headers {
        r = r.header(k.as_str(), v.to_str().unwrap());
    }
    let resp = r.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    (status, resp.json().await.unwrap())
}

async fn png_server() -> MockServer {
    let server = MockServer::start().await;
    let mut png = png_bytes("served").to_vec();
    png.extend_from_slice(&[0, 1, 2, 255, 13, 10]);
    Mock::given(method("POST"))
        .and(path("/v2/tradingview/advanced-chart"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(png),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventarc_event_runs_the_step_on_the_emulators_and_repeats_change_nothing() {
    let test = "serve::eventarc_end_to_end";
    let Some(store) = emulators::firestore(test).await else {
        return;
    };
    let Some((artifacts, bucket)) = emulators::gcs(test).await else {
        return;
    };
    let endpoint = emulators::gcs_endpoint(test).unwrap();
    let project = store.database_path().split('/').nth(1).unwrap().to_owned();
    let chart_img = png_server().await;

    store.put_doc(FLOW_RUNS, "run-e2e", flow_run()).await.unwrap();
    store.put_doc(CHART_TEMPLATES, "price", template()).await.unwrap();
    store.put_doc(CHART_TEMPLATES, "rsi-14", template()).await.unwrap();
    let accounts = format!(r#"[{{"id":"acc-1","apiKey":"{KEY_1}","dailyLimit":10,"plan":"ENTERPRISE"}}]"#);
    let worker = Worker::with_documents(
        store.clone(),
        Arc::new(HttpChartImg::new(&chart_img.uri(), Duration::from_secs(10)).unwrap()),
        Arc::new(artifacts),
        AccountPool::new(parse_accounts("accounts", &accounts).unwrap()),
        CoreSettings {
            worker_id: worker_chart_export::domain::WorkerId::parse("serve-test").unwrap(),
            bucket: bucket.clone(),
            timezone: "Etc/UTC".into(),
            concurrency: 4,
            max_requests: worker_chart_export::config::DEFAULT_MAX_REQUESTS,
            lease: Duration::from_secs(900),
            retry: fast_retry(),
            lifecycle: worker_chart_export::config::Lifecycle::for_lease(Duration::from_secs(900)),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::run(listener, AppState::new(worker), async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/health")).send().await.unwrap().status(), 200);

    // The event as Eventarc sends it after someone set the step READY.
    let doc = flow_run();
    let (status, body) = post(
        &client,
        &base,
        eventarc_request(&project, "run-e2e", Some(&doc), "evt-1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "succeeded", "{body}");

    let stored = store.get_doc(FLOW_RUNS, "run-e2e").await.unwrap().unwrap();
    let step = &stored["steps"][STEP];
    assert_eq!(step["status"], "SUCCEEDED", "{stored}");
    let manifest_uri = step["outputsManifestGcsUri"].as_str().unwrap().to_owned();
    assert_eq!(
        manifest_uri,
        format!("gs://{bucket}/runs/run-e2e/steps/{STEP}/charts/manifest.json")
    );
    assert_eq!(stored["steps"]["summarize"], flow_run()["steps"]["summarize"]);
    assert_eq!(stored["owner"], json!({"team": "research"}));

    let names = emulators::list_objects(&endpoint, &bucket, "runs/run-e2e/").await;
    let pngs: Vec<&String> = names.iter().filter(|n| n.ends_with(".png")).collect();
    assert_eq!(pngs.len(), 2, "{names:?}");
    for p in &pngs {
        let (meta, bytes) = emulators::raw_object(&endpoint, &bucket, p).await.unwrap();
        assert_eq!(meta["contentType"], "image/png", "{meta}");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.ends_with(&[0, 1, 2, 255, 13, 10]), "bytes exact");
    }
    let (meta, bytes) = emulators::raw_object(
        &endpoint,
        &bucket,
        &format!("runs/run-e2e/steps/{STEP}/charts/manifest.json"),
    )
    .await
    .unwrap();
    assert_eq!(meta["contentType"], "application/json");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (
            manifest["items"].as_array().unwrap().len(),
            manifest["requested"].as_u64()
        ),
        (2, Some(2))
    );

    let usage = store.get_doc(ACCOUNTS_USAGE, "acc-1").await.unwrap().unwrap();
    assert_eq!(
        (usage["usageToday"].as_u64(), usage["dailyLimit"].as_u64()),
        (Some(2), Some(10)),
        "{usage}"
    );
    assert_eq!(chart_img.received_requests().await.unwrap().len(), 2);

    // Ten concurrent redeliveries of the same event: all acknowledged, nothing more happens.
    let before = store.get_doc(FLOW_RUNS, "run-e2e").await.unwrap();
    let repeats: Vec<_> = (0..10)
        .map(|_| {
            let (client, base, project, doc) = (client.clone(), base.clone(), project.clone(), doc.clone());
            tokio::spawn(async move {
                post(
                    &client,
                    &base,
                    eventarc_request(&project, "run-e2e", Some(&doc), "evt-1"),
                )
                .await
            })
        })
        .collect();
    for r in repeats {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["outcome"], "noop", "{body}");
    }
    assert_eq!(store.get_doc(FLOW_RUNS, "run-e2e").await.unwrap(), before);
    assert_eq!(
        emulators::list_objects(&endpoint, &bucket, "runs/run-e2e/").await,
        names
    );
    assert_eq!(
        store.get_doc(ACCOUNTS_USAGE, "acc-1").await.unwrap().unwrap()["usageToday"],
        2
    );
    assert_eq!(
        chart_img.received_requests().await.unwrap().len(),
        2,
        "no Chart-IMG call on a repeat"
    );

    // Our own finalize comes back as an event: a no-op without a claim.
    let (status, body) = post(
        &client,
        &base,
        eventarc_request(&project, "run-e2e", before.as_ref(), "evt-2"),
    )
    .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::OK, Some("noop")),
        "{body}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// In memory

/// Counts the store calls, to prove the quick filter answers without one.
struct Counting<S> {
    inner: S,
    calls: AtomicUsize,
}

#[async_trait]
impl<S: FlowRunStore> FlowRunStore for Counting<S> {
    async fn get_run(&self, run: &RunId) -> Result<Option<Value>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get_run(run).await
    }
    async fn claim_step(&self, run: &RunId, s: &StepSelector, p: &ClaimParams) -> Result<ClaimOutcome, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.claim_step(run, s, p).await
    }
    async fn patch_owned_step(&self, run: &RunId, o: &ClaimToken, p: &StepPatch) -> Result<PatchOutcome, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.patch_owned_step(run, o, p).await
    }
}

fn memory_worker() -> (
    support::TestWorker,
    Arc<Counting<worker_chart_export::adapters::JsonDocs<worker_chart_export::adapters::MemoryBackend>>>,
) {
    let mut tw = support::one_account(support::ScriptedRenderer::ok());
    let counting = Arc::new(Counting {
        inner: tw.docs.clone(),
        calls: AtomicUsize::new(0),
    });
    tw.worker.flow_runs = counting.clone();
    tw.worker.clock = Arc::new(SystemClock);
    (tw, counting)
}

async fn send(state: &AppState, req: Request<Body>) -> (StatusCode, Value) {
    let resp = serve::router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn our_own_writes_and_other_documents_are_no_ops_without_a_store_call() {
    let (tw, counting) = memory_worker();
    let state = AppState::new(tw.worker.clone());
    let mut running = support::flow_run(&["a"], 1);
    running["steps"]["charts_4h"]["status"] = json!("RUNNING");
    running["steps"]["charts_4h"]["leaseExpiresAt"] = json!("2999-01-01T00:00:00Z");
    let (status, body) = send(&state, eventarc_request("p", "run-123", Some(&running), "e1")).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::OK, Some("noop")),
        "{body}"
    );
    let mut done = support::flow_run(&["a"], 1);
    done["steps"]["charts_4h"]["status"] = json!("SUCCEEDED");
    let (status, _) = send(&state, eventarc_request("p", "run-123", Some(&done), "e2")).await;
    assert_eq!(status, StatusCode::OK);
    let mut other = eventarc_request("p", "run-123", Some(&support::flow_run(&["a"], 1)), "e3");
    other
        .headers_mut()
        .insert("ce-document", "chart_templates/a".parse().unwrap());
    let (status, body) = send(&state, other).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::OK, Some("noop")),
        "{body}"
    );
    assert_eq!(
        counting.calls.load(Ordering::SeqCst),
        0,
        "no store call before the quick filter says yes"
    );
}

#[tokio::test]
async fn an_event_for_another_database_is_acknowledged_and_never_run() {
    let (tw, counting) = memory_worker();
    let ready = support::flow_run(&["a"], 1);
    // A worker on database `charts` gets an event from `(default)`: 2xx, nothing read or claimed.
    let state = AppState::new(tw.worker.clone()).with_database("charts");
    let (status, body) = send(&state, eventarc_request("p", "run-123", Some(&ready), "e1")).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{body}"
    );
    assert!(body["reason"].as_str().unwrap().contains("\"(default)\""), "{body}");
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0, "never run");
    // The same event for the worker's database is run (the claim reads the store).
    let mut ours = eventarc_request("p", "run-123", Some(&ready), "e2");
    ours.headers_mut().insert("ce-database", "charts".parse().unwrap());
    let (status, body) = send(&state, ours).await;
    assert_ne!(body["result"].as_str(), Some("ignored"), "{status} {body}");
    assert!(counting.calls.load(Ordering::SeqCst) > 0, "the step was looked at");
}

#[tokio::test]
async fn malformed_deliveries_are_acknowledged_so_they_are_not_retried_forever() {
    let (tw, counting) = memory_worker();
    let state = AppState::new(tw.worker.clone());
    let mut bad = eventarc_request("p", "run-123", None, "e1");
    *bad.body_mut() = Body::from(vec![0xff, 0xff, 0xff]);
    let (status, body) = send(&state, bad).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::OK, Some("rejected")),
        "{body}"
    );
    let junk = Request::post("/")
        .header("content-type", "text/plain")
        .body(Body::from("hello"))
        .unwrap();
    assert_eq!(send(&state, junk).await.0, StatusCode::OK);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
    let health = serve::router(state)
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_event_without_data_rereads_the_document_and_runs_the_step() {
    let (tw, counting) = memory_worker();
    tw.seed(&support::flow_run(&["a"], 1), &["a"]).await;
    let state = AppState::new(tw.worker.clone());
    let (status, body) = send(&state, eventarc_request("p", "run-123", None, "big")).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("succeeded")),
        "{body}"
    );
    assert!(counting.calls.load(Ordering::SeqCst) >= 2, "re-read, then claim");
    assert_eq!(tw.step().await["status"], "SUCCEEDED");
}

#[tokio::test]
async fn a_pubsub_envelope_and_a_proto3_json_body_are_accepted() {
    use base64::Engine as _;
    let (tw, _) = memory_worker();
    tw.seed(&support::flow_run(&["a"], 1), &["a"]).await;
    let state = AppState::new(tw.worker.clone());
    let data = encode_document_event(
        "projects/p/databases/(default)/documents/flow_runs/run-123",
        &support::flow_run(&["a"], 1),
        &[],
    );
    let envelope = json!({"message": {"attributes": {"ce-type": "google.cloud.firestore.document.v1.updated",
        "ce-document": "flow_runs/run-123", "datacontenttype": "application/protobuf"},
        "data": base64::engine::general_purpose::STANDARD.encode(data), "messageId": "1"}, "subscription": "s"});
    let req = Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(envelope.to_string()))
        .unwrap();
    let (status, body) = send(&state, req).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("succeeded")),
        "{body}"
    );

    let json_event = json!({"value": {"name": "projects/p/databases/(default)/documents/flow_runs/run-123",
        "fields": {"steps": {"mapValue": {"fields": {"charts_4h": {"mapValue": {"fields": {
            "stepType": {"stringValue": "CHART_EXPORT"}, "status": {"stringValue": "SUCCEEDED"}}}}}}}}}});
    let mut req = eventarc_request("p", "run-123", None, "j1");
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    *req.body_mut() = Body::from(json_event.to_string());
    let (status, body) = send(&state, req).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::OK, Some("noop")),
        "{body}"
    );
}

/// A renderer that never answers within the test.
struct Stuck;

#[async_trait]
impl ChartRenderer for Stuck {
    async fn render(&self, _call: &ChartCall<'_>) -> Result<RenderedChart, ChartApiError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        unreachable!()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_a_step_cut_short() {
    let tw = support::one_account(Arc::new(Stuck));
    tw.seed(&support::flow_run(&["a"], 1), &["a"]).await;
    let mut worker = tw.worker.clone();
    worker.clock = Arc::new(SystemClock);
    let state = AppState::new(worker).with_grace(Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let pending = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move {
            post(
                &client,
                &base,
                eventarc_request("p", "run-123", Some(&support::flow_run(&["a"], 1)), "s1"),
            )
            .await
        }
    });
    for _ in 0..200 {
        if tw.step().await["status"] == "RUNNING" && state.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tw.step().await["status"], "RUNNING");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("bounded shutdown")
        .unwrap()
        .unwrap();
    let step = tw.step().await;
    assert_eq!(step["status"], "READY", "{step}");
    assert!(step.get("claimedBy").is_none(), "{step}");
    assert_eq!(step["attempts"], 0, "a shutdown does not use up an attempt: {step}");
    assert!(step["notBefore"].is_string(), "{step}");
    // The cut-short request is answered 200 `released` (the release write's own event carries the retry) before the
    // server is done: a connection closed without an answer would leave Eventarc to guess.
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("the request ends within 2 s of the shutdown")
        .expect("an answer, not a connection closed without one (the request task failed)");
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("released")),
        "{body}"
    );
}

/// The answer policy of `eventarc.md` and contract §9: exactly the answers that make Eventarc redeliver are 503.
#[tokio::test]
async fn answers_follow_the_lifecycle() {
    let (tw, counting) = memory_worker();
    let state = AppState::new(tw.worker.clone());
    // Released, not due yet: 503 from the event's data alone (no store call), so Eventarc's backoff brings it back.
    let mut released = support::flow_run(&["a"], 1);
    released["steps"]["charts_4h"]["notBefore"] = json!("2999-01-01T00:00:00Z");
    released["steps"]["charts_4h"]["attempts"] = json!(1);
    let (status, body) = send(&state, eventarc_request("p", "run-123", Some(&released), "n1")).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("retry")),
        "{body}"
    );
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);

    // The event shows READY but the store has it RUNNING under another live claim: 503 (re-check later).
    let mut held = support::flow_run(&["a"], 1);
    held["steps"]["charts_4h"]["status"] = json!("RUNNING");
    held["steps"]["charts_4h"]["claimedBy"] = json!("w-elsewhere");
    held["steps"]["charts_4h"]["claimToken"] = json!("elsewhere");
    held["steps"]["charts_4h"]["leaseExpiresAt"] = json!("2999-01-01T00:00:00Z");
    tw.seed(&held, &["a"]).await;
    let (status, body) = send(
        &state,
        eventarc_request("p", "run-123", Some(&support::flow_run(&["a"], 1)), "b1"),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("busy")),
        "{body}"
    );

    // A transient failure after the claim: released and answered 200 (the release's own event carries the retry).
    let mut tw2 = support::one_account(support::ScriptedRenderer::ok());
    tw2.worker.clock = Arc::new(SystemClock);
    tw2.worker.templates = Arc::new(FailingTemplates);
    tw2.seed(&support::flow_run(&["a"], 1), &["a"]).await;
    let state2 = AppState::new(tw2.worker.clone());
    let (status, body) = send(
        &state2,
        eventarc_request("p", "run-123", Some(&support::flow_run(&["a"], 1)), "r1"),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("released")),
        "{body}"
    );
    let step = tw2.step().await;
    assert_eq!(
        (step["status"].as_str(), step["attempts"].as_u64()),
        (Some("READY"), Some(1)),
        "{step}"
    );
    // Its release event comes straight back: 503 until its not-before time.
    let (status, _) = send(
        &state2,
        eventarc_request("p", "run-123", Some(&tw2.run_doc().await), "r2"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

struct FailingTemplates;

#[async_trait]
impl worker_chart_export::ports::TemplateStore for FailingTemplates {
    async fn get_templates(
        &self,
        _ids: &[worker_chart_export::domain::TemplateId],
    ) -> Result<std::collections::HashMap<worker_chart_export::domain::TemplateId, Value>, StoreError> {
        Err(StoreError::Unavailable("UNAVAILABLE: injected".into()))
    }
}

#[tokio::test]
async fn an_oversized_event_is_refused_as_malformed_not_redelivered() {
    let (tw, counting) = memory_worker();
    let state = AppState::new(tw.worker.clone());
    let mut big = eventarc_request("p", "run-123", None, "huge");
    *big.body_mut() = Body::from(vec![0u8; serve::MAX_BODY + 1]);
    let (status, body) = send(&state, big).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (StatusCode::OK, Some("rejected")),
        "{body}"
    );
    // Refused for its size, before parsing: not read whole and then found malformed.
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("within {} bytes", serve::MAX_BODY)),
        "{body}"
    );
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
}
