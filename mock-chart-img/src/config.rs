//! The server's configuration: keys and their plans, faults, capacities, seed. Read from YAML or TOML, or built in
//! code with the `with_*` methods. Parsing validates everything up front so a bad file is refused with its line
//! before the server answers a single request. [`ConfigView`] is the config as `GET /__admin/config` shows it (keys
//! by their account), kept by the state.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    clock::{Clock, SystemClock},
    faults::FaultSpec,
    plan::{Plan, PlanLimits},
};

/// Everything the server needs to start. `Config::default()` has no keys: every chart request is `403 Forbidden`
/// until keys are added (in code, in the file, or with `POST /__admin/keys`).
///
/// ```
/// use mock_chart_img::{Config, FaultSpec, Plan};
///
/// let config = Config::default()
///     .with_seed(7)
///     .with_key("key-1", "acc-1", Plan::PRO)
///     .with_fault(FaultSpec::status_sequence([503, 503, 200]).for_account("acc-1"));
/// assert_eq!(config.keys.len(), 1);
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Mixed into the chart data and into the fault dice: the same seed gives the same bytes and the same faults.
    pub seed: u64,
    /// The API keys the server accepts.
    pub keys: Vec<KeyConfig>,
    /// Faults installed at start (the admin API can add more at run time).
    pub faults: Vec<FaultSpec>,
    /// How many requests the journal keeps (oldest dropped first). Bounds the journal's memory.
    pub journal_capacity: usize,
    /// Bytes of request and answer bodies the journal keeps, for body criteria and snapshots; past it the oldest
    /// records' bodies are let go first (the records stay). `0` keeps none. Default 8 MiB.
    pub journal_body_budget: u64,
    /// Expectations checked by `GET /__admin/verify` (and by the Rust handle on drop).
    pub expectations: Vec<crate::verify::Expectation>,
    /// Canned answers for requests matching criteria (see the README).
    pub stubs: Vec<crate::stubs::StubSpec>,
    /// How many rendered images the cache keeps.
    pub render_cache_capacity: usize,
    /// How many charts are rendered at once (0, the default: as many as the process has cores); the others wait, and
    /// identical requests in flight share one rendering. Bounds the memory renders take.
    pub render_concurrency: usize,
    /// How many `/storage` images stay downloadable (oldest dropped first).
    pub storage_capacity: usize,
    /// Base of the URLs handed out by the `/storage` route; by default the `Host` the request came to.
    pub public_url: Option<String>,
    /// `EXCHANGE:SYMBOL` values answered with `422 {"message":"Invalid Symbol"}` although well-formed.
    pub invalid_symbols: Vec<String>,
    /// Exchanges accepted besides the built-in list; a symbol on any other exchange is an `Invalid Symbol`.
    pub extra_exchanges: Vec<String>,
    /// Answer from recorded cassettes (see the README).
    pub replay: Option<ReplayConfig>,
    /// `lenient` (default): a ticker is refused only when listed in `invalid_symbols`; `strict`: a ticker the symbol
    /// catalogue does not list for an exchange it knows is an `Invalid Symbol` too.
    pub symbols: SymbolMode,
    /// A symbol catalogue file (YAML/JSON, see the README); the built-in one covers the common symbols of the big
    /// crypto and stock exchanges. It also answers `GET /v3/tradingview/exchange/{id}`.
    pub symbol_catalogue: Option<PathBuf>,
    /// Intervals an exchange does not support (`{BINANCE: ["45m"]}`): answered `422 {"message":"Invalid Interval"}`.
    pub unsupported_intervals: BTreeMap<String, Vec<String>>,
    /// A custom `watermark` on a plan below ULTRA: `ignore` (default, rendered without it) or `refuse` (422).
    pub custom_watermark: WatermarkMode,
    /// Accept the key as `?key=` on the v2 routes too (the v3 routes always do). Default `true`.
    pub query_key_on_v2: bool,
    /// Saved TradingView layouts served by `/v2/tradingview/layout-chart/{id}`.
    pub layouts: Vec<LayoutConfig>,
    /// API v1, the legacy GET routes: `off` (default: `404 Route Not Found`, as the live API answered a v1 POST in
    /// 2026) or `emulate` (served as documented; whether the live API still does is uncertain).
    pub v1: V1Mode,
    /// Where `/storage` images are kept (they survive a restart there); a fresh temporary directory when absent.
    pub storage_dir: Option<PathBuf>,
    /// Byte budget of the stored images; the oldest are evicted first past it.
    pub storage_max_bytes: u64,
    /// `instant` (default) or `realistic`: each chart takes the time the real service takes (about 4 s at 800x600,
    /// 5-10 s for large charts with many studies, rare outliers near 25 s); past `gateway_timeout_ms` the answer is
    /// `504 {"message":"Endpoint request timed out"}`.
    pub latency: LatencyProfile,
    /// Multiplies every realistic wait (`0.01`: the same shape a hundred times faster, for tests).
    pub time_scale: f64,
    /// The gateway's integration timeout in (unscaled) milliseconds.
    pub gateway_timeout_ms: u64,
    /// The clock of the daily quota; not part of the file format.
    #[serde(skip, default = "system_clock")]
    pub clock: Arc<dyn Clock>,
}

fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 0,
            keys: Vec::new(),
            faults: Vec::new(),
            journal_capacity: 1000,
            // 8 MiB (about a hundred charts' bodies): the mock must fit a 64 MiB container under load (issue 18);
            // raise it for long snapshot sessions.
            journal_body_budget: 8 * 1024 * 1024,
            expectations: Vec::new(),
            stubs: Vec::new(),
            render_cache_capacity: 128,
            render_concurrency: 0,
            storage_capacity: 256,
            public_url: None,
            invalid_symbols: Vec::new(),
            extra_exchanges: Vec::new(),
            replay: None,
            symbols: SymbolMode::Lenient,
            symbol_catalogue: None,
            unsupported_intervals: BTreeMap::new(),
            custom_watermark: WatermarkMode::Ignore,
            query_key_on_v2: true,
            layouts: Vec::new(),
            v1: V1Mode::Off,
            storage_dir: None,
            storage_max_bytes: 256 * 1024 * 1024,
            latency: LatencyProfile::Instant,
            time_scale: 1.0,
            gateway_timeout_ms: 29_000,
            clock: system_clock(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("seed", &self.seed)
            .field("keys", &self.keys)
            .field("faults", &self.faults)
            .field("journal_capacity", &self.journal_capacity)
            .field("journal_body_budget", &self.journal_body_budget)
            .field("expectations", &self.expectations)
            .field("stubs", &self.stubs)
            .field("render_cache_capacity", &self.render_cache_capacity)
            .field("storage_capacity", &self.storage_capacity)
            .field("public_url", &self.public_url)
            .field("replay", &self.replay)
            .field("symbols", &self.symbols)
            .field("layouts", &self.layouts)
            .field("storage_dir", &self.storage_dir)
            .field("latency", &self.latency)
            .field("time_scale", &self.time_scale)
            .finish_non_exhaustive()
    }
}

/// Whether the v1 GET routes are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum V1Mode {
    /// Every v1 path answers `404 {"message":"Route Not Found"}`.
    #[default]
    Off,
    /// `GET /v1/tradingview/{mini-chart,advanced-chart}[/storage]` as documented (`chart_img_spec::v1`).
    Emulate,
}

/// How strictly symbols are checked against the catalogue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SymbolMode {
    /// Any well-formed ticker on a documented exchange, unless listed in `invalid_symbols`.
    #[default]
    Lenient,
    /// Also refuse a ticker the catalogue does not list for an exchange it has entries for.
    Strict,
}

