//! Verification: criteria over the journaled requests (`POST /__admin/requests/count` and `/find`), the requests no
//! route or no key took (`GET /__admin/requests/unmatched`), and expectations (`POST /__admin/expectations`, the
//! config's `expectations:`) checked by `GET /__admin/verify` and by [`MockServer`](crate::MockServer) on drop.
//!
//! [`Criteria`] are also what a stub (`crate::stubs`) and a snapshot (`crate::snapshot`) select requests with.
//!
//! **Invariant:** an expectation's count is taken when a request is journaled ([`Expectations::observe`]), so it is
//! exact however many records the ring has dropped since; counts by criteria given afterwards scan the ring and say
//! whether that scan saw every request (`complete`).

use std::{
    cell::OnceCell,
    collections::BTreeMap,
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use axum::{
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    admin::{admin_error, AdminError, Created},
    journal::{JournalEntry, Record},
    state::AppState,
};

/// Which requests: every field given must hold (an empty object selects every request).
///
/// ```
/// use mock_chart_img::Criteria;
/// let c = Criteria::route("/v2/tradingview/advanced-chart").method("POST").body("symbol", "BINANCE:BTCUSDT");
/// assert_eq!(c.body["symbol"], "BINANCE:BTCUSDT");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    /// `POST`, `GET`, … (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The path, or a template whose `{name}` segments match any one segment
    /// (`/v2/tradingview/layout-chart/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Requests made with this account's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The answered status (not for stubs, which answer before there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Query parameters and the values they must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// JSON body fields by path (`symbol`, `studies.0.name`, or a JSON pointer `/studies/0/name`) and the JSON
    /// values they must equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub body: BTreeMap<String, Value>,
    /// Requests journaled at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<DateTime<Utc>>,
    /// Requests journaled at or before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<DateTime<Utc>>,
}

impl Criteria {
    /// Every request.
    pub fn any() -> Self {
        Criteria::default()
    }
    /// Requests to `route` (a path or a `{name}` template).
    pub fn route(route: impl Into<String>) -> Self {
        Criteria {
            route: Some(route.into()),
            ..Criteria::default()
        }
    }
    /// Only this method.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }
    /// Only this account's key.
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }
    /// Only answers with this status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    /// A query parameter with this value.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.insert(name.into(), value.into());
        self
    }
    /// A JSON body field (by path) equal to `value`.
    pub fn body(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.body.insert(path.into(), value.into());
        self
    }
    /// Journaled at or after `t`.
    pub fn since(mut self, t: DateTime<Utc>) -> Self {
        self.since = Some(t);
        self
    }
    /// Journaled at or before `t`.
    pub fn until(mut self, t: DateTime<Utc>) -> Self {
        self.until = Some(t);
        self
    }

    /// Checks the criteria can be evaluated; the message names the field.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(m) = &self.method {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!("criteria.method: `{m}` is not an HTTP method"));
            }
        }
        if let Some(r) = &self.route {
            if !r.starts_with('/') {
                return Err(format!("criteria.route: `{r}` must start with `/`"));
            }
        }
        if let Some(s) = self.status {
            if !(100..=599).contains(&s) {
                return Err(format!("criteria.status: {s} is not an HTTP status"));
            }
        }
        for path in self.body.keys() {
            if path.is_empty() || path == "/" {
                return Err("criteria.body: a field path must not be empty".into());
            }
        }
        if let (Some(a), Some(b)) = (self.since, self.until) {
            if a > b {
                return Err("criteria: `since` is after `until`".into());
            }
        }
        Ok(())
    }

    /// What fails for `v`, one line per field; empty when `v` matches.
    pub(crate) fn mismatches(&self, v: &View<'_>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(v.method) {
                out.push(format!("method: wanted {}, got {}", m.to_ascii_uppercase(), v.method));
            }
        }
        if let Some(r) = &self.route {
            if !route_matches(r, v.path) {
                out.push(format!("route: wanted {r}, got {}", v.path));
            }
        }
        if let Some(a) = &self.account {
            if v.account != Some(a.as_str()) {
                out.push(format!("account: wanted {a}, got {}", v.account.unwrap_or("none")));
            }
        }
        if let Some(s) = self.status {
            if v.status != Some(s) {
                let got = v
                    .status
                    .map_or("none (connection dropped)".to_string(), |s| s.to_string());
                out.push(format!("status: wanted {s}, got {got}"));
            }
        }
        for (name, want) in &self.query {
            match v.query.iter().find(|(k, _)| k == name) {
                Some((_, got)) if got == want => {}
                Some((_, got)) => out.push(format!("query {name}: wanted {want:?}, got {got:?}")),
                None => out.push(format!("query {name}: wanted {want:?}, absent")),
            }
        }
        for (path, want) in &self.body {
            match v.json() {
                Err(why) => out.push(format!("body {path}: {why}")),
                Ok(json) => match json.pointer(&pointer(path)) {
                    Some(got) if got == want => {}
                    Some(got) => out.push(format!("body {path}: wanted {want}, got {got}")),
                    None => out.push(format!("body {path}: wanted {want}, absent")),
                },
            }
        }
        if let Some(t) = self.since {
            if v.at < t {
                out.push(format!("since: journaled at {}", v.at.to_rfc3339()));
            }
        }
        if let Some(t) = self.until {
            if v.at > t {
                out.push(format!("until: journaled at {}", v.at.to_rfc3339()));
            }
        }
        out
    }

    pub(crate) fn matches(&self, v: &View<'_>) -> bool {
        self.mismatches(v).is_empty()
    }

    /// Whether evaluating these criteria needs the request body.
    fn needs_body(&self) -> bool {
        !self.body.is_empty()
    }
}

