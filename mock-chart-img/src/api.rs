//! The Chart-IMG routes: `POST /v2/tradingview/advanced-chart` and `/layout-chart/{id}` with their `/storage`
//! variants, `GET /storage/…` that serves what the variants handed out, and the v3 exchange routes.
//!
//! A chart request goes through, in order: faults → stubs with `gateway: false` → key (403) → throttle (429 Too Many
//! Requests) → daily quota (429 Limit Exceeded) → stubs (`crate::stubs`) → layout id (404, layout routes) → body
//! (400) → replay → fields (422 array) → plan limits (403) → semantic checks (422 object: exchange, catalogue
//! symbol, exchange interval) → layout session (403 Layout Forbidden, 409 Session Disconnected) → latency (504 past
//! the gateway timeout) → render (cached). Body, fields, plan and the exchange check are
//! `chart_img_spec::validate_advanced_chart`, the one the worker runs too. The gateway steps come first because on
//! the real service they are an API gateway in front of the renderer; a request that passes the gateway uses one
//! unit of quota whatever the renderer answers.
//!
//! Also here, as part of the answering path: [`capture`] (a request's and its answer's bodies, for the journal) and
//! [`unrouted`], the fallback that answers and journals requests no route took.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use chart_img_spec::{routes, Rejection, ValidatedChart};
use rand::Rng;
use serde_json::{json, Value};

use crate::{
    accounts::{Account, Gate},
    config::SymbolMode,
    errors::ApiError,
    faults::{Action, Route},
    record::{Bodies, ChartLabel, Record},
    replay::Lookup,
    request::ChartRequest,
    state::{AppState, Prepared},
};

/// Put on a response to make the connection drop instead of answering; the serve loop acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abort {
    /// TCP reset.
    Reset,
    /// Clean close, no bytes.
    Close,
}

/// What the journal learns while a request is handled.
#[derive(Default)]
pub(crate) struct Trace {
    /// When the request arrived (journaled as `received_at`).
    pub(crate) received_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The `/__via/<label>/` the request came under.
    pub(crate) via: Option<Arc<str>>,
    pub(crate) account: Option<Arc<str>>,
    pub(crate) key_status: &'static str,
    pub(crate) error: Option<String>,
    pub(crate) chart: Option<Arc<ChartLabel>>,
    pub(crate) cache_hit: Option<bool>,
    pub(crate) replayed: Option<bool>,
    /// The image answered, for the dashboard's thumbnails.
    pub(crate) image: Option<(&'static str, Bytes)>,
    /// The answer's body when the response is these bytes (an image answered as such), for the journal.
    pub(crate) answer: Option<Bytes>,
    /// The stub that answered.
    stub: Option<u64>,
    /// Time waited for a render slot.
    pub(crate) queue_ms: Option<u64>,
    /// The image was drawn for an identical request in flight at the same time.
    pub(crate) shared_render: Option<bool>,
}

/// What a chart request reads of the settings, taken under one read of their lock.
pub(crate) struct Knobs {
    query_key_on_v2: bool,
    pub(crate) seed: u64,
    pub(crate) latency: crate::config::LatencyProfile,
    pub(crate) time_scale: f64,
    pub(crate) gateway_timeout_ms: u64,
    pub(crate) replay: Option<Arc<crate::replay::Replay>>,
}

impl Knobs {
    pub(crate) fn of(st: &AppState) -> Knobs {
        let s = st.inner.settings.read().unwrap();
        Knobs {
            query_key_on_v2: s.query_key_on_v2,
            seed: s.seed,
            latency: s.latency,
            time_scale: s.time_scale,
            gateway_timeout_ms: s.gateway_timeout_ms,
            replay: s.replay.clone(),
        }
    }
}

/// Which chart a request asks for.
#[derive(Debug, Clone)]
enum Target {
    Advanced,
    Layout(String),
}

// The chart handlers take the whole request: its head is only borrowed (the `HeaderMap`, `Uri` and `Method`
// extractors would each clone their part) and the body is read by `read_body`.

pub(crate) async fn advanced_chart(State(st): State<AppState>, req: Request) -> Response {
    handle(st, Route::AdvancedChart, Target::Advanced, req).await
}

pub(crate) async fn advanced_chart_storage(State(st): State<AppState>, req: Request) -> Response {
    handle(st, Route::Storage, Target::Advanced, req).await
}

pub(crate) async fn layout_chart(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    handle(st, Route::AdvancedChart, Target::Layout(id), req).await
}

pub(crate) async fn layout_chart_storage(State(st): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    handle(st, Route::Storage, Target::Layout(id), req).await
}

/// The request body limit: axum's default, which its `Bytes` extractor applied when the handlers used it.
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The whole body, as axum's `Bytes` extractor reads it (413 past [`BODY_LIMIT`], 400 when the client breaks off),
/// but without its wrappers: a body that arrives in one piece — every small JSON body — is that piece itself, not
/// a copy.
async fn read_body(mut body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::Status {
            status: 400,
            message: None,
        })?;
        let Ok(data) = frame.into_data() else { continue };
        len += data.len();
        if len > BODY_LIMIT {
            return Err(ApiError::Status {
                status: 413,
                message: None,
            });
        }
        match &mut joined {
            Some(j) => j.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None => {
                let mut j = BytesMut::with_capacity(len);
                j.extend_from_slice(&whole);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
    }
    Ok(joined.map_or(whole, BytesMut::freeze))
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_AMZN_REQUESTID: HeaderName = HeaderName::from_static("x-amzn-requestid");

/// The key of a request: the `x-api-key` header (borrowed), or `?key=` where the route accepts it.
pub(crate) fn api_key<'h>(headers: &'h HeaderMap, uri: &Uri, query_allowed: bool) -> Option<Cow<'h, str>> {
    if let Some(k) = headers
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
    {
        return Some(Cow::Borrowed(k));
    }
    if !query_allowed || uri.query().is_none() {
        return None;
    }
    let mut q = Query::<HashMap<String, String>>::try_from_uri(uri).ok()?;
    q.0.remove("key").filter(|k| !k.is_empty()).map(Cow::Owned)
}