/// A custom watermark on a plan that does not include one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WatermarkMode {
    /// Render without the custom text.
    #[default]
    Ignore,
    /// `422` field error on `watermark`.
    Refuse,
}

/// How long a chart takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LatencyProfile {
    /// Answer as fast as the image renders.
    #[default]
    Instant,
    /// Wait as long as the real service takes (see the README).
    Realistic,
}

/// A saved TradingView layout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayoutConfig {
    /// The `{LAYOUT_ID}` of the route.
    pub id: String,
    /// The layout's symbol, used when the body has none.
    #[serde(default)]
    pub symbol: Option<String>,
    /// The layout's interval, used when the body has none.
    #[serde(default)]
    pub interval: Option<String>,
    /// A private layout needs `tradingview-session-id` and `tradingview-session-id-sign` matching these;
    /// otherwise `403 {"message":"Layout Forbidden"}`.
    #[serde(default)]
    pub session_id: Option<String>,
    /// See `session_id`.
    #[serde(default)]
    pub session_sign: Option<String>,
    /// The TradingView session behind the layout is stale: `409 {"message":"Session Disconnected"}`.
    #[serde(default)]
    pub disconnected: bool,
}

/// Replay of recorded interactions from a cassette directory written by the `recorder` crate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// The cassette directory.
    #[schema(value_type = String)]
    pub dir: std::path::PathBuf,
    /// `true`: a request with no recorded match is answered with the documented miss error instead of a rendering.
    #[serde(default)]
    pub strict: bool,
    /// `false`: recorded interactions no request used are an error, reported by `GET /__admin/replay/unused`
    /// (409) and at shutdown (exit status 1). Default `true`.
    #[serde(default = "yes")]
    pub allow_unused: bool,
}

/// One API key, the account it belongs to and its plan.
///
/// The key itself is a secret: it is never shown by `Debug`, the journal, the logs or the admin API, which all
/// name the account instead.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The value of the `x-api-key` header.
    pub key: String,
    /// The account id the key is shown as.
    pub account: String,
    /// The plan; `BASIC` when left out.
    #[serde(default = "basic")]
    pub plan: Plan,
    /// `false` answers `403 Forbidden` as the real service does for an inactive key.
    #[serde(default = "yes")]
    pub active: bool,
    /// Overrides of single limits on top of the plan (for ENTERPRISE contracts, say).
    #[serde(default, skip_serializing_if = "LimitOverrides::is_empty")]
    pub overrides: LimitOverrides,
}

fn basic() -> Plan {
    Plan::BASIC
}
fn yes() -> bool {
    true
}

/// Single limits that replace the plan's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct LimitOverrides {
    pub rate_per_sec: Option<f64>,
    pub burst: Option<u32>,
    pub daily_limit: Option<u32>,
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    pub max_params: Option<u32>,
}

impl LimitOverrides {
    fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("key", &"<redacted>")
            .field("account", &self.account)
            .field("plan", &self.plan)
            .field("active", &self.active)
            .field("overrides", &self.overrides)
            .finish()
    }
}

impl KeyConfig {
    /// An active key on `plan`.
    pub fn new(key: impl Into<String>, account: impl Into<String>, plan: Plan) -> Self {
        KeyConfig {
            key: key.into(),
            account: account.into(),
            plan,
            active: true,
            overrides: LimitOverrides::default(),
        }
    }

    /// The plan's limits with the overrides applied.
    pub fn limits(&self) -> PlanLimits {
        let mut l = self.plan.limits();
        let o = &self.overrides;
        l.rate_per_sec = o.rate_per_sec.unwrap_or(l.rate_per_sec);
        l.burst = o.burst.unwrap_or(l.burst);
        l.daily_limit = o.daily_limit.unwrap_or(l.daily_limit);
        l.max_width = o.max_width.unwrap_or(l.max_width);
        l.max_height = o.max_height.unwrap_or(l.max_height);
        l.max_params = o.max_params.unwrap_or(l.max_params);
        l
    }

