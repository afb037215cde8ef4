//! Each fault rule against the real emulators: gRPC to Firestore, HTTP/1.1 to fake-gcs-server.

use std::time::{Duration, Instant};

use firestore::{FirestoreDb, FirestoreDbOptions};
use harness::proxy::{Action, FaultProxy, Matcher, Rule, Upstream};
use serde_json::json;
use worker_chart_export::adapters::FirestoreStore;

const COMMIT: &str = "/google.firestore.v1.Firestore/Commit";

async fn store_via(proxy: &FaultProxy, project: &str) -> FirestoreStore {
    let options = FirestoreDbOptions::new(project.to_owned()).with_firebase_api_url(proxy.url());
    FirestoreStore::from_db(FirestoreDb::with_options(options).await.unwrap())
}

#[tokio::test]
async fn a_commit_whose_reply_is_dropped_is_applied_in_the_emulator() {
    let Some((firestore, _)) = crate::emulators("a_commit_whose_reply_is_dropped") else {
        return;
    };
    let project = crate::project("px-drop");
    let proxy = FaultProxy::start(&firestore, Upstream::Http2).await.unwrap();
    proxy.add_rule(Rule::new(Matcher::path(COMMIT), Action::DropReply).nth(1));
    let via = store_via(&proxy, &project).await;
    // The caller never learns of the first commit; whatever it does next, the write landed.
    let _ = via.create_doc("flow_runs", "run-1", json!({"n": 1})).await;
    let direct = FirestoreStore::new(&project).await.unwrap();
    assert_eq!(
        direct.get_doc("flow_runs", "run-1").await.unwrap(),
        Some(json!({"n": 1}))
    );
    let calls: Vec<_> = proxy.calls().into_iter().filter(|c| c.path == COMMIT).collect();
    assert_eq!(calls[0].action, "dropped_reply");
    assert_eq!(calls[0].status, Some(200), "the emulator answered the dropped commit");
    assert!(calls[0].grpc && calls[0].rule.is_some());
    assert!(calls[1..].iter().all(|c| c.action == "forwarded"), "{calls:?}");
    assert_eq!(proxy.rules()[0].applied, 1);
}

#[tokio::test]
async fn refused_and_reset_grpc_calls_fail_without_reaching_firestore_then_heal() {
    let Some((firestore, _)) = crate::emulators("refused_and_reset_grpc_calls") else {
        return;
    };
    let project = crate::project("px-refuse");
    let proxy = FaultProxy::start(&firestore, Upstream::Http2).await.unwrap();
    let via = store_via(&proxy, &project).await;
    // The bare client, without retries, so each fault shows as one failed call.
    let mut options = FirestoreDbOptions::new(project.clone()).with_firebase_api_url(proxy.url());
    options.max_retries = 0;
    let bare = FirestoreDb::with_options(options).await.unwrap();
    let direct = FirestoreStore::new(&project).await.unwrap();
    for action in [Action::Refuse, Action::Reset] {
        proxy.clear_rules();
        proxy.add_rule(Rule::new(
            Matcher::path("/google.firestore.v1.Firestore/"),
            action.clone(),
        ));
        let r: Result<serde_json::Value, _> = bare
            .fluent()
            .insert()
            .into("flow_runs")
            .document_id("run-1")
            .object(&json!({"n": 1}))
            .execute()
            .await;
        assert!(r.is_err(), "{action:?} let the call through: {r:?}");
        assert_eq!(
            direct.get_doc("flow_runs", "run-1").await.unwrap(),
            None,
            "{action:?} reached the emulator"
        );
    }
    let refused = proxy.calls().iter().filter(|c| c.action == "refused").count();
    let reset = proxy.calls().iter().filter(|c| c.action == "reset").count();
    assert!(refused >= 1 && reset >= 1, "{:?}", proxy.calls());
    proxy.clear_rules();
    via.put_doc("flow_runs", "run-1", json!({"n": 2})).await.unwrap();
    assert_eq!(
        direct.get_doc("flow_runs", "run-1").await.unwrap(),
        Some(json!({"n": 2}))
    );
}

async fn bucket(storage: &str, name: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://{storage}/storage/v1/b?project=p"))
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

fn upload(base: &str, bucket: &str, name: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!(
            "{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"
        ))
        .header("content-type", "text/plain")
        .body("hello")
}

async fn exists(storage: &str, bucket: &str, name: &str) -> bool {
    reqwest::get(format!("http://{storage}/storage/v1/b/{bucket}/o/{name}"))
        .await
        .unwrap()
        .status()
        .is_success()
}

