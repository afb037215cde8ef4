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
//!             record_latency, replay_latency, record_timestamps, inline_text_limit, write, allow_unused }  + Default
//! Secrets::new() / from_accounts_json(&str) / from_env() / with_account(id, SecretString)
//!         .redact_header(..) .redact_query_param(..) .redact_json_field(..) .placeholder_for(..) .redact(..)
//! Vcr::open(dir, VcrConfig, Secrets) -> Result<Vcr, Error>
//! Vcr::handle(&self, Request, upstream: FnOnce(Request) -> Future<Result<Response, E>>) -> Result<Response, VcrError<E>>
//! Vcr::replay(&self, &Request) -> Result<Response, Miss>        (+ replay_with_latency, rewind, flush, len, dir)
//! Vcr::unused() -> Vec<UnusedInteraction>;  Vcr::check_unused() -> Result<(), Unused>   (allow_unused: false)
//! Miss { cassette, mode, reason: MissReason, request: RequestSummary, closest: Option<Closest>, diffs: Vec<FieldDiff> }
//! VcrError<E> { Miss(Miss), Upstream(E), Store(Error) }
//! lint(paths, &Secrets) -> Result<Vec<Finding>, Error>
//! ProxyConfig::new(upstream, Vcr);  proxy_router(ProxyConfig) -> axum::Router;  run_proxy(listener, ProxyConfig, shutdown)
//! record::record(&RecordOptions, out) -> Result<RecordOutcome, Error>        (`recorder record`)
//! verify::verify(&VerifyOptions) -> Result<VerifyReport, Error>; verify::print_report   (`recorder verify`)
//! har::export(dir, base_url) / har::export_json;  har::import(har_file, dir, hosts, &Secrets) -> ImportReport   (`recorder har`)
//! inspect::show(path, now); inspect::cassette_ages(paths, max_age, now); inspect::age_findings   (`show`, `lint --max-age`)
//! Accounts::load(&KeySource)  (keys from a key file, CHART_IMG_ACCOUNTS_JSON or CHART_IMG_API_KEY)   Plan::limits()
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
//! - plans (rate, burst, daily quota) come from `chart_img_spec::Plan`, re-exported as `recorder::Plan`.
//! - `accounts`: the one parser of the accounts JSON (`parse_accounts_json`, also the worker's and the mock's); keys
//!   from the environment or a key file, with plan and daily limit, for calls the tools spend.
//! - `live`: shared by `record` and `verify`: finding cassettes, recorded request → live request (placeholders
//!   back to keys), sending at each account's plan rate.
//! - `record`: `recorder record`: dry run, resume from a partial state, all-or-nothing swap of the new cassette.
//! - `verify`: `recorder verify`: drift of live answers against the recorded ones (never image bytes).
//! - `har`: `recorder har export/import`: cassettes as HAR 1.2 and back (round trip byte-identical).
//! - `inspect`: `recorder show` and the cassette age behind `recorder lint --max-age`.
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
//! - **A re-recording replaces a cassette only whole.** `recorder record` swaps the new cassette in only when every
//!   interaction was recorded as intended; until then the old one is untouched and the finished part waits in
//!   `.<name>.record-partial/` beside it. Identical re-recorded interactions keep their old `recordedAt`.
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

mod accounts;
mod canon;
mod cassette;
mod error;
pub mod har;
pub mod inspect;
mod lint;
mod live;
mod miss;
mod model;
mod proxy;
pub mod record;
mod secrets;
mod vcr;
pub mod verify;

pub use accounts::{parse_accounts_json, Account, Accounts, KeySource, API_KEY_ENV};
pub use chart_img_spec::{Plan, PlanLimits};

pub use error::{AccountsError, Error};
pub use lint::{lint, Finding, FindingKind};
pub use miss::{Closest, FieldDiff, Miss, MissReason, RequestSummary, Unused, UnusedInteraction};
pub use model::{Mode, OnExhausted, ParseNameError, Request, Response, VcrConfig, WritePolicy};
pub use proxy::{proxy_router, run_proxy, ProxyConfig, HEALTH_PATH, MAX_UPSTREAM_BODY};
pub use secrets::{Secrets, ACCOUNTS_ENV};
pub use vcr::{Vcr, VcrError};

/// The `formatVersion` this crate reads and writes.
pub const FORMAT_VERSION: u32 = cassette::FORMAT_VERSION;
/// The cassette file inside a cassette directory.
pub const CASSETTE_FILE: &str = cassette::CASSETTE_FILE;
