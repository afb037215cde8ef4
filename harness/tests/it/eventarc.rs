//! The local Eventarc against the Firestore emulator and a small axum target.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use harness::eventarc::{Config, EventType, LocalEventarc, Outcome};
use prost::Message as _;
use serde_json::json;
use worker_chart_export::adapters::FirestoreStore;
use worker_chart_export::eventarc::proto::DocumentEventData;

#[derive(Clone, Default)]
struct Target {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Status per request in order; past the end, 200. A 0 hangs for an hour.
    script: Arc<Vec<u16>>,
}

async fn answer(State(t): State<Target>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = {
        let mut s = t.seen.lock().unwrap();
        s.push((headers, body));
        s.len() - 1
    };
    match t.script.get(n).copied().unwrap_or(200) {
        0 => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
        code => StatusCode::from_u16(code).unwrap(),
    }
}

async fn target(script: Vec<u16>) -> (String, Target) {
    let t = Target {
        seen: Arc::default(),
        script: Arc::new(script),
    };
    let app = axum::Router::new()
        .route("/", axum::routing::post(answer))
        .with_state(t.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, t)
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
    h.get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("header {k} missing"))
}

#[tokio::test]
async fn delivers_creates_and_updates_with_old_value_mask_and_every_header() {
    let Some(_) = crate::emulators("delivers_creates_and_updates") else {
        return;
    };
    let project = crate::project("ea-basic");
    let store = FirestoreStore::new(&project).await.unwrap();
    // Present before the start: initial state, not an event.
    store.put_doc("flow_runs", "before", json!({"x": 1})).await.unwrap();
    let (url, t) = target(vec![]).await;
    let mut cfg = Config::new(&project).with_time_scale(0.02);
    cfg.types = vec![EventType::Created, EventType::Updated];
    let ea = LocalEventarc::start(cfg, vec![url]).await.unwrap();
    store
        .put_doc(
            "flow_runs",
            "run-1",
            json!({"n": 1, "steps": {"charts_4h": {"status": "READY"}}}),
        )
        .await
        .unwrap();
    wait_for("the created event", Duration::from_secs(10), || {
        t.seen.lock().unwrap().len() == 1
    })
    .await;
    store
        .put_doc(
            "flow_runs",
            "run-1",
            json!({"n": 1, "steps": {"charts_4h": {"status": "RUNNING"}}}),
        )
        .await
        .unwrap();
    wait_for("the updated event", Duration::from_secs(10), || {
        t.seen.lock().unwrap().len() == 2
    })
    .await;
    store.put_doc("other", "run-1", json!({"n": 1})).await.unwrap();

    let seen = t.seen.lock().unwrap().clone();
    let name = format!("projects/{project}/databases/(default)/documents/flow_runs/run-1");
    for (i, (h, body)) in seen.iter().enumerate() {
        assert_eq!(header(h, "content-type"), "application/protobuf");
        assert_eq!(header(h, "ce-specversion"), "1.0");
        assert_eq!(
            header(h, "ce-type"),
            if i == 0 {
                "google.cloud.firestore.document.v1.created"
            } else {
                "google.cloud.firestore.document.v1.updated"
            }
        );
        assert_eq!(
            header(h, "ce-source"),
            format!("//firestore.googleapis.com/projects/{project}/databases/(default)")
        );
        assert_eq!(header(h, "ce-subject"), "documents/flow_runs/run-1");
        assert_eq!(header(h, "ce-document"), "flow_runs/run-1");
        assert_eq!(header(h, "ce-database"), "(default)");
        assert_eq!(header(h, "ce-project"), project);
        for k in ["ce-id", "ce-time", "ce-dataschema", "ce-namespace", "ce-location"] {
            assert!(!header(h, k).is_empty(), "{k}");
        }
        // The worker's own parser reads it as a flow-run event.
        let ev = worker_chart_export::eventarc::parse(h, body).unwrap();
        assert_eq!(ev.flow_run().unwrap().as_str(), "run-1");
        let data = DocumentEventData::decode(body.clone()).unwrap();
        assert_eq!(data.value.as_ref().unwrap().name, name);
        if i == 0 {
            assert!(data.old_value.is_none() && data.update_mask.is_none());
            assert_eq!(ev.value.unwrap()["steps"]["charts_4h"]["status"], "READY");
        } else {
            assert_eq!(data.old_value.as_ref().unwrap().name, name);
            assert_eq!(data.update_mask.unwrap().field_paths, ["steps.charts_4h.status"]);
            assert_eq!(ev.value.unwrap()["steps"]["charts_4h"]["status"], "RUNNING");
            let old = worker_chart_export::eventarc::parse(
                h,
                &Bytes::from({
                    // The old value re-encoded as the value: the previous version is the one the first event carried.
                    DocumentEventData {
                        value: data.old_value.clone(),
                        old_value: None,
                        update_mask: None,
                    }
                    .encode_to_vec()
                }),
            )
            .unwrap();
            assert_eq!(old.value.unwrap()["steps"]["charts_4h"]["status"], "READY");
        }
    }
    assert_ne!(header(&seen[0].0, "ce-id"), header(&seen[1].0, "ce-id"));
    let events = ea.events();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventType::Created, EventType::Updated]
    );
    let d = ea.deliveries();
    assert_eq!(d.len(), 2);
    assert!(d
        .iter()
        .all(|d| d.attempt == 1 && d.outcome == Outcome::Status { code: 200 }));
    assert!(
        ea.wait_settled(Duration::from_millis(200), Duration::from_secs(5))
            .await
    );
    ea.shutdown().await;
}

