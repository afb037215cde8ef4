//! Pacing of Chart-IMG calls per account key, so that every instance together stays within the key's plan.
//!
//! Chart-IMG enforces a plan's rate and burst per key, not per process. Two ways to keep to it:
//! - [`Pace::Local`]: this process is the key's only user (the embedded modes, the demo, the bench): `governor`
//!   with the plan's rate and burst, in memory.
//! - [`Pace::Shared`] ([`WindowPacer`]): every `serve` instance of a deployment shares the key. An instance that has
//!   calls waiting reserves the next of them on the key's shared grid in one transaction on
//!   `chart_img_rate/{accountId}` ([`RateWindowStore`], [`crate::domain::rate::plan_window`]): a window of calls, one
//!   per `1/rate` after the grid's last, or at once while the key's bucket holds part of its burst. Windows are
//!   sized to the calls waiting (at least [`WindowSettings::min`], at most [`WindowSettings::max`] of the key's rate),
//!   so one document sees about one write per second per busy instance; no window is reserved without a call
//!   waiting, and an instance holds at most the current window and the next one.
//!
//! `429 Too Many Requests` is still retried with backoff by the core: the fallback for calls nobody paced (another
//! user of the key, a clock far off), not the mechanism.
//!
//! # Why the windows keep a key under rate + burst
//!
//! Chart-IMG's limiter is a GCRA (as mock-chart-img's `governor`): with period `T = 1/rate` and tolerance
//! `τ = (burst − 1)·T`, calls `a₁ ≤ a₂ ≤ …` all pass exactly when `a_k − a_j ≥ (k − j)·T − τ` for every `j < k`.
//! - The document runs that GCRA's virtual scheduling in its own time with a smaller tolerance
//!   `β = τ − 2·J` ([`WindowSettings::jitter`] `J`): every call of every instance is a point of one sequence that
//!   satisfies `a_k − a_j ≥ (k − j)·T − β` (`plan_window`; test `an_idle_key_lends_its_burst_and_a_busy_one_its_rate`).
//!   Windows never hand out the same point twice: each reservation moves the document's TAT past its calls.
//! - A call arrives at Chart-IMG later than its point by what this process adds (a slot is used up to `J` after its
//!   time, which covers the reservation's own round trip, never before it) plus the wake-up, the network and the
//!   instances' clock offsets (budgeted at `J` more). Each difference `a_k − a_j` therefore shrinks by at most `2·J`,
//!   so the arrivals satisfy `a_k − a_j ≥ (k − j)·T − τ`: the key's GCRA lets every one through. Calls never go early.
//! - So a shared key uses its burst less `2·J` (PRO: 7 calls at once of its 15; BASIC 2 of 3 with `J` = 400 ms) when
//!   it was idle, and its rate when busy. A plan whose tolerance is under `2·J` gets no burst (`β = 0`).
//! - `J` is also how long a slot may wait for its quota unit, for a process whose cores are busy, or for a
//!   reservation on a busy store: a slot given up leaves its caller waiting for a later one, taking its unit only at
//!   that one (unless taking it needed a reservation of its own, which can outlast the fresh slot too: then it waits
//!   for another with the unit in hand).
//!
//! A window counts as held until its time is over, not until its slots are taken; otherwise an instance with many
//! calls waiting would reserve the key's future window after window while another waits. The next window is reserved
//! while the current one runs, so the reservation's latency is hidden.
//!
//! # Failures
//!
//! - An instance that dies holding windows just lets them pass: nothing waits for it and nothing needs cleaning up;
//!   the key idles for the rest of its windows (at most two, at most `2 × max` plus gaps).
//! - A reservation whose commit reply was lost is retried with the same operation id and gets the same window back.
//! - When the store cannot be reached the call is not sent, its quota unit goes back to the step, and the attempt is
//!   retried like a 5xx.
//! - The reservation is a compare-and-set (a plain read, then a commit guarded by the version read), not a read-write
//!   transaction: on the emulator, read-write transactions of two instances on one hot document deadlock on their
//!   read locks until a lock timeout.
//!
//! Chosen over account leases (one renewed lease per account, the key's limiter in one process at a time), which pin a
//! key to one instance for a whole lease while others with work wait, need renewals, and leave the key unused for a
//! whole lease after a crash; and over a per-account Cloud Tasks queue, which cannot run here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::DefaultDirectRateLimiter;
use tokio::time::Instant;

