//! Re-recording the same traffic gives byte-identical cassettes, whatever order the requests came in.

use recorder::{Mode, Request, Response, Vcr};

use crate::support::*;

/// Upstream answers depend only on the request (like a real chart for fixed data), plus a volatile header.
async fn record(vcr: &Vcr, requests: &[Request]) {
    for (i, r) in requests.iter().enumerate() {
        let body = r.body.clone();
        vcr.handle(r.clone(), |_| async move {
            Ok::<_, std::io::Error>(
                Response::new(200)
                    .with_header("content-type", "image/png")
                    .with_header("date", format!("Thu, 01 Jan 2026 00:00:0{i} GMT"))
                    .with_body(fake_png(&body)),
            )
        })
        .await
        .unwrap();
    }
}

fn traffic() -> Vec<Request> {
    let mut reqs: Vec<Request> = demo_bodies().iter().map(|b| chart_request(KEY1, b)).collect();
    reqs.push(
        Request::new("GET", "/v2/health")
            .with_query("b", "2")
            .with_query("a", "1"),
    );
    reqs.push(
        Request::post_json(
            "/v2/tradingview/advanced-chart/storage",
            &serde_json::json!({"interval": "1D"}),
        )
        .with_header("x-api-key", KEY2),
    );
    reqs
}

#[tokio::test]
async fn two_recordings_of_the_same_traffic_are_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    record(&open(a.path(), Mode::NewEpisodes), &traffic()).await;
    let mut reversed = traffic();
    reversed.reverse();
    record(&open(b.path(), Mode::NewEpisodes), &reversed).await;
    let (sa, sb) = (snapshot(a.path()), snapshot(b.path()));
    assert_eq!(sa.len(), 1 + 5, "cassette.json and five PNG files");
    assert_eq!(
        sa, sb,
        "same traffic, different order: the files must be byte-identical"
    );
    assert!(!cassette_text(a.path()).contains("\"date\""));
}

#[tokio::test]
async fn re_recording_over_an_existing_cassette_in_all_mode_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    record(&open(dir.path(), Mode::NewEpisodes), &traffic()).await;
    let before = snapshot(dir.path());
    record(&open(dir.path(), Mode::All), &traffic()).await;
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn json_responses_replay_byte_exact_and_read_well() {
    let dir = tempfile::tempdir().unwrap();
    let vcr = open(dir.path(), Mode::NewEpisodes);
    let exact = r#"{"url":"https://r2.example/x.png","etag":"9f8e","expire":"2023-03-28T02:37:01.412Z"}"#;
    let spaced = "{ \"message\" : \"Too Many Requests\" }";
    let float = r#"{"v":1.50}"#;
    for (path, body) in [("/a", exact), ("/b", spaced), ("/c", float)] {
        vcr.handle(Request::new("GET", path), |_| async move {
            Ok::<_, std::io::Error>(
                Response::new(200)
                    .with_header("content-type", "application/json")
                    .with_body(body),
            )
        })
        .await
        .unwrap();
    }
    drop(vcr);
    let text = cassette_text(dir.path());
    // Stored as JSON (readable) only when re-serializing gives the same bytes; as text otherwise.
    assert!(text.contains("\"etag\": \"9f8e\""), "{text}");
    assert!(
        text.contains(r#""text": "{ \"message\" : \"Too Many Requests\" }""#),
        "{text}"
    );
    assert!(text.contains(r#""text": "{\"v\":1.50}""#), "{text}");
    let vcr = open(dir.path(), Mode::None);
    for (path, body) in [("/a", exact), ("/b", spaced), ("/c", float)] {
        assert_eq!(vcr.replay(&Request::new("GET", path)).unwrap().body, body.as_bytes());
    }
}
