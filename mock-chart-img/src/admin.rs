//! The admin API under `/__admin`: health, journal, usage, reset, keys and faults at run time, the loaded config,
//! and the OpenAPI document of all of it (generated from these handlers by `utoipa`, so it cannot drift from the
//! code). The dashboard (`/__admin/ui`, [`crate::ui`]) is merged into this router, so it is served where this is.
//!
//! **Invariant:** no admin answer contains an API key; keys are named by their account.

use std::sync::atomic::Ordering;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use serde::Serialize;
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

mod reply;
pub(crate) mod snapshot;
mod stubs;
mod verify;

use reply::{admin_error, AdminError, Created};

use crate::{
    accounts::Usage,
    config::{
        ConfigView, KeyConfig, KeySummary, LatencyProfile, LimitOverrides, ReplayConfig, SymbolMode, WatermarkMode,
    },
    faults::{FaultKind, FaultSpec, InstalledFault, Route},
    journal::JournalQuery,
    plan::{Plan, PlanLimits},
    record::JournalEntry,
    state::AppState,
};

/// The OpenAPI document of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mock-chart-img admin API",
        description = "Control and inspect a running mock Chart-IMG server."
    ),
    paths(
        health,
        requests,
        clear_requests,
        usage,
        usage_of,
        reset,
        list_keys,
        add_key,
        remove_key,
        list_faults,
        add_fault,
        remove_fault,
        clear_faults,
        loaded_config,
        openapi_json,
        chart_img_openapi_json,
        replay_unused
    ),
    components(schemas(
        Health,
        JournalEntry,
        Usage,
        KeySummary,
        KeyConfig,
        LimitOverrides,
        Plan,
        PlanLimits,
        chart_img_spec::Plan,
        FaultSpec,
        FaultKind,
        Route,
        InstalledFault,
        Created,
        AdminError,
        ConfigView,
        ReplayConfig,
        SymbolMode,
        WatermarkMode,
        LatencyProfile
    )),
    modifiers(&VerificationRoutes)
)]
pub struct AdminApi;

/// Adds the verification, stub and snapshot routes to the admin document (`modifiers` above).
struct VerificationRoutes;

impl utoipa::Modify for VerificationRoutes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.merge(verify::VerifyApi::openapi());
        doc.merge(stubs::StubsApi::openapi());
        doc.merge(snapshot::SnapshotApi::openapi());
    }
}

/// The path a health check asks (on the API port, no token needed).
pub const HEALTH_PATH: &str = "/__admin/health";

/// `GET /__admin/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
    /// Crate version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Configured keys.
    pub keys: usize,
    /// Installed faults.
    pub faults: usize,
    /// Entries in the journal.
    pub journal_len: usize,
    /// Images rendered (cache misses).
    pub renders: u64,
    /// Images answered from the render cache.
    pub cache_hits: u64,
    /// Render threads: charts rendered at once at most (`render_concurrency`).
    pub render_concurrency: usize,
    /// Images held by the `/storage` store, and their bytes.
    pub stored_objects: usize,
    /// See `stored_objects`.
    pub stored_bytes: u64,
}

/// Every `/__admin` route, health included. With a token, all but health need `Authorization: Bearer <token>`:
/// routes added to [`guarded`] get the check without doing anything.
pub(crate) fn router(token: Option<AdminToken>) -> Router<AppState> {
    let guarded = match token {
        Some(token) => guarded().route_layer(axum::middleware::from_fn_with_state(token, require_token)),
        None => guarded(),
    };
    health_route().merge(guarded)
}

/// `/__admin/health` alone: answered without a token, wherever the Chart-IMG API is served.
pub(crate) fn health_route() -> Router<AppState> {
    Router::new().route(HEALTH_PATH, get(health))
}

/// The admin token (`MOCK_CHART_IMG_ADMIN_TOKEN`). Its `Debug` does not show it.
#[derive(Clone)]
pub struct AdminToken(std::sync::Arc<str>);

