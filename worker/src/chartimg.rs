//! The Chart-IMG adapter: the only code that knows the API's wire format (URL, `x-api-key`, status codes, error
//! bodies). [`classify`] maps every documented answer to an image or a [`ChartApiError`], in one place.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chart_img_spec::Limit429;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::domain::ImageFormat;
use crate::ports::{ChartApiError, ChartCall, ChartRenderer, RenderedChart};

pub use chart_img_spec::routes::ADVANCED_CHART as ADVANCED_CHART_PATH;

/// The largest answer body read from Chart-IMG (its largest images are a few MiB); a bigger one is refused unread.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The message of an error body: `message` (v2) or `error` (v1) of an object; `param: msg` pairs of an array of field
/// errors; otherwise a short, printable excerpt. At most 2 KiB ([`crate::domain::text::MAX_ERROR_TEXT`]).
pub fn error_message(body: &[u8]) -> String {
    crate::domain::text::clip_error(&error_message_whole(body))
}

fn error_message_whole(body: &[u8]) -> String {
    chart_img_spec::message_of(body).unwrap_or_else(|| excerpt(body))
}

fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "empty body".to_owned();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(160)]);
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("body {:?}{}", clean.trim(), if body.len() > 160 { "…" } else { "" })
}

/// Classifies one HTTP answer of Chart-IMG. This is the only place where status codes become error kinds.
pub fn classify(status: u16, body: Bytes, format: ImageFormat) -> Result<RenderedChart, ChartApiError> {
    match status {
        200 if format.matches(&body) => Ok(RenderedChart { bytes: body, format }),
        200 => Err(ChartApiError::NotAnImage {
            expected: format.content_type(),
            detail: excerpt(&body),
        }),
        429 => {
            // Only the body tells the daily quota from the per-second throttle.
            match Limit429::of(&body) {
                Limit429::DailyQuota => Err(ChartApiError::LimitExceeded),
                Limit429::Throttle => Err(ChartApiError::Throttled),
            }
        }
        // 409 Session Disconnected is an upstream session gone stale: transient by the API's own description.
        // 408 Request Timeout: the gateway gave up waiting; retried like a timeout.
        408 | 409 | 500..=599 => Err(ChartApiError::Transient {
            status: Some(status),
            message: error_message(&body),
        }),
        _ => Err(ChartApiError::Rejected {
            status,
            message: error_message(&body),
        }),
    }
}

/// Classifies a transport failure (no HTTP answer, or a body cut short).
pub fn classify_transport(e: &reqwest::Error, timeout: Duration) -> ChartApiError {
    let message = if e.is_timeout() {
        format!("timed out after {} s", timeout.as_secs_f32())
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "response body was cut short".to_owned()
    } else {
        // The URL holds no secret (the key travels in a header), but leaving it out keeps messages stable.
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "");
        }
        format!("request failed: {text}")
    };
    ChartApiError::Transient { status: None, message }
}

/// Chart-IMG over HTTPS (`real` mode), or any server that speaks its API (`mock-chart-img`).
#[derive(Debug, Clone)]
pub struct HttpChartImg {
    client: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl HttpChartImg {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .user_agent(concat!("worker-chart-export/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    pub fn url(&self) -> String {
        format!("{}{ADVANCED_CHART_PATH}", self.base_url)
    }

    /// Sends one request and returns the raw answer (status and body), for the recorder to wrap.
    pub async fn send_raw(&self, call: &ChartCall<'_>) -> Result<(u16, Vec<(String, String)>, Bytes), ChartApiError> {
        let mut key = reqwest::header::HeaderValue::from_str(call.api_key.expose_secret()).map_err(|_| {
            ChartApiError::Rejected {
                status: 0,
                message: format!("API key of {} is not a valid header value", call.account),
            }
        })?;
        key.set_sensitive(true);
        let resp = self
            .client
            .post(self.url())
            .header("x-api-key", key)
            .json(call.body)
            .send()
            .await
            .map_err(|e| classify_transport(&e, self.timeout))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
            .collect();
        if resp.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ChartApiError::TooLarge {
                status,
                limit: MAX_BODY_BYTES,
            });
        }
        // Read in chunks so a body without (or with a lying) Content-Length is cut at the cap, never buffered whole.
        let mut body = bytes::BytesMut::new();
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await.map_err(|e| classify_transport(&e, self.timeout))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ChartApiError::TooLarge {
                    status,
                    limit: MAX_BODY_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body.freeze()))
    }
}

#[async_trait]
impl ChartRenderer for HttpChartImg {
    async fn render(&self, call: &ChartCall<'_>) -> Result<RenderedChart, ChartApiError> {
        let (status, _, body) = self.send_raw(call).await?;
        classify(status, body, call.format)
    }
}

/// The `recorder` request for a call: the same method, path, headers and body [`HttpChartImg`] sends.
pub fn to_recorder_request(call: &ChartCall<'_>) -> recorder::Request {
    let body = serde_json::to_vec(call.body).unwrap_or_default();
    recorder::Request::new("POST", ADVANCED_CHART_PATH)
        .with_header("content-type", "application/json")
        .with_header("x-api-key", call.api_key.expose_secret())
        .with_body(body)
}

