//! Stubs as the control API: [`AppState`]'s methods and the `/__admin/stubs` routes. What a stub is and how it
//! answers is [`crate::stubs`]'s.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};
use utoipa::OpenApi;

use super::reply::{admin_error, parse_body, AdminError, Created};
use crate::{
    state::AppState,
    stubs::{InstalledStub, StubAnswer, StubSpec},
};

impl AppState {
    /// Installs a stub; returns its id.
    pub fn add_stub(&self, spec: StubSpec) -> Result<u64, String> {
        self.inner.stubs.add(spec, "admin")
    }

    /// Removes a stub; `false` if there was none with that id.
    pub fn remove_stub(&self, id: u64) -> bool {
        self.inner.stubs.remove(id)
    }

    /// The installed stubs.
    pub fn stubs(&self) -> Vec<InstalledStub> {
        self.inner.stubs.list()
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/__admin/stubs", get(list_stubs).post(add_stub).delete(clear_stubs))
        .route("/__admin/stubs/{id}", delete(remove_stub))
}

/// Installed stubs with how often each answered.
#[utoipa::path(get, path = "/__admin/stubs", responses((status = 200, body = Vec<InstalledStub>)))]
async fn list_stubs(State(st): State<AppState>) -> Json<Vec<InstalledStub>> {
    Json(st.stubs())
}

/// Installs a stub.
#[utoipa::path(post, path = "/__admin/stubs", request_body = StubSpec,
    responses((status = 201, body = Created), (status = 400, body = AdminError)))]
async fn add_stub(State(st): State<AppState>, body: Bytes) -> Response {
    let spec: StubSpec = match parse_body("stub", &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match st.add_stub(spec) {
        Ok(id) => (StatusCode::CREATED, Json(Created { id: id.to_string() })).into_response(),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// Removes one stub.
#[utoipa::path(delete, path = "/__admin/stubs/{id}", params(("id" = u64, Path)),
    responses((status = 204), (status = 404, body = AdminError)))]
async fn remove_stub(State(st): State<AppState>, Path(id): Path<u64>) -> Response {
    if st.remove_stub(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        admin_error(StatusCode::NOT_FOUND, format!("no stub {id}"))
    }
}

/// Removes every stub (those from the config file too, until the next reload).
#[utoipa::path(delete, path = "/__admin/stubs", responses((status = 204)))]
async fn clear_stubs(State(st): State<AppState>) -> StatusCode {
    st.inner.stubs.clear();
    StatusCode::NO_CONTENT
}

/// The stub routes' part of the admin OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(list_stubs, add_stub, remove_stub, clear_stubs),
    components(schemas(StubSpec, StubAnswer, InstalledStub))
)]
pub(crate) struct StubsApi;
