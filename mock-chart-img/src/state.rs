//! The shared state behind both routers. Every field is there for one reason, said next to it.

use std::{
    num::NonZeroUsize,
    sync::{atomic::AtomicU64, Arc, Mutex, RwLock},
    time::Instant,
};

use bytes::Bytes;
use lru::LruCache;

use std::collections::BTreeMap;

use rand::{rngs::StdRng, SeedableRng};

use crate::{
    accounts::Accounts,
    catalogue::Catalogue,
    clock::Clock,
    config::{Config, LatencyProfile, LayoutConfig, SymbolMode, WatermarkMode},
    faults::Faults,
    journal::Journal,
    replay::Replay,
    storage::Storage,
};

/// Everything the handlers share. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

pub(crate) struct Settings {
    pub seed: u64,
    pub public_url: Option<String>,
    pub invalid_symbols: Vec<String>,
    /// What the spec's validation is told: the watermark rule and the extra exchanges.
    pub options: chart_img_spec::Options,
    pub symbols: SymbolMode,
    pub catalogue: Arc<Catalogue>,
    pub unsupported_intervals: BTreeMap<String, Vec<String>>,
    pub query_key_on_v2: bool,
    pub layouts: Vec<LayoutConfig>,
    pub v1: crate::config::V1Mode,
    pub latency: LatencyProfile,
    pub time_scale: f64,
    pub gateway_timeout_ms: u64,
    /// Recorded interactions to answer from, when configured.
    pub replay: Option<Arc<Replay>>,
}

impl Settings {
    fn from_config(config: &Config) -> anyhow::Result<Settings> {
        let catalogue = match &config.symbol_catalogue {
            Some(path) => Arc::new(Catalogue::from_file(path)?),
            None => Catalogue::built_in_shared(),
        };
        Ok(Settings {
            seed: config.seed,
            public_url: config.public_url.clone(),
            invalid_symbols: config.invalid_symbols.clone(),
            options: chart_img_spec::Options {
                watermark: match config.custom_watermark {
                    WatermarkMode::Ignore => chart_img_spec::WatermarkRule::Ignore,
                    WatermarkMode::Refuse => chart_img_spec::WatermarkRule::Refuse,
                },
                extra_exchanges: config.extra_exchanges.clone(),
            },
            symbols: config.symbols,
            catalogue,
            unsupported_intervals: config.unsupported_intervals.clone(),
            query_key_on_v2: config.query_key_on_v2,
            layouts: config.layouts.clone(),
            v1: config.v1,
            latency: config.latency,
            time_scale: config.time_scale,
            gateway_timeout_ms: config.gateway_timeout_ms,
            replay: match &config.replay {
                Some(r) => Some(Arc::new(Replay::load(r)?)),
                None => None,
            },
        })
    }
}

/// A validated request, its cache key and what the journal shows of it.
pub(crate) struct Prepared {
    pub request: crate::request::ChartRequest,
    pub key: String,
    pub label: Arc<crate::record::ChartLabel>,
}