pub(crate) fn key_status(key: Option<&str>, account: Option<&Arc<Account>>) -> &'static str {
    match (key, account) {
        (None, _) => "missing",
        (Some(_), None) => "unknown",
        (Some(_), Some(a)) if !a.config.active => "inactive",
        _ => "valid",
    }
}

/// The prefix under which the chart routes are served a second time, the client's label as its first segment
/// (`/__via/<label>/v2/tradingview/advanced-chart`): the journal then names the label (`via`).
pub(crate) const VIA_PREFIX: &str = "/__via/";

/// The label of a request sent under [`VIA_PREFIX`], from the URI before the nested router cut the prefix off.
pub(crate) fn via_of(head: &axum::http::request::Parts) -> Option<Arc<str>> {
    let original = head.extensions.get::<axum::extract::OriginalUri>()?;
    let rest = original.0.path().strip_prefix(VIA_PREFIX)?;
    rest.split('/').next().filter(|l| !l.is_empty()).map(Arc::from)
}

async fn handle(st: AppState, route: Route, target: Target, req: Request) -> Response {
    let received_at = st.inner.clock.now();
    let (head, body) = req.into_parts();
    // The body first, as when it was an extractor: one over the limit is refused before anything else.
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (method, uri, headers) = (&head.method, &head.uri, &head.headers);
    let started = Instant::now();
    let s = &st.inner;
    let mut trace = Trace {
        received_at: Some(received_at),
        via: via_of(&head),
        ..Trace::default()
    };
    let knobs = Knobs::of(&st);
    let key = api_key(headers, uri, knobs.query_key_on_v2);
    let account = key.as_deref().and_then(|k| s.accounts.get(k));
    trace.key_status = key_status(key.as_deref(), account.as_ref());
    trace.account = account.as_ref().map(|a| a.name.clone());
    let gone = ClientGone::arm(&st, method, uri, started, &trace);

    let decision = s.faults.decide(trace.account.as_deref(), route);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let (response, truncate) = match fault_answer(decision.action, &mut trace, |e| e) {
        Ok(r) => (r, false),
        Err(truncate) => {
            let response = match answer(
                &st,
                &knobs,
                route,
                &target,
                uri,
                headers,
                &body,
                account.as_deref(),
                &mut trace,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    trace.error = Some(e.summary());
                    e.into_response()
                }
            };
            (response, truncate)
        }
    };
    let (response, bodies) = if truncate {
        trace.image = None;
        (truncated(response).await, None)
    } else {
        let answer = trace.answer.take();
        capture(&st, response, headers, body, answer).await
    };
    gone.answered();
    journal(&st, method, uri, trace, started, decision.fired, &response, bodies);
    response
}

