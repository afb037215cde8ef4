//! Accounts at run time: the process-wide pool (keys, each key's pacing [`crate::pacing`], and the quota this process
//! holds on each key) and the per-step ledger that takes one unit of quota per call from the key the call goes to.
//!
//! Invariant: every call sent to Chart-IMG was paid for by one unit taken from a grant before it was sent, and only
//! units never sent are given back. So `usageToday` never under-counts. Units follow calls: a caller first picks the
//! key that will send soonest ([`QuotaLedger::choose`]), waits for that key's rate slot, and only then takes its unit
//! ([`QuotaLedger::take`]), reserved shortly before that slot; a reservation covers the callers queued on that key in
//! this process, at most what the process sent on the key in the last second plus one, and at most one second of the
//! key's rate ([`RESERVE_AHEAD`]), so a process that dies leaves at most about one second of its own rate per key
//! counted, plus the calls it had taken a unit for and not yet sent (killed between the take and the request's
//! arrival). Each
//! reservation and give-back carries its own operation id ([`OpId`]), so a transaction retried after a lost commit
//! reply applies once.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use governor::{Quota, RateLimiter};
use tracing::warn;

use crate::config::AccountConfig;
use crate::domain::request::{check_request, TemplateInvalid};
use crate::domain::usage::preference_order;
use crate::domain::{AccountId, AccountQuota, ChartRequest, OpId, PlanNeeds};
use crate::pacing::{Pace, SharedRate, WindowPacer};
use crate::ports::{AccountUsageStore, Clock, StoreError};
use chart_img_spec::Plan;

/// How far ahead of its calls a process reserves quota on a key: one reservation covers the callers queued on the
/// key, at most this long of its plan's rate (10 units on PRO, 1 on BASIC). So a busy key's usage document sees
/// about one reservation per second per instance (what a Firestore document sustains), and a process that dies
/// leaves at most this much of each key's rate counted.
pub const RESERVE_AHEAD: Duration = Duration::from_secs(1);

/// See [`Account::slot_lasts`].
const LOCAL_SLOT_LASTS: Duration = Duration::from_millis(250);

/// How long before its rate slot a caller reserves quota units on the key when the process holds none
/// ([`QuotaLedger::until_slot`]): longer than a reservation takes on a busy usage document, so the unit is there at
/// the slot; short, so a process killed while its callers wait for slots further off (a key shared by busy
/// instances, a BASIC key) holds no units for them.
pub const PREFETCH_LEAD: Duration = Duration::from_millis(300);

/// One configured account with the pacing that keeps its key within its plan's rate and burst, and the quota this
/// process holds on it.
#[derive(Debug)]
pub struct Account {
    pub config: AccountConfig,
    pace: Pace,
    /// Callers of this process that chose this key and have not taken their unit yet (waiting for a rate slot or for
    /// the reservation): the size of the next reservation, and the key's queue when a caller picks one.
    queued: AtomicUsize,
    /// Units reserved on this key by this process and not sent yet, per UTC day. Process-wide, so steps running
    /// together share one reservation per key instead of holding one each.
    held: std::sync::Mutex<Vec<(NaiveDate, u32)>>,
    /// One reservation at a time per key in this process; callers needing a unit wait here, others never do. The
    /// reservation's task holds it to the end (its caller may be gone), so a give-back that takes it first sees the
    /// units of every reservation begun before.
    reserving: Arc<tokio::sync::Mutex<()>>,
    /// When this process took its units on the key in the last [`RESERVE_AHEAD`]: its own send rate on the key,
    /// which other instances sharing the key may keep well below the plan's.
    taken: std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
}

impl Account {
    /// The most units one reservation takes on this key: [`RESERVE_AHEAD`] of its plan's rate, at least one.
    pub fn reservation_cap(&self) -> u32 {
        let rate = self.config.plan.limits().rate_per_sec;
        (rate * RESERVE_AHEAD.as_secs_f64()).ceil().clamp(1.0, 10_000.0) as u32
    }

    /// The size of the next reservation: the callers queued on the key, at most what this process sent on it in the
    /// last [`RESERVE_AHEAD`] plus one (so a key shared with other instances holds about one second of this
    /// process's own rate, and an idle one grows from one unit), and at most [`Account::reservation_cap`].
    fn reservation_size(&self) -> u32 {
        let now = tokio::time::Instant::now();
        let recent = {
            let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
            while taken.front().is_some_and(|t| now.duration_since(*t) > RESERVE_AHEAD) {
                taken.pop_front();
            }
            taken.len() as u32
        };
        let queued = self.queued.load(Ordering::SeqCst) as u32;
        queued.clamp(1, recent.saturating_add(1).clamp(1, self.reservation_cap()))
    }

