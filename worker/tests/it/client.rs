//! The Chart-IMG HTTP client against `wiremock`: headers and body on the wire, classification over real HTTP,
//! timeouts and connection failures, retries and account switching through the core, and that the API key reaches
//! nothing but the `x-api-key` header.

use std::sync::Arc;
use std::time::Duration;

use cloud_run_kit::{CaptureWriter, CloudLoggingLayer};
use secrecy::SecretString;
use serde_json::{json, Map, Value};
use tracing_subscriber::layer::SubscriberExt;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use worker_chart_export::domain::{AccountId, ImageFormat, StepSelector};
use worker_chart_export::ports::{ChartApiError, ChartCall, ChartRenderer};
use worker_chart_export::HttpChartImg;
use worker_chart_export::{run_chart_export_step, StepReport};

use crate::support::*;

const PATH: &str = "/v2/tradingview/advanced-chart";

fn png_response() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "image/png")
        .set_body_bytes(png_bytes("wire").to_vec())
}

fn json_error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "message": message }))
}

async fn call_once(server: &MockServer, timeout: Duration) -> Result<bytes::Bytes, ChartApiError> {
    let client = HttpChartImg::new(&server.uri(), timeout).unwrap();
    let mut body = Map::new();
    body.insert("symbol".into(), json!("BINANCE:BTCUSDT"));
    body.insert("interval".into(), json!("4h"));
    let key = SecretString::from(KEY_1);
    let acc = AccountId::parse("acc-1").unwrap();
    let call = ChartCall {
        body: &body,
        format: ImageFormat::Png,
        account: &acc,
        api_key: &key,
    };
    client.render(&call).await.map(|r| r.bytes)
}

#[tokio::test]
async fn sends_the_key_header_and_the_json_body_and_returns_the_png_bytes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("x-api-key", KEY_1))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"symbol": "BINANCE:BTCUSDT", "interval": "4h"})))
        .respond_with(png_response())
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        call_once(&server, Duration::from_secs(5)).await.unwrap(),
        png_bytes("wire")
    );
}

#[tokio::test]
async fn answers_are_classified_over_real_http() {
    let cases: Vec<(ResponseTemplate, ChartApiError)> = vec![
        (json_error(429, "Limit Exceeded"), ChartApiError::LimitExceeded),
        (json_error(429, "Too Many Requests"), ChartApiError::Throttled),
        (json_error(403, "Forbidden"), ChartApiError::Rejected { status: 403, message: "Forbidden".into() }),
        (
            ResponseTemplate::new(422).set_body_json(json!([{"value": "X", "msg": "must be a valid tradingview EXCHANGE:SYMBOL", "param": "symbol", "location": "body"}])),
            ChartApiError::Rejected { status: 422, message: "symbol: must be a valid tradingview EXCHANGE:SYMBOL".into() },
        ),
        (json_error(504, "Endpoint request timed out"), ChartApiError::Transient { status: Some(504), message: "Endpoint request timed out".into() }),
        (ResponseTemplate::new(400), ChartApiError::Rejected { status: 400, message: "empty body".into() }),
        (
            ResponseTemplate::new(200).insert_header("content-type", "image/png").set_body_string("<html>oops</html>"),
            ChartApiError::NotAnImage { expected: "image/png", detail: "body \"<html>oops</html>\"".into() },
        ),
    ];
    for (response, want) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(response).mount(&server).await;
        assert_eq!(call_once(&server, Duration::from_secs(5)).await.unwrap_err(), want);
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_and_a_closed_port_fails_to_connect_both_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(png_response().set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let e = call_once(&server, Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(
        e,
        ChartApiError::Transient {
            status: None,
            message: "timed out after 0.2 s".into()
        }
    );
    assert!(e.is_retryable());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = HttpChartImg::new(&format!("http://{addr}"), Duration::from_secs(2)).unwrap();
    let body = Map::new();
    let key = SecretString::from(KEY_1);
    let acc = AccountId::parse("acc-1").unwrap();
    let e = client
        .render(&ChartCall {
            body: &body,
            format: ImageFormat::Png,
            account: &acc,
            api_key: &key,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ChartApiError::Transient {
            status: None,
            message: "connection failed".into()
        }
    );
}

fn http_worker(server: &MockServer, accounts: &str) -> TestWorker {
    let client: Arc<dyn ChartRenderer> = Arc::new(HttpChartImg::new(&server.uri(), Duration::from_secs(5)).unwrap());
    worker_with(client, accounts)
}

#[tokio::test]
async fn the_core_retries_503s_over_http_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(json_error(503, "Service Unavailable"))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(png_response())
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let t = http_worker(&server, &accounts_json(&[("acc-1", KEY_1, 50)]));
    t.seed(&flow_run(&["a"], 1), &["a"]).await;
    let report = run_chart_export_step(&t.worker, &run_id(), &StepSelector::First, None)
        .await
        .unwrap();
    assert!(matches!(report, StepReport::Succeeded { .. }), "{report:?}");
    assert_eq!(t.usage_today("acc-1").await, 3, "three calls sent, three units counted");
}

#[tokio::test]
async fn limit_exceeded_on_the_first_key_switches_to_the_second_over_http() {
    let server = MockServer::start().await;
    // The step's first account (its preference order) is used up at Chart-IMG; the other renders.
    let [(first, first_key), (second, second_key)] = two_accounts_in_step_order();
    Mock::given(header("x-api-key", first_key))
        .respond_with(json_error(429, "Limit Exceeded"))
        .mount(&server)
        .await;
    Mock::given(header("x-api-key", second_key))
        .respond_with(png_response())
        .mount(&server)
        .await;
    let t = http_worker(&server, &accounts_json(&[("acc-1", KEY_1, 50), ("acc-2", KEY_2, 50)]));
    t.seed(&flow_run(&["a", "b"], 2), &["a", "b"]).await;
    let report = run_chart_export_step(&t.worker, &run_id(), &StepSelector::First, None)
        .await
        .unwrap();
    assert!(matches!(report, StepReport::Succeeded { .. }), "{report:?}");
    let sent_1 = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.headers.get("x-api-key").unwrap() == first_key)
        .count();
    assert!(sent_1 >= 1);
    assert_eq!(t.usage_today(first).await as usize, sent_1);
    assert_eq!(t.usage(first).await.unwrap()["exhausted"], true);
    assert_eq!(t.usage_today(second).await, 2);
}

/// `tracing` caches each callsite's interest process-wide, computed on the thread that first reaches it: a sibling
/// test with no subscriber would cache "never" for a line this capture needs, and the event would vanish. A global
/// registry (interested in everything, writing nowhere) makes every thread answer "always"; installing it also
/// rebuilds the interest already cached.
fn interested_everywhere() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
}