/// The answer a fault gives in place of the API (`Ok`): a reset or closed connection, a status with its error body
/// (shaped by `shape`: v1 writes its errors otherwise), a non-image body. `Err(truncate)` when the request goes on to
/// the API, its answer cut short if `truncate`. The v2 routes and the v1 emulation share it.
pub(crate) fn fault_answer(
    action: Option<Action>,
    trace: &mut Trace,
    shape: impl FnOnce(ApiError) -> ApiError,
) -> Result<Response, bool> {
    match action {
        Some(Action::Reset) | Some(Action::Empty) => {
            let abort = if matches!(action, Some(Action::Reset)) {
                Abort::Reset
            } else {
                Abort::Close
            };
            let mut r = StatusCode::BAD_GATEWAY.into_response();
            r.extensions_mut().insert(abort);
            Ok(r)
        }
        Some(Action::Status { status, message }) => {
            let e = shape(ApiError::Status { status, message });
            trace.error = Some(e.summary());
            Ok(e.into_response())
        }
        Some(Action::NonImage { content_type, body }) => {
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("image/png")),
            );
            Ok(r)
        }
        other => Err(matches!(other, Some(Action::Truncate))),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn journal(
    st: &AppState,
    method: &Method,
    uri: &Uri,
    mut trace: Trace,
    started: Instant,
    fired: Vec<&'static str>,
    response: &Response,
    bodies: Option<Box<Bodies>>,
) {
    let s = &st.inner;
    let status = if response.extensions().get::<Abort>().is_some() {
        None
    } else {
        Some(response.status().as_u16())
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    // A debug line: at the default level only the periodic summary (`telemetry`) is written, so logging costs the
    // request path nothing.
    tracing::debug!(
        path = uri.path(),
        account = trace.account.as_deref().unwrap_or("-"),
        key_status = trace.key_status,
        status = status.unwrap_or(0),
        duration_ms,
        faults = ?fired,
        error = trace.error.as_deref().unwrap_or(""),
        "chart request"
    );
    // A thumbnail only of an image answered whole.
    let image = trace.image.take().filter(|_| status == Some(200));
    let (query, key_in_query) = crate::record::query_of(uri);
    let at = s.clock.now();
    let seq = s.journal.push(Record {
        at,
        received_at: trace.received_at.unwrap_or(at),
        via: trace.via,
        method: method.clone(),
        path: path_of(uri),
        account: trace.account,
        key_status: trace.key_status,
        status,
        duration_ms,
        error: trace.error,
        faults: fired,
        chart: trace.chart,
        cache_hit: trace.cache_hit,
        replayed: trace.replayed,
        query,
        key_in_query,
        routed: true,
        stub: trace.stub,
        bodies,
        queue_ms: trace.queue_ms,
        shared_render: trace.shared_render,
        client_closed: false,
    });
    if let Some((content_type, bytes)) = image {
        s.thumbnails.put(seq, content_type, bytes);
    }
}

/// The path as a record keeps it: static names for the common paths, no allocation per request.
fn path_of(uri: &Uri) -> Cow<'static, str> {
    match uri.path() {
        routes::ADVANCED_CHART => routes::ADVANCED_CHART.into(),
        routes::ADVANCED_CHART_STORAGE => routes::ADVANCED_CHART_STORAGE.into(),
        other => other.to_string().into(),
    }
}

/// The `error` of a request whose client closed the connection before the answer.
pub const CLIENT_CLOSED: &str = "the client closed the connection before the answer";

/// Journals a chart request whose client closed the connection before the answer (a client timeout, a killed
/// process). Hyper then drops the handler's future mid-way, and without this guard the request — received, and
/// counted against the quota once past the gateway, as the real API counts a call whose client gave up — would be
/// missing from the journal, from verify's counts, HAR and snapshots. Armed once the key is read; dropped armed, it
/// journals the request with no status and `client_closed`; [`ClientGone::answered`] disarms it.
pub(crate) struct ClientGone<'a> {
    st: &'a AppState,
    method: &'a Method,
    uri: &'a Uri,
    started: Instant,
    /// What the trace knew when armed; `None` once answered.
    head: Option<TraceHead>,
}

/// The part of a [`Trace`] known before the answer: `received_at`, `via`, `account`, `key_status`.
struct TraceHead(
    Option<chrono::DateTime<chrono::Utc>>,
    Option<Arc<str>>,
    Option<Arc<str>>,
    &'static str,
);