use crate::domain::{AccountId, OpId, WindowAsk};
use crate::ports::{Clock, RateWindowStore, StoreError};

/// How the shared windows are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSettings {
    /// Shortest window (rounded up to whole calls): with few calls waiting, one reservation still covers this long,
    /// so a busy instance writes an account's document about once per `min` at most.
    pub min: Duration,
    /// Longest window: what one instance may take of the key at once (and what a holder that dies wastes).
    pub max: Duration,
    /// How late a call may arrive after its point on the grid through this process (a slot is used up to `jitter`
    /// after its time), and again through the network and clock skew: the burst's tolerance less twice this is what
    /// the instances share (the module doc's proof).
    pub jitter: Duration,
}

impl Default for WindowSettings {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(2),
            jitter: Duration::from_millis(400),
        }
    }
}

/// What the shared pacing of one process needs: the store of the windows, the wall clock the windows are written
/// in, the instance id stored as their holder, and the window settings.
#[derive(Clone)]
pub struct SharedRate {
    pub store: Arc<dyn RateWindowStore>,
    pub clock: Arc<dyn Clock>,
    pub holder: String,
    pub windows: WindowSettings,
}

impl std::fmt::Debug for SharedRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRate")
            .field("holder", &self.holder)
            .field("windows", &self.windows)
            .finish()
    }
}

/// How one account's calls are paced in this process.
#[derive(Debug)]
pub enum Pace {
    /// This process is the key's only user: the plan's rate and burst, in memory.
    Local(DefaultDirectRateLimiter),
    /// Every instance shares the key through time windows.
    Shared(WindowPacer),
}

impl Pace {
    /// Waits until this process may send one more call with the key. Only the shared pacing can fail (its store).
    pub async fn until_ready(&self) -> Result<(), StoreError> {
        let at = self.slot().await?;
        tokio::time::sleep_until(at).await;
        Ok(())
    }

    /// Takes this process's next slot on the key and answers its time without waiting for it (the local pacing
    /// waits, and answers now): a caller can prepare for the call shortly before its slot.
    pub async fn slot(&self) -> Result<Instant, StoreError> {
        match self {
            Pace::Local(l) => {
                l.until_ready().await;
                Ok(Instant::now())
            }
            Pace::Shared(p) => p.slot().await,
        }
    }
}

/// One reserved window as this process sees it: `count` slots, slot `k` at `start + (k × period − lead)` (the
/// first ones at `start` while the key lends its burst), each usable until `late` after its time.
#[derive(Debug)]
struct Slots {
    start: Instant,
    /// How far the window's grid lies before its start (`start − grid` in [`crate::domain::Window`]).
    lead: Duration,
    count: u32,
    /// Slots below this index are taken.
    next: u32,
}

impl Slots {
    /// The first slot not taken that is not more than `late` past its time.
    fn first_free(&self, now: Instant, period: Duration, late: Duration) -> u32 {
        let since = now.saturating_duration_since(self.start);
        let passed = if since <= late {
            0
        } else {
            let p = period.as_nanos().max(1);
            (since - late + self.lead).as_nanos().div_ceil(p).min(u32::MAX as u128) as u32
        };
        self.next.max(passed)
    }

    fn at(&self, k: u32, period: Duration) -> Instant {
        self.start + (period * k).saturating_sub(self.lead)
    }

    /// When the window's turn on the key is over: the grid time after its last slot, and not before its last slot
    /// has stopped being usable.
    fn end(&self, period: Duration, late: Duration) -> Instant {
        self.at(self.count, period)
            .max(self.at(self.count.saturating_sub(1), period) + late)
    }
}

#[derive(Debug, Default)]
struct PacerState {
    /// Windows whose time is not over, oldest first (at most the current one and the next).
    windows: VecDeque<Slots>,
    /// Callers that found no free slot and wait for a window.
    waiting: usize,
    /// Bumped whenever a window is added.
    generation: u64,
}

