//! The Chart-IMG routes: `POST /v2/tradingview/advanced-chart`, its `/storage` variant, and `GET /storage/{file}`
//! that serves what the variant handed out.
//!
//! A request goes through, in order: faults → key (403) → throttle (429 Too Many Requests) → daily quota (429 Limit
//! Exceeded) → body (400) → fields (422 array) → plan limits (403) → interval/symbol (422 object) → replay →
//! render (cached). The gateway steps come first because on the real service they are an API gateway in front of
//! the renderer; a request that passes the gateway uses one unit of quota whatever the renderer answers.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::{
    accounts::Gate,
    errors::ApiError,
    faults::{Action, Route},
    journal::JournalEntry,
    replay::Lookup,
    request::{self, ChartRequest, INTERVALS, KNOWN_EXCHANGES},
    state::{AppState, Prepared, Stored},
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
struct Trace {
    account: Option<String>,
    key_status: &'static str,
    error: Option<String>,
    symbol: Option<String>,
    interval: Option<String>,
    cache_hit: Option<bool>,
    replayed: Option<bool>,
    /// The image answered, for the dashboard's thumbnails.
    image: Option<(&'static str, Bytes)>,
}

pub(crate) async fn advanced_chart(State(st): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    handle(st, Route::AdvancedChart, method, uri, headers, body).await
}

pub(crate) async fn advanced_chart_storage(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(st, Route::Storage, method, uri, headers, body).await
}

async fn handle(st: AppState, route: Route, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let s = &st.inner;
    let mut trace = Trace::default();
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).filter(|k| !k.is_empty());
    let account = key.and_then(|k| s.accounts.get(k));
    trace.key_status = match (&key, &account) {
        (None, _) => "missing",
        (Some(_), None) => "unknown",
        (Some(_), Some(a)) if !a.config.active => "inactive",
        _ => "valid",
    };
    trace.account = account.as_ref().map(|a| a.id().to_string());

    let decision = s.faults.decide(trace.account.as_deref(), route);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let mut truncate = false;
    let response = match decision.action {
        Some(Action::Reset) | Some(Action::Empty) => {
            let abort = if matches!(decision.action, Some(Action::Reset)) { Abort::Reset } else { Abort::Close };
            let mut r = StatusCode::BAD_GATEWAY.into_response();
            r.extensions_mut().insert(abort);
            r
        }
        Some(Action::Status { status, message }) => {
            let e = ApiError::Status { status, message };
            trace.error = Some(e.summary());
            e.into_response()
        }
        Some(Action::NonImage { content_type, body }) => {
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("image/png")));
            r
        }
        other => {
            truncate = matches!(other, Some(Action::Truncate));
            match answer(&st, route, &headers, &body, account.as_deref(), &mut trace).await {
                Ok(r) => r,
                Err(e) => {
                    trace.error = Some(e.summary());
                    e.into_response()
                }
            }
        }
    };
    let response = if truncate { truncated(response).await } else { response };

    let status = if response.extensions().get::<Abort>().is_some() { None } else { Some(response.status().as_u16()) };
    let duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        route = ?route,
        account = trace.account.as_deref().unwrap_or("-"),
        key_status = trace.key_status,
        status = status.unwrap_or(0),
        duration_ms,
        faults = ?decision.fired,
        error = trace.error.as_deref().unwrap_or(""),
        "chart request"
    );
    let image = trace.image.take().filter(|_| !truncate && status == Some(200));
    let seq = s.journal.push(JournalEntry {
        seq: 0,
        at: s.clock.now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        account: trace.account,
        key_status: trace.key_status.to_string(),
        status,
        duration_ms,
        error: trace.error,
        faults: decision.fired.iter().map(|f| f.to_string()).collect(),
        symbol: trace.symbol,
        interval: trace.interval,
        cache_hit: trace.cache_hit,
        replayed: trace.replayed,
    });
    if let Some((content_type, bytes)) = image {
        s.thumbnails.put(seq, content_type, bytes);
    }
    response
}