impl<'a> ClientGone<'a> {
    pub(crate) fn arm(st: &'a AppState, method: &'a Method, uri: &'a Uri, started: Instant, trace: &Trace) -> Self {
        Self {
            st,
            method,
            uri,
            started,
            head: Some(TraceHead(
                trace.received_at,
                trace.via.clone(),
                trace.account.clone(),
                trace.key_status,
            )),
        }
    }

    /// The answer is being journaled the usual way.
    pub(crate) fn answered(mut self) {
        self.head = None;
    }
}

impl Drop for ClientGone<'_> {
    fn drop(&mut self) {
        let Some(TraceHead(received_at, via, account, key_status)) = self.head.take() else {
            return;
        };
        let s = &self.st.inner;
        let at = s.clock.now();
        let mut record = Record::new(at, self.method.clone(), path_of(self.uri));
        record.received_at = received_at.unwrap_or(at);
        record.via = via;
        record.account = account;
        record.key_status = key_status;
        record.duration_ms = self.started.elapsed().as_millis() as u64;
        record.error = Some(CLIENT_CLOSED.to_string());
        record.client_closed = true;
        (record.query, record.key_in_query) = crate::record::query_of(self.uri);
        tracing::debug!(path = self.uri.path(), "client closed the connection before the answer");
        s.journal.push(record);
    }
}

/// The gateway: an active key, the throttle, then one unit of today's quota.
pub(crate) fn gateway(st: &AppState, account: Option<&Account>) -> Result<(), ApiError> {
    let account = account.filter(|a| a.config.active).ok_or(ApiError::Forbidden)?;
    match account.admit(st.inner.clock.now().date_naive()) {
        Gate::Pass => Ok(()),
        Gate::Throttled => Err(ApiError::TooManyRequests),
        Gate::QuotaExceeded => Err(ApiError::LimitExceeded),
    }
}

