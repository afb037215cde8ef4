//! Shared fixtures: known accounts, a small Chart-IMG-like upstream on a random port, request helpers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use recorder::{ProxyConfig, Request, Response, Secrets, Vcr, VcrConfig};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Key-shaped on purpose, so the lint's heuristics would notice them too.
pub const KEY1: &str = "ck9fQ2xTzL8mN4pR7sV1wY3bK6hJ0aE5dC";
pub const KEY2: &str = "ckZq81LmN0pQrS7tUv2WxY3zAb4CdE5fGh";
pub const CHART_PATH: &str = "/v2/tradingview/advanced-chart";

pub fn secrets() -> Secrets {
    Secrets::new()
        .with_account("acc-1", KEY1.into())
        .with_account("acc-2", KEY2.into())
}

pub fn accounts_json() -> String {
    format!(
        r#"[{{"id":"acc-1","apiKey":"{KEY1}","dailyLimit":50}},{{"id":"acc-2","apiKey":"{KEY2}","dailyLimit":50}}]"#
    )
}

pub fn config(mode: recorder::Mode) -> VcrConfig {
    VcrConfig {
        mode,
        ..VcrConfig::default()
    }
}

pub fn open(dir: &Path, mode: recorder::Mode) -> Vcr {
    Vcr::open(dir, config(mode), secrets()).unwrap()
}

/// The three demo bodies: price+volume, RSI and MACD templates for BTCUSDT 4h.
pub fn demo_bodies() -> Vec<serde_json::Value> {
    let base = |study: serde_json::Value| {
        serde_json::json!({"symbol":"BINANCE:BTCUSDT","interval":"4h","timezone":"Etc/UTC","style":"candle",
            "theme":"dark","width":800,"height":600,"studies":[study]})
    };
    vec![
        base(serde_json::json!({"name":"Volume","forceOverlay":true})),
        base(serde_json::json!({"name":"Relative Strength Index"})),
        base(serde_json::json!({"name":"MACD"})),
    ]
}

pub fn chart_request(key: &str, body: &serde_json::Value) -> Request {
    Request::post_json(CHART_PATH, body).with_header("x-api-key", key)
}

/// A deterministic fake PNG for a body: PNG signature, then bytes that are not UTF-8 (so it must be a sidecar).
pub fn fake_png(body: &[u8]) -> Bytes {
    let digest = Sha256::digest(body);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for i in 0..2048u32 {
        out.push(digest[(i % 32) as usize] ^ (i as u8));
        out.push(0xff);
    }
    Bytes::from(out)
}

/// An upstream closure for `Vcr::handle` that counts calls and answers `200 text/plain` with `answer`.
pub fn text_upstream(
    calls: &Arc<AtomicUsize>,
    answer: &str,
) -> impl FnOnce(Request) -> std::future::Ready<Result<Response, std::io::Error>> {
    let calls = Arc::clone(calls);
    let answer = answer.to_owned();
    move |_req| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(200)
            .with_header("content-type", "text/plain")
            .with_body(answer)))
    }
}

/// A small Chart-IMG-like server: checks the key, answers a deterministic PNG, adds a volatile header.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn chart(
    axum::extract::State(hits): axum::extract::State<Arc<AtomicUsize>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let n = hits.fetch_add(1, Ordering::SeqCst);
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("");
    if key != KEY1 && key != KEY2 {
        return (
            StatusCode::FORBIDDEN,
            [("content-type", "application/json")],
            r#"{"message":"Forbidden"}"#,
        )
            .into_response();
    }
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "").into_response(),
    };
    if parsed["interval"] == "4H" {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            [("content-type", "application/json")],
            r#"{"message":"Invalid Interval"}"#,
        )
            .into_response();
    }
    // The request id changes on every call: the recorder must not keep it, or re-recordings would differ.
    (
        StatusCode::OK,
        [
            ("content-type", "image/png".to_owned()),
            ("x-request-id", format!("req-{n}")),
        ],
        fake_png(&body),
    )
        .into_response()
}

async fn echo_key(headers: HeaderMap) -> axum::response::Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (
        [("content-type", "application/json")],
        format!(r#"{{"message":"bad key {key}"}}"#),
    )
        .into_response()
}

