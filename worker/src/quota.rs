//! Accounts at run time: the process-wide pool (keys and each key's pacing, [`crate::pacing`]) and the per-step
//! ledger that reserves daily quota in batches, trying the accounts in the step's own order.
//!
//! Invariant: every call sent to Chart-IMG was paid for by one unit taken from a grant before it was sent, and only
//! units never sent are given back. So `usageToday` never under-counts; a crash between reserve and give-back
//! over-counts by at most the units that step still held. Each reservation and give-back carries its own operation id
//! ([`OpId`]), so a transaction retried after a lost commit reply applies once.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::sync::Mutex;
use tracing::warn;

use crate::config::AccountConfig;
use crate::domain::request::{check_request, TemplateInvalid};
use crate::domain::usage::{preference_order, MAX_RESERVATION};
use crate::domain::{AccountId, AccountQuota, ChartRequest, Grant, OpId, PlanNeeds};
use crate::pacing::{Pace, SharedRate, WindowPacer};
use crate::ports::{AccountUsageStore, Clock, StoreError};
use chart_img_spec::Plan;

/// One configured account with the pacing that keeps its key within its plan's rate and burst.
#[derive(Debug)]
pub struct Account {
    pub config: AccountConfig,
    pace: Pace,
}

impl Account {
    /// Waits until the plan allows one more call with this key: from this process alone ([`Pace::Local`]), or from
    /// every instance together ([`Pace::Shared`]), which can fail when the window store does.
    pub async fn until_ready(&self) -> Result<(), StoreError> {
        self.pace.until_ready().await
    }

    /// How this account's calls are paced.
    pub fn pace(&self) -> &Pace {
        &self.pace
    }
}

/// The latency a Chart-IMG call is assumed to take before this process has seen one: the middle of the 4–10 s
/// Chart-IMG takes per chart (`chart-img-api.md`). Only the number of charts in flight depends on it.
pub const DEFAULT_CALL_LATENCY: Duration = Duration::from_secs(6);

/// Weight of the newest call in the latency estimate (an exponentially weighted moving average).
const LATENCY_WEIGHT: f64 = 0.2;

/// Charts in flight that keep every account busy: by Little's law a key sending `rate` calls a second that each take
/// `latency` has `rate × latency` calls open, plus its `burst` at the start (the burst goes out at once, and those
/// calls are still open when the steady rate has filled `rate × latency` more). Summed over `plans`, rounded up, and
/// kept within `1..=max` (`max` is the memory-safe bound, `CHART_EXPORT_CONCURRENCY`).
pub fn in_flight_for(plans: &[Plan], latency: Duration, max: usize) -> usize {
    let want: f64 = plans
        .iter()
        .map(|p| {
            let l = p.limits();
            l.burst as f64 + l.rate_per_sec * latency.as_secs_f64()
        })
        .sum();
    let want = if want.is_finite() {
        want.ceil().min(usize::MAX as f64) as usize
    } else {
        usize::MAX
    };
    want.clamp(1, max.max(1))
}

/// The earliest time `n` calls of `latency` each can all have finished on `accounts` together, when every key is held
/// to its plan's rate and burst (a GCRA limiter per key, as Chart-IMG enforces) and to its daily limit: the `n`-th
/// earliest start time of [`earliest_starts`], plus `latency`. `None` when the accounts' daily limits together allow
/// fewer than `n` calls. The bound of the step bench and of the fleet simulation: it knows nothing of the worker (no
/// in-flight cap, no overhead), only the plans and the latency.
pub fn ideal_bound(n: u64, latency: Duration, accounts: &[AccountConfig]) -> Option<Duration> {
    let starts = earliest_starts(n, accounts)?;
    Some(
        starts
            .last()
            .map_or(Duration::ZERO, |s| Duration::from_secs_f64(*s) + latency),
    )
}

/// [`ideal_bound`] for calls whose durations differ (e.g. those a realistic server drew for a run): the earliest time
/// calls of `latencies` can all have finished under the same per-key schedule. Any schedule starts its `k`-th call
/// no earlier than the `k`-th earliest start, and with the starts fixed, giving the longest call the earliest start
/// is optimal (exchanging any other pairing does not lengthen it), so this is
/// `maxₖ(startₖ + dₖ)` with the durations sorted longest first — a lower bound no scheduler can beat, even one that
/// knew every duration in advance. With equal durations it is [`ideal_bound`].
pub fn ideal_bound_for(latencies: &[Duration], accounts: &[AccountConfig]) -> Option<Duration> {
    let starts = earliest_starts(latencies.len() as u64, accounts)?;
    let mut longest_first = latencies.to_vec();
    longest_first.sort_unstable_by(|a, b| b.cmp(a));
    Some(
        starts
            .iter()
            .zip(longest_first)
            .map(|(s, d)| Duration::from_secs_f64(*s) + d)
            .max()
            .unwrap_or(Duration::ZERO),
    )
}

