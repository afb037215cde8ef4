//! The documented error bodies (`chart-img-api.md`, "Errors"), so no caller spells one by hand.

use serde::Serialize;
use serde_json::{json, Value};

/// The `message` texts of the object-form errors.
pub mod messages {
    /// 400, bad content type or invalid JSON. Not documented; the body is inferred (see the mock's README).
    pub const BAD_REQUEST: &str = "Bad Request";
    /// 401.
    pub const INVALID_REQUEST: &str = "Invalid Request";
    /// 403, missing, bad or inactive key.
    pub const FORBIDDEN: &str = "Forbidden";
    /// 403, layout session not authenticated.
    pub const LAYOUT_FORBIDDEN: &str = "Layout Forbidden";
    /// 404, unknown route (or wrong method) or layout id.
    pub const ROUTE_NOT_FOUND: &str = "Route Not Found";
    /// 409, stale TradingView session.
    pub const SESSION_DISCONNECTED: &str = "Session Disconnected";
    /// 422, the exchange does not have that symbol.
    pub const INVALID_SYMBOL: &str = "Invalid Symbol";
    /// 422, the exchange does not support that interval.
    pub const INVALID_INTERVAL: &str = "Invalid Interval";
    /// 429, per-second throttle.
    pub const TOO_MANY_REQUESTS: &str = "Too Many Requests";
    /// 429, daily quota used up.
    pub const LIMIT_EXCEEDED: &str = "Limit Exceeded";
    /// 500.
    pub const SOMETHING_WENT_WRONG: &str = "Something Went Wrong";
    /// 504, the gateway's integration timeout.
    pub const ENDPOINT_TIMED_OUT: &str = "Endpoint request timed out";
    /// 504, the renderer's own timeout.
    pub const EXTERNAL_TIMEOUT: &str = "External Request Timeout";
}

/// `{"message": m}`, the object form of every error but field validation.
///
/// ```
/// assert_eq!(chart_img_spec::message_body("Forbidden").to_string(), r#"{"message":"Forbidden"}"#);
/// ```
pub fn message_body(m: &str) -> Value {
    json!({ "message": m })
}

/// One entry of the 422 array form (express-validator's): `{"value","msg","param","location":"body"}`.
///
/// ```
/// use chart_img_spec::FieldError;
/// let e = FieldError::new("studies[0].name", "RSI".into(), "must be a supported name");
/// assert_eq!(
///     serde_json::to_string(&e).unwrap(),
///     r#"{"value":"RSI","msg":"must be a supported name","param":"studies[0].name","location":"body"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// The value as sent (`null` when missing).
    pub value: Value,
    /// Why it is refused.
    pub msg: String,
    /// The field path (`studies[0].input.in_1`).
    pub param: String,
    /// Always `body`.
    pub location: &'static str,
}

impl FieldError {
    /// An entry for `param`.
    pub fn new(param: impl Into<String>, value: Value, msg: impl Into<String>) -> FieldError {
        FieldError {
            value,
            msg: msg.into(),
            param: param.into(),
            location: "body",
        }
    }
}

/// A request the API refuses: the exact status and JSON body it answers.
///
/// ```
/// use chart_img_spec::Rejection;
/// let r = Rejection::resolution(800, 600);
/// assert_eq!((r.status, r.body.to_string()), (403, r#"{"message":"Exceed Max Usage Resolution Limit (800x600)"}"#.into()));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// JSON body (an object with `message`, or the field-error array).
    pub body: Value,
    /// The field the rejection is about (`studies[0].name`, `width`, `symbol`), for callers that report it.
    pub field: Option<String>,
}

impl Rejection {
    /// `status` with `{"message": m}`.
    pub fn message(status: u16, m: &str) -> Rejection {
        Rejection {
            status,
            body: message_body(m),
            field: None,
        }
    }

    fn about(mut self, field: &str) -> Rejection {
        self.field = Some(field.to_owned());
        self
    }

    /// 400: the content type is not JSON, the JSON is invalid, or it is not an object.
    pub fn bad_request() -> Rejection {
        Rejection::message(400, messages::BAD_REQUEST)
    }

    /// 422 array form; `field` is the first entry's `param`.
    pub fn fields(errors: Vec<FieldError>) -> Rejection {
        let field = errors.first().map(|e| e.param.clone());
        Rejection {
            status: 422,
            body: serde_json::to_value(&errors).unwrap_or(Value::Null),
            field,
        }
    }

    /// 403 `Exceed Max Usage Resolution Limit (WxH)`.
    pub fn resolution(max_width: u32, max_height: u32) -> Rejection {
        Rejection::message(
            403,
            &format!("Exceed Max Usage Resolution Limit ({max_width}x{max_height})"),
        )
        .about("width")
    }

    /// 403 `Exceed Max Usage Parameter Limit (N)`.
    pub fn parameters(max: u32) -> Rejection {
        Rejection::message(403, &format!("Exceed Max Usage Parameter Limit ({max})")).about("studies")
    }

    /// 422 `{"message":"Invalid Symbol"}`.
    pub fn invalid_symbol() -> Rejection {
        Rejection::message(422, messages::INVALID_SYMBOL).about("symbol")
    }

    /// 422 `{"message":"Invalid Interval"}`.
    pub fn invalid_interval() -> Rejection {
        Rejection::message(422, messages::INVALID_INTERVAL).about("interval")
    }

    /// The body's `message`, or the `param`s of a field-error array: a one-line summary for logs.
    ///
    /// ```
    /// use chart_img_spec::{FieldError, Rejection};
    /// let r = Rejection::fields(vec![FieldError::new("timezone", "Mars/Base".into(), "must be a supported timezone")]);
    /// assert_eq!(r.summary(), "timezone: must be a supported timezone (\"Mars/Base\")");
    /// ```
    pub fn summary(&self) -> String {
        match &self.body {
            Value::Object(m) => m.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
            Value::Array(a) => a
                .iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                    format!(
                        "{}: {} ({})",
                        s("param"),
                        s("msg"),
                        e.get("value").unwrap_or(&Value::Null)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.summary())
    }
}

impl std::error::Error for Rejection {}