/// The answer when no fault takes over.
#[allow(clippy::too_many_arguments)]
async fn answer(
    st: &AppState,
    knobs: &Knobs,
    route: Route,
    target: &Target,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    account: Option<&Account>,
    trace: &mut Trace,
) -> Result<Response, ApiError> {
    let s = &st.inner;
    // Chart routes take POST only (any other method is answered by the fallback).
    let account_name = account.map(|a| a.id());
    if let Some((id, r)) = crate::stubs::check(
        &st.inner.stubs,
        &*st.inner.clock,
        false,
        &Method::POST,
        uri,
        body,
        account_name,
    )
    .await
    {
        trace.stub = Some(id);
        return Ok(r);
    }
    gateway(st, account)?;
    if let Some((id, r)) = crate::stubs::check(
        &st.inner.stubs,
        &*st.inner.clock,
        true,
        &Method::POST,
        uri,
        body,
        account_name,
    )
    .await
    {
        trace.stub = Some(id);
        return Ok(r);
    }
    let account = account.ok_or(ApiError::Forbidden)?;
    let layout = match target {
        Target::Advanced => None,
        Target::Layout(id) => {
            let found = s.settings.read().unwrap().layouts.iter().find(|l| l.id == *id).cloned();
            Some(found.ok_or(ApiError::RouteNotFound)?)
        }
    };

    let memo_key = (body.clone(), account.plan_key);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let json_type = content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    // Only JSON bodies that validated are memoized, so the memo is consulted for JSON requests only: the same bytes
    // under another content type still get their 400.
    let memo = match target {
        Target::Advanced if json_type => s.prepared.lock().unwrap().get(&memo_key).cloned(),
        _ => None,
    };
    let value = match memo {
        Some(_) => Value::Null,
        None => chart_img_spec::read_body(content_type, body)?,
    };
    if memo.is_none() && !value.is_object() {
        return Err(Rejection::bad_request().into());
    }
    if let (Target::Advanced, Some(replay)) = (target, &knobs.replay) {
        match replay.lookup(uri.path(), body) {
            Lookup::Hit(r) => {
                trace.replayed = Some(true);
                return Ok(r);
            }
            Lookup::StrictMiss(r) => {
                trace.replayed = Some(false);
                trace.error = Some(crate::replay::MISS_MESSAGE.to_string());
                return Ok(r);
            }
            Lookup::Miss => trace.replayed = Some(false),
        }
    }
    let limits: chart_img_spec::PlanLimits = account.limits;
    let prepared = match memo {
        Some(p) => p,
        None => {
            let options = s.settings.read().unwrap().options.clone();
            let validated: ValidatedChart = match &layout {
                None => chart_img_spec::validate_advanced_chart_with(&value, &limits, &options)?,
                Some(l) => {
                    let mut v = value.clone();
                    if let Some(o) = v.as_object_mut() {
                        for (k, d) in [("symbol", &l.symbol), ("interval", &l.interval)] {
                            if let (false, Some(d)) = (o.contains_key(k), d) {
                                o.insert(k.into(), Value::String(d.clone()));
                            }
                        }
                    }
                    chart_img_spec::validate_layout_chart(&v, &limits, &options)?
                }
            };
            let request = validated.canonical();
            // The mock's own semantic checks (catalogue, unsupported intervals) depend only on the request and the
            // settings, so a memoized request has passed them (the memo is emptied when the settings change).
            let listed = catalogue_checks(st, &request)?;
            let key = request.cache_key();
            let label = Arc::new(ChartLabel {
                symbol: request.symbol.clone(),
                interval: request.interval.clone(),
                listed,
            });
            let p = Arc::new(Prepared { request, key, label });
            if layout.is_none() {
                // A copy of the body: the one read shares the connection's read buffer, which the memo must not pin.
                let (body, plan) = memo_key;
                s.prepared
                    .lock()
                    .unwrap()
                    .put((Bytes::copy_from_slice(&body), plan), p.clone());
            }
            p
        }
    };
    let req = &prepared.request;
    trace.chart = Some(prepared.label.clone());

    if let Some(l) = &layout {
        let sent = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
        if let (Some(id), Some(sign)) = (&l.session_id, &l.session_sign) {
            if sent("tradingview-session-id") != Some(id.as_str())
                || sent("tradingview-session-id-sign") != Some(sign.as_str())
            {
                return Err(ApiError::Rejected(Rejection::message(
                    403,
                    chart_img_spec::messages::LAYOUT_FORBIDDEN,
                )));
            }
        }
        if l.disconnected {
            return Err(ApiError::Rejected(Rejection::message(
                409,
                chart_img_spec::messages::SESSION_DISCONNECTED,
            )));
        }
    }
    realistic_wait(st, knobs, req).await?;

    let bytes = image(st, req, &prepared.key, knobs.seed, trace).await?;
    trace.image = Some((req.content_type(), bytes.clone()));
    match route {
        Route::AdvancedChart => {
            // Built directly: `Bytes::into_response` would insert a content type only to have it replaced.
            trace.answer = Some(bytes.clone());
            let mut r = Response::new(Body::from(bytes));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(req.content_type()));
            Ok(r)
        }
        Route::Storage => store(st, req, layout.is_some(), headers, bytes, account),
    }
}

/// `invalid_symbols`, `symbols: strict` against the catalogue, then `unsupported_intervals`. Answers whether the
/// catalogue lists every symbol of the chart (the journal flags the others: under `lenient` they render, but the
/// real API may answer `Invalid Symbol`).
pub(crate) fn catalogue_checks(st: &AppState, req: &ChartRequest) -> Result<bool, ApiError> {
    let settings = st.inner.settings.read().unwrap();
    let mut all_listed = true;
    for (exchange, ticker) in chart_img_spec::symbol_parts(&req.symbol) {
        let full = format!("{exchange}:{ticker}");
        let listed = settings.catalogue.lists(&exchange, &ticker);
        all_listed &= listed == Some(true);
        if settings.invalid_symbols.iter().any(|i| *i == full || *i == req.symbol)
            || (settings.symbols == SymbolMode::Strict && listed == Some(false))
        {
            return Err(Rejection::invalid_symbol().into());
        }
        if settings
            .unsupported_intervals
            .get(&exchange)
            .is_some_and(|l| l.contains(&req.interval))
        {
            return Err(Rejection::invalid_interval().into());
        }
    }
    Ok(all_listed)
}