impl AdminToken {
    /// A token; `None` when it is empty (an empty token would let anyone in).
    pub fn new(token: &str) -> Option<AdminToken> {
        (!token.trim().is_empty()).then(|| AdminToken(token.trim().into()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Refuses an admin request without `Authorization: Bearer <token>`: `401` with a JSON body saying what is missing
/// (never the token).
async fn require_token(
    State(token): State<AdminToken>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let problem = match req.headers().get(http::header::AUTHORIZATION).map(|v| v.to_str()) {
        None => {
            "the admin API needs `Authorization: Bearer <token>` (the token is MOCK_CHART_IMG_ADMIN_TOKEN); \
                 this request has no Authorization header"
        }
        Some(Err(_)) => "the Authorization header is not valid text",
        Some(Ok(v)) => match v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            None => "the Authorization header must be `Bearer <token>` (the token is MOCK_CHART_IMG_ADMIN_TOKEN)",
            Some(given) if same_secret(given.trim().as_bytes(), token.0.as_bytes()) => return next.run(req).await,
            Some(_) => "the bearer token is not MOCK_CHART_IMG_ADMIN_TOKEN",
        },
    };
    let mut resp = admin_error(StatusCode::UNAUTHORIZED, problem);
    resp.headers_mut()
        .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    resp
}

/// Compares without stopping at the first difference, so the time taken does not tell how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admin routes a token guards: all but health. Add new admin routes here.
fn guarded() -> Router<AppState> {
    Router::new()
        .route("/__admin/requests", get(requests).delete(clear_requests))
        .route("/__admin/usage", get(usage))
        .route("/__admin/usage/{account}", get(usage_of))
        .route("/__admin/reset", post(reset))
        .route("/__admin/keys", get(list_keys).post(add_key))
        .route("/__admin/keys/{account}", delete(remove_key))
        .route("/__admin/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/__admin/faults/{id}", delete(remove_fault))
        .route("/__admin/config", get(loaded_config))
        .route("/__admin/openapi.json", get(openapi_json))
        .route("/__admin/chart-img-openapi.json", get(chart_img_openapi_json))
        .route("/__admin/replay/unused", get(replay_unused))
        .merge(crate::ui::router())
        .merge(verify::router())
        .merge(stubs::router())
        .merge(snapshot::router())
}

/// Liveness and a few counters.
#[utoipa::path(get, path = "/__admin/health", responses((status = 200, body = Health)))]
async fn health(State(st): State<AppState>) -> Json<Health> {
    let s = &st.inner;
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: s.started.elapsed().as_secs(),
        keys: s.accounts.all().len(),
        faults: s.faults.list().len(),
        journal_len: s.journal.len(),
        renders: s.renders_done.load(Ordering::Relaxed),
        cache_hits: s.journal.cache_hits(),
        render_concurrency: s.renders.limit(),
        stored_objects: s.storage.usage().0,
        stored_bytes: s.storage.usage().1,
    })
}

/// The request journal, newest first.
#[utoipa::path(get, path = "/__admin/requests", params(JournalQuery),
    responses((status = 200, body = Vec<JournalEntry>)))]
async fn requests(State(st): State<AppState>, Query(q): Query<JournalQuery>) -> Json<Vec<JournalEntry>> {
    Json(st.inner.journal.query(&q))
}

/// Empties the journal.
#[utoipa::path(delete, path = "/__admin/requests", responses((status = 204)))]
async fn clear_requests(State(st): State<AppState>) -> StatusCode {
    st.inner.journal.clear();
    st.inner.thumbnails.clear();
    StatusCode::NO_CONTENT
}

/// Usage of every account for the current UTC day.
#[utoipa::path(get, path = "/__admin/usage", responses((status = 200, body = Vec<Usage>)))]
async fn usage(State(st): State<AppState>) -> Json<Vec<Usage>> {
    let today = st.inner.clock.now().date_naive();
    Json(st.inner.accounts.all().iter().map(|a| a.usage(today)).collect())
}

/// Usage of one account.
#[utoipa::path(get, path = "/__admin/usage/{account}", params(("account" = String, Path)),
    responses((status = 200, body = Usage), (status = 404, body = AdminError)))]
async fn usage_of(State(st): State<AppState>, Path(account): Path<String>) -> Response {
    let today = st.inner.clock.now().date_naive();
    match st.inner.accounts.all().iter().find(|a| a.id() == account) {
        Some(a) => Json(a.usage(today)).into_response(),
        None => admin_error(StatusCode::NOT_FOUND, format!("no account `{account}`")),
    }
}

/// Forgets usage counters (and refills rate buckets) and empties the journal.
#[utoipa::path(post, path = "/__admin/reset", responses((status = 204)))]
/// Expectations count from zero again.
async fn reset(State(st): State<AppState>) -> StatusCode {
    st.inner.accounts.reset();
    st.inner.journal.clear();
    st.inner.thumbnails.clear();
    StatusCode::NO_CONTENT
}

/// The configured keys, by account.
#[utoipa::path(get, path = "/__admin/keys", responses((status = 200, body = Vec<KeySummary>)))]
async fn list_keys(State(st): State<AppState>) -> Json<Vec<KeySummary>> {
    Json(
        st.inner
            .accounts
            .all()
            .iter()
            .map(|a| KeySummary {
                account: a.id().to_string(),
                plan: a.config.plan.label().to_string(),
                active: a.config.active,
                limits: a.limits,
            })
            .collect(),
    )
}

