//! API keys, the accounts behind them, and the two gateway limits: the per-second rate (with burst) and the daily
//! quota.
//!
//! **Invariant:** each limit is decided by one atomic step per request — `governor`'s compare-and-swap for the rate,
//! one mutex-guarded check-and-increment for the quota — so concurrent requests are never lost or counted twice.
//! **Invariant:** the key is only a map key here; everything shown outside names the account.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use chrono::NaiveDate;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{config::KeyConfig, plan::PlanLimits};

/// Outcome of the gateway checks for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Pass,
    Throttled,
    QuotaExceeded,
}

pub(crate) struct Account {
    pub config: KeyConfig,
    /// `config.account`, shared: what each journal record of a request names.
    pub name: Arc<str>,
    pub limits: PlanLimits,
    /// A hash of `limits`: validated bodies are memoized per plan.
    pub plan_key: u64,
    limiter: DefaultDirectRateLimiter,
    /// The daily counter and the request counts, under one lock: the request path takes it once and touches no
    /// other shared counter of the account.
    usage: Mutex<DayUsage>,
}

#[derive(Debug, Clone, Copy, Default)]
struct DayUsage {
    /// The UTC date `used` counts for; a request on another date starts the count again.
    day: Option<NaiveDate>,
    used: u32,
    requests: u64,
    throttled: u64,
    quota_rejected: u64,
}

impl Account {
    fn new(config: KeyConfig) -> Account {
        let limits = config.limits();
        // One cell every 1/rate seconds; fractional rates (one per ten seconds) are allowed on purpose so tests can
        // make the bucket refill slower than the test runs, which makes the counts exact.
        let period = Duration::from_secs_f64(1.0 / limits.rate_per_sec).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(burst);
        let plan_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                limits.rate_per_sec.to_bits(),
                limits.burst,
                limits.daily_limit,
                limits.max_width,
                limits.max_height,
            )
                .hash(&mut h);
            (
                limits.max_params,
                limits.storage_days,
                limits.chart_img_watermark,
                limits.custom_watermark,
            )
                .hash(&mut h);
            h.finish()
        };
        Account {
            name: Arc::from(config.account.as_str()),
            config,
            limits,
            plan_key,
            limiter: RateLimiter::direct(quota),
            usage: Mutex::new(DayUsage::default()),
        }
    }

    pub fn id(&self) -> &str {
        &self.config.account
    }

    /// The gateway: throttle first (a throttled request does not use quota), then take one unit of today's quota.
    pub fn admit(&self, today: NaiveDate) -> Gate {
        let throttled = self.limiter.check().is_err();
        let mut u = self.usage.lock().unwrap();
        u.requests += 1;
        if throttled {
            u.throttled += 1;
            return Gate::Throttled;
        }
        if u.day != Some(today) {
            u.day = Some(today);
            u.used = 0;
        }
        if u.used >= self.limits.daily_limit {
            u.quota_rejected += 1;
            return Gate::QuotaExceeded;
        }
        u.used += 1;
        Gate::Pass
    }

    pub fn usage(&self, today: NaiveDate) -> Usage {
        let u = *self.usage.lock().unwrap();
        let used = if u.day == Some(today) { u.used } else { 0 };
        Usage {
            account: self.config.account.clone(),
            plan: self.config.plan.label().to_string(),
            active: self.config.active,
            limits: self.limits,
            day: today.to_string(),
            used_today: used,
            remaining_today: self.limits.daily_limit.saturating_sub(used),
            requests: u.requests,
            throttled: u.throttled,
            quota_rejected: u.quota_rejected,
        }
    }
}

/// Usage of one account, as `GET /__admin/usage` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    /// The account id.
    pub account: String,
    /// `BASIC` … `ENTERPRISE` or `custom`.
    pub plan: String,
    /// Inactive keys are answered `403 Forbidden`.
    pub active: bool,
    /// The limits in force (plan plus overrides).
    pub limits: PlanLimits,
    /// The UTC date the daily counter is for.
    pub day: String,
    /// Requests that passed the gateway today (they count whatever the backend answered).
    pub used_today: u32,
    /// `daily_limit - used_today`.
    pub remaining_today: u32,
    /// Every request made with the key since start or the last reset.
    pub requests: u64,
    /// Requests answered `429 Too Many Requests`.
    pub throttled: u64,
    /// Requests answered `429 Limit Exceeded`.
    pub quota_rejected: u64,
}

/// The key → account map. Reads (every request) take a read lock only long enough to clone an `Arc`.
#[derive(Default)]
pub(crate) struct Accounts {
    by_key: RwLock<HashMap<String, Arc<Account>>>,
}

impl Accounts {
    pub fn new(keys: &[KeyConfig]) -> Accounts {
        let a = Accounts::default();
        a.replace_all(keys);
        a
    }

    pub fn get(&self, key: &str) -> Option<Arc<Account>> {
        self.by_key.read().unwrap().get(key).cloned()
    }

    /// Installs a new key set (config reload). An account whose key and limits did not change keeps its counters
    /// and its rate bucket: reloading must not hand out a fresh quota.
    pub fn replace_all(&self, keys: &[KeyConfig]) {
        let mut map = self.by_key.write().unwrap();
        let mut next = HashMap::with_capacity(keys.len());
        for k in keys {
            let keep = map
                .get(&k.key)
                .filter(|a| a.config.account == k.account && a.limits == k.limits() && a.config.active == k.active);
            let acc = match keep {
                Some(a) => a.clone(),
                None => Arc::new(Account::new(k.clone())),
            };
            next.insert(k.key.clone(), acc);
        }
        *map = next;
    }

    /// Adds or replaces one key. Refuses an account id already used by another key.
    pub fn upsert(&self, key: KeyConfig) -> Result<(), String> {
        let mut map = self.by_key.write().unwrap();
        if map
            .iter()
            .any(|(k, a)| a.config.account == key.account && *k != key.key)
        {
            return Err(format!("account `{}` already has another key", key.account));
        }
        map.insert(key.key.clone(), Arc::new(Account::new(key)));
        Ok(())
    }

    pub fn remove_account(&self, account: &str) -> bool {
        let mut map = self.by_key.write().unwrap();
        let before = map.len();
        map.retain(|_, a| a.config.account != account);
        map.len() != before
    }

    /// Forgets all counters and refills every rate bucket.
    pub fn reset(&self) {
        let mut map = self.by_key.write().unwrap();
        for a in map.values_mut() {
            *a = Arc::new(Account::new(a.config.clone()));
        }
    }

    pub fn all(&self) -> Vec<Arc<Account>> {
        let mut v: Vec<_> = self.by_key.read().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
    }
}
