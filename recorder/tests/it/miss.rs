//! The miss report: redacted request, closest recorded interaction, every differing field; no secret anywhere.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use recorder::{MissReason, Mode, Secrets, VcrError};
use serde_json::json;

use crate::support::*;

async fn demo_cassette() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let vcr = open(dir.path(), Mode::NewEpisodes);
    let calls = Arc::new(AtomicUsize::new(0));
    for (i, body) in demo_bodies().iter().enumerate() {
        vcr.handle(chart_request(KEY1, body), text_upstream(&calls, &format!("png-{i}")))
            .await
            .unwrap();
    }
    dir
}

#[tokio::test]
async fn miss_names_the_closest_interaction_and_each_difference() {
    let dir = demo_cassette().await;
    let vcr = open(dir.path(), Mode::None);
    let mut wanted = demo_bodies()[1].clone(); // the RSI template…
    wanted["interval"] = json!("1h"); // …at another interval
    wanted["studies"][0]["input"] = json!({"length": 21});
    let miss = vcr.replay(&chart_request(KEY1, &wanted)).unwrap_err();

    assert_eq!(miss.reason, MissReason::NoMatch);
    assert_eq!(miss.request.headers["x-api-key"], "<CHART_IMG_API_KEY:acc-1>");
    let closest = miss.closest.as_ref().expect("a closest interaction");
    assert_eq!(
        closest.request.body.as_ref().unwrap()["studies"][0]["name"],
        "Relative Strength Index"
    );
    let fields: Vec<(&str, Option<&str>, Option<&str>)> = miss
        .diffs
        .iter()
        .map(|d| (d.field.as_str(), d.expected.as_deref(), d.actual.as_deref()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("body.interval", Some("\"4h\""), Some("\"1h\"")),
            ("body.studies[0].input.length", None, Some("21"))
        ]
    );

    let report = miss.to_string();
    assert!(
        report.contains("no recorded interaction matches POST /v2/tradingview/advanced-chart"),
        "{report}"
    );
    assert!(
        report.contains(&format!("closest recorded interaction: #{}", closest.index)),
        "{report}"
    );
    assert!(report.contains("body.interval: \"4h\" -> \"1h\""), "{report}");
    assert!(
        report.contains("body.studies[0].input.length: <absent> -> 21"),
        "{report}"
    );
    let json = serde_json::to_value(&miss).unwrap();
    assert_eq!(json["reason"]["kind"], "noMatch");
    assert_eq!(json["diffs"][0]["field"], "body.interval");
    assert_eq!(json["closest"]["index"], closest.index);
    for text in [report, json.to_string(), format!("{miss:?}")] {
        assert!(!text.contains(KEY1), "the report leaks the key: {text}");
    }
}

#[tokio::test]
async fn miss_on_an_empty_cassette_and_through_handle() {
    let dir = tempfile::tempdir().unwrap();
    let vcr = open(dir.path(), Mode::None);
    let err = vcr
        .handle(
            chart_request(KEY2, &demo_bodies()[0]),
            text_upstream(&Arc::new(AtomicUsize::new(0)), "x"),
        )
        .await
        .unwrap_err();
    let VcrError::Miss(miss) = &err else {
        panic!("expected a miss, got {err}")
    };
    assert!(miss.closest.is_none());
    assert!(err.to_string().contains("closest recorded interaction: none"), "{err}");
    assert!(!err.to_string().contains(KEY2));
}

#[tokio::test]
async fn secrets_in_query_path_and_json_fields_are_redacted_in_reports() {
    let dir = demo_cassette().await;
    let secrets = secrets().redact_json_field("token");
    let vcr = recorder::Vcr::open(dir.path(), config(Mode::None), secrets).unwrap();
    let req = recorder::Request::post_json(
        format!("/v2/{KEY2}/x"),
        &json!({"token": KEY1, "note": format!("k={KEY2}")}),
    )
    .with_query("apiKey", "not-a-known-key")
    .with_query("q", KEY1)
    .with_header("x-api-key", KEY1)
    .with_header("authorization", format!("Bearer {KEY2}"));
    let miss = vcr.replay(&req).unwrap_err();
    let all = format!("{miss}\n{}\n{miss:?}", serde_json::to_string(&miss).unwrap());
    assert!(
        !all.contains(KEY1) && !all.contains(KEY2) && !all.contains("not-a-known-key"),
        "{all}"
    );
    assert!(all.contains("/v2/<CHART_IMG_API_KEY:acc-2>/x"), "{all}");
    assert!(all.contains("<CHART_IMG_API_KEY:unknown>"), "{all}");
}

#[tokio::test]
async fn upstream_errors_are_not_displayed() {
    let dir = tempfile::tempdir().unwrap();
    let vcr = open(dir.path(), Mode::NewEpisodes);
    let err = vcr
        .handle(chart_request(KEY1, &demo_bodies()[0]), |_| async {
            Err::<recorder::Response, _>(std::io::Error::other(format!("GET https://x/?key={KEY1} failed")))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, VcrError::Upstream(_)));
    assert!(!err.to_string().contains(KEY1));
    assert!(!dir.path().join(recorder::CASSETTE_FILE).exists());
}

#[test]
fn accounts_json_errors_do_not_quote_keys() {
    let err = Secrets::from_accounts_json(&format!(r#"[{{"id": 7, "apiKey": "{KEY1}"}}]"#)).unwrap_err();
    assert!(!err.to_string().contains(KEY1), "{err}");
    let err = Secrets::from_accounts_json(&format!(r#"[{{"id": "a", "apiKey": ["{KEY1}"]}}]"#)).unwrap_err();
    assert!(!err.to_string().contains(KEY1), "{err}");
    let ok = Secrets::from_accounts_json(&accounts_json()).unwrap();
    assert_eq!(ok.account_ids().collect::<Vec<_>>().len(), 2);
    assert!(!format!("{ok:?}").contains(KEY1));
}