/// `symbol` → `/symbol`, `studies.0.name` → `/studies/0/name`; a JSON pointer stays as it is.
fn pointer(path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    path.split('.')
        .map(|seg| format!("/{}", seg.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The path equals the template, `{name}` segments matching any one non-empty segment.
pub(crate) fn route_matches(template: &str, path: &str) -> bool {
    if !template.contains('{') {
        return template == path;
    }
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') && !ps.is_empty() => {}
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return false,
        }
    }
}

/// A request as criteria see it: a journal record, or (for stubs) a request not yet answered.
pub(crate) struct View<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub account: Option<&'a str>,
    pub status: Option<u16>,
    pub query: &'a [(String, String)],
    /// `None` when the journal no longer keeps it.
    pub body: Option<&'a [u8]>,
    pub at: DateTime<Utc>,
    json: OnceCell<Result<Value, &'static str>>,
}

impl<'a> View<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        method: &'a str,
        path: &'a str,
        account: Option<&'a str>,
        status: Option<u16>,
        query: &'a [(String, String)],
        body: Option<&'a [u8]>,
        at: DateTime<Utc>,
    ) -> Self {
        View {
            method,
            path,
            account,
            status,
            query,
            body,
            at,
            json: OnceCell::new(),
        }
    }

    pub fn of(r: &'a Record) -> Self {
        View::new(
            r.method_str(),
            &r.path,
            r.account.as_deref(),
            r.status,
            r.query_pairs(),
            r.bodies.as_ref().map(|b| &b.request[..]),
            r.at,
        )
    }

    /// The body as JSON, parsed once (an empty body is the API's `{}`).
    fn json(&self) -> Result<&Value, &'static str> {
        self.json
            .get_or_init(|| match self.body {
                None => Err("the journal no longer keeps this request's body (journal_body_budget)"),
                Some([]) => Ok(Value::Object(Default::default())),
                Some(b) => serde_json::from_slice(b).map_err(|_| "the body is not JSON"),
            })
            .as_ref()
            .map_err(|e| *e)
    }
}

/// How many matching requests are expected: `count`, or a range with `min` and/or `max`.
///
/// ```
/// use mock_chart_img::{Criteria, Expectation};
/// let e = Expectation::new(Criteria::route("/v2/tradingview/advanced-chart")).times(2).named("two charts");
/// assert_eq!(e.count, Some(2));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which requests count.
    #[serde(default)]
    pub criteria: Criteria,
    /// Exactly this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// At least this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// At most this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

