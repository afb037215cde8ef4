//! Cassettes of Chart-IMG HTTP traffic: recorded with every secret replaced by a placeholder, replayed byte-exact.
//!
//! # Public API (stable; other crates depend on it)
//!
//! ```text
//! Request  { method, path, query: Vec<(String,String)>, headers: Vec<(String,String)>, body: Bytes }
//! Response { status: u16, headers: Vec<(String,String)>, body: Bytes }
//! Mode     { None, Once, NewEpisodes, All, Spy }   FromStr/Display: none once new_episodes all spy
//! OnExhausted { Repeat, Error }    WritePolicy { EachInteraction, OnFlush }
//! VcrConfig { mode, ignore_json_fields, ignore_query_params, match_headers, response_headers, on_exhausted,
//!             record_latency, replay_latency, record_timestamps, inline_text_limit, write }  + Default
//! Secrets::new() / from_accounts_json(&str) / from_env() / with_account(id, SecretString)
//!         .redact_header(..) .redact_query_param(..) .redact_json_field(..) .placeholder_for(..) .redact(..)
//! Vcr::open(dir, VcrConfig, Secrets) -> Result<Vcr, Error>
//! Vcr::handle(&self, Request, upstream: FnOnce(Request) -> Future<Result<Response, E>>) -> Result<Response, VcrError<E>>
//! Vcr::replay(&self, &Request) -> Result<Response, Miss>        (+ replay_with_latency, rewind, flush, len, dir)
//! Miss { cassette, mode, reason: MissReason, request: RequestSummary, closest: Option<Closest>, diffs: Vec<FieldDiff> }
//! VcrError<E> { Miss(Miss), Upstream(E), Store(Error) }
//! lint(paths, &Secrets) -> Result<Vec<Finding>, Error>
//! ProxyConfig::new(upstream, Vcr);  proxy_router(ProxyConfig) -> axum::Router;  run_proxy(listener, ProxyConfig, shutdown)
//! ```
//!
//! # Layout
//! - `model`: the plain types callers build (`Request`, `Response`, `Mode`, `VcrConfig`).
//! - `secrets`: known keys per account and where secrets hide; placeholders `<CHART_IMG_API_KEY:acc-1>`.
//! - `canon`: canonical JSON (sorted keys, integral floats as integers), ignore lists, flattening for reports.
//! - `cassette`: the file format (`cassette.json` + `bodies/<sha256>.<ext>`), redaction on the way to it,
//!   atomic writes.
//! - `vcr`: the in-memory cassette: match index, replay cursors, modes, the serialized writer.
//! - `miss`: the "no match" report.
//! - `lint`: `recorder lint`, the scan for keys that reached disk anyway.
//! - `proxy`: the recording HTTP proxy (axum in, reqwest out) around a `Vcr`.
//!
//! # Invariants
//! - **Nothing secret reaches disk or a message.** Requests and responses are redacted into their stored form
//!   before they are written, matched or reported; a `Miss` is built from stored forms only; errors never carry
//!   request data; binary bodies holding a key are refused, not written.
//! - **Replay is byte-exact.** Binary bodies are files named by their SHA-256 (checked at load); JSON responses are
//!   inlined only when re-serializing them gives the exact bytes back, else they are inlined as text.
//! - **Files are deterministic.** Same traffic → same bytes: sorted maps, interactions sorted by request (stable,
//!   so repeated identical requests keep their order), no clock unless `record_timestamps`, volatile response
//!   headers not kept.
//! - **The file is never torn or lost.** Every rewrite is temp file + fsync + rename, under an exclusive lock on
//!   `<dir>/.lock`, and merges what is on disk at that moment, so parallel recorders keep each other's work.
//! - **Matching and recording share one transformation** (`cassette::store_request`), so a request recorded
//!   once always matches itself later.
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use recorder::{Mode, Request, Response, Secrets, Vcr, VcrConfig, VcrError};
//! let dir = tempfile::tempdir().unwrap();
//! let vcr = Vcr::open(dir.path(), VcrConfig::default(), Secrets::new()).unwrap(); // mode none
//! let req = Request::post_json("/v2/tradingview/advanced-chart", &serde_json::json!({"symbol": "BINANCE:BTCUSDT"}));
//! let err = vcr.handle(req, |_| async { Ok::<_, std::io::Error>(Response::new(200)) }).await.unwrap_err();
//! assert!(matches!(err, VcrError::Miss(_)));
//! # }
//! ```

mod canon;
mod cassette;
mod error;
mod lint;
mod miss;
mod model;
mod proxy;
mod secrets;
mod vcr;

pub use error::{Error, VcrError};
pub use lint::{lint, Finding, FindingKind};
pub use miss::{Closest, FieldDiff, Miss, MissReason, RequestSummary};
pub use model::{Mode, OnExhausted, ParseNameError, Request, Response, VcrConfig, WritePolicy};
pub use proxy::{proxy_router, run_proxy, ProxyConfig, MAX_UPSTREAM_BODY};
pub use secrets::{Secrets, ACCOUNTS_ENV};
pub use vcr::Vcr;

/// The `formatVersion` this crate reads and writes.
pub const FORMAT_VERSION: u32 = cassette::FORMAT_VERSION;
/// The cassette file inside a cassette directory.
pub const CASSETTE_FILE: &str = cassette::CASSETTE_FILE;