    /// Checks the limits make sense; the message names the account.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.key.is_empty() {
            return Err(format!("account `{}`: `key` must not be empty", self.account));
        }
        if self.account.is_empty() {
            return Err("a key has an empty `account`".into());
        }
        let l = self.limits();
        if !(l.rate_per_sec.is_finite() && l.rate_per_sec > 0.0) {
            return Err(format!(
                "account `{}`: `rate_per_sec` must be a positive number",
                self.account
            ));
        }
        if l.burst == 0 {
            return Err(format!("account `{}`: `burst` must be at least 1", self.account));
        }
        if l.max_width < 400 || l.max_height < 300 {
            return Err(format!("account `{}`: max size must be at least 400x300", self.account));
        }
        Ok(())
    }
}

/// A config file that cannot be used, with the place of the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or `<string>`).
    pub path: String,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// `.yaml` / `.yml` (also JSON, which is YAML).
    Yaml,
    /// `.toml`.
    Toml,
}

impl Config {
    /// Adds an active key on `plan`.
    pub fn with_key(mut self, key: impl Into<String>, account: impl Into<String>, plan: Plan) -> Self {
        self.keys.push(KeyConfig::new(key, account, plan));
        self
    }

    /// Adds a fully specified key (overrides, inactive keys).
    pub fn with_key_config(mut self, key: KeyConfig) -> Self {
        self.keys.push(key);
        self
    }

    /// Sets the seed of the chart data and of the fault dice.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Installs a fault at start.
    pub fn with_fault(mut self, fault: FaultSpec) -> Self {
        self.faults.push(fault);
        self
    }

    /// Replaces the clock of the daily quota (a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds an expectation (checked by `GET /__admin/verify` and by the Rust handle on drop).
    pub fn with_expectation(mut self, expectation: crate::verify::Expectation) -> Self {
        self.expectations.push(expectation);
        self
    }

    /// Adds a stub.
    pub fn with_stub(mut self, stub: crate::stubs::StubSpec) -> Self {
        self.stubs.push(stub);
        self
    }

    /// Sets the journal's capacity.
    pub fn with_journal_capacity(mut self, capacity: usize) -> Self {
        self.journal_capacity = capacity;
        self
    }

    /// Answers from cassettes (see [`ReplayConfig`]).
    pub fn with_replay(mut self, dir: impl Into<std::path::PathBuf>, strict: bool) -> Self {
        self.replay = Some(ReplayConfig {
            dir: dir.into(),
            strict,
            allow_unused: true,
        });
        self
    }

