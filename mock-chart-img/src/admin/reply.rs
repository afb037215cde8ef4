//! The shapes every `/__admin` handler answers in: [`Created`], [`AdminError`], and reading a JSON body.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

/// Answer of a creation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// Fault id, or account id for keys.
    pub id: String,
}

/// An admin error.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminError {
    /// What went wrong.
    pub message: String,
}

pub(crate) fn admin_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(AdminError {
            message: message.into(),
        }),
    )
        .into_response()
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