#[tokio::test]
async fn a_503_is_redelivered_with_doubling_gaps_until_acknowledged() {
    let Some(_) = crate::emulators("a_503_is_redelivered") else {
        return;
    };
    let project = crate::project("ea-503");
    let store = FirestoreStore::new(&project).await.unwrap();
    let (url, t) = target(vec![503, 503, 500]).await;
    // 10 s → 200 ms, 20 s → 400 ms, 40 s → 800 ms.
    let ea = LocalEventarc::start(Config::new(&project).with_time_scale(0.02), vec![url])
        .await
        .unwrap();
    store.put_doc("flow_runs", "run-1", json!({"n": 1})).await.unwrap();
    wait_for("four attempts", Duration::from_secs(15), || {
        t.seen.lock().unwrap().len() == 4
    })
    .await;
    assert!(
        ea.wait_settled(Duration::from_millis(100), Duration::from_secs(5))
            .await
    );
    let d = ea.deliveries();
    let outcomes: Vec<_> = d.iter().map(|d| (d.attempt, d.outcome.clone())).collect();
    assert_eq!(
        outcomes,
        [
            (1, Outcome::Status { code: 503 }),
            (2, Outcome::Status { code: 503 }),
            (3, Outcome::Status { code: 500 }),
            (4, Outcome::Status { code: 200 })
        ]
    );
    assert!(
        d.windows(2).all(|w| w[0].event_id == w[1].event_id),
        "one event, redelivered with its id"
    );
    for (i, want) in [200u64, 400, 800].into_iter().enumerate() {
        let gap = d[i + 1].at_ms - d[i].at_ms;
        assert!(
            gap >= want && gap < want * 2 + 300,
            "gap {} = {gap} ms, expected about {want} ms",
            i + 1
        );
    }
    assert!(ea.events()[0].acked);
    ea.shutdown().await;
}