/// Adds a key (or replaces the key of the same value, resetting its counters).
#[utoipa::path(post, path = "/__admin/keys", request_body = KeyConfig,
    responses((status = 201, body = Created), (status = 400, body = AdminError), (status = 409, body = AdminError)))]
async fn add_key(State(st): State<AppState>, Json(key): Json<KeyConfig>) -> Response {
    if let Err(m) = key.validate() {
        return admin_error(StatusCode::BAD_REQUEST, m);
    }
    let id = key.account.clone();
    match st.inner.accounts.upsert(key) {
        Ok(()) => (StatusCode::CREATED, Json(Created { id })).into_response(),
        Err(m) => admin_error(StatusCode::CONFLICT, m),
    }
}

/// Removes the key of an account.
#[utoipa::path(delete, path = "/__admin/keys/{account}", params(("account" = String, Path)),
    responses((status = 204), (status = 404, body = AdminError)))]
async fn remove_key(State(st): State<AppState>, Path(account): Path<String>) -> Response {
    if st.inner.accounts.remove_account(&account) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        admin_error(StatusCode::NOT_FOUND, format!("no account `{account}`"))
    }
}

/// Installed faults with their progress.
#[utoipa::path(get, path = "/__admin/faults", responses((status = 200, body = Vec<InstalledFault>)))]
async fn list_faults(State(st): State<AppState>) -> Json<Vec<InstalledFault>> {
    Json(st.inner.faults.list())
}

/// Installs a fault.
#[utoipa::path(post, path = "/__admin/faults", request_body = FaultSpec,
    responses((status = 201, body = Created), (status = 400, body = AdminError)))]
async fn add_fault(State(st): State<AppState>, Json(spec): Json<FaultSpec>) -> Response {
    if let Err(m) = spec.validate() {
        return admin_error(StatusCode::BAD_REQUEST, m);
    }
    let id = st.inner.faults.add(spec, "admin");
    (StatusCode::CREATED, Json(Created { id: id.to_string() })).into_response()
}

/// Removes one fault.
#[utoipa::path(delete, path = "/__admin/faults/{id}", params(("id" = u64, Path)),
    responses((status = 204), (status = 404, body = AdminError)))]
async fn remove_fault(State(st): State<AppState>, Path(id): Path<u64>) -> Response {
    if st.inner.faults.remove(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        admin_error(StatusCode::NOT_FOUND, format!("no fault {id}"))
    }
}

/// Removes every fault (those from the config file too, until the next reload).
#[utoipa::path(delete, path = "/__admin/faults", responses((status = 204)))]
async fn clear_faults(State(st): State<AppState>) -> StatusCode {
    st.inner.faults.clear();
    StatusCode::NO_CONTENT
}

/// The config as loaded (at start or by the last reload), keys shown by their account.
#[utoipa::path(get, path = "/__admin/config", responses((status = 200, body = ConfigView)))]
async fn loaded_config(State(st): State<AppState>) -> Json<ConfigView> {
    Json(st.inner.loaded.read().unwrap().clone())
}

/// This document.
#[utoipa::path(get, path = "/__admin/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi_json() -> Response {
    Json(serde_json::to_value(AdminApi::openapi()).unwrap_or_else(|e| json!({ "error": e.to_string() })))
        .into_response()
}

/// The Chart-IMG API this server imitates, as OpenAPI 3.1 (generated by `chart_img_spec::openapi`; the same bytes as
/// the committed `chart-img-spec/openapi.json`).
#[utoipa::path(get, path = "/__admin/chart-img-openapi.json", responses((status = 200, description = "OpenAPI 3.1 document of the Chart-IMG API")))]
async fn chart_img_openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        chart_img_spec::openapi::document_text(),
    )
        .into_response()
}

/// The recorded interactions of the `replay:` cassette no request has used yet: `200` when that is allowed or none
/// is left, `409` with the same list under `allow_unused: false` (the check a test makes at its end; the server makes
/// it again at shutdown). `404` when no cassette is configured.
#[utoipa::path(get, path = "/__admin/replay/unused", responses(
    (status = 200, description = "`{cassette, total, interactions: [{index, request, status}], allowUnused}`"),
    (status = 409, description = "The same, under `allow_unused: false` with interactions left unused"),
    (status = 404, body = AdminError)
))]
async fn replay_unused(State(st): State<AppState>) -> Response {
    let Some(replay) = st.inner.settings.read().unwrap().replay.clone() else {
        return admin_error(StatusCode::NOT_FOUND, "no replay cassette is configured");
    };
    let report = replay.unused();
    let status = if !replay.allow_unused() && !report.interactions.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    body["allowUnused"] = json!(replay.allow_unused());
    (status, Json(body)).into_response()
}
