//! Reading Chart-IMG's answers: how an error body carries its message, and which of the two `429`s an answer is.
//! The worker's client and the recorder read answers through these; nothing else parses an error body.

use serde_json::Value;

use crate::errors::messages;

/// The message of a Chart-IMG error body: `message` (v2/v3) or `error` (v1) of an object (a non-string value as its
/// JSON text), or the `param: msg` entries of a field-error array (`422`) joined by `"; "`. `None` for anything else
/// (an image, an empty array, an object with neither field, bytes that are not JSON): the caller decides how to show
/// those bytes.
///
/// ```
/// use chart_img_spec::message_of;
/// assert_eq!(message_of(br#"{"message":"Forbidden"}"#).as_deref(), Some("Forbidden"));
/// assert_eq!(message_of(br#"[{"param":"interval","msg":"must be a supported interval"}]"#).as_deref(),
///            Some("interval: must be a supported interval"));
/// assert_eq!(message_of(b"\x89PNG"), None);
/// ```
pub fn message_of(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(o) => o
            .get("message")
            .or_else(|| o.get("error"))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned)),
        Value::Array(items) if !items.is_empty() => Some(
            items
                .iter()
                .map(|i| {
                    let param = i.get("param").and_then(Value::as_str).unwrap_or("?");
                    let msg = i.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                    format!("{param}: {msg}")
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => None,
    }
}

/// Which limit a `429` reports. Only the body tells them apart: the status and headers are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit429 {
    /// `Limit Exceeded`: the key's daily quota is spent until the gateway's UTC day ends.
    DailyQuota,
    /// `Too Many Requests` (or any other 429 body): the per-second rate; the same call may succeed a moment later.
    Throttle,
}

impl Limit429 {
    /// The limit a `429` answer's body reports.
    pub fn of(body: &[u8]) -> Self {
        match message_of(body) {
            Some(m) if m.eq_ignore_ascii_case(messages::LIMIT_EXCEEDED) => Self::DailyQuota,
            _ => Self::Throttle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message_body;

    #[test]
    fn the_two_429s_are_told_apart_by_their_documented_bodies() {
        let quota = serde_json::to_vec(&message_body(messages::LIMIT_EXCEEDED)).unwrap();
        let throttle = serde_json::to_vec(&message_body(messages::TOO_MANY_REQUESTS)).unwrap();
        assert_eq!(Limit429::of(&quota), Limit429::DailyQuota);
        assert_eq!(Limit429::of(&throttle), Limit429::Throttle);
        assert_eq!(
            Limit429::of(b""),
            Limit429::Throttle,
            "an unreadable 429 is the throttle: retried, not final"
        );
        assert_eq!(Limit429::of(br#"{"message":"limit exceeded"}"#), Limit429::DailyQuota);
    }

    #[test]
    fn messages_of_objects_arrays_and_other_bytes() {
        assert_eq!(message_of(br#"{"error":"old v1"}"#).as_deref(), Some("old v1"));
        assert_eq!(message_of(br#"{"message":{"a":1}}"#).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(
            message_of(br#"[{"param":"a","msg":"x"},{"msg":"y"}]"#).as_deref(),
            Some("a: x; ?: y")
        );
        assert_eq!(message_of(b"[]"), None);
        assert_eq!(message_of(br#"{"other":1}"#), None);
        assert_eq!(message_of(b"not json"), None);
    }
}