#[tokio::test]
async fn a_hanging_target_is_abandoned_at_the_ack_deadline_and_redelivered() {
    let Some(_) = crate::emulators("a_hanging_target_is_abandoned") else {
        return;
    };
    let project = crate::project("ea-hang");
    let store = FirestoreStore::new(&project).await.unwrap();
    let (url, t) = target(vec![0]).await;
    let mut cfg = Config::new(&project).with_time_scale(0.002); // ack deadline 600 s → 1.2 s, backoff 10 s → 20 ms
    cfg.types = vec![EventType::Created];
    let ea = LocalEventarc::start(cfg, vec![url]).await.unwrap();
    store.put_doc("flow_runs", "run-1", json!({"n": 1})).await.unwrap();
    wait_for("the redelivery", Duration::from_secs(10), || {
        t.seen.lock().unwrap().len() == 2
    })
    .await;
    assert!(
        ea.wait_settled(Duration::from_millis(100), Duration::from_secs(5))
            .await
    );
    let d = ea.deliveries();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].outcome, Outcome::AckDeadline);
    assert!(
        (1150..2500).contains(&d[0].duration_ms),
        "abandoned after {} ms",
        d[0].duration_ms
    );
    assert_eq!((d[1].attempt, &d[1].outcome), (2, &Outcome::Status { code: 200 }));
    ea.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_reaches_a_new_target() {
    let Some(_) = crate::emulators("a_refused_connection_is_retried") else {
        return;
    };
    let project = crate::project("ea-refused");
    let store = FirestoreStore::new(&project).await.unwrap();
    let dead = format!("http://127.0.0.1:{}/", harness::process::free_port().unwrap());
    let ea = LocalEventarc::start(Config::new(&project).with_time_scale(0.01), vec![dead])
        .await
        .unwrap();
    store.put_doc("flow_runs", "run-1", json!({"n": 1})).await.unwrap();
    wait_for("two refused attempts", Duration::from_secs(10), || {
        ea.deliveries().len() >= 2
    })
    .await;
    let (url, t) = target(vec![]).await;
    ea.set_targets(vec![url]);
    wait_for("the delivery to the new target", Duration::from_secs(10), || {
        t.seen.lock().unwrap().len() == 1
    })
    .await;
    assert!(
        ea.wait_settled(Duration::from_millis(100), Duration::from_secs(5))
            .await
    );
    let d = ea.deliveries();
    let last = d.last().unwrap();
    assert_eq!(last.outcome, Outcome::Status { code: 200 });
    for x in &d[..d.len() - 1] {
        match &x.outcome {
            Outcome::Error { message } => assert!(message.to_lowercase().contains("connect"), "{message}"),
            other => panic!("expected a connection error, got {other:?}"),
        }
    }
    assert_eq!(last.attempt as usize, d.len());
    ea.shutdown().await;
}