pub(crate) struct Shared {
    /// Keys → accounts with their rate buckets and daily counters.
    pub accounts: Accounts,
    /// Installed faults and their progress.
    pub faults: Faults,
    /// Installed stubs and how often each answered.
    pub stubs: crate::stubs::Stubs,
    /// Bounded request journal for the admin API.
    pub journal: Journal,
    /// The last images answered, for the dashboard's thumbnails (bounded, shared with the cache).
    pub thumbnails: crate::thumbnails::Thumbnails,
    /// The config as loaded (at start or by the last reload), keys replaced by their accounts: `GET /__admin/config`.
    pub loaded: RwLock<crate::config::ConfigView>,
    /// Rendered images by normalized request: repeated requests cost no rendering.
    pub cache: Mutex<LruCache<String, Bytes>>,
    /// Valid request bodies, byte for byte, with their normalized form and cache key: a client repeating a request
    /// (the common case, and the load benchmark's) skips JSON parsing and validation. Only bodies that validated
    /// are kept, keyed with the plan's limits (the only other input of validation besides the settings, and the
    /// memo is emptied when those change), so the memo can never disagree with it.
    pub prepared: Mutex<LruCache<(Bytes, u64), Arc<Prepared>>>,
    /// Images behind the URLs the `/storage` routes hand out, on disk.
    pub storage: Storage,
    /// Dice of the realistic latency profile (seeded by `seed`).
    pub latency_dice: Mutex<StdRng>,
    /// The parts of the config that may change on reload.
    pub settings: RwLock<Settings>,
    /// Clock of the daily quota (a manual one in tests).
    pub clock: Arc<dyn Clock>,
    /// For `uptime_s` in the health answer.
    pub started: Instant,
    /// For the health answer: how well the cache works (its hits are counted by the journal, under its lock).
    pub renders_done: AtomicU64,
    /// The render gate: bounded concurrent renders, identical requests drawn once.
    pub renders: crate::renders::Renders,
}

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl AppState {
    /// Builds the state for `config` (which should already be valid: files are checked by
    /// [`Config::from_file`]; configs built in code are checked here).
    pub fn new(config: &Config) -> anyhow::Result<AppState> {
        config
            .validate()
            .map_err(|(_, m)| anyhow::anyhow!("invalid config: {m}"))?;
        let state = AppState {
            inner: Arc::new(Shared {
                accounts: Accounts::new(&config.keys),
                faults: Faults::new(config.seed, &config.faults),
                stubs: crate::stubs::Stubs::new(&config.stubs).map_err(|m| anyhow::anyhow!("invalid config: {m}"))?,
                journal: Journal::new(config.journal_capacity, config.journal_body_budget),
                thumbnails: crate::thumbnails::Thumbnails::new(crate::thumbnails::THUMBNAILS),
                loaded: RwLock::new(crate::config::ConfigView::of(config)),
                cache: Mutex::new(LruCache::new(cap(config.render_cache_capacity))),
                prepared: Mutex::new(LruCache::new(cap(1024))),
                storage: Storage::open(
                    config.storage_dir.as_deref(),
                    config.storage_max_bytes,
                    config.storage_capacity,
                )?,
                latency_dice: Mutex::new(StdRng::seed_from_u64(config.seed ^ 0x006c_6174_656e_6379)),
                settings: RwLock::new(Settings::from_config(config)?),
                clock: config.clock.clone(),
                started: Instant::now(),
                renders_done: AtomicU64::new(0),
                renders: crate::renders::Renders::new(config.render_concurrency),
            }),
        };
        state.inner.journal.expectations.replace_config(&config.expectations);
        Ok(state)
    }

    /// Applies a reloaded config: keys (accounts whose key and limits are unchanged keep their counters), faults
    /// that came from the file (those added through the admin API stay), seed, symbols, replay. Capacities are
    /// fixed at start.
    pub fn apply_config(&self, config: &Config) -> anyhow::Result<()> {
        config
            .validate()
            .map_err(|(_, m)| anyhow::anyhow!("invalid config: {m}"))?;
        let next = Settings::from_config(config)?;
        let s = &self.inner;
        s.stubs
            .replace_config(&config.stubs)
            .map_err(|m| anyhow::anyhow!("invalid config: {m}"))?;
        s.accounts.replace_all(&config.keys);
        s.faults.replace_config(&config.faults);
        s.journal.expectations.replace_config(&config.expectations);
        let mut settings = s.settings.write().unwrap();
        if settings.seed != config.seed {
            // Cached images were drawn with the old seed.
            s.cache.lock().unwrap().clear();
        }
        // Validation depends on the settings (watermark rule, extra exchanges): forget what was validated under
        // the old ones.
        s.prepared.lock().unwrap().clear();
        *settings = next;
        *s.loaded.write().unwrap() = crate::config::ConfigView::of(config);
        Ok(())
    }
}
