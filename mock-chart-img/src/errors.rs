//! The error answers of the API, with the exact bodies of `shared/docs/chart-img-api.md`.
//!
//! **Invariant:** every error the chart routes answer is built here, so each status has exactly one body.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

use crate::request::FieldError;

/// An error answer of the chart routes.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// 400: bad content type or a body that is not a JSON object.
    BadRequest,
    /// 403 `Forbidden`: missing, unknown or inactive key.
    Forbidden,
    /// 403 `Exceed Max Usage Resolution Limit (WxH)`.
    Resolution { max_width: u32, max_height: u32 },
    /// 403 `Exceed Max Usage Parameter Limit (N)`.
    Parameters { max: u32 },
    /// 422, array form.
    Fields(Vec<FieldError>),
    /// 422 `Invalid Interval`.
    InvalidInterval,
    /// 422 `Invalid Symbol`.
    InvalidSymbol,
    /// 429 `Too Many Requests`: the per-second throttle.
    TooManyRequests,
    /// 429 `Limit Exceeded`: the daily quota.
    LimitExceeded,
    /// Any status with its documented message (faults), or `message` when given.
    Status { status: u16, message: Option<String> },
}

/// The documented `message` for a status, used when a fault asks for a bare status.
pub fn documented_message(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Invalid Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Session Disconnected",
        422 => "Invalid Symbol",
        429 => "Too Many Requests",
        500 => "Something Went Wrong",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Endpoint request timed out",
        _ => StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error"),
    }
}

impl ApiError {
    /// The status and JSON body.
    pub fn parts(&self) -> (u16, Value) {
        let msg = |m: &str| json!({ "message": m });
        match self {
            ApiError::BadRequest => (400, msg("Bad Request")),
            ApiError::Forbidden => (403, msg("Forbidden")),
            ApiError::Resolution { max_width, max_height } => {
                (403, msg(&format!("Exceed Max Usage Resolution Limit ({max_width}x{max_height})")))
            }
            ApiError::Parameters { max } => (403, msg(&format!("Exceed Max Usage Parameter Limit ({max})"))),
            ApiError::Fields(errors) => (422, serde_json::to_value(errors).unwrap_or(Value::Null)),
            ApiError::InvalidInterval => (422, msg("Invalid Interval")),
            ApiError::InvalidSymbol => (422, msg("Invalid Symbol")),
            ApiError::TooManyRequests => (429, msg("Too Many Requests")),
            ApiError::LimitExceeded => (429, msg("Limit Exceeded")),
            ApiError::Status { status, message } => {
                (*status, msg(message.as_deref().unwrap_or_else(|| documented_message(*status))))
            }
        }
    }

    /// A one-line summary for the journal and the logs.
    pub fn summary(&self) -> String {
        match self.parts().1 {
            Value::Object(m) => m.get("message").and_then(Value::as_str).unwrap_or_default().to_string(),
            Value::Array(a) => format!(
                "field errors: {}",
                a.iter().filter_map(|e| e.get("param").and_then(Value::as_str)).collect::<Vec<_>>().join(", ")
            ),
            _ => String::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}