/// The `n` earliest start times (seconds, ascending) that `accounts` allow together: key `i`'s `k`-th call (0-based)
/// can start at `max(0, k − burstᵢ + 1) / rateᵢ`, so the first `burstᵢ` start at once, and at most its daily limit of
/// them. `None` when the daily limits together allow fewer than `n`.
fn earliest_starts(n: u64, accounts: &[AccountConfig]) -> Option<Vec<f64>> {
    let mut starts: Vec<f64> = Vec::new();
    for a in accounts {
        let l = a.plan.limits();
        let calls = u64::from(a.daily_limit).min(n);
        starts
            .extend((0..calls).map(|k| k.saturating_sub(u64::from(l.burst).saturating_sub(1)) as f64 / l.rate_per_sec));
    }
    if (starts.len() as u64) < n {
        return None;
    }
    starts.sort_by(f64::total_cmp);
    starts.truncate(n as usize);
    Some(starts)
}

/// The latency of Chart-IMG calls as seen by this process: an EWMA of the durations of answered calls, starting at
/// [`DEFAULT_CALL_LATENCY`].
#[derive(Debug)]
pub struct LatencyEstimate {
    secs: std::sync::Mutex<f64>,
}

impl LatencyEstimate {
    pub fn new(initial: Duration) -> Self {
        Self {
            secs: std::sync::Mutex::new(initial.as_secs_f64()),
        }
    }

    /// Takes one call's duration into the estimate.
    pub fn observe(&self, took: Duration) {
        let mut s = self.secs.lock().unwrap_or_else(|p| p.into_inner());
        *s += LATENCY_WEIGHT * (took.as_secs_f64() - *s);
    }