impl PacerState {
    /// Forgets the windows whose time is over. A window whose slots are all taken still counts until it ends: it
    /// is still this instance's turn on the key, and counting it keeps an instance with many calls waiting from
    /// reserving the key's future window after window while another instance waits.
    fn prune(&mut self, now: Instant, period: Duration, late: Duration) {
        self.windows.retain(|w| w.end(period, late) > now);
    }

    /// Takes the earliest free slot of the held windows; answers its time.
    fn take(&mut self, now: Instant, period: Duration, late: Duration) -> Option<Instant> {
        self.prune(now, period, late);
        let w = self
            .windows
            .iter_mut()
            .find(|w| w.first_free(now, period, late) < w.count)?;
        let k = w.first_free(now, period, late);
        w.next = k + 1;
        Some(w.at(k, period))
    }
}

/// The shared pacing of one account in one process (see the module documentation).
pub struct WindowPacer {
    account: AccountId,
    /// `1 / rate`: the spacing of calls inside a window.
    period: Duration,
    /// The part of the plan's burst tolerance the instances share (`β` in the module doc).
    burst: Duration,
    min_slots: u32,
    max_slots: u32,
    shared: SharedRate,
    state: std::sync::Mutex<PacerState>,
    /// One reservation at a time per account and process.
    reserving: tokio::sync::Mutex<()>,
    reservations: AtomicU64,
}

impl std::fmt::Debug for WindowPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowPacer")
            .field("account", &self.account)
            .field("period", &self.period)
            .field("slots", &(self.min_slots..=self.max_slots))
            .finish()
    }
}