/// Under `latency: realistic`, waits as long as the real service would (scaled by `time_scale`); past the gateway
/// timeout, waits the timeout and answers 504.
pub(crate) async fn realistic_wait(st: &AppState, knobs: &Knobs, req: &ChartRequest) -> Result<(), ApiError> {
    let s = &st.inner;
    let (profile, scale, timeout_ms) = (knobs.latency, knobs.time_scale, knobs.gateway_timeout_ms);
    if profile != crate::config::LatencyProfile::Realistic {
        return Ok(());
    }
    let u = {
        let mut dice = s.latency_dice.lock().unwrap();
        [dice.random::<f64>(), dice.random::<f64>(), dice.random::<f64>()]
    };
    let took = crate::latency::sample(req.width, req.height, req.params(), u);
    let timeout = Duration::from_millis(timeout_ms);
    if took > timeout {
        tokio::time::sleep(timeout.mul_f64(scale)).await;
        return Err(ApiError::GatewayTimeout);
    }
    tokio::time::sleep(took.mul_f64(scale)).await;
    Ok(())
}

/// The image for `req`, from the cache or freshly rendered on a render thread of the gate (`renders`): a bounded
/// number of renders at once, identical requests drawn once.
pub(crate) async fn image(
    st: &AppState,
    req: &ChartRequest,
    key: &str,
    seed: u64,
    trace: &mut Trace,
) -> Result<Bytes, ApiError> {
    let s = &st.inner;
    if let Some(b) = s.cache.lock().unwrap().get(key).cloned() {
        trace.cache_hit = Some(true);
        return Ok(b);
    }
    trace.cache_hit = Some(false);
    // Boxed: the render's future is most of the size of a chart request's future, which every request — a cache hit
    // too — would otherwise carry, and move from one wrapper into the next.
    Box::pin(render_missing(st, req, key, seed, trace)).await
}

/// [`image`] on a cache miss: a render thread draws it.
async fn render_missing(
    st: &AppState,
    req: &ChartRequest,
    key: &str,
    seed: u64,
    trace: &mut Trace,
) -> Result<Bytes, ApiError> {
    let s = &st.inner;
    let owned = crate::render::RenderRequest::new(req.clone());
    let drawn = s
        .renders
        .get(
            key,
            move || crate::render::render(&owned, seed).map(Bytes::from),
            |bytes| {
                s.renders_done.fetch_add(1, Ordering::Relaxed);
                // Into the cache before the gate forgets the drawing, so a request arriving now finds one or the other.
                s.cache.lock().unwrap().put(key.to_string(), bytes.clone());
            },
        )
        .await
        .map_err(|e| {
            tracing::error!(
                error = e.map_or("the render thread stopped".into(), |e| e.to_string()),
                "render failed"
            );
            ApiError::Status {
                status: 500,
                message: None,
            }
        })?;
    trace.queue_ms = Some(drawn.queued.as_millis() as u64);
    if !drawn.leader {
        trace.shared_render = Some(true);
    }
    Ok(drawn.bytes)
}

/// Where the `/storage` URLs handed out point: `public_url` when configured, else the `Host` the request came to.
pub(crate) fn public_base(st: &AppState, headers: &HeaderMap) -> String {
    st.inner.settings.read().unwrap().public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    })
}

/// Keeps the image as a new object and answers `{url, etag, expire}` (`size` too for layouts) with a URL this
/// server serves until `expire` = now + the plan's storage period.
fn store(
    st: &AppState,
    req: &ChartRequest,
    layout: bool,
    headers: &HeaderMap,
    bytes: Bytes,
    account: &Account,
) -> Result<Response, ApiError> {
    use sha2::Digest;
    let s = &st.inner;
    let etag = hex::encode(&sha2::Sha256::digest(&bytes)[..16]);
    let ext = if req.format == "jpeg" { "jpeg" } else { "png" };
    let now = s.clock.now();
    let expire = now + chrono::Duration::days(i64::from(account.limits.storage_days));
    let kind = if layout { "layout-chart" } else { "advanced-chart" };
    let rel = format!(
        "{}/tradingview/{kind}/{}.{ext}",
        expire.format("%Y%m%d"),
        uuid::Uuid::new_v4()
    );
    let base = public_base(st, headers);
    s.storage
        .put(&rel, &bytes, req.content_type(), expire, now)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store the image");
            ApiError::Status {
                status: 500,
                message: None,
            }
        })?;
    let url = format!("{}/storage/{rel}", base.trim_end_matches('/'));
    let expire = expire.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let body = if layout {
        json!({ "url": url, "etag": etag, "size": bytes.len(), "expire": expire })
    } else {
        json!({ "url": url, "etag": etag, "expire": expire })
    };
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// `GET /storage/{yyyymmdd}/tradingview/{kind}/{file}`: the images handed out by the `/storage` routes, until
/// they expire.
pub(crate) async fn stored_image(
    State(st): State<AppState>,
    Path((date, kind, file)): Path<(String, String, String)>,
) -> Response {
    let rel = format!("{date}/tradingview/{kind}/{file}");
    match st.inner.storage.get(&rel, st.inner.clock.now()) {
        Some((content_type, bytes)) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        None => ApiError::RouteNotFound.into_response(),
    }
}

