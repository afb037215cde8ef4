//! The dashboard at `/__admin/ui`: one page (HTML, CSS and JavaScript embedded in the binary with `include_str!`, no
//! build step, nothing fetched from elsewhere) that polls the admin API and shows the request journal with thumbnails
//! of the images served, per-key usage and rate gauges, the faults with toggles (added and removed through
//! `POST`/`DELETE /__admin/faults`), the stubs (added with a JSON form and removed, `POST`/`DELETE /__admin/stubs`),
//! the expectations with their verdict (`GET /__admin/verify`), and the loaded config (`GET /__admin/config`).
//!
//! It is part of the admin router, so it follows the admin API's loopback rule: served only where `/__admin` is.
//!
//! **Invariant:** the page shows only what the admin API answers, and no admin answer holds an API key.
//! **Invariant:** thumbnails are the last [`THUMBNAILS`](crate::thumbnails::THUMBNAILS) images answered, so their
//! memory is bounded whatever the traffic.

use crate::state::AppState;
use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The page may load its own script, style and images and call the admin API on its own origin; nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/__admin/ui", get(index))
        .route("/__admin/ui/", get(index))
        .route(
            "/__admin/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route("/__admin/ui/style.css", get(|| asset("text/css; charset=utf-8", STYLE)))
        .route("/__admin/ui/thumbs", get(thumbs))
        .route("/__admin/ui/thumbs/{seq}", get(thumb))
}

fn with_headers(mut r: Response, content_type: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn index() -> Response {
    with_headers(INDEX.into_response(), "text/html; charset=utf-8")
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_headers(body.into_response(), content_type)
}

/// The sequence numbers of the requests whose image is kept, newest first.
async fn thumbs(State(st): State<AppState>) -> Json<Vec<u64>> {
    Json(st.inner.thumbnails.seqs())
}

/// The image answered to request `seq`, while it is among the last [`THUMBNAILS`](crate::thumbnails::THUMBNAILS).
async fn thumb(State(st): State<AppState>, Path(seq): Path<u64>) -> Response {
    match st.inner.thumbnails.get(seq) {
        Some((content_type, bytes)) => with_headers(bytes.into_response(), content_type),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"message": format!("no image kept for request {seq}")})),
        )
            .into_response(),
    }
}