/// Chart-IMG through a cassette: `mock` mode replays only (a miss is `CHART_API_MOCK_MISSING`); `record` mode
/// replays what is recorded and sends the rest to `upstream`, recording it with every key replaced by a placeholder.
pub struct CassetteChartImg {
    vcr: recorder::Vcr,
    upstream: Option<HttpChartImg>,
}

impl CassetteChartImg {
    /// `upstream` is `None` for replay only.
    pub fn new(vcr: recorder::Vcr, upstream: Option<HttpChartImg>) -> Self {
        Self { vcr, upstream }
    }

    fn miss(m: recorder::Miss) -> ChartApiError {
        // The report is built by the recorder from redacted, stored forms only: it holds no key.
        let details = serde_json::to_value(&m).unwrap_or(Value::Null);
        ChartApiError::MockMissing {
            message: m.to_string(),
            details,
        }
    }
}

#[async_trait]
impl ChartRenderer for CassetteChartImg {
    async fn render(&self, call: &ChartCall<'_>) -> Result<RenderedChart, ChartApiError> {
        let req = to_recorder_request(call);
        let resp = match &self.upstream {
            None => self.vcr.replay(&req).map_err(Self::miss)?,
            Some(http) => {
                let result = self
                    .vcr
                    .handle(req, |_| async {
                        let (status, headers, body) = http.send_raw(call).await?;
                        Ok::<_, ChartApiError>(recorder::Response { status, headers, body })
                    })
                    .await;
                match result {
                    Ok(r) => r,
                    Err(recorder::VcrError::Miss(m)) => return Err(Self::miss(m)),
                    Err(recorder::VcrError::Upstream(e)) => return Err(e),
                    Err(recorder::VcrError::Store(e)) => {
                        // The call was sent, answered and paid for; the recording is what failed. Retrying would pay
                        // again for the same answer, so this chart's recording fails, clearly and for good.
                        return Err(ChartApiError::NotRecorded {
                            message: format!("the call was answered but could not be recorded: {e}"),
                        });
                    }
                }
            }
        };
        classify(resp.status, resp.body, call.format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png() -> Bytes {
        Bytes::from_static(b"\x89PNG\r\n\x1a\nrest")
    }

    #[test]
    fn every_documented_answer_is_classified() {
        use ChartApiError::*;
        let f = ImageFormat::Png;
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert!(classify(200, png(), f).is_ok());
        assert!(matches!(classify(200, b("{\"ok\":1}"), f), Err(NotAnImage { .. })));
        assert!(matches!(
            classify(200, png(), ImageFormat::Jpeg),
            Err(NotAnImage {
                expected: "image/jpeg",
                ..
            })
        ));
        let rejected = |status, body: &'static str, msg: &str| {
            assert_eq!(
                classify(status, b(body), f),
                Err(Rejected {
                    status,
                    message: msg.to_owned()
                })
            );
        };
        rejected(400, "", "empty body");
        rejected(401, r#"{"message":"Invalid Request"}"#, "Invalid Request");
        rejected(403, r#"{"message":"Forbidden"}"#, "Forbidden");
        rejected(
            403,
            r#"{"message":"Exceed Max Usage Resolution Limit (800x600)"}"#,
            "Exceed Max Usage Resolution Limit (800x600)",
        );
        rejected(
            403,
            r#"{"message":"Exceed Max Usage Parameter Limit (3)"}"#,
            "Exceed Max Usage Parameter Limit (3)",
        );
        rejected(
            422,
            r#"[{"value":"X","msg":"must be a valid tradingview EXCHANGE:SYMBOL","param":"symbol","location":"body"}]"#,
            "symbol: must be a valid tradingview EXCHANGE:SYMBOL",
        );
        rejected(422, r#"{"message":"Invalid Interval"}"#, "Invalid Interval");
        rejected(422, r#"{"error":"Invalid Symbol"}"#, "Invalid Symbol");
        assert_eq!(
            classify(429, b(r#"{"message":"Limit Exceeded"}"#), f),
            Err(LimitExceeded)
        );
        assert_eq!(
            classify(429, b(r#"{"message":"Too Many Requests"}"#), f),
            Err(Throttled)
        );
        for (status, body, msg) in [
            (409, r#"{"message":"Session Disconnected"}"#, "Session Disconnected"),
            (500, r#"{"message":"Something Went Wrong"}"#, "Something Went Wrong"),
            (503, "<html>busy</html>", "body \"<html>busy</html>\""),
            (
                504,
                r#"{"message":"Endpoint request timed out"}"#,
                "Endpoint request timed out",
            ),
        ] {
            let e = classify(status, b(body), f).unwrap_err();
            assert_eq!(
                e,
                Transient {
                    status: Some(status),
                    message: msg.to_owned()
                }
            );
            assert!(e.is_retryable());
        }
    }

    #[test]
    fn only_throttles_and_transients_are_retried() {
        assert!(ChartApiError::Throttled.is_retryable());
        assert!(!ChartApiError::LimitExceeded.is_retryable());
        assert!(!ChartApiError::Rejected {
            status: 403,
            message: String::new()
        }
        .is_retryable());
        assert!(!ChartApiError::NotAnImage {
            expected: "image/png",
            detail: String::new()
        }
        .is_retryable());
    }
}
