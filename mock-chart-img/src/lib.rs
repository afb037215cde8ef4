//! `mock-chart-img`: a standalone HTTP server that behaves like the Chart-IMG API v2, for tests and local runs.
//!
//! # Layout
//! - [`config`](Config): keys with their [`Plan`], [`FaultSpec`]s, capacities, seed; parsed from YAML/TOML with the
//!   line of any problem, or built in code.
//! - `api`: the chart, layout, storage and v3 exchange routes. Order of checks: faults → key → throttle → daily
//!   quota → (layout id) → body → fields → plan limits → semantic (exchange, catalogue symbol, exchange interval) →
//!   (layout session) → latency → render. Body, fields, plan and exchange checks are `chart_img_spec`'s
//!   validation, the one the worker runs; `errors` adds the gateway headers; `request` shapes the validated chart
//!   for rendering. `catalogue`: the symbol catalogue; `latency`: the realistic latency model; `storage`: the
//!   on-disk store behind the `/storage` URLs.
//! - `accounts`: keys → accounts, each with a `governor` rate limiter and a daily counter by UTC date
//!   ([`Clock`] injectable).
//! - `render`: deterministic charts (tiny-skia) encoded as PNG or JPEG, behind a bounded LRU cache; study placement
//!   is an input ([`RenderRequest`], [`StudySpec`]); `indicators` computes every study from the drawn candles;
//!   `renders`: the render gate (at most `render_concurrency` renders at once, identical requests drawn once).
//! - `faults`: latency, status sequences, error rates, reset/empty/truncated/non-image answers.
//! - `journal`: bounded ring buffer of requests (`record`: one request as the ring keeps it), and the traffic counts
//!   of the periodic summary log line; `telemetry`: Cloud Logging JSON lines through a non-blocking writer; `admin`:
//!   the `/__admin` API and its OpenAPI document, with `admin/{verify,stubs,snapshot}.rs` (those features' routes
//!   and `AppState` methods) and `admin/reply.rs`; `ui`: the dashboard at `/__admin/ui` (embedded page over the
//!   admin API, thumbnails of the last images answered).
//! - `v1`: API v1's GET routes under `v1: emulate` (a v1 query becomes the v2 request it means, `chart_img_spec::v1`,
//!   then the same gateway, checks and renderer; v1 error bodies and storage URLs).
//! - `server`: the accept loop (connection-level faults, graceful shutdown); `reload`: config file watching;
//!   [`settings`]: the binary's flags and their environment variables, `PORT`, keys from the environment, where
//!   `/__admin` is served, and the `healthcheck` subcommand.
//! - `verify`: [`Criteria`] over the journal (count, find, unmatched) and [`Expectation`]s, counted as requests are
//!   journaled and checked by `/__admin/verify` and by [`MockServer`] on drop; `stubs`: canned answers
//!   ([`StubSpec`]); `admin::snapshot`: the journal written as a `recorder` cassette.
//!
//! # Invariants
//! - **API keys never leave the key map**: journal, logs, admin answers and `Debug` output name the account.
//! - **Limits are exact under concurrency**: one atomic decision per request for the rate, one locked
//!   check-and-increment for the quota.
//! - **Same request, same bytes**: images depend only on the normalized request and the seed.
//! - **Memory is bounded**: journal and render cache are capped by the config; stored images live on disk under a
//!   byte budget.
//! - **The API's facts are `chart_img_spec`'s**: no plan table, interval list or study list of its own.
//!
//! # Example
//! ```
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! use mock_chart_img::{spawn, Config, Plan};
//!
//! let server = spawn(Config::default().with_key("key-1", "acc-1", Plan::PRO)).await?;
//! // Point a Chart-IMG client at `server.base_url()` (e.g. CHART_IMG_BASE_URL).
//! let url = format!("{}/v2/tradingview/advanced-chart", server.base_url());
//! assert!(url.starts_with("http://127.0.0.1:"));
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

mod accounts;
mod admin;
mod api;
mod catalogue;
mod clock;
mod config;
mod errors;
mod faults;
mod indicators;
mod journal;
pub mod latency;
mod plan;
mod record;
mod reload;
mod render;
mod renders;
mod replay;
pub mod request;
mod server;
pub mod settings;
mod state;
mod storage;
mod stubs;
mod telemetry;
#[cfg(feature = "testcontainers")]
pub mod testcontainers;
mod thumbnails;
mod ui;
mod v1;
mod verify;

use std::{future::Future, net::SocketAddr};

use axum::{
    routing::{get, post},
    Router,
};
use chart_img_spec::routes;
use tokio::net::TcpListener;

