//! The plain data types callers build and receive: requests, responses, modes and the configuration.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Header names whose values are secret however they are configured; `Debug` never prints them.
pub(crate) const ALWAYS_SECRET_HEADERS: &[&str] = &["x-api-key", "authorization", "proxy-authorization"];

/// One HTTP request as the client sent it (secrets included: redaction happens inside the recorder).
///
/// `path` has no query string; `query` holds the decoded pairs in the order they were sent.
///
/// ```
/// let req = recorder::Request::post_json("/v2/tradingview/advanced-chart", &serde_json::json!({"symbol": "BINANCE:BTCUSDT"}))
///     .with_header("x-api-key", "secret-key");
/// assert_eq!(req.header("X-API-KEY"), Some("secret-key"));
/// assert!(!format!("{req:?}").contains("secret-key"));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    /// A request with no query, headers or body.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    /// A `POST` with a JSON body and `content-type: application/json`.
    pub fn post_json(path: impl Into<String>, body: &serde_json::Value) -> Self {
        Request::new("POST", path)
            .with_header("content-type", "application/json")
            .with_body(serde_json::to_vec(body).expect("a serde_json::Value always serializes"))
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a query parameter (builder style).
    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Replaces the body (builder style).
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// One HTTP response: what upstream answered, or what a cassette replays byte for byte.
///
/// ```
/// let resp = recorder::Response::new(200).with_header("content-type", "image/png").with_body(&b"\x89PNG"[..]);
/// assert_eq!(resp.header("Content-Type"), Some("image/png"));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    /// A response with no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            ..Default::default()
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body (builder style).
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// Debug is written by hand so that a stray `{:?}` in a log line cannot print an API key.
fn debug_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let secret = ALWAYS_SECRET_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s));
            (n.clone(), if secret { "<redacted>".to_owned() } else { v.clone() })
        })
        .collect()
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &debug_headers(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &debug_headers(&self.headers))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What a [`Vcr`](crate::Vcr) does with a request; the names are the ones VCR.py and Ruby VCR users know.
///
/// | mode | matched, not yet played | matched, all played | no match |
/// |---|---|---|---|
/// | `none` | replay | `on_exhausted`: repeat last or miss | miss |
/// | `once` | replay | as `none` | miss if the cassette file existed at open, else record |
/// | `new_episodes` | replay | call upstream and record a new episode | call upstream and record |
/// | `all` | call upstream and record (replaces the old interactions with that request on write) | same | same |
/// | `spy` | replay | `on_exhausted`: repeat last, or call upstream and record | call upstream and record |
///
/// ```
/// use recorder::Mode;
/// assert_eq!("new_episodes".parse::<Mode>().unwrap(), Mode::NewEpisodes);
/// assert_eq!(Mode::Spy.to_string(), "spy");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Replay only; a miss is an error. The default, because it never touches the network.
    #[default]
    None,
    Once,
    NewEpisodes,
    All,
    Spy,
}

impl Mode {
    /// Every mode, in documentation order.
    pub const ALL: [Mode; 5] = [Mode::None, Mode::Once, Mode::NewEpisodes, Mode::All, Mode::Spy];

    /// The VCR name (`"none"`, `"once"`, `"new_episodes"`, `"all"`, `"spy"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Once => "once",
            Mode::NewEpisodes => "new_episodes",
            Mode::All => "all",
            Mode::Spy => "spy",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown mode or policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {expected}")]
pub struct ParseNameError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for Mode {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim())
            .ok_or_else(|| ParseNameError {
                kind: "mode",
                value: s.to_owned(),
                expected: "none, once, new_episodes, all, spy",
            })
    }
}

/// What replay does when every recorded answer to a request has been played once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Keep answering with the last recorded answer (what a test polling an endpoint wants).
    #[default]
    Repeat,
    /// Treat the extra request as a miss (what a test counting calls wants).
    Error,
}

impl fmt::Display for OnExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnExhausted::Repeat => "repeat",
            OnExhausted::Error => "error",
        })
    }
}

impl FromStr for OnExhausted {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "repeat" => Ok(OnExhausted::Repeat),
            "error" => Ok(OnExhausted::Error),
            _ => Err(ParseNameError {
                kind: "on_exhausted policy",
                value: s.to_owned(),
                expected: "repeat, error",
            }),
        }
    }
}

/// When recorded interactions reach the cassette file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WritePolicy {
    /// After every recorded interaction (a crash loses nothing; costs one file rewrite per recording).
    #[default]
    EachInteraction,
    /// Only on [`Vcr::flush`](crate::Vcr::flush) and when the last clone of the `Vcr` is dropped.
    OnFlush,
}

/// How a [`Vcr`](crate::Vcr) matches, records and replays. Build it with struct-update syntax:
///
/// ```
/// use recorder::{Mode, OnExhausted, VcrConfig};
/// let config = VcrConfig {
///     mode: Mode::NewEpisodes,
///     ignore_json_fields: vec!["timezone".into()],
///     on_exhausted: OnExhausted::Error,
///     ..VcrConfig::default()
/// };
/// assert!(!config.record_latency);
/// ```
#[derive(Debug, Clone)]
pub struct VcrConfig {
    pub mode: Mode,
    /// JSON body fields left out of matching: a bare name (`"timezone"`) is ignored at any depth, a JSON pointer
    /// (`"/studies/0/input"`) only at that place. They are still recorded.
    pub ignore_json_fields: Vec<String>,
    /// Query parameters left out of matching (still recorded).
    pub ignore_query_params: Vec<String>,
    /// Request headers (case-insensitive) that are recorded and must match. None by default: the account's key
    /// placeholder is recorded for review but does not take part in matching, so any account replays.
    pub match_headers: Vec<String>,
    /// Response headers kept in the cassette and replayed. Others (date, request ids) are dropped because they
    /// change on every call and would make re-recordings differ.
    pub response_headers: Vec<String>,
    pub on_exhausted: OnExhausted,
    /// Store how long upstream took (`latencyMs`). Off by default because it makes re-recordings differ.
    pub record_latency: bool,
    /// Make [`Vcr::handle`](crate::Vcr::handle) sleep for the recorded latency before answering from the cassette.
    pub replay_latency: bool,
    /// Store the wall-clock time of each recording (`recordedAt`). Off by default for deterministic files.
    pub record_timestamps: bool,
    /// Text bodies up to this many bytes are stored inline; larger or binary ones go to `bodies/`.
    pub inline_text_limit: usize,
    pub write: WritePolicy,
    /// `false`: [`Vcr::check_unused`](crate::Vcr::check_unused) fails when a recorded interaction was never used
    /// (Ruby VCR's `allow_unused_http_interactions: false`). `true` by default.
    pub allow_unused: bool,
}

impl Default for VcrConfig {
    fn default() -> Self {
        VcrConfig {
            mode: Mode::default(),
            ignore_json_fields: Vec::new(),
            ignore_query_params: Vec::new(),
            match_headers: Vec::new(),
            response_headers: vec!["content-type".into(), "retry-after".into()],
            on_exhausted: OnExhausted::default(),
            record_latency: false,
            replay_latency: false,
            record_timestamps: false,
            inline_text_limit: 64 * 1024,
            write: WritePolicy::default(),
            allow_unused: true,
        }
    }
}