/// `GET /v3/tradingview/exchange/list`.
pub(crate) async fn exchange_list(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    v3(st, method, uri, headers, None).await
}

/// `GET /v3/tradingview/exchange/{id}?symbol=&type=`.
pub(crate) async fn exchange_symbols(
    State(st): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    v3(st, method, uri, headers, Some(id)).await
}

async fn v3(st: AppState, method: Method, uri: Uri, headers: HeaderMap, exchange: Option<String>) -> Response {
    let started = Instant::now();
    let s = &st.inner;
    let mut trace = Trace::default();
    // The v3 routes always take `?key=` (documented).
    let key = api_key(&headers, &uri, true);
    let account = key.as_deref().and_then(|k| s.accounts.get(k));
    trace.key_status = key_status(key.as_deref(), account.as_ref());
    trace.account = account.as_ref().map(|a| a.name.clone());
    // Stubs: before the gateway when they say so, otherwise once it let the request through.
    let name = account.as_ref().map(|a| a.id());
    let mut stubbed = crate::stubs::check(&st.inner.stubs, &*st.inner.clock, false, &method, &uri, &[], name).await;
    let gate = match stubbed {
        Some(_) => Ok(()),
        None => gateway(&st, account.as_deref()),
    };
    if stubbed.is_none() && gate.is_ok() {
        stubbed = crate::stubs::check(&st.inner.stubs, &*st.inner.clock, true, &method, &uri, &[], name).await;
    }
    let result = gate.and_then(|()| {
        if stubbed.is_some() {
            return Ok(Value::Null);
        }
        let settings = s.settings.read().unwrap();
        let catalogue = &settings.catalogue;
        let payload = match &exchange {
            None => json!(catalogue.exchange_ids()),
            Some(id) => {
                // Exchange ids are case-insensitive on v3; the answer names the exchange in upper case.
                let id = catalogue.v3_exchange(id).ok_or(ApiError::RouteNotFound)?;
                let q = Query::<HashMap<String, String>>::try_from_uri(&uri)
                    .map(|q| q.0)
                    .unwrap_or_default();
                let symbol = q.get("symbol").map(|s| s.to_uppercase());
                let kind = q.get("type");
                let list: Vec<Value> = catalogue
                    .exchanges
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter(|e| {
                        symbol.as_ref().is_none_or(|q| {
                            e.symbol.contains(q.as_str()) || e.description.to_uppercase().contains(q.as_str())
                        })
                    })
                    .filter(|e| kind.is_none_or(|k| e.kind == *k))
                    .map(|e| serde_json::to_value(e.v3(&id)).unwrap_or(Value::Null))
                    .collect();
                json!(list)
            }
        };
        Ok(json!({ "updatedAt": catalogue.updated_at, "payload": payload }))
    });
    let response = match (stubbed, result) {
        (Some((id, r)), _) => {
            trace.stub = Some(id);
            r
        }
        (None, Ok(body)) => {
            let mut r = (StatusCode::OK, body.to_string()).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        (None, Err(e)) => {
            trace.error = Some(e.summary());
            e.into_response()
        }
    };
    let (response, bodies) = capture(&st, response, &headers, Bytes::new(), None).await;
    journal(&st, &method, &uri, trace, started, Vec::new(), &response, bodies);
    response
}

/// Any other path, and any wrong method on a known one: the JSON 404 the real API answers.
pub(crate) async fn not_found() -> Response {
    ApiError::RouteNotFound.into_response()
}

/// `x-amzn-RequestId` on every answer, as API Gateway sends it (inferred); and a JSON body on every error, also the
/// few the framework answers itself (a body over its size limit, say), so no error of this server is ever plain text.
pub(crate) fn gateway_headers(mut response: Response) -> Response {
    let status = response.status();
    if status.as_u16() >= 400 {
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let stubbed = response.extensions().get::<crate::stubs::Stubbed>().is_some();
        if !json && !stubbed && response.extensions().get::<Abort>().is_none() {
            response = ApiError::Status {
                status: status.as_u16(),
                message: None,
            }
            .into_response();
        }
    }
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert(X_AMZN_REQUESTID, v);
    }
    response
}