impl Expectation {
    /// At least one request matching `criteria` (change with [`times`](Self::times), [`between`](Self::between)…).
    pub fn new(criteria: Criteria) -> Self {
        Expectation {
            name: None,
            criteria,
            count: None,
            min: Some(1),
            max: None,
        }
    }
    /// Exactly `n` (0: never).
    pub fn times(mut self, n: u64) -> Self {
        (self.count, self.min, self.max) = (Some(n), None, None);
        self
    }
    /// Between `min` and `max`, both included.
    pub fn between(mut self, min: u64, max: u64) -> Self {
        (self.count, self.min, self.max) = (None, Some(min), Some(max));
        self
    }
    /// At least `n`.
    pub fn at_least(mut self, n: u64) -> Self {
        (self.count, self.min) = (None, Some(n));
        self
    }
    /// At most `n`.
    pub fn at_most(mut self, n: u64) -> Self {
        (self.count, self.max) = (None, Some(n));
        if self.min == Some(1) {
            self.min = None;
        }
        self
    }
    /// A name for reports.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        self.criteria.validate()?;
        match (self.count, self.min, self.max) {
            (Some(_), None, None) => Ok(()),
            (Some(_), _, _) => Err("expectation: give `count` or `min`/`max`, not both".into()),
            (None, None, None) => Err("expectation: give `count`, or `min` and/or `max`".into()),
            (None, Some(a), Some(b)) if a > b => Err(format!("expectation: `min` ({a}) is above `max` ({b})")),
            _ => Ok(()),
        }
    }

    fn holds(&self, n: u64) -> bool {
        match self.count {
            Some(c) => n == c,
            None => self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m),
        }
    }

    /// `exactly 2`, `at least 1`, `between 1 and 3`, `at most 0`.
    fn wanted(&self) -> String {
        match (self.count, self.min, self.max) {
            (Some(c), _, _) => format!("exactly {c}"),
            (None, Some(a), Some(b)) => format!("between {a} and {b}"),
            (None, Some(a), None) => format!("at least {a}"),
            (None, None, Some(b)) => format!("at most {b}"),
            (None, None, None) => "any number".into(),
        }
    }
}

/// An expectation as installed, with the requests it has counted since start or the last reset.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstalledExpectation {
    /// Handle for `DELETE /__admin/expectations/{id}`.
    pub id: u64,
    /// `config` (replaced on reload) or `admin`.
    pub origin: String,
    /// Matching requests journaled so far.
    pub matched: u64,
    /// The expectation itself.
    #[serde(flatten)]
    pub spec: Expectation,
}

#[derive(Default)]
struct ExpectationsInner {
    next_id: u64,
    list: Vec<InstalledExpectation>,
}

/// The installed expectations, counted as requests are journaled.
#[derive(Default)]
pub(crate) struct Expectations {
    inner: Mutex<ExpectationsInner>,
    /// How many are installed, read without the lock: with none, journaling costs nothing more.
    count: AtomicUsize,
}

impl Expectations {
    pub fn add(&self, spec: Expectation, origin: &str) -> u64 {
        let mut g = self.inner.lock().unwrap();
        g.next_id += 1;
        let id = g.next_id;
        g.list.push(InstalledExpectation {
            id,
            origin: origin.into(),
            matched: 0,
            spec,
        });
        self.count.store(g.list.len(), Ordering::SeqCst);
        id
    }

    /// Swaps the expectations that came from the config file (their counts start over), keeping the others.
    pub fn replace_config(&self, specs: &[Expectation]) {
        {
            let mut g = self.inner.lock().unwrap();
            g.list.retain(|e| e.origin != "config");
        }
        for s in specs {
            self.add(s.clone(), "config");
        }
        let n = self.inner.lock().unwrap().list.len();
        self.count.store(n, Ordering::SeqCst);
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut g = self.inner.lock().unwrap();
        let before = g.list.len();
        g.list.retain(|e| e.id != id);
        self.count.store(g.list.len(), Ordering::SeqCst);
        before != g.list.len()
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap().list.clear();
        self.count.store(0, Ordering::SeqCst);
    }

