//! Stubs: "for requests like these, answer this" — a status, a JSON or text body, or an image file, with headers and
//! a delay. From the config's `stubs:` and `POST /__admin/stubs`; listed and removed like faults.
//!
//! A stub takes priority over the renderer (and over replay and validation: a stub may answer a body the API would
//! refuse). By default it answers after the gateway checks the real API does first — key, throttle, quota — so a
//! stubbed answer uses one unit of quota like any answer past the gateway; `gateway: false` answers before them
//! (no key needed, no quota used). Faults come first either way. Among the stubs that match, the lowest `priority`
//! wins, then the newest.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    clock::Clock,
    errors::ApiError,
    verify::{Criteria, View},
};

/// One stub: which requests, and the answer they get.
///
/// ```yaml
/// stubs:
///   - criteria: {route: /v2/tradingview/advanced-chart, body: {symbol: "BINANCE:ETHUSDT"}}
///     answer: {status: 500}              # the documented 500 body
///   - criteria: {body: {symbol: "NASDAQ:AAPL"}}
///     answer: {image: tests/data/aapl.png, headers: {x-note: canned}, delay_ms: 300}
/// ```
///
/// ```
/// use mock_chart_img::{Criteria, StubAnswer, StubSpec};
/// let s = StubSpec::new(Criteria::any().body("symbol", "BINANCE:ETHUSDT"), StubAnswer::status(500)).times(1);
/// assert!(s.gateway);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StubSpec {
    /// Which requests (`status`, `since` and `until` cannot be used: a stub answers before there is a status).
    #[serde(default)]
    pub criteria: Criteria,
    /// What they get.
    pub answer: StubAnswer,
    /// `true` (default): key, throttle and quota are checked first, as the real API's gateway does; `false`: the
    /// stub answers before them (no key needed, no quota used).
    #[serde(default = "yes")]
    pub gateway: bool,
    /// Lower wins among matching stubs (default 5); the newest wins among equals.
    #[serde(default = "five")]
    pub priority: u8,
    /// Answer the next `times` matching requests only, then retire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

fn yes() -> bool {
    true
}
fn five() -> u8 {
    5
}

/// The answer of a stub: at most one of `json`, `text`, `image`. Without a body, an error status gets the body the
/// API documents for it (`{"message":"Something Went Wrong"}` for 500…), any other status an empty body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StubAnswer {
    /// Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A JSON body (`content-type: application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub json: Option<Value>,
    /// A text body (`content-type: text/plain; charset=utf-8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An image file (`.png`, `.jpg`/`.jpeg`), read when the stub is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub image: Option<PathBuf>,
    /// Headers to add (they replace the defaults, `content-type` included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Wait this long before answering.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StubAnswer {
    /// `status` with the documented body of an error status.
    pub fn status(status: u16) -> Self {
        StubAnswer {
            status: Some(status),
            ..StubAnswer::default()
        }
    }
    /// `200` with a JSON body.
    pub fn json(body: Value) -> Self {
        StubAnswer {
            json: Some(body),
            ..StubAnswer::default()
        }
    }
    /// `200` with an image file's bytes.
    pub fn image(path: impl Into<PathBuf>) -> Self {
        StubAnswer {
            image: Some(path.into()),
            ..StubAnswer::default()
        }
    }
    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
    /// Waits before answering.
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }
}

impl StubSpec {
    /// A stub behind the gateway, priority 5, for every matching request.
    pub fn new(criteria: Criteria, answer: StubAnswer) -> Self {
        StubSpec {
            criteria,
            answer,
            gateway: true,
            priority: 5,
            times: None,
        }
    }
    /// Answers before the key, throttle and quota checks.
    pub fn before_gateway(mut self) -> Self {
        self.gateway = false;
        self
    }
    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// Lower wins.
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }

    /// Checks the stub and reads its image: what is installed.
    pub(crate) fn load(&self) -> Result<Canned, String> {
        let c = &self.criteria;
        c.validate().map_err(|m| format!("stub {m}"))?;
        if c.status.is_some() || c.since.is_some() || c.until.is_some() {
            return Err("stub criteria: `status`, `since` and `until` cannot select a request not yet answered".into());
        }
        let a = &self.answer;
        let status = a.status.unwrap_or(200);
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|_| (100..=599).contains(&status))
            .ok_or_else(|| format!("stub answer.status: {status} is not an HTTP status"))?;
        let bodies = usize::from(a.json.is_some()) + usize::from(a.text.is_some()) + usize::from(a.image.is_some());
        if bodies > 1 {
            return Err("stub answer: give at most one of `json`, `text`, `image`".into());
        }
        let mut headers = HeaderMap::new();
        let (content_type, body) = if let Some(j) = &a.json {
            (Some("application/json"), Bytes::from(j.to_string()))
        } else if let Some(t) = &a.text {
            (Some("text/plain; charset=utf-8"), Bytes::from(t.clone()))
        } else if let Some(p) = &a.image {
            let ct = match p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                _ => {
                    return Err(format!(
                        "stub answer.image: {} is not a .png, .jpg or .jpeg file",
                        p.display()
                    ))
                }
            };
            let bytes = std::fs::read(p).map_err(|e| format!("stub answer.image: cannot read {}: {e}", p.display()))?;
            (Some(ct), Bytes::from(bytes))
        } else {
            (None, Bytes::new())
        };
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        for (name, value) in &a.headers {
            let n =
                HeaderName::try_from(name.as_str()).map_err(|_| format!("stub answer.headers: bad name `{name}`"))?;
            let v = HeaderValue::from_str(value).map_err(|_| format!("stub answer.headers.{name}: bad value"))?;
            headers.insert(n, v);
        }
        Ok(Canned {
            status,
            headers,
            body,
            documented: content_type.is_none() && status.as_u16() >= 400,
            delay: Duration::from_millis(a.delay_ms),
        })
    }
}