/// Sends half the body after announcing all of it, then breaks the connection, as a proxy dying mid-transfer does.
pub(crate) async fn truncated(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let full = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let half = full.slice(..full.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
    let stream = futures::stream::iter([
        Ok::<Bytes, std::io::Error>(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "truncated by fault",
        )),
    ]);
    // A short pause between the halves so the client has surely started reading before the break.
    let stream = futures::StreamExt::then(stream, |item| async move {
        if item.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        item
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The largest answer a record keeps for a snapshot (bigger ones are journaled without their bodies).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Takes a copy of a request's body and the answer's body (rebuilding the answer around the same bytes) for the
/// journal. Answers that are streamed (a truncated-body fault) or dropped keep the request's body only. With a
/// `journal_body_budget` of 0 nothing is taken, except the request's body while expectations need it.
pub(crate) async fn capture(
    st: &AppState,
    response: Response,
    headers: &HeaderMap,
    request: Bytes,
    answer: Option<Bytes>,
) -> (Response, Option<Box<Bodies>>) {
    let (request_wanted, keep) = st.inner.journal.wants_bodies();
    if !request_wanted {
        return (response, None);
    }
    let mut bodies = Box::new(Bodies {
        request_type: content_type(headers),
        // A copy: the body read shares the connection's read buffer, which the journal must not pin.
        request: Bytes::copy_from_slice(&request),
        response_type: content_type(response.headers()),
        response: None,
    });
    if let Some(answer) = answer.filter(|a| keep && a.len() <= MAX_ANSWER) {
        bodies.response = Some(answer);
        return (response, Some(bodies));
    }
    let exact = axum::body::HttpBody::size_hint(response.body()).exact();
    let aborted = response.extensions().get::<Abort>().is_some();
    if !keep || aborted || exact.is_none_or(|n| n as usize > MAX_ANSWER) {
        return (response, Some(bodies));
    }
    let (parts, body) = response.into_parts();
    // Boxed: a rare path (answers the handler did not hand over), kept out of every request's future.
    match Box::pin(axum::body::to_bytes(body, MAX_ANSWER)).await {
        Ok(bytes) => {
            bodies.response = Some(bytes.clone());
            (Response::from_parts(parts, Body::from(bytes)), Some(bodies))
        }
        Err(_) => (Response::from_parts(parts, Body::empty()), Some(bodies)),
    }
}

/// A content type as a record keeps it: the common ones static (no allocation per request), others copied.
fn content_type(h: &HeaderMap) -> Option<std::borrow::Cow<'static, str>> {
    use std::borrow::Cow;
    let v = h.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(match v {
        "application/json" => Cow::Borrowed("application/json"),
        "image/png" => Cow::Borrowed("image/png"),
        "image/jpeg" => Cow::Borrowed("image/jpeg"),
        other => Cow::Owned(other.to_owned()),
    })
}

/// The fallback of the API router: `404 Route Not Found`, journaled as unrouted (`GET /__admin/requests/unmatched`)
/// unless it is under `/__admin`.
pub(crate) async fn unrouted(State(st): State<AppState>, req: Request) -> Response {
    let response = not_found().await;
    if req.uri().path().starts_with("/__admin") {
        return response;
    }
    let s = &st.inner;
    let (head, body) = req.into_parts();
    let body = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    let query_key = s.settings.read().unwrap().query_key_on_v2 || head.uri.path().starts_with("/v3/");
    let key = api_key(&head.headers, &head.uri, query_key);
    let account = key.as_deref().and_then(|k| s.accounts.get(k));
    let mut record = Record::new(s.clock.now(), head.method.clone(), head.uri.path().to_string().into());
    record.key_status = key_status(key.as_deref(), account.as_ref());
    record.account = account.as_ref().map(|a| a.name.clone());
    record.status = Some(response.status().as_u16());
    record.error = Some(crate::errors::ApiError::RouteNotFound.summary());
    record.routed = false;
    (record.query, record.key_in_query) = crate::record::query_of(&head.uri);
    let (response, bodies) = capture(&st, response, &head.headers, body, None).await;
    record.bodies = bodies;
    s.journal.push(record);
    response
}