    pub fn list(&self) -> Vec<InstalledExpectation> {
        self.inner.lock().unwrap().list.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    /// Counts `record` for every expectation it matches (called as it is journaled, bodies still attached).
    pub fn observe(&self, record: &Record) {
        if self.is_empty() {
            return;
        }
        let view = View::of(record);
        let mut g = self.inner.lock().unwrap();
        for e in g.list.iter_mut() {
            if e.spec.criteria.matches(&view) {
                e.matched += 1;
            }
        }
    }

    pub fn reset_counts(&self) {
        self.inner.lock().unwrap().list.iter_mut().for_each(|e| e.matched = 0);
    }
}

/// A journaled request near an expectation, and what differs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NearRequest {
    /// The journal's sequence number.
    pub seq: u64,
    /// `POST /v2/…`.
    pub request: String,
    /// The account of the key, when known.
    pub account: Option<String>,
    /// The answered status.
    pub status: Option<u16>,
    /// Each criterion it fails, with the wanted and the actual value (empty: it matches).
    pub differs: Vec<String>,
}

/// One expectation's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExpectationResult {
    /// Its id.
    pub id: u64,
    /// Its name, when it has one.
    pub name: Option<String>,
    /// `exactly 2`, `at least 1`, …
    pub wanted: String,
    /// Matching requests counted.
    pub matched: u64,
    /// Whether it holds.
    pub ok: bool,
    /// Its criteria.
    pub criteria: Criteria,
    /// Unmet with too few: the journaled requests that fail the fewest criteria (those with a differing value before
    /// those lacking the field), closest first. Unmet with too many: the newest matching requests. Empty when met.
    pub closest: Vec<NearRequest>,
}

/// `GET /__admin/verify`: every expectation's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    /// Whether every expectation holds.
    pub ok: bool,
    /// How many do not.
    pub unmet: usize,
    /// Every expectation, in installation order.
    pub expectations: Vec<ExpectationResult>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            return write!(f, "all {} expectations of mock-chart-img hold", self.expectations.len());
        }
        writeln!(
            f,
            "{} of {} expectations of mock-chart-img unmet:",
            self.unmet,
            self.expectations.len()
        )?;
        for e in self.expectations.iter().filter(|e| !e.ok) {
            let name = e.name.as_deref().map(|n| format!(" \"{n}\"")).unwrap_or_default();
            let criteria = serde_json::to_string(&e.criteria).unwrap_or_default();
            writeln!(
                f,
                "  expectation {}{name}: wanted {} matching {criteria}, got {}",
                e.id, e.wanted, e.matched
            )?;
            if e.closest.is_empty() {
                writeln!(f, "    no journaled request comes close")?;
            }
            for n in &e.closest {
                let status = n.status.map_or("dropped".to_string(), |s| s.to_string());
                let account = n.account.as_deref().unwrap_or("no account");
                let differs = if n.differs.is_empty() {
                    "matches".to_string()
                } else {
                    n.differs.join("; ")
                };
                writeln!(f, "    #{} {} ({account}, {status}): {differs}", n.seq, n.request)?;
            }
        }
        Ok(())
    }
}

/// How many closest requests a report lists per unmet expectation.
const CLOSEST: usize = 3;

/// `POST /__admin/requests/count`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CountAnswer {
    /// Matching requests among those the journal holds.
    pub count: u64,
    /// `true` when the journal still holds every request since start or the last reset, with the bodies the
    /// criteria need; otherwise the count is a lower bound (an expectation counts exactly).
    pub complete: bool,
}

/// `?limit=` of `POST /__admin/requests/find`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    /// At most this many entries (newest first).
    pub limit: Option<usize>,
}

impl AppState {
    /// How many journaled requests match `criteria` (see [`CountAnswer::complete`]).
    pub fn count(&self, criteria: &Criteria) -> Result<CountAnswer, String> {
        criteria.validate()?;
        Ok(self.inner.journal.scan(|records, complete| {
            let mut count = 0;
            let mut complete = complete;
            for (_, r) in records {
                if criteria.needs_body() && r.bodies.is_none() {
                    complete = false;
                    continue;
                }
                count += u64::from(criteria.matches(&View::of(r)));
            }
            CountAnswer { count, complete }
        }))
    }