/// The answer when no fault takes over.
async fn answer(
    st: &AppState,
    route: Route,
    headers: &HeaderMap,
    body: &Bytes,
    account: Option<&crate::accounts::Account>,
    trace: &mut Trace,
) -> Result<Response, ApiError> {
    let s = &st.inner;
    let account = account.filter(|a| a.config.active).ok_or(ApiError::Forbidden)?;
    match account.admit(s.clock.now().date_naive()) {
        Gate::Pass => {}
        Gate::Throttled => return Err(ApiError::TooManyRequests),
        Gate::QuotaExceeded => return Err(ApiError::LimitExceeded),
    }

    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(ApiError::BadRequest);
    }
    let memo = s.prepared.lock().unwrap().get(body).cloned();
    if memo.is_none() {
        // Only a body that is a JSON object gets this far; a memoized one was one.
        let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::BadRequest)?;
        value.as_object().ok_or(ApiError::BadRequest)?;
    }
    if let Some(replay) = s.replay.read().unwrap().as_ref() {
        let path = match route {
            Route::AdvancedChart => "/v2/tradingview/advanced-chart",
            Route::Storage => "/v2/tradingview/advanced-chart/storage",
        };
        match replay.lookup(path, body) {
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
    let prepared = match memo {
        Some(p) => p,
        None => {
            let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::BadRequest)?;
            let obj = value.as_object().ok_or(ApiError::BadRequest)?;
            let request = request::validate(obj).map_err(ApiError::Fields)?;
            let key = request.cache_key();
            let p = std::sync::Arc::new(Prepared { request, key });
            s.prepared.lock().unwrap().put(body.clone(), p.clone());
            p
        }
    };
    let req = &prepared.request;
    trace.symbol = Some(req.symbol.clone());
    trace.interval = Some(req.interval.clone());

    let limits = account.limits;
    if req.width > limits.max_width || req.height > limits.max_height {
        return Err(ApiError::Resolution { max_width: limits.max_width, max_height: limits.max_height });
    }
    if req.params() > limits.max_params as usize {
        return Err(ApiError::Parameters { max: limits.max_params });
    }
    if !INTERVALS.contains(&req.interval.as_str()) {
        return Err(ApiError::InvalidInterval);
    }
    let seed = {
        let settings = s.settings.read().unwrap();
        let known = |ex: &str| KNOWN_EXCHANGES.contains(&ex) || settings.extra_exchanges.iter().any(|e| e == ex);
        let parts = request::symbol_parts(&req.symbol);
        if settings.invalid_symbols.contains(&req.symbol) || parts.iter().any(|(ex, _)| !known(ex)) {
            return Err(ApiError::InvalidSymbol);
        }
        settings.seed
    };

    let bytes = image(st, req, &prepared.key, seed, trace).await?;
    trace.image = Some((req.content_type(), bytes.clone()));
    match route {
        Route::AdvancedChart => {
            let mut r = (StatusCode::OK, bytes).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(req.content_type()));
            Ok(r)
        }
        Route::Storage => Ok(store(st, req, headers, bytes)),
    }
}

/// The image for `req`, from the cache or freshly rendered (off the async threads: a big chart takes milliseconds).
async fn image(st: &AppState, req: &ChartRequest, key: &str, seed: u64, trace: &mut Trace) -> Result<Bytes, ApiError> {
    let s = &st.inner;
    if let Some(b) = s.cache.lock().unwrap().get(key).cloned() {
        s.cache_hits.fetch_add(1, Ordering::Relaxed);
        trace.cache_hit = Some(true);
        return Ok(b);
    }
    trace.cache_hit = Some(false);
    let owned = req.clone();
    let rendered = tokio::task::spawn_blocking(move || crate::render::render(&owned, seed))
        .await
        .map_err(|_| ApiError::Status { status: 500, message: None })?
        .map_err(|e| {
            tracing::error!(error = %e, "render failed");
            ApiError::Status { status: 500, message: None }
        })?;
    s.renders.fetch_add(1, Ordering::Relaxed);
    let bytes = Bytes::from(rendered);
    s.cache.lock().unwrap().put(key.to_string(), bytes.clone());
    Ok(bytes)
}

/// Keeps the image and answers `{url, etag, expire}` with a URL this server serves.
fn store(st: &AppState, req: &ChartRequest, headers: &HeaderMap, bytes: Bytes) -> Response {
    use sha2::Digest;
    let s = &st.inner;
    let etag = hex::encode(&sha2::Sha256::digest(&bytes)[..16]);
    let ext = if req.format == "jpeg" { "jpeg" } else { "png" };
    let file = format!("{etag}.{ext}");
    let base = s.settings.read().unwrap().public_url.clone().unwrap_or_else(|| {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        format!("http://{host}")
    });
    s.storage.lock().unwrap().put(file.clone(), Stored { content_type: req.content_type(), bytes });
    // The real service keeps stored images for a week.
    let expire = (s.clock.now() + chrono::Duration::days(7)).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let body = json!({ "url": format!("{}/storage/{file}", base.trim_end_matches('/')), "etag": etag, "expire": expire });
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `GET /storage/{file}`: the images handed out by the `/storage` route.
pub(crate) async fn stored_image(State(st): State<AppState>, Path(file): Path<String>) -> Response {
    match st.inner.storage.lock().unwrap().get(&file).cloned() {
        Some(img) => {
            let mut r = (StatusCode::OK, img.bytes).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(img.content_type));
            r
        }
        None => ApiError::Status { status: 404, message: None }.into_response(),
    }
}

/// Any other path: the JSON 404 the rest of the API speaks.
pub(crate) async fn not_found() -> Response {
    ApiError::Status { status: 404, message: None }.into_response()
}

/// Sends half the body after announcing all of it, then breaks the connection, as a proxy dying mid-transfer does.
async fn truncated(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let full = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let half = full.slice(..full.len() / 2);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
    let stream = futures::stream::iter([
        Ok::<Bytes, std::io::Error>(half),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "truncated by fault")),
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