#[tokio::test]
async fn gcs_uploads_refused_n_times_then_through_and_a_dropped_reply_still_stores() {
    let Some((_, storage)) = crate::emulators("gcs_uploads_refused_n_times") else {
        return;
    };
    let b = format!("px-gcs-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    bucket(&storage, &b).await;
    let proxy = FaultProxy::start(&storage, Upstream::Http1).await.unwrap();
    proxy.add_rule(
        Rule::new(
            Matcher {
                method: Some("POST".into()),
                path_prefix: Some("/upload/".into()),
                body_contains: None,
            },
            Action::Refuse,
        )
        .times(2),
    );
    let statuses = [
        upload(&proxy.url(), &b, "a.txt")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        upload(&proxy.url(), &b, "a.txt")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        upload(&proxy.url(), &b, "a.txt")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
    ];
    assert_eq!(statuses, [503, 503, 200]);
    assert!(exists(&storage, &b, "a.txt").await);
    // Reads are not matched by the upload rule.
    let r = reqwest::get(format!("{}/storage/v1/b/{b}/o/a.txt?alt=media", proxy.url()))
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");

    proxy.add_rule(Rule::new(Matcher::path("/upload/"), Action::DropReply).nth(1));
    let e = upload(&proxy.url(), &b, "b.txt").send().await.unwrap_err();
    assert!(!e.is_status(), "the client gets no answer: {e}");
    assert!(
        exists(&storage, &b, "b.txt").await,
        "the upstream applied the upload whose reply was dropped"
    );

    proxy.clear_rules();
    proxy.add_rule(Rule::new(Matcher::path("/upload/"), Action::Reset).nth(1));
    assert!(upload(&proxy.url(), &b, "c.txt").send().await.is_err());
    assert!(
        !exists(&storage, &b, "c.txt").await,
        "a reset request never reaches the upstream"
    );
    assert_eq!(upload(&proxy.url(), &b, "c.txt").send().await.unwrap().status(), 200);

    // A body rule reads each request's body first, then forwards it whole: only the upload carrying the bytes is
    // refused, and the other arrives intact.
    proxy.clear_rules();
    proxy.add_rule(Rule::new(
        Matcher {
            method: None,
            path_prefix: Some("/upload/".into()),
            body_contains: Some("marker-7".into()),
        },
        Action::Refuse,
    ));
    let marked = upload(&proxy.url(), &b, "d.txt")
        .body("a marker-7 here")
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 503);
    assert!(!exists(&storage, &b, "d.txt").await);
    let plain = upload(&proxy.url(), &b, "e.txt").send().await.unwrap();
    assert_eq!(plain.status(), 200);
    let r = reqwest::get(format!("{}/storage/v1/b/{b}/o/e.txt?alt=media", proxy.url()))
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "hello",
        "forwarded whole after the proxy read it"
    );
}

#[tokio::test]
async fn delays_and_time_windows() {
    let Some((_, storage)) = crate::emulators("delays_and_time_windows") else {
        return;
    };
    let proxy = FaultProxy::start(&storage, Upstream::Http1).await.unwrap();
    let health = format!("{}/_internal/healthcheck", proxy.url());
    proxy.add_rule(Rule::new(Matcher::path("/_internal/"), Action::Delay { ms: 300 }).nth(1));
    let t0 = Instant::now();
    assert!(reqwest::get(&health).await.unwrap().status().is_success());
    assert!(t0.elapsed() >= Duration::from_millis(300));
    proxy.clear_rules();
    proxy.add_rule(
        Rule::new(Matcher::path("/_internal/"), Action::Status { code: 500 }).for_duration(Duration::from_millis(400)),
    );
    assert_eq!(reqwest::get(&health).await.unwrap().status(), 500);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        reqwest::get(&health).await.unwrap().status().is_success(),
        "the window closed"
    );
    let admin = harness::serve_admin(0, std::sync::Arc::new(proxy).admin_router())
        .await
        .unwrap();
    let rules: serde_json::Value = reqwest::get(format!("http://{admin}/rules"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules[0]["matched"], 2);
    assert_eq!(rules[0]["applied"], 1);
    let added: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{admin}/rules"))
        .json(&json!({"action": {"kind": "refuse"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(added["id"].as_u64().is_some());
    assert_eq!(reqwest::get(&health).await.unwrap().status(), 503);
}
