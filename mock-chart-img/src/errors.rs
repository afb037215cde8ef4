//! The error answers of the API. Bodies come from `chart-img-spec` (validation rejections and the documented
//! messages); this module adds the gateway's headers.
//!
//! **Invariant:** every error the API routes answer is built here, as JSON, so each status has exactly one body.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chart_img_spec::{message_body, messages, Rejection};
use serde_json::Value;

/// An error answer of the API routes.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// What the spec's validation refused (400, 422 array or object, 403 plan limits).
    Rejected(Rejection),
    /// 403 `Forbidden`: missing, unknown or inactive key (gateway: `ForbiddenException`).
    Forbidden,
    /// 429 `Too Many Requests`: the per-second throttle (gateway: `TooManyRequestsException`).
    TooManyRequests,
    /// 429 `Limit Exceeded`: the daily quota (gateway: `LimitExceededException`).
    LimitExceeded,
    /// 504 `Endpoint request timed out`: the gateway's integration timeout.
    GatewayTimeout,
    /// 404 `Route Not Found`: unknown route, wrong method, unknown layout or expired image.
    RouteNotFound,
    /// Any status with its documented message (faults), or `message` when given.
    Status { status: u16, message: Option<String> },
}

/// The documented `message` for a status, used when a fault asks for a bare status.
pub fn documented_message(status: u16) -> &'static str {
    match status {
        400 => messages::BAD_REQUEST,
        401 => messages::INVALID_REQUEST,
        403 => messages::FORBIDDEN,
        404 => messages::ROUTE_NOT_FOUND,
        409 => messages::SESSION_DISCONNECTED,
        422 => messages::INVALID_SYMBOL,
        429 => messages::TOO_MANY_REQUESTS,
        500 => messages::SOMETHING_WENT_WRONG,
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => messages::ENDPOINT_TIMED_OUT,
        _ => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error"),
    }
}

impl ApiError {
    /// The status and JSON body.
    pub fn parts(&self) -> (u16, Value) {
        match self {
            ApiError::Rejected(r) => (r.status, r.body.clone()),
            ApiError::Forbidden => (403, message_body(messages::FORBIDDEN)),
            ApiError::TooManyRequests => (429, message_body(messages::TOO_MANY_REQUESTS)),
            ApiError::LimitExceeded => (429, message_body(messages::LIMIT_EXCEEDED)),
            ApiError::GatewayTimeout => (504, message_body(messages::ENDPOINT_TIMED_OUT)),
            ApiError::RouteNotFound => (404, message_body(messages::ROUTE_NOT_FOUND)),
            ApiError::Status { status, message } => (
                *status,
                message_body(message.as_deref().unwrap_or_else(|| documented_message(*status))),
            ),
        }
    }

    /// `x-amzn-ErrorType` of the errors the gateway itself answers (inferred: the bodies are API Gateway's).
    pub fn gateway_error_type(&self) -> Option<&'static str> {
        match self {
            ApiError::Forbidden => Some("ForbiddenException"),
            ApiError::TooManyRequests => Some("TooManyRequestsException"),
            ApiError::LimitExceeded => Some("LimitExceededException"),
            _ => None,
        }
    }

    /// A one-line summary for the journal and the logs.
    pub fn summary(&self) -> String {
        match self {
            ApiError::Rejected(r) => r.summary(),
            other => other
                .parts()
                .1
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        ApiError::Rejected(r)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, body.to_string()).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(t) = self.gateway_error_type() {
            resp.headers_mut()
                .insert("x-amzn-errortype", HeaderValue::from_static(t));
        }
        resp
    }
}
