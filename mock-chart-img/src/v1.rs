//! API v1, the legacy GET routes, under `v1: emulate` (`chart_img_spec::v1` holds the facts): `GET
//! /v1/tradingview/{mini-chart,advanced-chart}[/storage]` with query parameters, the key as `Authorization: Bearer`
//! or `?key=`. A v1 query becomes the v2 request it means and goes through the same faults, gateway (403, 429, the
//! daily quota), checks, latency and renderer as v2; refusals get the v1 bodies (`{"error": …}`, `{"errors": […]}`),
//! storage answers the v1 URL shape, served at `GET /v1/storage/pub/{file}`. With `v1: off` every v1 path answers
//! `404 {"message":"Route Not Found"}`, like any unknown route.

use std::{borrow::Cow, sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chart_img_spec::{
    v1::{self, V1Chart},
    Rejection,
};

use crate::{
    accounts::Account,
    api::{self, Knobs, Trace},
    config::V1Mode,
    errors::ApiError,
    faults::Route,
    record::ChartLabel,
    request::ChartRequest,
    state::AppState,
};

fn emulated(st: &AppState) -> bool {
    st.inner.settings.read().unwrap().v1 == V1Mode::Emulate
}

pub(crate) async fn chart(State(st): State<AppState>, Path(chart): Path<String>, req: Request) -> Response {
    handle(st, chart, false, req).await
}

pub(crate) async fn chart_storage(State(st): State<AppState>, Path(chart): Path<String>, req: Request) -> Response {
    handle(st, chart, true, req).await
}

/// `GET /v1/storage/pub/{file}`: the images the v1 storage routes handed out, until they expire.
pub(crate) async fn stored_image(State(st): State<AppState>, Path(file): Path<String>) -> Response {
    if !emulated(&st) {
        return ApiError::RouteNotFound.into_response();
    }
    match st.inner.storage.get(&format!("v1/pub/{file}"), st.inner.clock.now()) {
        Some((content_type, bytes)) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        None => ApiError::Rejected(v1::route_not_found()).into_response(),
    }
}

/// The key of a v1 request: `Authorization: Bearer <key>`, or `?key=`.
fn api_key<'h>(headers: &'h HeaderMap, query: &[(String, String)]) -> Option<Cow<'h, str>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if let Some(k) = bearer {
        return Some(Cow::Borrowed(k));
    }
    query
        .iter()
        .find(|(k, v)| k == "key" && !v.is_empty())
        .map(|(_, v)| Cow::Owned(v.clone()))
}

/// A refusal with its v1 body; the gateway's (403 Forbidden, the two 429s) stay as they are.
fn v1_error(e: ApiError) -> ApiError {
    let error = |status: u16, m: &str| {
        ApiError::Rejected(Rejection {
            status,
            body: v1::error_body(m),
            field: None,
        })
    };
    match e {
        ApiError::Rejected(r) => ApiError::Rejected(v1::v1_rejection(r)),
        ApiError::RouteNotFound => ApiError::Rejected(v1::route_not_found()),
        ApiError::GatewayTimeout
        | ApiError::Status {
            status: 504,
            message: None,
        } => error(504, v1::messages::PROCESS_TIMEOUT),
        ApiError::Status {
            status: 500,
            message: None,
        } => error(500, v1::messages::SERVER_ERROR),
        other => other,
    }
}

async fn handle(st: AppState, segment: String, storage: bool, req: Request) -> Response {
    if !emulated(&st) {
        return ApiError::RouteNotFound.into_response();
    }
    let Some(kind) = V1Chart::from_segment(&segment) else {
        return ApiError::Rejected(v1::route_not_found()).into_response();
    };
    let (head, _) = req.into_parts();
    let (method, uri, headers) = (&head.method, &head.uri, &head.headers);
    let started = Instant::now();
    let s = &st.inner;
    let query: Vec<(String, String)> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let mut trace = Trace::default();
    trace.via = api::via_of(&head);
    let knobs = Knobs::of(&st);
    let key = api_key(headers, &query);
    let account = key.as_deref().and_then(|k| s.accounts.get(k));
    trace.key_status = api::key_status(key.as_deref(), account.as_ref());
    trace.account = account.as_ref().map(|a| a.name.clone());
    let gone = api::ClientGone::arm(&st, method, uri, started, &trace);

    let route = if storage { Route::Storage } else { Route::AdvancedChart };
    let decision = s.faults.decide(trace.account.as_deref(), route);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let (response, truncate) = match api::fault_answer(decision.action, &mut trace, v1_error) {
        Ok(r) => (r, false),
        Err(truncate) => {
            let response = match answer(
                &st,
                &knobs,
                kind,
                storage,
                &query,
                headers,
                account.as_deref(),
                &mut trace,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    let e = v1_error(e);
                    trace.error = Some(e.summary());
                    e.into_response()
                }
            };
            (response, truncate)
        }
    };
    let (response, bodies) = if truncate {
        trace.image = None;
        (api::truncated(response).await, None)
    } else {
        crate::api::capture(&st, response, headers, Bytes::new(), None).await
    };
    gone.answered();
    api::journal(&st, method, uri, trace, started, decision.fired, &response, bodies);
    response
}

#[allow(clippy::too_many_arguments)]
async fn answer(
    st: &AppState,
    knobs: &Knobs,
    kind: V1Chart,
    storage: bool,
    query: &[(String, String)],
    headers: &HeaderMap,
    account: Option<&Account>,
    trace: &mut Trace,
) -> Result<Response, ApiError> {
    api::gateway(st, account)?;
    let account = account.ok_or(ApiError::Forbidden)?;
    let limits: chart_img_spec::PlanLimits = account.limits;
    let options = st.inner.settings.read().unwrap().options.clone();
    let request = v1::validate_v1(kind, query, &limits, &options)?.canonical();
    let listed = api::catalogue_checks(st, &request)?;
    trace.chart = Some(Arc::new(ChartLabel {
        symbol: request.symbol.clone(),
        interval: request.interval.clone(),
        listed,
    }));
    api::realistic_wait(st, knobs, &request).await?;
    let key = request.cache_key();
    let bytes = api::image(st, &request, &key, knobs.seed, trace).await?;
    trace.image = Some((request.content_type(), bytes.clone()));
    if storage {
        return store(st, &request, headers, bytes, account);
    }
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(request.content_type()));
    Ok(r)
}

/// Keeps the image and answers v1's `{"url","size","cors","etag","expireAt","createdAt"}`, the URL on this host.
fn store(
    st: &AppState,
    req: &ChartRequest,
    headers: &HeaderMap,
    bytes: Bytes,
    account: &Account,
) -> Result<Response, ApiError> {
    use sha2::Digest;
    let s = &st.inner;
    let etag = hex::encode(&sha2::Sha256::digest(&bytes)[..16]);
    let now = s.clock.now();
    let expire = now + chrono::Duration::days(i64::from(account.limits.storage_days));
    let name = format!("{}.png", uuid::Uuid::new_v4());
    let base = crate::api::public_base(st, headers);
    s.storage
        .put(&format!("v1/pub/{name}"), &bytes, req.content_type(), expire, now)
        .map_err(|e| {
            tracing::error!(error = %e, "cannot store the image");
            ApiError::Status {
                status: 500,
                message: None,
            }
        })?;
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let body = v1::storage_answer(&base, &name, bytes.len(), &etag, &at(expire), &at(now));
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}