pub use accounts::Usage;
pub use admin::snapshot::{SnapshotOutcome, SnapshotRequest};
pub use admin::{AdminApi, AdminToken};
pub use api::CLIENT_CLOSED;
pub use catalogue::{Catalogue, SymbolEntry};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    Config, ConfigError, ConfigFormat, KeyConfig, LatencyProfile, LayoutConfig, LimitOverrides, ReplayConfig,
    SymbolMode, V1Mode, WatermarkMode,
};
pub use errors::{documented_message, ApiError};
pub use faults::{FaultKind, FaultSpec, InstalledFault, Route};
pub use journal::{JournalQuery, Traffic};
pub use plan::{Plan, PlanLimits};
pub use record::JournalEntry;
pub use reload::{watch_config, watch_config_with, ConfigWatcher};
pub use render::{render, Placement, RenderError, RenderRequest, StudySpec};
pub use replay::{MISS_MESSAGE, MISS_STATUS};
pub use server::serve;
pub use state::AppState;
pub use stubs::{InstalledStub, StubAnswer, StubSpec};
pub use telemetry::{init_logs, log_summaries, log_summary, CloudLoggingLayer, LogGuard};
pub use verify::{
    CountAnswer, Criteria, Expectation, ExpectationResult, InstalledExpectation, NearRequest, VerifyReport,
};

/// The Chart-IMG routes (their paths from `chart_img_spec::routes`), without state; served again under
/// `/__via/<label>/`, where a client names itself for the journal (`JournalEntry::via`).
fn chart_routes() -> Router<AppState> {
    let routes = api_routes();
    routes.clone().nest("/__via/{via}", routes)
}

fn api_routes() -> Router<AppState> {
    Router::new()
        .route(routes::ADVANCED_CHART, post(api::advanced_chart))
        .route(routes::ADVANCED_CHART_STORAGE, post(api::advanced_chart_storage))
        .route(routes::LAYOUT_CHART, post(api::layout_chart))
        .route(routes::LAYOUT_CHART_STORAGE, post(api::layout_chart_storage))
        .route(routes::EXCHANGE_LIST, get(api::exchange_list))
        .route(routes::EXCHANGE_SYMBOLS, get(api::exchange_symbols))
        .route("/storage/{date}/tradingview/{kind}/{file}", get(api::stored_image))
        // API v1 (served under `v1: emulate`; 404 otherwise).
        .route("/v1/tradingview/{chart}", get(v1::chart))
        .route("/v1/tradingview/{chart}/storage", get(v1::chart_storage))
        .route("/v1/storage/pub/{file}", get(v1::stored_image))
}

/// Unknown routes and wrong methods answer the JSON `404 Route Not Found`; every answer gets `x-amzn-RequestId`,
/// every error a JSON body.
fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        .fallback(api::unrouted)
        .method_not_allowed_fallback(api::unrouted)
        // `tower`'s map, not `axum::middleware::map_response`: no boxed future and no service clone per request.
        .layer(tower::util::MapResponseLayer::new(api::gateway_headers))
        .with_state(state)
}

/// The Chart-IMG routes and `/__admin/health` (what a client talks to, and what a container's health check asks).
pub fn api_router(state: AppState) -> Router {
    finish(chart_routes().merge(admin::health_route()), state)
}

/// The `/__admin` routes only, for serving on a separate (loopback) listener.
pub fn admin_router(state: AppState) -> Router {
    admin_router_with(state, None)
}

/// [`admin_router`], with every route but health behind `Authorization: Bearer <token>` when `token` is given.
pub fn admin_router_with(state: AppState, token: Option<AdminToken>) -> Router {
    admin::router(token).fallback(api::not_found).with_state(state)
}

/// Chart-IMG routes and `/__admin` on one router: what [`run`] and [`spawn`] serve.
///
/// ```
/// use mock_chart_img::{router, AppState, Config};
/// let app = router(AppState::new(&Config::default()).unwrap());
/// # let _ = app;
/// ```
pub fn router(state: AppState) -> Router {
    router_with(state, None)
}

/// [`router`], with `/__admin` (health aside) behind `Authorization: Bearer <token>` when `token` is given: how
/// the binary exposes the admin API on a public port (`MOCK_CHART_IMG_ADMIN_TOKEN`).
pub fn router_with(state: AppState, token: Option<AdminToken>) -> Router {
    finish(chart_routes().merge(admin::router(token)), state)
}

/// Serves the API and `/__admin` on `listener` until `shutdown` completes. Bind the listener to loopback unless you
/// mean to expose the admin API; the binary puts admin on its own loopback listener when `--listen` is not loopback.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let state = AppState::new(&config)?;
    serve(listener, router(state), shutdown).await
}

