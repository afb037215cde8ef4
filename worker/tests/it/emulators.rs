//! Access to the Firestore emulator and fake-gcs-server for the emulator tests.
//!
//! `scripts/emulators.sh start` writes `.tools/emulators.env`; source it (or set `FIRESTORE_EMULATOR_HOST` and
//! `STORAGE_EMULATOR_HOST` yourself) before `cargo test`. Without them an emulator test fails when `CI` is set or
//! `REQUIRE_EMULATORS=1`, and is skipped with a note on stderr otherwise.
//!
//! Isolation without resets: every test gets its own Firestore project id and its own bucket, so tests run in
//! parallel against one pair of emulators.

use std::time::Duration;

use worker_chart_export::adapters::emulator_endpoint;
use worker_chart_export::adapters::{FirestoreStore, GcsArtifacts};
use worker_chart_export::RetryPolicy;

fn required() -> bool {
    chromium_test::required()
}

/// The value of `var`, or `None` after printing why the test is skipped; panics instead when emulators are required.
pub fn emulator_var(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if required() => panic!(
            "{test}: {var} is not set, and emulator tests are required here (CI or REQUIRE_EMULATORS=1). \
             Start them with `scripts/emulators.sh start` and `source .tools/emulators.env`."
        ),
        _ => {
            eprintln!(
                "SKIPPED {test}: {var} is not set (run `scripts/emulators.sh start && source .tools/emulators.env`)"
            );
            None
        }
    }
}

/// A name unique to this test run: lowercase, digits and dashes, at most 30 characters.
pub fn unique(prefix: &str, test: &str) -> String {
    let mut slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(16);
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}-{}", slug.trim_matches('-'), &id[..8])
}

/// A Firestore store on a project of its own, or `None` (skipped).
pub async fn firestore(test: &str) -> Option<FirestoreStore> {
    emulator_var("FIRESTORE_EMULATOR_HOST", test)?;
    let project = unique("it", test);
    let store = FirestoreStore::new(&project)
        .await
        .expect("connect to the Firestore emulator");
    // The emulator's lock waits make a contended transaction slow; give tests a generous, still bounded, budget.
    Some(store.with_policy(RetryPolicy {
        max_total_delay: Duration::from_secs(120),
        max_retries: 30,
        ..RetryPolicy::FIRESTORE
    }))
}

/// The emulator's base URL, or `None` (skipped).
pub fn gcs_endpoint(test: &str) -> Option<String> {
    emulator_var("STORAGE_EMULATOR_HOST", test).map(|h| emulator_endpoint(&h))
}

/// Creates `bucket` through the JSON API.
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/storage/v1/b?project=it"))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .expect("fake-gcs-server answers");
    assert!(r.status().is_success(), "bucket {bucket} not created: {}", r.status());
}

/// A GCS adapter on the emulator and a fresh bucket, or `None` (skipped).
pub async fn gcs(test: &str) -> Option<(GcsArtifacts, String)> {
    let endpoint = gcs_endpoint(test)?;
    let bucket = unique("b", test);
    create_bucket(&endpoint, &bucket).await;
    Some((GcsArtifacts::emulator(&endpoint), bucket))
}

/// The object as fake-gcs stores it, read over plain HTTP (independent of the adapter): metadata and bytes.
pub async fn raw_object(endpoint: &str, bucket: &str, path: &str) -> Option<(serde_json::Value, Vec<u8>)> {
    let enc = worker_chart_export::adapters::encode_component(path);
    let http = reqwest::Client::new();
    let meta = http
        .get(format!("{endpoint}/storage/v1/b/{bucket}/o/{enc}"))
        .send()
        .await
        .unwrap();
    if meta.status() == 404 {
        return None;
    }
    let meta: serde_json::Value = meta.json().await.unwrap();
    let bytes = http
        .get(format!("{endpoint}/storage/v1/b/{bucket}/o/{enc}?alt=media"))
        .send()
        .await
        .unwrap();
    Some((meta, bytes.bytes().await.unwrap().to_vec()))
}

/// Names of the objects under `prefix`.
pub async fn list_objects(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{endpoint}/storage/v1/b/{bucket}/o"))
        .query(&[("prefix", prefix)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = v["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    names.sort();
    names
}
