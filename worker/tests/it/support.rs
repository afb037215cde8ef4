//! Test fixtures: an in-memory worker whose renderer is a script, and a clock the test sets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use worker_chart_export::adapters::{JsonDocs, MemoryArtifacts, MemoryBackend};
use worker_chart_export::config::{parse_accounts, Lifecycle};
use worker_chart_export::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::domain::usage::preference_order;
use worker_chart_export::domain::{AccountId, AccountQuota, RunId, WorkerId};
use worker_chart_export::ports::{ChartApiError, ChartCall, ChartRenderer, Clock, RenderedChart};
use worker_chart_export::AccountPool;
use worker_chart_export::RetryPolicy;
use worker_chart_export::{CoreSettings, Worker};

pub const KEY_1: &str = "ck_live_9f8e7d6c5b4a3f2e1d0c";
pub const KEY_2: &str = "ck_live_0a1b2c3d4e5f6a7b8c9d";

pub fn png_bytes(tag: &str) -> Bytes {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    b.extend_from_slice(tag.as_bytes());
    Bytes::from(b)
}

#[derive(Debug)]
pub struct FixedClock(pub Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn at(s: &str) -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc),
        )))
    }
    pub fn set(&self, s: &str) {
        *self.0.lock().unwrap() = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// One recorded call: the account, the key it carried, and the body.
#[derive(Debug, Clone)]
pub struct Call {
    pub account: String,
    pub key: String,
    pub body: Value,
}

type Script = dyn Fn(&Call, usize) -> Result<RenderedChart, ChartApiError> + Send + Sync;

/// A renderer that answers by a function of (call, how many calls this template has had before).
pub struct ScriptedRenderer {
    script: Box<Script>,
    pub calls: Mutex<Vec<Call>>,
}

impl ScriptedRenderer {
    pub fn new(f: impl Fn(&Call, usize) -> Result<RenderedChart, ChartApiError> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(f),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Always answers a PNG tagged with the template marker.
    pub fn ok() -> Arc<Self> {
        Self::new(|c, _| Ok(png(c)))
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_for(&self, template: &str) -> usize {
        self.calls().iter().filter(|c| marker(c) == template).count()
    }
}

/// Test templates carry `_t: <templateId>` in their request (Chart-IMG ignores unknown fields).
pub fn marker(c: &Call) -> String {
    c.body["_t"].as_str().unwrap_or("").to_owned()
}

pub fn png(c: &Call) -> RenderedChart {
    RenderedChart {
        bytes: png_bytes(&marker(c)),
        format: worker_chart_export::domain::ImageFormat::Png,
    }
}

#[async_trait]
impl ChartRenderer for ScriptedRenderer {
    async fn render(&self, call: &ChartCall<'_>) -> Result<RenderedChart, ChartApiError> {
        use secrecy::ExposeSecret;
        let c = Call {
            account: call.account.to_string(),
            key: call.api_key.expose_secret().to_owned(),
            body: Value::Object(call.body.clone()),
        };
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.iter().filter(|x| marker(x) == marker(&c)).count();
            calls.push(c.clone());
            n
        };
        (self.script)(&c, n)
    }
}

pub struct TestWorker {
    pub worker: Worker,
    pub docs: JsonDocs<MemoryBackend>,
    pub artifacts: Arc<MemoryArtifacts>,
    pub clock: Arc<FixedClock>,
}

pub fn accounts_json(limits: &[(&str, &str, u32)]) -> String {
    let items: Vec<Value> = limits
        .iter()
        .map(|(id, key, limit)| json!({"id": id, "apiKey": key, "dailyLimit": limit, "plan": "ENTERPRISE"}))
        .collect();
    Value::Array(items).to_string()
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        max_total_delay: Duration::from_millis(50),
    }
}

pub fn worker_with(renderer: Arc<dyn ChartRenderer>, accounts: &str) -> TestWorker {
    let docs = JsonDocs::in_memory();
    let artifacts = Arc::new(MemoryArtifacts::default());
    let clock = FixedClock::at("2026-11-28T13:25:11Z");
    let worker = Worker::with_documents(
        docs.clone(),
        renderer,
        artifacts.clone(),
        AccountPool::new(parse_accounts("test accounts", accounts).unwrap()),
        CoreSettings {
            worker_id: WorkerId::parse("w-test").unwrap(),
            bucket: "bucket-1".into(),
            timezone: "Etc/UTC".into(),
            concurrency: 4,
            max_requests: worker_chart_export::config::DEFAULT_MAX_REQUESTS,
            lease: Duration::from_secs(900),
            retry: fast_retry(),
            lifecycle: Lifecycle::for_lease(Duration::from_secs(900)),
        },
    )
    .with_clock(clock.clone());
    TestWorker {
        worker,
        docs,
        artifacts,
        clock,
    }
}

pub fn one_account(renderer: Arc<dyn ChartRenderer>) -> TestWorker {
    worker_with(renderer, &accounts_json(&[("acc-1", KEY_1, 50)]))
}

pub fn run_id() -> RunId {
    RunId::parse("run-123").unwrap()
}

/// A flow run with one CHART_EXPORT step over `templates`, plus an unrelated step that must never change.
/// `acc-1` (`KEY_1`) and `acc-2` (`KEY_2`), daily limit 50 each, in the order the step `charts_4h` of `run-123`
/// tries them (its [`preference_order`]): tests of a failover make the first one fail.
pub fn two_accounts_in_step_order() -> [(&'static str, &'static str); 2] {
    let q = |id: &str| AccountQuota {
        id: AccountId::parse(id).unwrap(),
        daily_limit: 50,
    };
    let order = preference_order("run-123/charts_4h", &[q("acc-1"), q("acc-2")]);
    let key = |a: &AccountQuota| {
        if a.id.as_str() == "acc-1" {
            ("acc-1", KEY_1)
        } else {
            ("acc-2", KEY_2)
        }
    };
    [key(&order[0]), key(&order[1])]
}

pub fn flow_run(templates: &[&str], min_images: u32) -> Value {
    let requests: Vec<Value> = templates.iter().map(|t| json!({"chartTemplateId": t})).collect();
    json!({
        "scope": {"symbol": "BTCUSDT"},
        "owner": {"team": "research"},
        "steps": {
            "charts_4h": {"stepType": "CHART_EXPORT", "status": "READY",
                          "inputs": {"timeframe": "4h", "minImages": min_images, "requests": requests}},
            "summarize": {"stepType": "LLM_SUMMARY", "status": "PENDING", "inputs": {"x": 1}}
        }
    })
}

pub fn template(id: &str) -> Value {
    json!({"chartImgSymbolTemplate": "BINANCE:{symbol}",
           "request": {"_t": id, "style": "candle", "theme": "dark", "width": 800, "height": 600}})
}

impl TestWorker {
    pub async fn seed(&self, run: &Value, templates: &[&str]) {
        self.docs.put_doc(FLOW_RUNS, "run-123", run.clone()).await.unwrap();
        for t in templates {
            self.docs.put_doc(CHART_TEMPLATES, t, template(t)).await.unwrap();
        }
    }

    pub async fn run_doc(&self) -> Value {
        self.docs.get_doc(FLOW_RUNS, "run-123").await.unwrap().unwrap()
    }

    pub async fn step(&self) -> Value {
        self.run_doc().await["steps"]["charts_4h"].clone()
    }

    pub async fn usage(&self, account: &str) -> Option<Value> {
        self.docs.get_doc(ACCOUNTS_USAGE, account).await.unwrap()
    }

    pub async fn usage_today(&self, account: &str) -> u64 {
        self.usage(account)
            .await
            .map(|u| u["usageToday"].as_u64().unwrap())
            .unwrap_or(0)
    }
}