/// A server running in the background on a random loopback port; shut down on drop or with
/// [`shutdown`](MockServer::shutdown).
///
/// ```
/// # #[tokio::main] async fn main() -> anyhow::Result<()> {
/// use mock_chart_img::{spawn, Config, FaultSpec, Plan};
/// let server = spawn(Config::default().with_key("k", "acc", Plan::BASIC)).await?;
/// let id = server.state().add_fault(FaultSpec::status_sequence([503, 200]));
/// assert!(id > 0);
/// assert!(server.admin_url().ends_with("/__admin"));
/// # Ok(()) }
/// ```
///
/// Expectations are checked when the server is dropped, as wiremock-rs does: an unmet one fails the test with the
/// report of [`verify`](MockServer::verify).
///
/// ```should_panic
/// # #[tokio::main] async fn main() {
/// use mock_chart_img::{spawn, Config, Criteria, Expectation};
/// let server = spawn(Config::default()).await.unwrap();
/// server.expect(Expectation::new(Criteria::route("/v2/tradingview/advanced-chart")).times(1));
/// drop(server); // panics: "1 of 1 expectations of mock-chart-img unmet: ..."
/// # }
/// ```
pub struct MockServer {
    addr: SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Set once the expectations were checked (by `shutdown`), so that drop does not check them again.
    verified: bool,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a server for `config` on `127.0.0.1:0` (API and admin on the same port).
pub async fn spawn(config: Config) -> anyhow::Result<MockServer> {
    let state = AppState::new(&config)?;
    spawn_with_state(state).await
}

/// Like [`spawn`], for a state you keep a handle on (e.g. to [`watch_config`] it).
pub async fn spawn_with_state(state: AppState) -> anyhow::Result<MockServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(state.clone());
    let task = tokio::spawn(serve(listener, app, async move {
        let _ = stopped.await;
    }));
    Ok(MockServer {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
        verified: false,
    })
}

impl MockServer {
    /// `http://127.0.0.1:PORT`: the base URL for a Chart-IMG client (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/__admin`.
    pub fn admin_url(&self) -> String {
        format!("{}/__admin", self.base_url())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live state: add keys and faults, read usage and the journal from code.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Adds an expectation, checked by [`verify`](MockServer::verify), by [`shutdown`](MockServer::shutdown) and
    /// on drop. Panics on an expectation that cannot be checked (test code: the message says why).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> anyhow::Result<()> {
    /// use mock_chart_img::{spawn, Config, Criteria, Expectation, Plan};
    /// let server = spawn(Config::default().with_key("k", "acc", Plan::PRO)).await?;
    /// server.expect(Expectation::new(Criteria::route("/v2/tradingview/advanced-chart").body("symbol", "BINANCE:BTCUSDT")).times(0));
    /// server.shutdown().await?; // Err with the report when an expectation is unmet
    /// # Ok(()) }
    /// ```
    pub fn expect(&self, expectation: Expectation) -> u64 {
        self.state
            .add_expectation(expectation)
            .unwrap_or_else(|m| panic!("mock-chart-img: {m}"))
    }

    /// Installs a stub (see [`StubSpec`]) and returns its id. Panics on a stub that cannot be installed (test code:
    /// the message says why, e.g. an image file that cannot be read).
    pub fn stub(&self, stub: StubSpec) -> u64 {
        self.state
            .add_stub(stub)
            .unwrap_or_else(|m| panic!("mock-chart-img: {m}"))
    }

    /// Every expectation's verdict; `Err` with the report when one is unmet.
    pub fn verify(&self) -> Result<VerifyReport, VerifyReport> {
        let report = self.state.verify();
        if report.ok {
            Ok(report)
        } else {
            Err(report)
        }
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task; then checks the
    /// expectations (an `Err` with the report when one is unmet).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        };
        self.verified = true;
        served?;
        self.verify().map(|_| ()).map_err(|report| anyhow::anyhow!("{report}"))
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Like wiremock-rs: unmet expectations fail the test that drops the server (unless it is already failing).
        if !self.verified && !std::thread::panicking() {
            if let Err(report) = self.verify() {
                panic!("{report}");
            }
        }
    }
}

impl AppState {
    /// Installs a fault at run time; returns its id.
    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        self.inner.faults.add(spec, "admin")
    }

    /// Removes a fault; `false` if there was none with that id.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.inner.faults.remove(id)
    }

    /// Adds (or replaces) a key at run time.
    pub fn add_key(&self, key: KeyConfig) -> Result<(), String> {
        key.validate()?;
        self.inner.accounts.upsert(key)
    }

    /// Usage of `account` for the clock's current UTC day.
    pub fn usage(&self, account: &str) -> Option<Usage> {
        let today = self.inner.clock.now().date_naive();
        self.inner
            .accounts
            .all()
            .iter()
            .find(|a| a.id() == account)
            .map(|a| a.usage(today))
    }

    /// The journal, newest first.
    pub fn journal(&self, query: &JournalQuery) -> Vec<JournalEntry> {
        self.inner.journal.query(query)
    }

    /// With `replay: {allow_unused: false}`: the report of the recorded interactions no request used (what the
    /// binary prints at shutdown before exiting 1). `Ok` without a cassette, or when every one was used.
    pub fn check_replay_unused(&self) -> Result<(), recorder::Unused> {
        let replay = self.inner.settings.read().unwrap().replay.clone();
        replay.map_or(Ok(()), |r| r.check_unused())
    }

    /// Forgets usage and rate buckets, empties the journal and starts the expectations' counts over.
    pub fn reset(&self) {
        self.inner.accounts.reset();
        self.inner.journal.clear();
    }
}
