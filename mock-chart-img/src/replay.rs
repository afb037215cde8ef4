//! Replay from cassettes written by the `recorder` crate: a request whose method, path and JSON body match a
//! recorded interaction gets the recorded answer, byte for byte. Otherwise the mock renders as usual, or, in strict
//! mode, answers the "no recorded interaction" error naming the closest recorded request and the fields that differ.
//!
//! Replay happens after the gateway (key, throttle, quota: those belong to the mock's own accounts) and after the
//! body is known to be JSON, but before field validation, so recorded error answers of the real service (a 422 it
//! gave) are replayed as they were.
//!
//! **Invariant:** the API key is never handed to the recorder: matching does not use it and a miss report must not
//! show it.

use axum::{
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde_json::json;

use crate::config::ReplayConfig;

/// The status of the strict-mode miss. 404 because there is nothing recorded at that "address"; a client treats it
/// as a non-retryable failure, which is what a missing cassette entry is.
pub const MISS_STATUS: u16 = 404;
/// The `message` of the strict-mode miss.
pub const MISS_MESSAGE: &str = "No Recorded Interaction";

pub(crate) struct Replay {
    vcr: recorder::Vcr,
    strict: bool,
    allow_unused: bool,
}

pub(crate) enum Lookup {
    /// A recorded answer.
    Hit(Response),
    /// No match, strict mode: the documented error.
    StrictMiss(Response),
    /// No match: render.
    Miss,
}

impl Replay {
    pub fn load(config: &ReplayConfig) -> anyhow::Result<Replay> {
        if !config.dir.is_dir() {
            anyhow::bail!("replay: cassette directory {} does not exist", config.dir.display());
        }
        let vcr_config = recorder::VcrConfig {
            allow_unused: config.allow_unused,
            ..recorder::VcrConfig::default()
        };
        let vcr = recorder::Vcr::open(&config.dir, vcr_config, recorder::Secrets::new())
            .map_err(|e| anyhow::anyhow!("replay: cannot load cassettes from {}: {e}", config.dir.display()))?;
        tracing::info!(dir = %config.dir.display(), interactions = vcr.len(), strict = config.strict, "cassettes loaded");
        Ok(Replay {
            vcr,
            strict: config.strict,
            allow_unused: config.allow_unused,
        })
    }

    /// The recorded interactions no request used so far, as a report (`total` counts the cassette's interactions).
    pub fn unused(&self) -> recorder::Unused {
        recorder::Unused {
            cassette: self.vcr.dir().display().to_string(),
            total: self.vcr.len(),
            interactions: self.vcr.unused(),
        }
    }

    /// `Err` with the report when `allow_unused` is off and something was not used.
    pub fn check_unused(&self) -> Result<(), recorder::Unused> {
        self.vcr.check_unused()
    }

    pub fn allow_unused(&self) -> bool {
        self.allow_unused
    }

    pub fn lookup(&self, path: &str, body: &Bytes) -> Lookup {
        let req = recorder::Request::new("POST", path)
            .with_header("content-type", "application/json")
            .with_body(body.clone());
        match self.vcr.replay(&req) {
            Ok(recorded) => {
                let mut r = (
                    StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::OK),
                    recorded.body,
                )
                    .into_response();
                for (name, value) in &recorded.headers {
                    if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
                        r.headers_mut().insert(n, v);
                    }
                }
                Lookup::Hit(r)
            }
            Err(miss) if self.strict => {
                let closest = miss
                    .closest
                    .as_ref()
                    .map(|c| serde_json::to_value(&c.request).unwrap_or_default());
                let body = json!({
                    "message": MISS_MESSAGE,
                    "cassette": miss.cassette,
                    "request": miss.request,
                    "closest": closest,
                    "diffs": miss.diffs,
                });
                let mut r = (
                    StatusCode::from_u16(MISS_STATUS).unwrap_or(StatusCode::NOT_FOUND),
                    body.to_string(),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Lookup::StrictMiss(r)
            }
            Err(_) => Lookup::Miss,
        }
    }
}