    /// The journaled requests matching `criteria`, newest first.
    pub fn find(&self, criteria: &Criteria, limit: Option<usize>) -> Result<Vec<JournalEntry>, String> {
        criteria.validate()?;
        Ok(self.inner.journal.scan(|records, _| {
            records
                .filter(|(_, r)| criteria.matches(&View::of(r)))
                .take(limit.unwrap_or(usize::MAX))
                .map(|(seq, r)| r.entry(seq))
                .collect()
        }))
    }

    /// Requests no route took (`404`/`405` paths) and requests refused before a key was known (missing or unknown
    /// key), newest first.
    pub fn unmatched(&self) -> Vec<JournalEntry> {
        self.inner.journal.scan(|records, _| {
            records
                .filter(|(_, r)| !r.routed || matches!(r.key_status, "missing" | "unknown"))
                .map(|(seq, r)| r.entry(seq))
                .collect()
        })
    }

    /// Installs an expectation; its count starts at 0.
    pub fn add_expectation(&self, expectation: Expectation) -> Result<u64, String> {
        expectation.validate()?;
        Ok(self.inner.journal.expectations.add(expectation, "admin"))
    }

    /// Every expectation's verdict, with the closest requests of the unmet ones.
    pub fn verify(&self) -> VerifyReport {
        let list = self.inner.journal.expectations.list();
        let results: Vec<ExpectationResult> = list
            .into_iter()
            .map(|e| {
                let ok = e.spec.holds(e.matched);
                let closest = if ok {
                    Vec::new()
                } else {
                    let too_many = e.spec.count.or(e.spec.max).is_some_and(|m| e.matched > m);
                    self.closest(&e.spec.criteria, too_many)
                };
                ExpectationResult {
                    id: e.id,
                    name: e.spec.name.clone(),
                    wanted: e.spec.wanted(),
                    matched: e.matched,
                    ok,
                    criteria: e.spec.criteria,
                    closest,
                }
            })
            .collect();
        let unmet = results.iter().filter(|r| !r.ok).count();
        VerifyReport {
            ok: unmet == 0,
            unmet,
            expectations: results,
        }
    }

    /// Too many: the newest matching requests. Too few: the requests failing the fewest criteria (newest first
    /// among equals).
    fn closest(&self, criteria: &Criteria, too_many: bool) -> Vec<NearRequest> {
        // A body field the criteria name may hold a key the client sent: differences show placeholders.
        let secrets = self.secrets();
        self.inner.journal.scan(|records, _| {
            let mut near: Vec<(usize, NearRequest)> = records
                .filter_map(|(seq, r)| {
                    let differs: Vec<String> = criteria
                        .mismatches(&View::of(r))
                        .into_iter()
                        .map(|d| secrets.redact(&d).into_owned())
                        .collect();
                    if too_many != differs.is_empty() {
                        return None;
                    }
                    Some((
                        differs.len(),
                        NearRequest {
                            seq,
                            request: format!("{} {}", r.method_str(), r.path),
                            account: r.account.as_deref().map(str::to_owned),
                            status: r.status,
                            differs,
                        },
                    ))
                })
                .collect();
            // Among equals, a request that has the field with another value is closer than one without it.
            let without = |r: &NearRequest| r.differs.iter().filter(|d| !d.contains(", got ")).count();
            near.sort_by_key(|(n, r)| (*n, without(r), std::cmp::Reverse(r.seq)));
            near.into_iter().take(CLOSEST).map(|(_, r)| r).collect()
        })
    }
}

/// Reads a JSON admin body with a message naming what is wrong (axum's extractor answers plain text).
#[allow(clippy::result_large_err)]
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Response> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| admin_error(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/__admin/requests/count", post(count))
        .route("/__admin/requests/find", post(find))
        .route("/__admin/requests/unmatched", get(unmatched))
        .route(
            "/__admin/expectations",
            get(list_expectations).post(add_expectation).delete(clear_expectations),
        )
        .route("/__admin/expectations/{id}", delete(remove_expectation))
        .route("/__admin/verify", get(verify))
}