    fn note_taken(&self) {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        taken.push_back(tokio::time::Instant::now());
        let cap = self.reservation_cap() as usize;
        while taken.len() > cap {
            taken.pop_front();
        }
    }

    /// The spacing of the key's calls at its plan's rate (`1 / rate`).
    pub fn period(&self) -> Duration {
        let rate = self.config.plan.limits().rate_per_sec;
        Duration::from_secs_f64(1.0 / if rate.is_finite() && rate > 0.0 { rate } else { 1.0 })
    }

    /// How long after its slot's time a call may still be sent; later, it waits for a fresh slot. Shared pacing:
    /// its [`crate::pacing::WindowSettings::jitter`], which its proof budgets for. Local pacing (its limiter keeps
    /// one call of the burst in reserve): one period, at most [`LOCAL_SLOT_LASTS`].
    pub fn slot_lasts(&self) -> Duration {
        match &self.pace {
            Pace::Local(_) => self.period().min(LOCAL_SLOT_LASTS),
            Pace::Shared(p) => p.late(),
        }
    }

    /// Units this process holds on the key for `day` or a later day.
    fn held_from(&self, day: NaiveDate) -> u32 {
        self.lock_held().iter().filter(|(d, _)| *d >= day).map(|(_, n)| n).sum()
    }

