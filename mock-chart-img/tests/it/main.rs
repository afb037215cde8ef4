//! Integration tests: every test starts a real server on a random loopback port and talks to it over HTTP.

mod admin;
mod chart_img_openapi;
mod config;
mod dashboard;
mod errors;
mod faults;
mod fidelity;
mod images;
mod limits;
mod logs;
mod plans;
mod renders;
mod replay;
mod replay_unused;
mod routes;
mod rules;
mod serve;
mod snapshot;
mod stubs;
mod v1;
mod verify;

use mock_chart_img::{spawn, Config, MockServer};
use serde_json::{json, Value};

pub const CHART: &str = "/v2/tradingview/advanced-chart";
pub const STORAGE: &str = "/v2/tradingview/advanced-chart/storage";

pub struct Ctx {
    pub server: MockServer,
    pub http: reqwest::Client,
}

pub async fn start(config: Config) -> Ctx {
    let server = spawn(config).await.expect("server starts");
    Ctx {
        server,
        http: reqwest::Client::new(),
    }
}

impl Ctx {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url(), path)
    }

    /// POSTs a JSON body to `path` with `key`.
    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
        let mut rb = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        rb.send().await.expect("request sent")
    }

    pub async fn chart(&self, key: &str, body: Value) -> reqwest::Response {
        self.post(CHART, Some(key), &body).await
    }

    /// Status and JSON body of a chart request.
    pub async fn chart_json(&self, key: &str, body: Value) -> (u16, Value) {
        json_of(self.chart(key, body).await).await
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{}", self.server.admin_url(), path))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }
}

/// Status and JSON body; also checks the content type every error of the API carries.
pub async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    assert!(
        ct.starts_with("application/json"),
        "status {status}: content-type {ct:?}, body {text}"
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

pub fn msg(m: &str) -> Value {
    json!({ "message": m })
}

/// A small valid request, cheap to render.
pub fn small() -> Value {
    json!({ "symbol": "BINANCE:BTCUSDT", "interval": "4h", "width": 400, "height": 300 })
}