    pub fn current(&self) -> Duration {
        Duration::from_secs_f64(*self.secs.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// All accounts, in the configured order (each step takes quota in its own order, [`preference_order`]). Built once
/// per process, shared by steps.
#[derive(Debug, Clone)]
pub struct AccountPool {
    accounts: Arc<Vec<Account>>,
    latency: Arc<LatencyEstimate>,
    /// The keys, for [`AccountPool::redact`]: the recorder's redactor is the one owner of the placeholder format.
    secrets: Arc<recorder::Secrets>,
}

impl AccountPool {
    /// Accounts whose keys only this process uses (embedded modes, the demo, the bench): each key paced in memory at
    /// its plan's rate and its burst less one call. Chart-IMG judges by arrival and the pacing by sending: calls sent
    /// exactly on the limit arrive out of step (the first sent can arrive after the one sent `1/rate` later), and a
    /// limiter with the whole burst then sees one call too early (`429 Too Many Requests`, one per step against the
    /// realistic mock). The call left out is the tolerance for that jitter (`1/rate`, 100 ms on PRO).
    pub fn new(configs: Vec<AccountConfig>) -> Self {
        Self::build(configs, |config| {
            let limits = config.plan.limits();
            let period = std::time::Duration::from_secs_f64(1.0 / limits.rate_per_sec);
            let burst = NonZeroU32::new(limits.burst.saturating_sub(1)).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
            Pace::Local(RateLimiter::direct(quota.allow_burst(burst)))
        })
    }

    /// Accounts whose keys every instance of a deployment shares (`serve`): each key paced through time windows
    /// reserved in `shared.store` ([`WindowPacer`]), so all instances together keep to the plan.
    pub fn shared(configs: Vec<AccountConfig>, shared: SharedRate) -> Self {
        Self::build(configs, |config| {
            Pace::Shared(WindowPacer::new(
                config.id.clone(),
                config.plan.limits().rate_per_sec,
                shared.clone(),
            ))
        })
    }

    fn build(configs: Vec<AccountConfig>, pace: impl Fn(&AccountConfig) -> Pace) -> Self {
        let secrets = configs.iter().fold(recorder::Secrets::new(), |s, c| {
            s.with_account(c.id.as_str(), c.api_key.clone())
        });
        let accounts = configs
            .into_iter()
            .map(|config| Account {
                pace: pace(&config),
                config,
            })
            .collect();
        Self {
            accounts: Arc::new(accounts),
            latency: Arc::new(LatencyEstimate::new(DEFAULT_CALL_LATENCY)),
            secrets: Arc::new(secrets),
        }
    }

    /// The process's estimate of one Chart-IMG call's latency.
    pub fn latency(&self) -> &LatencyEstimate {
        &self.latency
    }

    /// Charts a step keeps in flight now: [`in_flight_for`] the configured plans at the latency seen so far, at most
    /// `max`.
    pub fn in_flight(&self, max: usize) -> usize {
        in_flight_for(&self.plans(), self.latency.current(), max)
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// The configured plans, in account order.
    pub fn plans(&self) -> Vec<Plan> {
        self.accounts.iter().map(|a| a.config.plan).collect()
    }

    /// Checks a built request with the spec's validation against the most permissive configured plan, before any
    /// quota is reserved for it (see [`check_request`]).
    pub fn check(&self, req: ChartRequest) -> Result<ChartRequest, TemplateInvalid> {
        check_request(req, &self.plans())
    }

    /// Replaces every configured API key in `text` with `<CHART_IMG_API_KEY:account>`. Applied to every message that
    /// carries text from outside (API error bodies, transport errors) before it is logged or stored, in case an
    /// upstream ever echoes a key back.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text).into_owned()
    }

    fn get(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.iter().find(|a| a.config.id == *id)
    }
}

/// Why no account could be had for a call.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("every Chart-IMG account is exhausted for today ({0})")]
    AllExhausted(String),
    #[error("cannot reserve Chart-IMG quota: {0}")]
    Store(#[from] StoreError),
}

/// One unit of quota taken for one call: the account to send it with, and the UTC day whose counter paid for it.
/// The call is sent only while that day lasts ([`QuotaLedger::is_current`]), and a `429 Limit Exceeded` it gets marks
/// that day ([`QuotaLedger::exhaust`]).
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    pub account: &'a Account,
    pub day: chrono::NaiveDate,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// Units reserved in the store and not yet spent, per grant (account and day).
    held: Vec<Grant>,
    /// Accounts that answered `429 Limit Exceeded` during this step.
    exhausted: HashSet<AccountId>,
    /// Set when a reservation came back empty: every account is used up, so later calls fail without a transaction.
    depleted: bool,
    /// Units spent per account (calls sent), for the report.
    spent: Vec<(AccountId, u32)>,
}

/// The quota of one step. Reserves in batches (one transaction per batch, not per chart, at most
/// [`MAX_RESERVATION`] units) because a Firestore document sustains about one write per second. Accounts are tried
/// in the step's own [`preference_order`], one account (one usage document) per transaction, so steps spread over the
/// accounts and a reservation reads and writes only the counters it takes from.
pub struct QuotaLedger<'a> {
    pool: &'a AccountPool,
    store: &'a dyn AccountUsageStore,
    clock: &'a dyn Clock,
    /// The configured accounts in this step's preference order.
    order: Vec<AccountQuota>,
    state: Mutex<LedgerState>,
}

impl<'a> QuotaLedger<'a> {
    /// The ledger of the step `key` (`<runId>/<stepId>`: it picks the step's account order).
    pub fn new(pool: &'a AccountPool, store: &'a dyn AccountUsageStore, clock: &'a dyn Clock, key: &str) -> Self {
        let all: Vec<AccountQuota> = pool.accounts.iter().map(|a| a.config.quota()).collect();
        Self {
            pool,
            store,
            clock,
            order: preference_order(key, &all),
            state: Mutex::new(LedgerState::default()),
        }
    }

    fn usable(&self, st: &LedgerState) -> Vec<AccountQuota> {
        self.order
            .iter()
            .filter(|q| !st.exhausted.contains(&q.id))
            .cloned()
            .collect()
    }

    /// Reserves up to `units` (at most [`MAX_RESERVATION`]) on `candidates` in order, one transaction per account,
    /// until covered; what each grants is held at once (a later failure keeps it). Answers the units granted.
    async fn reserve_on(
        &self,
        st: &mut LedgerState,
        candidates: &[AccountQuota],
        units: u32,
    ) -> Result<u32, StoreError> {
        let mut left = units.min(MAX_RESERVATION);
        let mut granted = 0;
        let now = self.clock.now();
        for account in candidates {
            if left == 0 {
                break;
            }
            for g in self
                .store
                .reserve(&OpId::random(), std::slice::from_ref(account), left, now)
                .await?
            {
                left = left.saturating_sub(g.units);
                granted += g.units;
                st.held.push(g);
            }
        }
        Ok(granted)
    }