    /// Units this process holds on the key (all days).
    pub fn held(&self) -> u32 {
        self.lock_held().iter().map(|(_, n)| n).sum()
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, Vec<(NaiveDate, u32)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one held unit of `today` (or a later day: another instance's clock passed midnight first); units of
    /// earlier days are dropped (their day's counter keeps them: an over-count of a day that is over).
    fn take_held(&self, today: NaiveDate) -> Option<NaiveDate> {
        let mut held = self.lock_held();
        held.retain(|(day, n)| *day >= today && *n > 0);
        let (day, n) = held.iter_mut().find(|(day, _)| *day >= today)?;
        *n -= 1;
        Some(*day)
    }

    fn put_back(&self, day: NaiveDate, units: u32) {
        let mut held = self.lock_held();
        match held.iter_mut().find(|(d, _)| *d == day) {
            Some((_, n)) => *n += units,
            None => held.push((day, units)),
        }
    }

    /// Empties the held units (to give them back).
    fn take_all_held(&self) -> Vec<(NaiveDate, u32)> {
        std::mem::take(&mut *self.lock_held())
    }

    /// Waits until the plan allows one more call with this key: from this process alone ([`Pace::Local`]), or from
    /// every instance together ([`Pace::Shared`]), which can fail when the window store does.
    pub async fn until_ready(&self) -> Result<(), StoreError> {
        self.pace.until_ready().await
    }

    /// Takes this process's next rate slot on the key and answers its time ([`Pace::slot`]).
    pub async fn slot(&self) -> Result<tokio::time::Instant, StoreError> {
        self.pace.slot().await
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
    let mut longest_first = latencies.to_vec();
    longest_first.sort_unstable_by(|a, b| b.cmp(a));
    ideal_bound_in_order(&longest_first, accounts)
}

/// [`ideal_bound`] for calls whose durations come in a fixed order, the `k`-th call started getting the `k`-th
/// duration: the earliest finish when a server draws each call's latency in the order the calls arrive (as
/// mock-chart-img's seeded dice does), whatever was asked. Any scheduler that starts its `k`-th call at the `k`-th
/// earliest start meets exactly these durations; one starting calls later meets them later. Not a bound against a
/// scheduler that knew the durations (that is [`ideal_bound_for`], never above this), but what the keys' rates and
/// bursts allow with the latencies a run met, tail included.
pub fn ideal_bound_in_order(latencies: &[Duration], accounts: &[AccountConfig]) -> Option<Duration> {
    let starts = earliest_starts(latencies.len() as u64, accounts)?;
    Some(
        starts
            .iter()
            .zip(latencies)
            .map(|(s, d)| Duration::from_secs_f64(*s) + *d)
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
            let limits = config.plan.limits();
            Pace::Shared(WindowPacer::new(
                config.id.clone(),
                limits.rate_per_sec,
                limits.burst,
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
                queued: AtomicUsize::new(0),
                held: Default::default(),
                reserving: Default::default(),
                taken: Default::default(),
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

/// No account whose plan fits a call has quota left today (their ids, comma-separated).
#[derive(Debug, thiserror::Error)]
#[error("every Chart-IMG account is exhausted for today ({0})")]
pub struct AllExhausted(pub String);

/// One unit of quota taken for one call: the account to send it with, and the UTC day whose counter paid for it.
/// A `429 Limit Exceeded` the call gets marks that day ([`QuotaLedger::exhaust`]).
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    pub account: &'a Account,
    pub day: NaiveDate,
}

/// A caller's place in the queue of the key it chose ([`QuotaLedger::choose`]): counted in the key's queue until
/// dropped (the unit taken, or the caller stopped).
#[derive(Debug)]
pub struct Queued<'a> {
    account: &'a Account,
}

impl<'a> Queued<'a> {
    pub fn account(&self) -> &'a Account {
        self.account
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.account.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct LedgerState {
    /// Accounts this step found out of quota (a reservation came back empty, or `429 Limit Exceeded`).
    exhausted: HashSet<AccountId>,
    /// Units spent per account (calls sent), for the report.
    spent: Vec<(AccountId, u32)>,
}

/// The quota of one step. Each call goes to the key that fits its plan needs and sends soonest, so a step uses every
/// fitting key at its own rate; the unit is taken from what the process holds on that key, topped up by a
/// reservation of the callers queued there (at most [`Account::reservation_cap`], one usage document per
/// transaction). Ties go to the step's own [`preference_order`], so idle steps spread over the accounts.
pub struct QuotaLedger<'a> {
    pool: &'a AccountPool,
    store: Arc<dyn AccountUsageStore>,
    clock: &'a dyn Clock,
    /// The configured accounts in this step's preference order.
    order: Vec<AccountQuota>,
    state: std::sync::Mutex<LedgerState>,
}

impl<'a> QuotaLedger<'a> {
    /// The ledger of the step `key` (`<runId>/<stepId>`: it picks the step's account order).
    pub fn new(pool: &'a AccountPool, store: Arc<dyn AccountUsageStore>, clock: &'a dyn Clock, key: &str) -> Self {
        let all: Vec<AccountQuota> = pool.accounts.iter().map(|a| a.config.quota()).collect();
        Self {
            pool,
            store,
            clock,
            order: preference_order(key, &all),
            state: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Picks the key a call that needs `needs` goes to: among the accounts whose plan fits and that this step has not
    /// found exhausted, the one whose queue in this process is shortest for its rate (`queued / rate`: the call
    /// expected to start soonest), ties in the step's preference order. The caller is counted in that key's queue
    /// until the [`Queued`] is dropped. Fails when no fitting account is left.
    pub fn choose(&self, needs: PlanNeeds) -> Result<Queued<'a>, AllExhausted> {
        let st = self.lock();
        let fitting: Vec<&'a Account> = self
            .order
            .iter()
            .filter_map(|q| self.pool.get(&q.id))
            .filter(|a| needs.fits(a.config.plan))
            .collect();
        let best = fitting
            .iter()
            .filter(|a| !st.exhausted.contains(&a.config.id))
            .min_by(|a, b| wait_score(a).total_cmp(&wait_score(b)));
        match best {
            Some(account) => {
                account.queued.fetch_add(1, Ordering::SeqCst);
                Ok(Queued { account })
            }
            None => {
                let names: Vec<&str> = self
                    .pool
                    .accounts
                    .iter()
                    .filter(|a| needs.fits(a.config.plan))
                    .map(|a| a.config.id.as_str())
                    .collect();
                Err(AllExhausted(names.join(", ")))
            }
        }
    }

    /// Takes the next rate slot of `queued`'s key and waits for it; from [`PREFETCH_LEAD`] before the slot, makes
    /// sure the process holds a unit on the key for it ([`QuotaLedger::prefetch`]), so the reservation's round trip
    /// is hidden behind the wait while a caller whose slot is seconds away holds nothing until then. Answers the
    /// slot's time: a reservation slower than the lead (a frozen or busy store) returns after it, and the caller must
    /// see how stale its slot is by then, not take the return for the slot. Only the shared pacing fails (its store).
    pub async fn until_slot(&self, queued: &Queued<'a>) -> Result<tokio::time::Instant, StoreError> {
        let at = queued.account.slot().await?;
        let prefetch = async {
            tokio::time::sleep_until(at.checked_sub(PREFETCH_LEAD).unwrap_or(at)).await;
            self.prefetch(queued).await
        };
        tokio::join!(tokio::time::sleep_until(at), prefetch);
        Ok(at)
    }

    /// Makes sure the process holds a unit on the key of `queued` for when its rate slot comes
    /// ([`QuotaLedger::until_slot`]), so the call goes at its slot time. Reserves like [`QuotaLedger::take`] and takes nothing; a failure is left for `take` to meet and report.
    pub async fn prefetch(&self, queued: &Queued<'a>) {
        let _ = self
            .reserve_if_none(queued.account, self.clock.now().date_naive())
            .await;
    }

    /// Reserves on `account` when the process holds no unit of `today` or later on it (one reservation at a time per
    /// key): the callers queued on the key, at most [`Account::reservation_cap`]. Answers `false` when the key's
    /// quota for today is used up (the step then stops choosing it).
    async fn reserve_if_none(&self, account: &'a Account, today: NaiveDate) -> Result<bool, StoreError> {
        if account.held_from(today) > 0 {
            return Ok(true);
        }
        let one = account.reserving.clone().lock_owned().await;
        if account.held_from(today) > 0 {
            return Ok(true); // another caller reserved while this one waited
        }
        let want = account.reservation_size();
        let now = self.clock.now();
        // The reservation runs as its own task and puts what it got into the process's units there: a caller dropped
        // mid-reservation (its step abandoned at SIGTERM or a lost lease) must not lose units the store already
        // counted, or they would stay counted until the day ends.
        let index = self
            .pool
            .accounts
            .iter()
            .position(|a| std::ptr::eq(a, account))
            .expect("an account of this pool");
        let (accounts, store, quota) = (self.pool.accounts.clone(), self.store.clone(), account.config.quota());
        let reservation = tokio::spawn(async move {
            let _one = one;
            let grants = store
                .reserve(&OpId::random(), std::slice::from_ref(&quota), want, now)
                .await?;
            let mut granted = 0;
            for g in grants.into_iter().filter(|g| g.units > 0) {
                granted += g.units;
                accounts[index].put_back(g.day, g.units);
            }
            tracing::debug!(event = "quota_reserved", account = %quota.id, asked = want, granted, "reserved units of the key's daily quota");
            Ok::<u32, StoreError>(granted)
        });
        let granted = reservation
            .await
            .map_err(|e| StoreError::Unavailable(format!("the quota reservation task failed: {e}")))??;
        if granted == 0 {
            self.lock().exhausted.insert(account.config.id.clone());
        }
        Ok(granted > 0)
    }

    /// Takes the unit of a caller that holds a rate slot on its key: from what the process holds on the key for
    /// today (usually reserved by [`QuotaLedger::prefetch`] during the wait), else from a new reservation. `None` when
    /// the key's quota for today is used up (the step stops choosing it). Only callers that need a reservation wait
    /// for one; no lock is held across the store's round trip otherwise.
    pub async fn take(&self, queued: Queued<'a>) -> Result<Option<Unit<'a>>, StoreError> {
        let account = queued.account;
        loop {
            let today = self.clock.now().date_naive();
            if let Some(day) = account.take_held(today) {
                drop(queued);
                account.note_taken();
                self.count_spent(&account.config.id, 1);
                return Ok(Some(Unit { account, day }));
            }
            if !self.reserve_if_none(account, today).await? {
                return Ok(None);
            }
        }
    }

    fn count_spent(&self, id: &AccountId, units: i64) {
        let mut st = self.lock();
        match st.spent.iter_mut().find(|(a, _)| a == id) {
            Some((_, n)) => *n = (i64::from(*n) + units).max(0) as u32,
            None if units > 0 => st.spent.push((id.clone(), units as u32)),
            None => {}
        }
    }

    /// Puts back a unit whose call was never sent, into the process's units of the unit's own day (never another
    /// day's: after midnight it is given back with the rest, not spent).
    pub async fn refund(&self, unit: Unit<'_>) {
        self.count_spent(&unit.account.config.id, -1);
        unit.account.put_back(unit.day, 1);
    }

    /// After `429 Limit Exceeded` to the call `unit` paid for: the account is out for the day that call was counted
    /// on (the answer may come after midnight; the next day's quota is not touched). The units the process holds on
    /// it go back, and the store marks it.
    pub async fn exhaust(&self, unit: Unit<'_>) {
        let account = unit.account;
        let id = account.config.id.clone();
        if !self.lock().exhausted.insert(id.clone()) {
            return;
        }
        let now = self.clock.now();
        let held = {
            let _one = account.reserving.lock().await;
            account.take_all_held()
        };
        for (day, units) in held {
            self.give_back(&id, day, units, now).await;
        }
        if let Err(e) = self.store.mark_exhausted(&account.config.quota(), unit.day, now).await {
            warn!(event = "quota_mark_exhausted_failed", account = %id, error = %e, "could not mark the account exhausted");
        }
    }

    async fn give_back(&self, id: &AccountId, day: NaiveDate, units: u32, now: chrono::DateTime<chrono::Utc>) {
        if units == 0 {
            return;
        }
        if let Err(e) = self.store.give_back(&OpId::random(), id, day, units, now).await {
            warn!(event = "quota_give_back_failed", account = %id, error = %e, "could not give back unused units");
        }
    }

    /// The units spent per account, after giving back what the process holds on every key no caller is queued on
    /// (a live process returns what it did not send; a key still in use keeps its units for the callers queued).
    /// Failures only over-count, which the invariant allows; they are logged.
    pub async fn finish(&self) -> Vec<(AccountId, u32)> {
        let spent = self.lock().spent.clone();
        let now = self.clock.now();
        for account in self.pool.accounts.iter() {
            if account.queued.load(Ordering::SeqCst) > 0 {
                continue;
            }
            // After any reservation still running (a stopped caller's): its units are given back too.
            let _one = account.reserving.lock().await;
            for (day, units) in account.take_all_held() {
                self.give_back(&account.config.id, day, units, now).await;
            }
        }
        spent
    }
}

/// A key's queue measured in time: the callers queued on it over its plan's rate.
fn wait_score(account: &Account) -> f64 {
    let rate = account.config.plan.limits().rate_per_sec.max(f64::MIN_POSITIVE);
    account.queued.load(Ordering::SeqCst) as f64 / rate
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

    /// The in-memory usage store, recording the accounts and units of every reservation, each taking `delay` (a
    /// frozen or busy usage document when not zero).
    struct Recording {
        inner: crate::adapters::JsonDocs<crate::adapters::MemoryBackend>,
        calls: std::sync::Mutex<Vec<(Vec<String>, u32)>>,
        delay: Duration,
    }

    #[async_trait::async_trait]
    impl AccountUsageStore for Recording {
        async fn reserve(
            &self,
            op: &OpId,
            accounts: &[AccountQuota],
            units: u32,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<Vec<crate::domain::Grant>, StoreError> {
            self.calls
                .lock()
                .unwrap()
                .push((accounts.iter().map(|a| a.id.to_string()).collect(), units));
            tokio::time::sleep(self.delay).await;
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
        let store = Arc::new(Recording {
            inner: crate::adapters::JsonDocs::in_memory(),
            calls: Default::default(),
            delay: Duration::ZERO,
        });
        let clock = crate::ports::SystemClock;
        let mut firsts = HashSet::new();
        for i in 0..12 {
            let ledger = QuotaLedger::new(&pool, store.clone(), &clock, &format!("run-{i}/charts_4h"));
            let queued = ledger.choose(PlanNeeds::NONE).unwrap();
            ledger.take(queued).await.unwrap().unwrap();
            let (accounts, units) = store.calls.lock().unwrap().last().cloned().unwrap();
            assert_eq!(accounts.len(), 1, "one usage document per reservation: {accounts:?}");
            assert_eq!(units, 1, "one caller queued, one unit");
            firsts.insert(accounts[0].clone());
            ledger.finish().await;
        }
        assert_eq!(
            firsts.len(),
            3,
            "12 steps started on every one of 3 accounts, not all on the first: {firsts:?}"
        );
    }

    /// Units follow calls: a reservation covers the callers queued on the key, at most what the process sent on it in
    /// the last second plus one, never more than one second of the key's rate (10 on PRO, 1 on BASIC), so a process
    /// that dies leaves at most that counted on each key.
    #[tokio::test]
    async fn a_reservation_covers_the_queued_callers_up_to_one_second_of_the_keys_rate() {
        let store = Arc::new(Recording {
            inner: crate::adapters::JsonDocs::in_memory(),
            calls: Default::default(),
            delay: Duration::ZERO,
        });
        let clock = crate::ports::SystemClock;
        for (plan, cap) in [("PRO", 10), ("BASIC", 1)] {
            store.calls.lock().unwrap().clear();
            let pool = pool(&[plan]);
            let ledger = QuotaLedger::new(&pool, store.clone(), &clock, "run-1/s");
            let queued: Vec<Queued<'_>> = (0..4).map(|_| ledger.choose(PlanNeeds::NONE).unwrap()).collect();
            let mut queued = queued.into_iter();
            ledger.take(queued.next().unwrap()).await.unwrap().unwrap();
            let first = store.calls.lock().unwrap().clone();
            assert_eq!(
                first,
                vec![(vec!["acc-0".to_string()], 1)],
                "{plan}: an idle process reserves one unit, however many are queued"
            );
            let more: Vec<Queued<'_>> = (0..30).map(|_| ledger.choose(PlanNeeds::NONE).unwrap()).collect();
            for q in queued.chain(more) {
                ledger.take(q).await.unwrap().unwrap();
            }
            let calls = store.calls.lock().unwrap().clone();
            assert!(calls.iter().all(|(_, u)| *u <= cap), "{plan}: {calls:?}");
            assert!(
                calls.iter().any(|(_, u)| *u == cap),
                "{plan}: sizes grow with the process's own send rate up to the cap: {calls:?}"
            );
            assert_eq!(
                calls.iter().map(|(_, u)| u).sum::<u32>(),
                34,
                "{plan}: one unit per call, none left"
            );
            assert_eq!(pool.accounts()[0].held(), 0);
            ledger.finish().await;
        }
    }

    /// A live process returns what it did not send: callers that stop before their call (their `Queued` dropped)
    /// leave their units held, and the step's end gives them back.
    #[tokio::test]
    async fn units_of_callers_that_stopped_go_back_at_the_steps_end() {
        let pool = pool(&["PRO"]);
        let store = Arc::new(crate::adapters::JsonDocs::in_memory());
        let clock = crate::ports::SystemClock;
        let ledger = QuotaLedger::new(&pool, store.clone(), &clock, "run-1/s");
        take_one(&ledger).await;
        let mut queued: Vec<Queued<'_>> = (0..5).map(|_| ledger.choose(PlanNeeds::NONE).unwrap()).collect();
        let unit = ledger.take(queued.remove(0)).await.unwrap().unwrap();
        assert_eq!(
            unit.account.held(),
            1,
            "reserved for two of the five queued (one sent in the last second, plus one), one taken"
        );
        drop(queued);
        let spent = ledger.finish().await;
        assert_eq!(spent, vec![(AccountId::parse("acc-0").unwrap(), 2)]);
        assert_eq!(counter(store.as_ref(), "acc-0").await.1, 2, "usage = the two calls");
        assert_eq!(pool.accounts()[0].held(), 0);
    }

    /// A step's calls go to every key that fits, in proportion to the keys' rates: with BASIC (1/s) + PRO + PRO
    /// (10/s each) queued callers spread about 1 : 10 : 10, and a 1920x1080 chart never goes to BASIC.
    #[tokio::test]
    async fn a_steps_calls_spread_over_every_fitting_key_by_rate() {
        let pool = pool(&["BASIC", "PRO", "PRO"]);
        let store = Arc::new(crate::adapters::JsonDocs::in_memory());
        let clock = crate::ports::SystemClock;
        let ledger = QuotaLedger::new(&pool, store.clone(), &clock, "run-1/s");
        let queued: Vec<Queued<'_>> = (0..42).map(|_| ledger.choose(PlanNeeds::NONE).unwrap()).collect();
        let per = |id: &str| queued.iter().filter(|q| q.account().config.id.as_str() == id).count();
        assert!((1..=3).contains(&per("acc-0")), "BASIC got {}", per("acc-0"));
        assert!(
            (19..=21).contains(&per("acc-1")) && (19..=21).contains(&per("acc-2")),
            "PRO got {} and {}",
            per("acc-1"),
            per("acc-2")
        );
        let big = PlanNeeds {
            width: 1920,
            height: 1080,
            ..PlanNeeds::NONE
        };
        let only_pro: Vec<Queued<'_>> = (0..10).map(|_| ledger.choose(big).unwrap()).collect();
        assert!(only_pro.iter().all(|q| q.account().config.plan == Plan::Pro));
    }

    /// One caller: chooses its key and takes its unit.
    async fn take_one<'a>(ledger: &QuotaLedger<'a>) -> Unit<'a> {
        ledger
            .take(ledger.choose(PlanNeeds::NONE).unwrap())
            .await
            .unwrap()
            .unwrap()
    }

    /// Takes a unit alone (so the process has sent on the key in the last second), then one of two queued callers:
    /// that reservation covers both, and the other's unit stays held. Answers the second unit taken.
    async fn take_leaving_one_held<'a>(ledger: &QuotaLedger<'a>) -> Unit<'a> {
        take_one(ledger).await;
        let (first, waiting) = (
            ledger.choose(PlanNeeds::NONE).unwrap(),
            ledger.choose(PlanNeeds::NONE).unwrap(),
        );
        let unit = ledger.take(first).await.unwrap().unwrap();
        drop(waiting);
        assert_eq!(unit.account.held(), 1);
        unit
    }

    /// A caller whose slot is seconds away (another instance holds the shared key's next 2 s) reserves its unit only
    /// [`PREFETCH_LEAD`] before the slot: killed while it waits, the process leaves nothing counted for it.
    #[tokio::test(start_paused = true)]
    async fn a_caller_whose_slot_is_seconds_away_holds_no_unit_until_just_before_it() {
        use crate::domain::WindowAsk;
        use crate::pacing::WindowSettings;
        use crate::ports::RateWindowStore;
        let docs = Arc::new(crate::adapters::JsonDocs::in_memory());
        let clock = Arc::new(ManualClock::at("2026-12-01T10:00:00Z"));
        let shared = SharedRate {
            store: docs.clone(),
            clock: clock.clone(),
            holder: "this".into(),
            windows: WindowSettings::default(),
        };
        let configs = parse_accounts(
            "test",
            r#"[{"id":"acc-0","apiKey":"k0","dailyLimit":100,"plan":"PRO"}]"#,
        );
        let pool = AccountPool::shared(configs.unwrap(), shared);
        let other = WindowAsk {
            op: OpId::random(),
            holder: "other".into(),
            calls: 30,
            period: chrono::Duration::milliseconds(100),
            burst: chrono::Duration::zero(),
        };
        docs.reserve_window(&AccountId::parse("acc-0").unwrap(), &other, clock.now())
            .await
            .unwrap();
        let ledger = QuotaLedger::new(&pool, docs.clone(), clock.as_ref(), "run-1/charts_4h");
        let queued = ledger.choose(PlanNeeds::NONE).unwrap();
        let account = queued.account();
        let t0 = tokio::time::Instant::now();
        let waiting = ledger.until_slot(&queued);
        tokio::pin!(waiting);
        tokio::select! {
            _ = &mut waiting => panic!("the slot came while the other instance held the key"),
            _ = tokio::time::sleep(Duration::from_millis(1500)) => {}
        }
        assert_eq!(account.held(), 0, "a unit reserved 1.5 s before a slot 2.4 s away");
        let slot = waiting.await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(2400), "{:?}", t0.elapsed());
        assert_eq!(
            slot - t0,
            Duration::from_millis(2400),
            "the slot the key's shared tolerance allows after the other instance's 3 s of calls (PRO: 0.6 s early)"
        );
        assert_eq!(account.held(), 1, "reserved in time for the slot");
    }

    /// A reservation slower than [`PREFETCH_LEAD`] (a freeze of the usage document) returns after the slot: the slot
    /// answered is the slot's own time, so the caller sees it is stale (and waits for a fresh one) instead of taking
    /// the late return for its slot. Taking the return for the slot let every caller queued behind a freeze send at
    /// once when it thawed: `429 Too Many Requests` in the 100-run chaos run.
    #[tokio::test(start_paused = true)]
    async fn a_slot_whose_reservation_came_back_late_is_answered_at_its_own_time() {
        let store = Arc::new(Recording {
            inner: crate::adapters::JsonDocs::in_memory(),
            calls: Default::default(),
            delay: Duration::from_secs(2),
        });
        let pool = pool_with_limits(&[100]);
        let clock = crate::ports::SystemClock;
        let ledger = QuotaLedger::new(&pool, store, &clock, "run-1/charts_4h");
        let queued = ledger.choose(PlanNeeds::NONE).unwrap();
        let account = queued.account();
        let t0 = tokio::time::Instant::now();
        let slot = ledger.until_slot(&queued).await.unwrap();
        assert!(
            slot <= t0 + Duration::from_millis(1),
            "a key nobody else uses: the slot is now, {:?}",
            slot - t0
        );
        assert!(
            slot.elapsed() >= Duration::from_secs(2),
            "returned when the reservation did: {:?}",
            slot.elapsed()
        );
        assert_eq!(account.held(), 1);
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
        let store = Arc::new(crate::adapters::JsonDocs::in_memory());
        let clock = ManualClock::at("2026-11-28T23:59:59Z");
        let ledger = QuotaLedger::new(&pool, store.clone(), &clock, "run-1/s");
        take_leaving_one_held(&ledger).await;
        assert_eq!(counter(store.as_ref(), "acc-0").await, ("2026-11-28".into(), 3, false));
        clock.set("2026-11-29T00:00:01Z");
        let unit = take_one(&ledger).await;
        assert_eq!(unit.day.to_string(), "2026-11-29");
        assert_eq!(
            counter(store.as_ref(), "acc-0").await,
            ("2026-11-29".into(), 1, false),
            "the call sent on the 29th is counted on the 29th"
        );
        ledger.finish().await;
        assert_eq!(counter(store.as_ref(), "acc-0").await, ("2026-11-29".into(), 1, false));
    }

    /// L13: a unit refunded after midnight goes back to the grant of its own day, so it is never spent on another.
    #[tokio::test]
    async fn a_refund_after_midnight_never_pays_for_a_call_of_the_next_day() {
        let pool = pool_with_limits(&[500]);
        let store = Arc::new(crate::adapters::JsonDocs::in_memory());
        let clock = ManualClock::at("2026-11-28T23:59:59Z");
        let ledger = QuotaLedger::new(&pool, store.clone(), &clock, "run-1/s");
        let unit = take_one(&ledger).await;
        clock.set("2026-11-29T00:00:01Z");
        ledger.refund(unit).await;
        let unit = take_one(&ledger).await;
        assert_eq!(unit.day.to_string(), "2026-11-29");
        assert_eq!(counter(store.as_ref(), "acc-0").await, ("2026-11-29".into(), 1, false));
    }

    /// M7: `429 Limit Exceeded` answered after midnight to a call sent before it says the old day's quota is used
    /// up, not the new day's.
    #[tokio::test]
    async fn a_limit_exceeded_answered_after_midnight_marks_the_day_the_call_was_sent() {
        let pool = pool_with_limits(&[500]);
        let store = Arc::new(crate::adapters::JsonDocs::in_memory());
        let clock = ManualClock::at("2026-11-28T23:59:59.500Z");
        let ledger = QuotaLedger::new(&pool, store.clone(), &clock, "run-1/s");
        let unit = take_leaving_one_held(&ledger).await;
        clock.set("2026-11-29T00:00:00.500Z");
        ledger.exhaust(unit).await;
        let (day, _, exhausted) = counter(store.as_ref(), "acc-0").await;
        assert!(
            day == "2026-11-28" && exhausted,
            "the 28th is marked, the 29th untouched: {day} {exhausted}"
        );
        // The next step, on the 29th, gets the account.
        assert_eq!(
            counter(store.as_ref(), "acc-0").await.1,
            2,
            "the unit held for the 28th went back"
        );
        let next = QuotaLedger::new(&pool, store.clone(), &clock, "run-2/s");
        let unit = take_one(&next).await;
        assert_eq!(unit.day.to_string(), "2026-11-29");
        assert_eq!(counter(store.as_ref(), "acc-0").await, ("2026-11-29".into(), 1, false));
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
        // (In the given order the 7 s call takes the last start: 9.5 s, the bound in the order drawn.)
        assert_eq!(ideal_bound_in_order(&drawn, &pro), Some(ms(9500)));
        drawn.reverse();
        assert_eq!(ideal_bound_in_order(&drawn, &pro), Some(ms(7500)));
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