impl Upstream {
    pub async fn start() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(CHART_PATH, post(chart))
            .route("/echo-key", post(echo_key))
            .with_state(Arc::clone(&hits));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Upstream {
            addr,
            hits,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// A running proxy on a random port.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    pub async fn start(upstream: String, vcr: Vcr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(recorder::run_proxy(listener, ProxyConfig::new(upstream, vcr), async {
            let _ = rx.await;
        }));
        Proxy {
            addr,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// POSTs a chart request; returns status, content type and body.
pub async fn post_chart(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &serde_json::Value,
) -> (u16, String, Bytes) {
    let resp = client
        .post(format!("{base}{CHART_PATH}"))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap())
}

/// Every file under `dir` (relative path → bytes), sorted, without the lock file.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != ".lock" {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Asserts that no file under `dir` contains any known key.
pub fn assert_no_keys(dir: &Path) {
    for (path, bytes) in snapshot(dir) {
        for key in [KEY1, KEY2] {
            assert!(
                memchr_find(&bytes, key.as_bytes()).is_none(),
                "{} contains an API key",
                path.display()
            );
        }
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn cassette_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(recorder::CASSETTE_FILE)).unwrap()
}

/// A Chart-IMG-like upstream for `recorder record`/`verify` through the binary, with behaviour a test can change
/// while it runs: real PNGs of the requested size, `403 Forbidden` for a bad key, `422` field errors for `4H`,
/// and from the n-th call on a scripted failure (`429 Limit Exceeded`, `500 Something Went Wrong`).
pub struct ChartUpstream {
    pub addr: SocketAddr,
    pub state: Arc<ChartState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct ChartState {
    pub hits: AtomicUsize,
    /// From this call (0-based) on, answer this status and message.
    pub fail_from: std::sync::Mutex<Option<(usize, u16, &'static str)>>,
    /// Answer images of half the requested size (a drift `verify` must see).
    pub shrink: std::sync::atomic::AtomicBool,
    /// The `x-api-key` of every call, in order.
    pub keys_seen: std::sync::Mutex<Vec<String>>,
    /// Calls (0-based) answered with the per-second throttle's `429 Too Many Requests`.
    pub throttle: std::sync::Mutex<Vec<usize>>,
    /// When every call arrived.
    pub arrivals: std::sync::Mutex<Vec<std::time::Instant>>,
}

/// A real grayscale PNG of `w`×`h`.
pub fn real_png(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Grayscale);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&vec![shade; (w * h) as usize]).unwrap();
    drop(writer);
    out
}

async fn scripted_chart(
    axum::extract::State(state): axum::extract::State<Arc<ChartState>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let n = state.hits.fetch_add(1, Ordering::SeqCst);
    state.arrivals.lock().unwrap().push(std::time::Instant::now());
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    state.keys_seen.lock().unwrap().push(key.clone());
    let json = |status: u16, body: String| {
        (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response()
    };
    if key != KEY1 && key != KEY2 {
        return json(403, r#"{"message":"Forbidden"}"#.into());
    }
    if state.throttle.lock().unwrap().contains(&n) {
        return json(429, r#"{"message":"Too Many Requests"}"#.into());
    }
    if let Some((from, status, message)) = *state.fail_from.lock().unwrap() {
        if n >= from {
            return json(status, format!(r#"{{"message":"{message}"}}"#));
        }
    }
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if parsed["interval"] == "4H" {
        return json(
            422,
            r#"[{"value":"4H","msg":"must be a supported interval","param":"interval","location":"body"}]"#.into(),
        );
    }
    let (mut w, mut h) = (
        parsed["width"].as_u64().unwrap_or(800) as u32,
        parsed["height"].as_u64().unwrap_or(600) as u32,
    );
    if state.shrink.load(Ordering::SeqCst) {
        (w, h) = (w / 2, h / 2);
    }
    // Other pixels on every call, as a live chart has: `verify` must not care.
    let shade = (n as u8).wrapping_mul(37);
    (
        StatusCode::OK,
        [
            ("content-type", "image/png".to_owned()),
            ("x-request-id", format!("req-{n}")),
        ],
        real_png(w, h, shade),
    )
        .into_response()
}

impl ChartUpstream {
    pub async fn start() -> ChartUpstream {
        let state = Arc::new(ChartState::default());
        let app = Router::new()
            .route(CHART_PATH, post(scripted_chart))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        ChartUpstream {
            addr,
            state,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn fail_from(&self, from: usize, status: u16, message: &'static str) {
        *self.state.fail_from.lock().unwrap() = Some((from, status, message));
    }

    pub fn heal(&self) {
        *self.state.fail_from.lock().unwrap() = None;
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}