    /// Reserves `units` up front (the number of charts of the step, at most [`MAX_RESERVATION`]; calls beyond top up).
    /// An empty grant is not an error here: each call will then fail with `CHART_API_LIMIT_EXCEEDED`.
    pub async fn reserve(&self, units: u32) -> Result<(), StoreError> {
        let mut st = self.state.lock().await;
        let usable = self.usable(&st);
        let granted = self.reserve_on(&mut st, &usable, units).await?;
        st.depleted = granted == 0 && units > 0;
        Ok(())
    }

    /// Takes one unit for one call on an account whose plan allows `needs` (size and parameters): a 1920x1080 chart
    /// never goes to a BASIC account. Units held on accounts that do not fit stay for other calls (and are given
    /// back at the end if unused); when none fits, a top-up is reserved on the fitting accounts only.
    ///
    /// Only units of the call's UTC day are spent: Chart-IMG counts the call on the day it arrives, so units reserved
    /// on an earlier day and still held after midnight are dropped (that day's counter keeps them: an over-count of a
    /// day that is over) and the call's unit is reserved on the new day's counter.
    pub async fn acquire_for(&self, top_up: u32, needs: PlanNeeds) -> Result<Unit<'a>, AcquireError> {
        let fits = |id: &AccountId| self.pool.get(id).is_some_and(|a| needs.fits(a.config.plan));
        let mut st = self.state.lock().await;
        loop {
            let today = self.clock.now().date_naive();
            st.held.retain(|g| g.day >= today);
            let exhausted = st.exhausted.clone();
            if let Some(g) = st
                .held
                .iter_mut()
                .find(|g| g.units > 0 && !exhausted.contains(&g.account) && fits(&g.account))
            {
                g.units -= 1;
                let (id, day) = (g.account.clone(), g.day);
                match st.spent.iter_mut().find(|(a, _)| *a == id) {
                    Some((_, n)) => *n += 1,
                    None => st.spent.push((id.clone(), 1)),
                }
                return self
                    .pool
                    .get(&id)
                    .map(|account| Unit { account, day })
                    .ok_or_else(|| AcquireError::AllExhausted(id.to_string()));
            }
            let all = self.usable(&st);
            let usable: Vec<AccountQuota> = all.iter().filter(|q| fits(&q.id)).cloned().collect();
            let every = usable.len() == all.len();
            if usable.is_empty() || (st.depleted && every) {
                let names: Vec<&str> = self
                    .pool
                    .accounts
                    .iter()
                    .filter(|a| fits(&a.config.id))
                    .map(|a| a.config.id.as_str())
                    .collect();
                return Err(AcquireError::AllExhausted(names.join(", ")));
            }
            if self.reserve_on(&mut st, &usable, top_up.max(1)).await? == 0 {
                if every {
                    st.depleted = true;
                }
                let names: Vec<&str> = usable.iter().map(|q| q.id.as_str()).collect();
                return Err(AcquireError::AllExhausted(names.join(", ")));
            }
        }
    }

    /// Whether `unit` may still pay for a call sent now: its day has not ended on this process's clock. A unit
    /// taken just before midnight whose call waited for a rate slot past it is refunded and a new one taken.
    pub fn is_current(&self, unit: &Unit<'_>) -> bool {
        unit.day >= self.clock.now().date_naive()
    }

    /// Puts back a unit whose call was never sent, into a grant of the unit's own day (never another day's).
    pub async fn refund(&self, unit: Unit<'_>) {
        let mut st = self.state.lock().await;
        let id = &unit.account.config.id;
        let Some((_, n)) = st.spent.iter_mut().find(|(a, n)| a == id && *n > 0) else {
            return;
        };
        *n -= 1;
        match st.held.iter_mut().find(|g| g.account == *id && g.day == unit.day) {
            Some(g) => g.units += 1,
            None => st.held.push(Grant {
                account: id.clone(),
                day: unit.day,
                units: 1,
            }),
        }
    }