/// Decrements the waiting count when a caller stops waiting for a window (served, failed or dropped).
struct Waiting<'a>(&'a WindowPacer);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl WindowPacer {
    /// Paces `account`'s calls at `rate_per_sec` with `burst` calls at once through `shared`'s windows.
    pub fn new(account: AccountId, rate_per_sec: f64, burst: u32, shared: SharedRate) -> Self {
        let rate = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            1.0
        };
        let period = Duration::from_secs_f64(1.0 / rate);
        let slots_in = |d: Duration| (d.as_secs_f64() * rate).floor().clamp(1.0, 10_000.0) as u32;
        let min_slots = (shared.windows.min.as_secs_f64() * rate).ceil().clamp(1.0, 10_000.0) as u32;
        let max_slots = slots_in(shared.windows.max).max(min_slots);
        let tolerance = period * burst.saturating_sub(1);
        let burst = tolerance.saturating_sub(shared.windows.jitter * 2);
        Self {
            account,
            period,
            burst,
            min_slots,
            max_slots,
            shared,
            state: Default::default(),
            reserving: Default::default(),
            reservations: AtomicU64::new(0),
        }
    }

    /// How late a slot may still be used (module doc: `J`).
    pub fn late(&self) -> Duration {
        self.shared.windows.jitter
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Windows this process reserved for the account so far.
    pub fn reservations(&self) -> u64 {
        self.reservations.load(Ordering::Relaxed)
    }

    /// Waits for a slot in one of this process's windows, reserving the next window when none is free (the tests'
    /// shorthand; callers go through [`Pace::until_ready`] or [`WindowPacer::slot`]).
    #[cfg(test)]
    pub async fn until_ready(&self) -> Result<(), StoreError> {
        let at = self.slot().await?;
        tokio::time::sleep_until(at).await;
        Ok(())
    }

    /// Takes a slot in one of this process's windows, reserving the next window when none is free; answers its time
    /// (the caller sleeps until then).
    pub async fn slot(&self) -> Result<Instant, StoreError> {
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let (slot, seen) = {
                let mut st = self.lock();
                let slot = st.take(Instant::now(), self.period, self.late());
                if slot.is_none() && waiting.is_none() {
                    st.waiting += 1;
                }
                (slot, st.generation)
            };
            if let Some(at) = slot {
                drop(waiting);
                return Ok(at);
            }
            if waiting.is_none() {
                waiting = Some(Waiting(self));
            }
            let reserving = self.reserving.lock().await;
            let next = {
                let mut st = self.lock();
                if st.generation != seen {
                    None // Someone reserved while we queued: try its slots first.
                } else {
                    st.prune(Instant::now(), self.period, self.late());
                    Some(match st.windows.front() {
                        // The current window and the next are held: wait for the current one to end, not further.
                        Some(w) if st.windows.len() >= 2 => Err(w.end(self.period, self.late())),
                        _ => Ok(st.waiting.clamp(self.min_slots as usize, self.max_slots as usize) as u32),
                    })
                }
            };
            let want = match next {
                None => continue,
                Some(Err(wake)) => {
                    drop(reserving);
                    tokio::time::sleep_until(wake).await;
                    continue;
                }
                Some(Ok(want)) => want,
            };
            let ask = WindowAsk {
                op: OpId::random(),
                holder: self.shared.holder.clone(),
                calls: want,
                period: chrono::Duration::from_std(self.period).unwrap_or(chrono::Duration::seconds(1)),
                burst: chrono::Duration::from_std(self.burst).unwrap_or_default(),
            };
            let now = self.shared.clock.now();
            let base = Instant::now();
            let w = self.shared.store.reserve_window(&self.account, &ask, now).await?;
            self.reservations.fetch_add(1, Ordering::Relaxed);
            let ahead = (w.start - now).to_std().unwrap_or(Duration::ZERO);
            let lead = (w.start - w.grid).to_std().unwrap_or(Duration::ZERO);
            let count = w.calls(ask.period);
            tracing::debug!(
                event = "rate_window_reserved",
                account = %self.account,
                start = %w.start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                end = %w.end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                aheadMs = ahead.as_millis() as u64,
                slots = count,
                asked = want,
                "reserved a window of the key's rate"
            );
            {
                let mut st = self.lock();
                st.windows.push_back(Slots {
                    start: base + ahead,
                    lead,
                    count,
                    next: 0,
                });
                st.generation += 1;
            }
            drop(reserving);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::adapters::JsonDocs;
    use crate::domain::Window;

    /// Wall time that moves with tokio's (paused) clock, plus a skew.
    struct TokioClock {
        base: DateTime<Utc>,
        at: Instant,
        skew: chrono::Duration,
    }

    impl TokioClock {
        fn new(skew_ms: i64) -> Arc<Self> {
            let base = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc);
            Arc::new(Self {
                base,
                at: Instant::now(),
                skew: chrono::Duration::milliseconds(skew_ms),
            })
        }
    }

    impl Clock for TokioClock {
        fn now(&self) -> DateTime<Utc> {
            self.base + chrono::Duration::from_std(self.at.elapsed()).unwrap() + self.skew
        }
    }

    /// Counts reservations and can be told to fail.
    struct Counting {
        inner: JsonDocs<crate::adapters::MemoryBackend>,
        calls: Mutex<u32>,
        fail: Mutex<bool>,
        /// How long each reservation takes (its reply comes that long after the window was decided).
        delay: Mutex<Duration>,
    }

    #[async_trait]
    impl RateWindowStore for Counting {
        async fn reserve_window(
            &self,
            account: &AccountId,
            ask: &WindowAsk,
            now: DateTime<Utc>,
        ) -> Result<Window, StoreError> {
            *self.calls.lock().unwrap() += 1;
            if *self.fail.lock().unwrap() {
                return Err(StoreError::Unavailable("injected".into()));
            }
            let w = self.inner.reserve_window(account, ask, now).await;
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            w
        }
    }

    fn store() -> Arc<Counting> {
        Arc::new(Counting {
            inner: JsonDocs::in_memory(),
            calls: Mutex::new(0),
            fail: Mutex::new(false),
            delay: Mutex::new(Duration::ZERO),
        })
    }

    /// A pacer with the burst of the plan of `rate` (BASIC 1/s: 3, PRO 10/s: 15).
    fn pacer(store: Arc<Counting>, holder: &str, rate: f64, skew_ms: i64) -> Arc<WindowPacer> {
        let burst = if rate >= 10.0 { 15 } else { 3 };
        let shared = SharedRate {
            store,
            clock: TokioClock::new(skew_ms),
            holder: holder.into(),
            windows: WindowSettings::default(),
        };
        Arc::new(WindowPacer::new(
            AccountId::parse("acc-1").unwrap(),
            rate,
            burst,
            shared,
        ))
    }

    /// Runs `n` callers on `p` at once; answers when each got its slot (ms since `t0`).
    fn callers(p: &Arc<WindowPacer>, n: usize, t0: Instant) -> Vec<tokio::task::JoinHandle<u64>> {
        (0..n)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    p.until_ready().await.unwrap();
                    t0.elapsed().as_millis() as u64
                })
            })
            .collect()
    }

    async fn times(handles: Vec<tokio::task::JoinHandle<u64>>) -> Vec<u64> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out.sort();
        out
    }

    /// Whether a GCRA with `rate` and `burst` (Chart-IMG's throttle, governor's algorithm) lets every call through.
    fn gcra_allows(calls_ms: &[u64], rate: f64, burst: u32) -> Result<(), String> {
        let t = 1000.0 / rate;
        let calls: Vec<f64> = calls_ms.iter().map(|&c| c as f64).collect();
        crate::domain::rate::gcra_check(&calls, t, t * (burst as f64 - 1.0))
    }

    #[tokio::test(start_paused = true)]
    async fn one_instance_lends_the_shared_burst_then_paces_at_the_rate_and_reserves_only_with_calls_waiting() {
        let s = store();
        let p = pacer(s.clone(), "a", 1.0, 0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*s.calls.lock().unwrap(), 0, "no window without a call waiting");
        let t0 = Instant::now();
        let got = times(callers(&p, 6, t0)).await;
        // BASIC: 2 s of tolerance, less 2 × 400 ms of jitter, leaves 1.2 s to share: two calls at once, the third
        // 0.8 s later, then one per second (a GCRA with that tolerance, exactly).
        assert_eq!(got, vec![0, 0, 800, 1800, 2800, 3800]);
        gcra_allows(&got, 1.0, 3).unwrap();
        let reservations = *s.calls.lock().unwrap();
        assert!(reservations <= 5, "{reservations} reservations for 6 calls");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            *s.calls.lock().unwrap(),
            reservations,
            "idle again: no more reservations"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_instances_on_one_key_stay_within_rate_and_burst_together() {
        let s = store();
        // Instance b's clock is 300 ms ahead of a's: windows are written in each one's own time.
        let (a, b) = (pacer(s.clone(), "a", 1.0, 0), pacer(s.clone(), "b", 1.0, 300));
        let t0 = Instant::now();
        let (ha, hb) = (callers(&a, 6, t0), callers(&b, 6, t0));
        let (ta, tb) = (times(ha).await, times(hb).await);
        let mut all: Vec<u64> = ta.iter().chain(&tb).copied().collect();
        all.sort();
        gcra_allows(&all, 1.0, 3).unwrap();
        // Paced, not merely throttled: the 12 calls take about 12 s, and both instances called early on.
        assert!(*all.last().unwrap() <= 12_000, "{all:?}");
        assert!(
            ta[0] < 3000 && tb[0] < 3000,
            "both instances got the key early: {ta:?} {tb:?}"
        );
        // Without the shared windows each process would send its burst of 3 at once: the key's GCRA refuses that.
        assert!(gcra_allows(&[0, 0, 0, 0, 0, 0], 1.0, 3).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_with_many_calls_waiting_holds_two_windows_not_the_key_s_future() {
        let s = store();
        let (a, b) = (pacer(s.clone(), "a", 1.0, 0), pacer(s.clone(), "b", 1.0, 0));
        let t0 = Instant::now();
        let ha = callers(&a, 8, t0);
        // b's calls come a moment after a's: a already holds its current window and the next, and must not have
        // reserved windows for all 8 of its calls (8 s of the key) ahead of b.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let hb = callers(&b, 8, t0);
        let (ta, tb) = (times(ha).await, times(hb).await);
        // a: [0, 1 s) and [1.05, 3.05) are its; b's first window follows them.
        assert!(tb[0] <= 3_200, "b waited for a's later windows: a {ta:?}, b {tb:?}");
        // And they take turns from there: a does not finish before b has made half its calls.
        assert!(tb[3] < ta[7], "a kept the key: a {ta:?}, b {tb:?}");
        let mut all: Vec<u64> = ta.iter().chain(&tb).copied().collect();
        all.sort();
        gcra_allows(&all, 1.0, 3).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pro_key_shared_by_three_instances_keeps_its_rate() {
        let s = store();
        let ps: Vec<_> = (0..3)
            .map(|i| pacer(s.clone(), &format!("p{i}"), 10.0, i * 20))
            .collect();
        let t0 = Instant::now();
        let hs: Vec<_> = ps.iter().map(|p| callers(p, 40, t0)).collect();
        let mut all = Vec::new();
        for h in hs {
            all.extend(times(h).await);
        }
        all.sort();
        gcra_allows(&all, 10.0, 15).unwrap();
        let took = *all.last().unwrap() as f64 / 1000.0;
        // 120 calls at 10/s, the first 7 at once: 11.3 s on the grid (less the 40 ms the last clock runs ahead),
        // plus waits for half-used windows.
        assert!((11.2..11.9).contains(&took), "{took} s");
        for p in &ps {
            assert!(
                p.reservations() <= 8,
                "{} reservations: about one per 2 s window per instance",
                p.reservations()
            );
        }
    }

    /// A reservation whose reply comes 200 ms after the window was decided: its first slots are used that late
    /// (within the jitter), which the tolerance kept back covers. Sharing the whole tolerance would not: the same
    /// calls then exceed the key's burst.
    #[tokio::test(start_paused = true)]
    async fn slots_used_late_after_a_slow_reservation_stay_within_the_key() {
        let s = store();
        *s.delay.lock().unwrap() = Duration::from_millis(200);
        let p = pacer(s.clone(), "a", 10.0, 0);
        let t0 = Instant::now();
        let got = times(callers(&p, 30, t0)).await;
        gcra_allows(&got, 10.0, 15).unwrap();
        let at = |ms: u64| got.iter().filter(|&&t| t == ms).count();
        // The first window (10 calls: 7 at once, then 100, 200 and 300 ms) is used when its reply comes at 200 ms:
        // its 9 slots up to then go at once, the last at 300 ms; the second, decided at 200 ms, starts at 400 ms.
        assert_eq!((at(200), at(300), at(400)), (9, 1, 1), "{got:?}");
        // Had the pacing shared the whole tolerance (15 calls at once), the first window's 10 slots would all go at
        // 200 ms, and the second window's grid would lie 800 ms earlier: 9 of its slots at 400 ms. The key refuses that.
        let whole: Vec<u64> = [vec![200; 10], vec![400; 9], (5..21).map(|k| 100 * k).collect()].concat();
        assert!(gcra_allows(&whole, 10.0, 15).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_dies_only_costs_its_window() {
        let s = store();
        let (dead, alive) = (pacer(s.clone(), "dead", 1.0, 0), pacer(s.clone(), "alive", 1.0, 0));
        // The dying instance reserves its windows for 2 callers (both at once: the key was idle) and vanishes.
        let t0 = Instant::now();
        let doomed = callers(&dead, 2, t0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        for h in doomed {
            h.abort();
        }
        drop(dead);
        let got = times(callers(&alive, 2, t0)).await;
        // Its calls pass unsent and count as sent: the other instance gets what the key's tolerance has left (the
        // shared 1.2 s less the 2 s of those calls), then its rate.
        assert_eq!(got, vec![800, 1800]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_frees_its_place_and_a_store_failure_surfaces() {
        let s = store();
        let p = pacer(s.clone(), "a", 1.0, 0);
        let t0 = Instant::now();
        let hs = callers(&p, 3, t0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        hs[2].abort(); // waiting for the second window
        let done = times(hs.into_iter().take(2).collect()).await;
        assert_eq!(done, vec![0, 0]);
        assert_eq!(p.lock().waiting, 0, "an aborted caller is not counted as waiting");
        *s.fail.lock().unwrap() = true;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let err = p.until_ready().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
}