/// A stub's answer, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Canned {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// No body given for an error status: the API's documented body of that status.
    documented: bool,
    delay: Duration,
}

impl Canned {
    fn response(&self) -> Response {
        let mut r = if self.documented {
            ApiError::Status {
                status: self.status.as_u16(),
                message: None,
            }
            .into_response()
        } else {
            let mut r = Response::new(Body::from(self.body.clone()));
            *r.status_mut() = self.status;
            r
        };
        for (n, v) in &self.headers {
            r.headers_mut().insert(n, v.clone());
        }
        // The gateway layer leaves a stub's error answer as the stub says (no JSON body forced on it).
        r.extensions_mut().insert(Stubbed);
        r
    }
}

/// Marks a stub's answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stubbed;

/// A stub as installed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstalledStub {
    /// Handle for `DELETE /__admin/stubs/{id}`.
    pub id: u64,
    /// `config` (replaced on reload) or `admin`.
    pub origin: String,
    /// Requests it has answered.
    pub matched: u64,
    /// The stub itself.
    #[serde(flatten)]
    pub spec: StubSpec,
    #[serde(skip)]
    canned: Option<Canned>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    list: Vec<InstalledStub>,
}

/// The installed stubs.
#[derive(Default)]
pub(crate) struct Stubs {
    inner: Mutex<Inner>,
    /// How many are installed, read without the lock: with none, a request costs nothing more.
    count: AtomicUsize,
}

impl Stubs {
    pub fn new(specs: &[StubSpec]) -> Result<Stubs, String> {
        let s = Stubs::default();
        s.replace_config(specs)?;
        Ok(s)
    }

    pub fn add(&self, spec: StubSpec, origin: &str) -> Result<u64, String> {
        let canned = spec.load()?;
        let mut g = self.inner.lock().unwrap();
        g.next_id += 1;
        let id = g.next_id;
        g.list.push(InstalledStub {
            id,
            origin: origin.into(),
            matched: 0,
            spec,
            canned: Some(canned),
        });
        self.count.store(g.list.len(), Ordering::SeqCst);
        Ok(id)
    }

    /// Swaps the stubs that came from the config file, keeping those added at run time; all or nothing.
    pub fn replace_config(&self, specs: &[StubSpec]) -> Result<(), String> {
        let loaded = specs
            .iter()
            .map(|s| s.load().map(|c| (s.clone(), c)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut g = self.inner.lock().unwrap();
        g.list.retain(|s| s.origin != "config");
        for (spec, canned) in loaded {
            g.next_id += 1;
            let id = g.next_id;
            g.list.push(InstalledStub {
                id,
                origin: "config".into(),
                matched: 0,
                spec,
                canned: Some(canned),
            });
        }
        self.count.store(g.list.len(), Ordering::SeqCst);
        Ok(())
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut g = self.inner.lock().unwrap();
        let before = g.list.len();
        g.list.retain(|s| s.id != id);
        self.count.store(g.list.len(), Ordering::SeqCst);
        before != g.list.len()
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap().list.clear();
        self.count.store(0, Ordering::SeqCst);
    }

    pub fn list(&self) -> Vec<InstalledStub> {
        self.inner.lock().unwrap().list.clone()
    }

    /// The stub (of this side of the gateway) that answers `view`, counted as used.
    fn take(&self, gateway: bool, view: &View<'_>) -> Option<(u64, Canned)> {
        let mut g = self.inner.lock().unwrap();
        let best = g
            .list
            .iter()
            .enumerate()
            .filter(|(_, s)| s.spec.gateway == gateway && s.spec.criteria.matches(view))
            .min_by_key(|(_, s)| (s.spec.priority, std::cmp::Reverse(s.id)))
            .map(|(i, _)| i)?;
        let s = &mut g.list[best];
        s.matched += 1;
        let found = (s.id, s.canned.clone()?);
        if let Some(t) = s.spec.times.as_mut() {
            *t = t.saturating_sub(1);
        }
        g.list.retain(|s| s.spec.times != Some(0));
        self.count.store(g.list.len(), Ordering::SeqCst);
        Some(found)
    }
}

/// The answer of the stub that takes this request on this side of the gateway, after its delay; `None` (at the
/// cost of one atomic read when no stub is installed) otherwise.
pub(crate) async fn check(
    stubs: &Stubs,
    clock: &dyn Clock,
    gateway: bool,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    account: Option<&str>,
) -> Option<(u64, Response)> {
    if stubs.count.load(Ordering::SeqCst) == 0 {
        return None;
    }
    let (query, _) = crate::record::query_of(uri);
    let query = query.unwrap_or_default();
    let view = View::new(
        method.as_str(),
        uri.path(),
        account,
        None,
        &query,
        Some(body),
        clock.now(),
    );
    let (id, canned) = stubs.take(gateway, &view)?;
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    Some((id, canned.response()))
}