    /// After `429 Limit Exceeded` to the call `unit` paid for: the account is out for the day that call was counted
    /// on (the answer may come after midnight; the next day's quota is not touched). Its held units go back, and the
    /// store marks it.
    pub async fn exhaust(&self, unit: Unit<'_>) {
        let account = unit.account;
        let mut st = self.state.lock().await;
        let id = account.config.id.clone();
        if !st.exhausted.insert(id.clone()) {
            return;
        }
        let now = self.clock.now();
        let held: Vec<Grant> = st
            .held
            .iter()
            .filter(|g| g.account == id && g.units > 0)
            .cloned()
            .collect();
        st.held.retain(|g| g.account != id);
        drop(st);
        for g in held {
            if let Err(e) = self
                .store
                .give_back(&OpId::random(), &g.account, g.day, g.units, now)
                .await
            {
                warn!(event = "quota_give_back_failed", account = %g.account, error = %e, "could not give back unused units");
            }
        }
        if let Err(e) = self.store.mark_exhausted(&account.config.quota(), unit.day, now).await {
            warn!(event = "quota_mark_exhausted_failed", account = %id, error = %e, "could not mark the account exhausted");
        }
    }

    /// Gives back every unit still held. Failures only over-count, which the invariant allows; they are logged.
    pub async fn finish(&self) -> Vec<(AccountId, u32)> {
        let mut st = self.state.lock().await;
        let held = std::mem::take(&mut st.held);
        let spent = st.spent.clone();
        drop(st);
        let now = self.clock.now();
        for g in held.into_iter().filter(|g| g.units > 0) {
            if let Err(e) = self
                .store
                .give_back(&OpId::random(), &g.account, g.day, g.units, now)
                .await
            {
                warn!(event = "quota_give_back_failed", account = %g.account, error = %e, "could not give back unused units");
            }
        }
        spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_accounts;

    fn pool(plans: &[&str]) -> AccountPool {
        let accounts: Vec<String> = plans
            .iter()
            .enumerate()
            .map(|(i, p)| format!(r#"{{"id":"acc-{i}","apiKey":"k{i}","dailyLimit":100,"plan":"{p}"}}"#))
            .collect();
        AccountPool::new(parse_accounts("test", &format!("[{}]", accounts.join(","))).unwrap())
    }

    #[test]
    fn redact_replaces_every_key_and_a_key_that_extends_another_whole() {
        // acc-0's key `k0` is a prefix of acc-1's `k0-long`: the longer one is replaced first, so no tail is left.
        let json = r#"[{"id":"acc-0","apiKey":"k0","plan":"PRO"},{"id":"acc-1","apiKey":"k0-long","plan":"PRO"}]"#;
        let pool = AccountPool::new(parse_accounts("test", json).unwrap());
        assert_eq!(
            pool.redact("sent k0-long, then k0."),
            "sent <CHART_IMG_API_KEY:acc-1>, then <CHART_IMG_API_KEY:acc-0>."
        );
    }

    #[test]
    fn in_flight_is_burst_plus_rate_times_latency_summed_over_accounts() {
        // PRO: 10/s, burst 15; BASIC: 1/s, burst 3 (from chart_img_spec).
        assert_eq!(in_flight_for(&[Plan::Pro], Duration::from_secs(6), 1000), 15 + 60);
        assert_eq!(
            in_flight_for(&[Plan::Pro, Plan::Basic], Duration::from_secs(6), 1000),
            15 + 60 + 3 + 6
        );
        assert_eq!(
            in_flight_for(&[Plan::Basic], Duration::from_millis(300), 1000),
            3 + 1,
            "0.3 rounds up"
        );
        assert_eq!(
            in_flight_for(&[Plan::Pro], Duration::from_secs(6), 32),
            32,
            "the memory-safe maximum holds"
        );
        assert_eq!(in_flight_for(&[], Duration::from_secs(6), 32), 1, "never zero");
        assert_eq!(in_flight_for(&[Plan::Pro], Duration::from_secs(6), 0), 1, "never zero");
    }

    /// The in-memory usage store, recording the accounts and units of every reservation.
    struct Recording {
        inner: crate::adapters::JsonDocs<crate::adapters::MemoryBackend>,
        calls: std::sync::Mutex<Vec<(Vec<String>, u32)>>,
    }

    #[async_trait::async_trait]
    impl AccountUsageStore for Recording {
        async fn reserve(
            &self,
            op: &OpId,
            accounts: &[AccountQuota],
            units: u32,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<Grant>, StoreError> {
            self.calls
                .lock()
                .unwrap()
                .push((accounts.iter().map(|a| a.id.to_string()).collect(), units));
            self.inner.reserve(op, accounts, units, now).await
        }
        async fn give_back(
            &self,
            op: &OpId,
            a: &AccountId,
            day: chrono::NaiveDate,
            units: u32,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), StoreError> {
            self.inner.give_back(op, a, day, units, now).await
        }
        async fn mark_exhausted(
            &self,
            a: &AccountQuota,
            day: chrono::NaiveDate,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), StoreError> {
            self.inner.mark_exhausted(a, day, now).await
        }
        async fn get_usage(&self, a: &AccountId) -> Result<Option<crate::domain::UsageDoc>, StoreError> {
            self.inner.get_usage(a).await
        }
    }

    fn pool_with_limits(limits: &[u32]) -> AccountPool {
        let accounts: Vec<String> = limits
            .iter()
            .enumerate()
            .map(|(i, l)| format!(r#"{{"id":"acc-{i}","apiKey":"k{i}","dailyLimit":{l},"plan":"PRO"}}"#))
            .collect();
        AccountPool::new(parse_accounts("test", &format!("[{}]", accounts.join(","))).unwrap())
    }

    /// A PRO key (10/s, burst 15) used only by this process lets 14 calls go at once and holds the 15th for a
    /// period: the call of the burst kept back is the tolerance for calls arriving out of step.
    #[tokio::test]
    async fn a_local_key_keeps_one_call_of_its_burst_as_jitter_tolerance() {
        let pool = pool_with_limits(&[500]);
        let account = &pool.accounts()[0];
        let t0 = std::time::Instant::now();
        for _ in 0..14 {
            account.until_ready().await.unwrap();
        }
        account.until_ready().await.unwrap();
        assert!(
            t0.elapsed() >= std::time::Duration::from_millis(90),
            "the 15th call of the burst went at once: {:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn steps_start_on_different_accounts_and_a_reservation_touches_only_the_accounts_it_takes_from() {
        let pool = pool_with_limits(&[500, 500, 500]);
        let store = Recording {
            inner: crate::adapters::JsonDocs::in_memory(),
            calls: Default::default(),
        };
        let clock = crate::ports::SystemClock;
        let mut firsts = HashSet::new();
        for i in 0..12 {
            let ledger = QuotaLedger::new(&pool, &store, &clock, &format!("run-{i}/charts_4h"));
            ledger.reserve(5).await.unwrap();
            let (accounts, _) = store.calls.lock().unwrap().last().cloned().unwrap();
            assert_eq!(accounts.len(), 1, "one usage document per reservation: {accounts:?}");
            firsts.insert(accounts[0].clone());
            ledger.finish().await;
        }
        assert_eq!(
            firsts.len(),
            3,
            "12 steps started on every one of 3 accounts, not all on the first: {firsts:?}"
        );
    }

    #[tokio::test]
    async fn a_reservation_is_bounded_and_moves_on_only_when_an_account_is_short() {
        let pool = pool_with_limits(&[30, 30, 30]);
        let store = Recording {
            inner: crate::adapters::JsonDocs::in_memory(),
            calls: Default::default(),
        };
        let clock = crate::ports::SystemClock;
        let ledger = QuotaLedger::new(&pool, &store, &clock, "run-1/charts_4h");
        ledger.reserve(200).await.unwrap();
        let calls = store.calls.lock().unwrap().clone();
        // At most 50 units: 30 from the step's first account, the 20 left from its second; the third is not read.
        assert_eq!(
            calls.iter().map(|(_, u)| *u).collect::<Vec<_>>(),
            vec![50, 20],
            "{calls:?}"
        );
        assert!(calls.iter().all(|(a, _)| a.len() == 1));
        let order: Vec<String> = ledger.order.iter().map(|q| q.id.to_string()).collect();
        assert_eq!(
            calls.iter().map(|(a, _)| a[0].clone()).collect::<Vec<_>>(),
            order[..2].to_vec()
        );
    }

    /// A clock the test moves.
    struct ManualClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

    impl ManualClock {
        fn at(s: &str) -> Self {
            Self(std::sync::Mutex::new(s.parse().unwrap()))
        }
        fn set(&self, s: &str) {
            *self.0.lock().unwrap() = s.parse().unwrap();
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            *self.0.lock().unwrap()
        }
    }

    async fn counter(store: &dyn AccountUsageStore, id: &str) -> (String, u32, bool) {
        let u = store.get_usage(&AccountId::parse(id).unwrap()).await.unwrap().unwrap();
        (u.day, u.usage_today, u.exhausted)
    }

    /// H2 (b): units reserved on day D and still held after midnight are not spent on D+1, where Chart-IMG counts
    /// the call: the call's unit is reserved on D+1's counter.
    #[tokio::test]
    async fn a_grant_held_across_midnight_is_not_spent_on_the_next_day() {
        let pool = pool_with_limits(&[500]);
        let store = crate::adapters::JsonDocs::in_memory();
        let clock = ManualClock::at("2026-11-28T23:59:59Z");
        let ledger = QuotaLedger::new(&pool, &store, &clock, "run-1/s");
        ledger.reserve(5).await.unwrap();
        ledger.acquire_for(1, PlanNeeds::NONE).await.unwrap();
        assert_eq!(counter(&store, "acc-0").await, ("2026-11-28".into(), 5, false));
        clock.set("2026-11-29T00:00:01Z");
        let unit = ledger.acquire_for(1, PlanNeeds::NONE).await.unwrap();
        assert_eq!(unit.day.to_string(), "2026-11-29");
        assert_eq!(
            counter(&store, "acc-0").await,
            ("2026-11-29".into(), 1, false),
            "the call sent on the 29th is counted on the 29th"
        );
        ledger.finish().await;
        assert_eq!(counter(&store, "acc-0").await, ("2026-11-29".into(), 1, false));
    }

    /// L13: a unit refunded after midnight goes back to the grant of its own day, so it is never spent on another.
    #[tokio::test]
    async fn a_refund_after_midnight_never_pays_for_a_call_of_the_next_day() {
        let pool = pool_with_limits(&[500]);
        let store = crate::adapters::JsonDocs::in_memory();
        let clock = ManualClock::at("2026-11-28T23:59:59Z");
        let ledger = QuotaLedger::new(&pool, &store, &clock, "run-1/s");
        ledger.reserve(1).await.unwrap();
        let unit = ledger.acquire_for(1, PlanNeeds::NONE).await.unwrap();
        clock.set("2026-11-29T00:00:01Z");
        ledger.refund(unit).await;
        ledger.acquire_for(1, PlanNeeds::NONE).await.unwrap();
        assert_eq!(counter(&store, "acc-0").await, ("2026-11-29".into(), 1, false));
    }

    /// M7: `429 Limit Exceeded` answered after midnight to a call sent before it says the old day's quota is used
    /// up, not the new day's.
    #[tokio::test]
    async fn a_limit_exceeded_answered_after_midnight_marks_the_day_the_call_was_sent() {
        let pool = pool_with_limits(&[500]);
        let store = crate::adapters::JsonDocs::in_memory();
        let clock = ManualClock::at("2026-11-28T23:59:59.500Z");
        let ledger = QuotaLedger::new(&pool, &store, &clock, "run-1/s");
        ledger.reserve(2).await.unwrap();
        let unit = ledger.acquire_for(1, PlanNeeds::NONE).await.unwrap();
        clock.set("2026-11-29T00:00:00.500Z");
        ledger.exhaust(unit).await;
        let (day, _, exhausted) = counter(&store, "acc-0").await;
        assert!(
            day == "2026-11-28" && exhausted,
            "the 28th is marked, the 29th untouched: {day} {exhausted}"
        );
        // The next step, on the 29th, gets the account.
        let next = QuotaLedger::new(&pool, &store, &clock, "run-2/s");
        next.reserve(1).await.unwrap();
        let unit = next.acquire_for(1, PlanNeeds::NONE).await.unwrap();
        assert_eq!(unit.day.to_string(), "2026-11-29");
        assert_eq!(counter(&store, "acc-0").await, ("2026-11-29".into(), 1, false));
    }

    fn configs(accounts: &[(&str, u32)]) -> Vec<AccountConfig> {
        let list: Vec<String> = accounts
            .iter()
            .enumerate()
            .map(|(i, (p, d))| format!(r#"{{"id":"acc-{i}","apiKey":"k{i}","dailyLimit":{d},"plan":"{p}"}}"#))
            .collect();
        parse_accounts("test", &format!("[{}]", list.join(","))).unwrap()
    }

    #[test]
    fn the_ideal_bound_comes_from_rates_bursts_daily_limits_and_latency() {
        let ms = |m: u64| Some(Duration::from_millis(m));
        let l = Duration::from_secs(6);
        // One PRO key (10/s, burst 15): 20 calls, the last starts (20 − 15) / 10 s = 0.5 s in.
        assert_eq!(ideal_bound(20, l, &configs(&[("PRO", 500)])), ms(6500));
        assert_eq!(ideal_bound(40, l, &configs(&[("PRO", 500)])), ms(8500));
        assert_eq!(
            ideal_bound(15, l, &configs(&[("PRO", 500)])),
            ms(6000),
            "the burst starts at once"
        );
        assert_eq!(ideal_bound(0, l, &configs(&[("PRO", 500)])), ms(0));
        // BASIC (1/s, burst 3) + two PRO: 33 at once, then 21 a second (BASIC's start on whole seconds).
        let three = configs(&[("BASIC", 50), ("PRO", 500), ("PRO", 500)]);
        assert_eq!(ideal_bound(33, l, &three), ms(6000));
        assert_eq!(
            ideal_bound(54, l, &three),
            ms(7000),
            "20 PRO starts up to 1.0 s and BASIC's 4th at 1.0 s"
        );
        // A daily limit caps a key: two BASIC keys of 5 calls a day cannot take an 11th.
        let small = configs(&[("BASIC", 5), ("BASIC", 5)]);
        assert_eq!(
            ideal_bound(10, l, &small),
            ms(8000),
            "each key's 5th call starts at (5 − 3) / 1 s"
        );
        assert_eq!(ideal_bound(11, l, &small), None);
        assert_eq!(ideal_bound(1, l, &[]), None);
    }

    #[test]
    fn the_bound_for_drawn_latencies_gives_the_longest_calls_the_earliest_starts() {
        let ms = Duration::from_millis;
        let pro = configs(&[("PRO", 500)]);
        // Equal durations: the same as `ideal_bound`.
        assert_eq!(
            ideal_bound_for(&vec![ms(6000); 20], &pro),
            ideal_bound(20, ms(6000), &pro)
        );
        assert_eq!(ideal_bound_for(&vec![ms(6000); 40], &pro), Some(ms(8500)));
        assert_eq!(ideal_bound_for(&[], &pro), Some(ms(0)));
        // 16 calls on PRO: 15 start at 0, the 16th at 0.1 s. The 25 s call takes a burst start; the 16th start gets
        // the shortest call (4 s): max(25 s, 0.1 + 4 s) = 25 s, whatever order the durations came in.
        let mut drawn = vec![ms(5000); 14];
        drawn.extend([ms(4000), ms(25_000)]);
        assert_eq!(ideal_bound_for(&drawn, &pro), Some(ms(25_000)));
        drawn.reverse();
        assert_eq!(ideal_bound_for(&drawn, &pro), Some(ms(25_000)));
        // The late starts bind when the short calls are not short enough: 40 calls, slots 0 (×15) then 0.1 … 2.5 s;
        // 39 of 5 s and one of 7 s: the last start (2.5 s) gets a 5 s call.
        let mut drawn = vec![ms(5000); 39];
        drawn.push(ms(7000));
        assert_eq!(ideal_bound_for(&drawn, &pro), Some(ms(7500)));
        // (In the given order the 7 s call would take the last start: 9.5 s; the bound does not depend on order.)
        // Daily limits still cap the calls.
        assert_eq!(
            ideal_bound_for(&[ms(1); 11], &configs(&[("BASIC", 5), ("BASIC", 5)])),
            None
        );
    }

    #[test]
    fn a_new_pool_assumes_the_default_latency() {
        assert_eq!(pool(&["PRO"]).latency().current(), DEFAULT_CALL_LATENCY);
        assert_eq!(
            pool(&["PRO"]).in_flight(1000),
            in_flight_for(&[Plan::Pro], DEFAULT_CALL_LATENCY, 1000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_in_flight_count_follows_the_latency_seen() {
        let p = pool(&["PRO", "PRO"]);
        assert_eq!(p.in_flight(1000), 2 * (15 + 60));
        // Calls that take 1 s on the paused clock pull the estimate from 6 s towards 1 s.
        for _ in 0..40 {
            let started = tokio::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(1)).await;
            p.latency().observe(started.elapsed());
        }
        let l = p.latency().current().as_secs_f64();
        assert!((l - 1.0).abs() < 0.01, "estimate {l} s after 40 calls of 1 s");
        // 2 × (15 + 10 × ~1.0 s), the tiny excess over 1 s of the EWMA rounding up by one at most.
        assert!((50..=51).contains(&p.in_flight(1000)), "{}", p.in_flight(1000));
        // One slow call moves it by the EWMA weight only.
        p.latency().observe(Duration::from_secs(11));
        let l = p.latency().current().as_secs_f64();
        assert!((l - 3.0).abs() < 0.01, "estimate {l} s");
        // Clones share the estimate (one per process).
        assert_eq!(p.clone().latency().current(), p.latency().current());
    }
}