    /// Reads a config file; the format follows the extension (`.toml`, otherwise YAML).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: name.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => ConfigFormat::Toml,
            _ => ConfigFormat::Yaml,
        };
        Config::parse(&text, format, &name)
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, format: ConfigFormat, origin: &str) -> Result<Config, ConfigError> {
        let err = |line: Option<usize>, message: String| ConfigError {
            path: origin.to_string(),
            line,
            message,
        };
        let config: Config = match format {
            ConfigFormat::Yaml => {
                // An empty file is an empty mapping, not an error: it is how one starts a config.
                if text.trim().is_empty() {
                    Config::default()
                } else {
                    serde_yaml::from_str(text).map_err(|e| {
                        let line = e.location().map(|l| l.line());
                        // serde_yaml appends "at line X column Y" itself; the line is already in our prefix.
                        let msg = e.to_string();
                        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                        err(line, msg)
                    })?
                }
            }
            ConfigFormat::Toml => toml::from_str(text).map_err(|e| {
                let line = e.span().map(|s| line_of_offset(text, s.start));
                err(line, e.message().to_string())
            })?,
        };
        config
            .validate()
            .map_err(|(needle, message)| err(needle.and_then(|(n, nth)| line_of_text(text, &n, nth)), message))?;
        Ok(config)
    }

    /// Checks what serde cannot: unique keys and accounts, sane limits, well-formed faults. On error, also returns
    /// a piece of text to look for in the file, and which occurrence of it, so the message can name the line.
    pub(crate) fn validate(&self) -> Result<(), (Option<(String, usize)>, String)> {
        let mut keys = std::collections::HashSet::new();
        let mut accounts = std::collections::HashMap::new();
        for k in &self.keys {
            let seen = accounts.entry(k.account.as_str()).or_insert(0usize);
            let at = Some((k.account.clone(), *seen));
            *seen += 1;
            k.validate().map_err(|m| (at.clone(), m))?;
            if *seen > 1 {
                return Err((at, format!("account `{}` is listed twice", k.account)));
            }
            if !keys.insert(k.key.as_str()) {
                // The message names the account, never the key: a config error may end up in CI logs.
                return Err((at, format!("account `{}` reuses another account's key", k.account)));
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let nth = self.faults[..i].iter().filter(|g| g.kind == f.kind).count();
            f.validate()
                .map_err(|m| (Some((f.kind.as_str().to_string(), nth)), m))?;
        }
        for (i, e) in self.expectations.iter().enumerate() {
            e.validate()
                .map_err(|m| (Some(("criteria".into(), i)), format!("expectations[{i}]: {m}")))?;
        }
        for (i, s) in self.stubs.iter().enumerate() {
            s.load()
                .map_err(|m| (Some(("answer".into(), i)), format!("stubs[{i}]: {m}")))?;
        }
        if self.journal_capacity == 0 || self.render_cache_capacity == 0 || self.storage_capacity == 0 {
            return Err((Some(("capacity".into(), 0)), "capacities must be at least 1".into()));
        }
        if !(self.time_scale.is_finite() && self.time_scale >= 0.0) {
            return Err((
                Some(("time_scale".into(), 0)),
                "`time_scale` must be a number >= 0".into(),
            ));
        }
        if self.gateway_timeout_ms == 0 {
            return Err((
                Some(("gateway_timeout_ms".into(), 0)),
                "`gateway_timeout_ms` must be at least 1".into(),
            ));
        }
        for (exchange, intervals) in &self.unsupported_intervals {
            if let Some(bad) = intervals
                .iter()
                .find(|i| !chart_img_spec::INTERVALS.contains(&i.as_str()))
            {
                return Err((
                    Some((exchange.clone(), 0)),
                    format!("unsupported_intervals.{exchange}: `{bad}` is not a Chart-IMG interval"),
                ));
            }
        }
        let mut layouts = std::collections::HashSet::new();
        for l in &self.layouts {
            if l.id.is_empty() || !layouts.insert(l.id.as_str()) {
                return Err((
                    Some((format!("id: {}", l.id), 0)),
                    format!("layout `{}` is empty or listed twice", l.id),
                ));
            }
            if l.session_id.is_some() != l.session_sign.is_some() {
                return Err((
                    Some((format!("id: {}", l.id), 0)),
                    format!(
                        "layout `{}`: give both `session_id` and `session_sign`, or neither",
                        l.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The line of the `nth` occurrence of `needle` outside comments (e.g. the second `account: x` of a duplicate).
fn line_of_text(text: &str, needle: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.split('#').next().is_some_and(|l| l.contains(needle)))
        .map(|(i, _)| i + 1)
        .nth(nth)
}

/// A key as the admin API shows it: by account, never the key itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeySummary {
    /// The account id.
    pub account: String,
    /// `BASIC` … `ENTERPRISE` or `custom`.
    pub plan: String,
    /// Whether the key is accepted.
    pub active: bool,
    /// Limits in force.
    pub limits: PlanLimits,
}

/// `GET /__admin/config`: the config as loaded at start or by the last reload, each key shown by its account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigView {
    /// Seed of the chart data and the fault dice.
    pub seed: u64,
    /// The configured keys, by account (the key itself never).
    pub keys: Vec<KeySummary>,
    /// The faults of the config (the admin API may have added more: `GET /__admin/faults`).
    pub faults: Vec<FaultSpec>,
    /// Requests the journal keeps.
    pub journal_capacity: usize,
    /// Images the render cache keeps.
    pub render_cache_capacity: usize,
    /// `/storage` images kept downloadable.
    pub storage_capacity: usize,
    /// Base of the `/storage` URLs, when set.
    pub public_url: Option<String>,
    /// Symbols answered `Invalid Symbol`.
    pub invalid_symbols: Vec<String>,
    /// Exchanges accepted besides the built-in list.
    pub extra_exchanges: Vec<String>,
    /// Replay from cassettes, when configured.
    pub replay: Option<ReplayConfig>,
    /// `lenient` or `strict` symbols.
    pub symbols: SymbolMode,
    /// The symbol catalogue file, when one is configured.
    #[schema(value_type = Option<String>)]
    pub symbol_catalogue: Option<std::path::PathBuf>,
    /// Intervals refused per exchange.
    pub unsupported_intervals: std::collections::BTreeMap<String, Vec<String>>,
    /// What a custom watermark below ULTRA gets.
    pub custom_watermark: WatermarkMode,
    /// Whether `?key=` is accepted on the v2 routes.
    pub query_key_on_v2: bool,
    /// `off` or `emulate`: API v1's GET routes.
    pub v1: crate::config::V1Mode,
    /// The ids of the saved layouts (their TradingView session values are secrets too, so they are not shown).
    pub layouts: Vec<String>,
    /// Where `/storage` images are kept, when set.
    #[schema(value_type = Option<String>)]
    pub storage_dir: Option<std::path::PathBuf>,
    /// Byte budget of the stored images.
    pub storage_max_bytes: u64,
    /// `instant` or `realistic`.
    pub latency: LatencyProfile,
    /// Byte budget of the request and answer bodies the journal keeps (for body criteria and snapshots).
    pub journal_body_budget: u64,
    /// The expectations of the config (`GET /__admin/expectations` has their counts).
    pub expectations: Vec<crate::verify::Expectation>,
    /// The stubs of the config (`GET /__admin/stubs` lists those added at run time too).
    pub stubs: Vec<crate::stubs::StubSpec>,
    /// Multiplier of every realistic wait.
    pub time_scale: f64,
    /// The gateway's timeout in (unscaled) milliseconds.
    pub gateway_timeout_ms: u64,
}

impl ConfigView {
    pub(crate) fn of(c: &Config) -> Self {
        ConfigView {
            seed: c.seed,
            keys: c
                .keys
                .iter()
                .map(|k| KeySummary {
                    account: k.account.clone(),
                    plan: k.plan.label().to_string(),
                    active: k.active,
                    limits: k.limits(),
                })
                .collect(),
            faults: c.faults.clone(),
            journal_capacity: c.journal_capacity,
            render_cache_capacity: c.render_cache_capacity,
            storage_capacity: c.storage_capacity,
            public_url: c.public_url.clone(),
            invalid_symbols: c.invalid_symbols.clone(),
            extra_exchanges: c.extra_exchanges.clone(),
            replay: c.replay.clone(),
            symbols: c.symbols,
            symbol_catalogue: c.symbol_catalogue.clone(),
            unsupported_intervals: c.unsupported_intervals.clone(),
            custom_watermark: c.custom_watermark,
            query_key_on_v2: c.query_key_on_v2,
            v1: c.v1,
            layouts: c.layouts.iter().map(|l| l.id.clone()).collect(),
            storage_dir: c.storage_dir.clone(),
            storage_max_bytes: c.storage_max_bytes,
            latency: c.latency,
            journal_body_budget: c.journal_body_budget,
            expectations: c.expectations.clone(),
            stubs: c.stubs.clone(),
            time_scale: c.time_scale,
            gateway_timeout_ms: c.gateway_timeout_ms,
        }
    }
}