#[tokio::test]
async fn duplicates_carry_the_same_id_and_the_admin_endpoint_lists_every_attempt() {
    let Some(_) = crate::emulators("duplicates_carry_the_same_id") else {
        return;
    };
    let project = crate::project("ea-dup");
    let store = FirestoreStore::new(&project).await.unwrap();
    let (url, t) = target(vec![]).await;
    let mut cfg = Config::new(&project).with_time_scale(0.01);
    cfg.duplicate_probability = 1.0;
    cfg.reorder_window = Duration::from_secs(10); // up to 100 ms before each chain's first attempt
    let ea = Arc::new(LocalEventarc::start(cfg, vec![url]).await.unwrap());
    store.put_doc("flow_runs", "run-1", json!({"n": 1})).await.unwrap();
    wait_for("both chains", Duration::from_secs(10), || {
        t.seen.lock().unwrap().len() == 2
    })
    .await;
    let seen = t.seen.lock().unwrap().clone();
    assert_eq!(header(&seen[0].0, "ce-id"), header(&seen[1].0, "ce-id"));
    let admin = harness::serve_admin(0, ea.admin_router()).await.unwrap();
    let listed: serde_json::Value = reqwest::get(format!("http://{admin}/deliveries"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chains: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["chain"].as_u64().unwrap())
        .collect();
    assert_eq!(
        {
            let mut c = chains.clone();
            c.sort();
            c
        },
        [0, 1],
        "{listed}"
    );
    assert_eq!(listed[0]["outcome"], json!({"kind": "status", "code": 200}));
    ea.shutdown().await;
}

/// `redeliver` sends the document's latest event (same `ce-id`, same body) once to the target it names, now, and
/// records it as chain `REDELIVERY_CHAIN`; an unknown document is an error, not a silent no-op.
#[tokio::test]
async fn a_redelivery_sends_the_latest_event_once_to_the_chosen_target() {
    let Some(_) = crate::emulators("a_redelivery_sends_the_latest_event") else {
        return;
    };
    let project = crate::project("ea-redeliver");
    let store = FirestoreStore::new(&project).await.unwrap();
    let (first_url, first) = target(vec![]).await;
    let (other_url, other) = target(vec![503]).await;
    let ea = LocalEventarc::start(Config::new(&project).with_time_scale(0.01), vec![first_url])
        .await
        .unwrap();
    store.put_doc("flow_runs", "run-1", json!({"n": 1})).await.unwrap();
    store.put_doc("flow_runs", "run-1", json!({"n": 2})).await.unwrap();
    wait_for("both events", Duration::from_secs(10), || {
        first.seen.lock().unwrap().len() == 2
    })
    .await;
    let latest = first.seen.lock().unwrap()[1].clone();

    let d = ea.redeliver("flow_runs/run-1", &other_url).await.unwrap();
    assert_eq!(d.outcome, Outcome::Status { code: 503 });
    assert_eq!((d.chain, d.attempt), (harness::eventarc::REDELIVERY_CHAIN, 1));
    let d = ea.redeliver("flow_runs/run-1", &other_url).await.unwrap();
    assert_eq!((d.outcome, d.attempt), (Outcome::Status { code: 200 }, 2));
    let seen = other.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one attempt per call, no chain of its own");
    assert_eq!(header(&seen[0].0, "ce-id"), header(&latest.0, "ce-id"));
    assert_eq!(seen[1].1, latest.1, "the latest event's body");
    assert_eq!(first.seen.lock().unwrap().len(), 2, "nothing more to the first target");

    let e = ea.redeliver("flow_runs/nope", &other_url).await.unwrap_err();
    assert!(e.to_string().contains("no event of flow_runs/nope"), "{e}");
    ea.shutdown().await;
}

/// A trigger delivers only the types it names: by default the deployment's (`written`: a created and an updated
/// document, each as `ce-type` `written`), while an `updated`-only trigger never sees the created run.
#[tokio::test]
async fn only_the_configured_trigger_types_are_delivered_and_the_default_is_the_deployments() {
    let Some(_) = crate::emulators("only_the_configured_trigger_types") else {
        return;
    };
    let project = crate::project("ea-types");
    let store = FirestoreStore::new(&project).await.unwrap();
    let (url, t) = target(vec![]).await;
    let (url_updated, t_updated) = target(vec![]).await;
    let as_deployed = LocalEventarc::start(Config::new(&project).with_time_scale(0.02), vec![url])
        .await
        .unwrap();
    assert_eq!(
        as_deployed.config().types,
        worker_chart_export::entry::deploy::TRIGGER_EVENT_TYPES
    );
    let mut cfg = Config::new(&project).with_time_scale(0.02);
    cfg.types = vec![EventType::Updated];
    let updated_only = LocalEventarc::start(cfg, vec![url_updated]).await.unwrap();
    let ready = json!({"steps": {"charts_4h": {"status": "READY"}}});
    store.put_doc("flow_runs", "run-1", ready).await.unwrap();
    wait_for("the created run", Duration::from_secs(10), || {
        t.seen.lock().unwrap().len() == 1
    })
    .await;
    store
        .put_doc(
            "flow_runs",
            "run-1",
            json!({"steps": {"charts_4h": {"status": "RUNNING"}}}),
        )
        .await
        .unwrap();
    wait_for("the update", Duration::from_secs(10), || {
        t.seen.lock().unwrap().len() == 2
    })
    .await;
    wait_for(
        "the update on the updated-only trigger",
        Duration::from_secs(10),
        || !t_updated.seen.lock().unwrap().is_empty(),
    )
    .await;
    for ea in [&as_deployed, &updated_only] {
        assert!(
            ea.wait_settled(Duration::from_millis(300), Duration::from_secs(5))
                .await
        );
    }
    let seen = t.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(h, _)| header(h, "ce-type") == "google.cloud.firestore.document.v1.written"),
        "{seen:?}"
    );
    // The worker reads the created run's READY step from the `written` event.
    let first = worker_chart_export::eventarc::parse(&seen[0].0, &seen[0].1).unwrap();
    assert_eq!(first.value.unwrap()["steps"]["charts_4h"]["status"], "READY");
    let kinds: Vec<_> = as_deployed.events().iter().map(|e| (e.kind, e.delivered_as)).collect();
    assert_eq!(
        kinds,
        [
            (EventType::Created, EventType::Written),
            (EventType::Updated, EventType::Written),
        ]
    );
    let only: Vec<_> = updated_only.events().iter().map(|e| e.kind).collect();
    assert_eq!(
        only,
        [EventType::Updated],
        "an updated-only trigger never delivers the created run"
    );
    assert_eq!(
        header(&t_updated.seen.lock().unwrap()[0].0, "ce-type"),
        "google.cloud.firestore.document.v1.updated"
    );
    as_deployed.shutdown().await;
    updated_only.shutdown().await;
}