/// The key of a known account is sent in its header and nowhere else: not in logs, the manifest, the stored
/// documents or the error messages, even when the API echoes it back in an error body.
#[tokio::test]
async fn the_api_key_never_leaves_its_header() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::body_partial_json(json!({"_t": "echo"})))
        .respond_with(json_error(403, &format!("Forbidden: key {KEY_1} is inactive")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("x-api-key", KEY_1))
        .respond_with(png_response())
        .mount(&server)
        .await;
    let t = http_worker(&server, &accounts_json(&[("acc-1", KEY_1, 50)]));
    t.seed(&flow_run(&["a", "echo"], 1), &["a", "echo"]).await;

    interested_everywhere();
    let logs = CaptureWriter::default();
    let subscriber = tracing_subscriber::registry().with(CloudLoggingLayer::new(logs.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let report = run_chart_export_step(&t.worker, &run_id(), &StepSelector::First, None)
        .await
        .unwrap();
    drop(_guard);

    let StepReport::Succeeded { failures, .. } = &report else {
        panic!("{report:?}")
    };
    assert_eq!(
        failures[0].message,
        "403 Forbidden: key <CHART_IMG_API_KEY:acc-1> is inactive"
    );
    let logs = logs.contents();
    for event in [
        "claim_attempt",
        "chart_api_call_start",
        "chart_api_call_finished",
        "manifest_written",
        "step_completed",
    ] {
        assert!(
            logs.contains(&format!("\"event\":\"{event}\"")),
            "missing {event} in {logs}"
        );
    }
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["severity"].is_string() && v["message"].is_string(), "{line}");
    }
    let mut everything = logs.clone();
    everything.push_str(&serde_json::to_string(&report).unwrap());
    everything.push_str(&t.run_doc().await.to_string());
    everything.push_str(&t.usage("acc-1").await.unwrap().to_string());
    for (_, obj) in t.artifacts.list() {
        everything.push_str(&String::from_utf8_lossy(&obj.bytes));
    }
    assert!(everything.contains("run-123"), "the haystack holds the outputs");
    assert!(!everything.contains(KEY_1), "the API key leaked");
    assert!(!everything.contains("9f8e7d6c5b4a"), "part of the API key leaked");
}

/// B8: an answer body over 25 MiB is refused without being buffered whole, as a non-retryable failure.
#[tokio::test]
async fn an_oversized_body_is_refused() {
    let server = MockServer::start().await;
    let big = vec![0u8; worker_chart_export::MAX_BODY_BYTES + 1];
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(big))
        .expect(1)
        .mount(&server)
        .await;
    let err = call_once(&server, Duration::from_secs(20)).await.unwrap_err();
    assert!(matches!(err, ChartApiError::TooLarge { status: 200, .. }), "{err:?}");
    assert!(!err.is_retryable());
}