/// How many journaled requests match the criteria.
#[utoipa::path(post, path = "/__admin/requests/count", request_body = Criteria,
    responses((status = 200, body = CountAnswer), (status = 400, body = AdminError)))]
async fn count(State(st): State<AppState>, body: Bytes) -> Response {
    let criteria: Criteria = match parse_body("criteria", &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match st.count(&criteria) {
        Ok(a) => Json(a).into_response(),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// The journaled requests matching the criteria, newest first.
#[utoipa::path(post, path = "/__admin/requests/find", request_body = Criteria, params(FindQuery),
    responses((status = 200, body = Vec<JournalEntry>), (status = 400, body = AdminError)))]
async fn find(State(st): State<AppState>, Query(q): Query<FindQuery>, body: Bytes) -> Response {
    let criteria: Criteria = match parse_body("criteria", &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match st.find(&criteria, q.limit) {
        Ok(a) => Json(a).into_response(),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// Requests no route took (404/405) and requests refused before a key was known, newest first.
#[utoipa::path(get, path = "/__admin/requests/unmatched", responses((status = 200, body = Vec<JournalEntry>)))]
async fn unmatched(State(st): State<AppState>) -> Json<Vec<JournalEntry>> {
    Json(st.unmatched())
}

/// The installed expectations with their counts.
#[utoipa::path(get, path = "/__admin/expectations", responses((status = 200, body = Vec<InstalledExpectation>)))]
async fn list_expectations(State(st): State<AppState>) -> Json<Vec<InstalledExpectation>> {
    Json(st.inner.journal.expectations.list())
}

/// Installs an expectation (criteria and `count`, or `min`/`max`); it counts the requests journaled from now on.
#[utoipa::path(post, path = "/__admin/expectations", request_body = Expectation,
    responses((status = 201, body = Created), (status = 400, body = AdminError)))]
async fn add_expectation(State(st): State<AppState>, body: Bytes) -> Response {
    let spec: Expectation = match parse_body("expectation", &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match st.add_expectation(spec) {
        Ok(id) => (StatusCode::CREATED, Json(Created { id: id.to_string() })).into_response(),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// Removes one expectation.
#[utoipa::path(delete, path = "/__admin/expectations/{id}", params(("id" = u64, Path)),
    responses((status = 204), (status = 404, body = AdminError)))]
async fn remove_expectation(State(st): State<AppState>, Path(id): Path<u64>) -> Response {
    if st.inner.journal.expectations.remove(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        admin_error(StatusCode::NOT_FOUND, format!("no expectation {id}"))
    }
}

/// Removes every expectation (those from the config file too, until the next reload).
#[utoipa::path(delete, path = "/__admin/expectations", responses((status = 204)))]
async fn clear_expectations(State(st): State<AppState>) -> StatusCode {
    st.inner.journal.expectations.clear();
    StatusCode::NO_CONTENT
}

/// Checks every expectation: `200` when all hold, `417` with each unmet one and its closest requests otherwise.
#[utoipa::path(get, path = "/__admin/verify",
    responses((status = 200, body = VerifyReport), (status = 417, body = VerifyReport)))]
async fn verify(State(st): State<AppState>) -> Response {
    let report = st.verify();
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::EXPECTATION_FAILED
    };
    (status, Json(report)).into_response()
}

/// The fallback of the API router: `404 Route Not Found`, journaled as unrouted (`GET /__admin/requests/unmatched`)
/// unless it is under `/__admin`.
pub(crate) async fn unrouted(State(st): State<AppState>, req: Request) -> Response {
    let response = crate::api::not_found().await;
    if req.uri().path().starts_with("/__admin") {
        return response;
    }
    let s = &st.inner;
    let (head, body) = req.into_parts();
    let body = axum::body::to_bytes(body, crate::api::BODY_LIMIT)
        .await
        .unwrap_or_default();
    let query_key = s.settings.read().unwrap().query_key_on_v2 || head.uri.path().starts_with("/v3/");
    let key = crate::api::api_key(&head.headers, &head.uri, query_key);
    let account = key.as_deref().and_then(|k| s.accounts.get(k));
    let mut record = Record::new(s.clock.now(), head.method.clone(), head.uri.path().to_string().into());
    record.key_status = crate::api::key_status(key.as_deref(), account.as_ref());
    record.account = account.as_ref().map(|a| a.name.clone());
    record.status = Some(response.status().as_u16());
    record.error = Some(crate::errors::ApiError::RouteNotFound.summary());
    record.routed = false;
    (record.query, record.key_in_query) = crate::journal::query_of(&head.uri);
    let (response, bodies) = crate::snapshot::capture(&st, response, &head.headers, body, None).await;
    record.bodies = bodies;
    s.journal.push(record);
    response
}

/// The verification routes' part of the admin OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(
        count,
        find,
        unmatched,
        list_expectations,
        add_expectation,
        remove_expectation,
        clear_expectations,
        verify
    ),
    components(schemas(
        Criteria,
        CountAnswer,
        Expectation,
        InstalledExpectation,
        VerifyReport,
        ExpectationResult,
        NearRequest
    ))
)]
pub(crate) struct VerifyApi;

/// Adds the verification, stub and snapshot routes to the admin document (`#[openapi(modifiers(&Extra))]`).
pub(crate) struct Extra;

impl utoipa::Modify for Extra {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.merge(VerifyApi::openapi());
        doc.merge(crate::stubs::StubsApi::openapi());
        doc.merge(crate::snapshot::SnapshotApi::openapi());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_match_one_segment_each() {
        assert!(route_matches(
            "/v2/tradingview/layout-chart/{id}",
            "/v2/tradingview/layout-chart/abc"
        ));
        assert!(!route_matches(
            "/v2/tradingview/layout-chart/{id}",
            "/v2/tradingview/layout-chart/"
        ));
        assert!(!route_matches(
            "/v2/tradingview/layout-chart/{id}",
            "/v2/tradingview/layout-chart/a/b"
        ));
        assert!(route_matches(
            "/v2/tradingview/advanced-chart",
            "/v2/tradingview/advanced-chart"
        ));
        assert!(!route_matches(
            "/v2/tradingview/advanced-chart",
            "/v2/tradingview/advanced-chart/storage"
        ));
    }

    #[test]
    fn body_paths_are_dotted_or_pointers() {
        assert_eq!(pointer("symbol"), "/symbol");
        assert_eq!(pointer("studies.0.name"), "/studies/0/name");
        assert_eq!(pointer("/studies/0/name"), "/studies/0/name");
    }

    #[test]
    fn mismatches_name_the_field_and_both_values() {
        let body = br#"{"symbol":"BINANCE:ETHUSDT","studies":[{"name":"MACD"}]}"#;
        let v = View::new(
            "POST",
            "/v2/tradingview/advanced-chart",
            Some("acc-1"),
            Some(200),
            &[],
            Some(body),
            Utc::now(),
        );
        let c = Criteria::route("/v2/tradingview/advanced-chart")
            .body("symbol", "BINANCE:BTCUSDT")
            .body("studies.0.name", "MACD")
            .account("acc-2");
        assert_eq!(
            c.mismatches(&v),
            [
                "account: wanted acc-2, got acc-1",
                "body symbol: wanted \"BINANCE:BTCUSDT\", got \"BINANCE:ETHUSDT\""
            ]
        );
        assert!(Criteria::any().matches(&v));
    }

    #[test]
    fn expectation_ranges() {
        let e = Expectation::new(Criteria::any());
        assert!(!e.holds(0) && e.holds(5));
        let e = e.between(1, 2);
        assert!(e.holds(2) && !e.holds(3));
        assert!(Expectation::new(Criteria::any()).at_most(0).holds(0));
        let bad = Expectation {
            count: Some(1),
            ..Expectation::new(Criteria::any())
        };
        assert!(bad.validate().unwrap_err().contains("not both"));
    }
}
