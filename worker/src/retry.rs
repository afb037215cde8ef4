//! The one retry policy of the worker: exponential backoff with jitter, bounded in attempts and in total time
//! (attempts included, measured on tokio's clock so tests run it with a paused clock). Firestore, Cloud Storage and
//! Chart-IMG calls all retry through [`RetryPolicy::run`]; each adapter only says which of its failures are
//! retryable, following Google's retry guidance (HTTP 408, 429, 5xx, connection and timeout errors, token errors;
//! gRPC UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL).

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// How one operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The first backoff; doubles each time up to `max_delay`, with jitter.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Wall-clock budget of the whole operation, attempts and backoff included: no retry starts past it.
    pub max_total_delay: Duration,
}

impl Default for RetryPolicy {
    /// Chart-IMG: every attempt that reaches the API costs a unit of quota, so few retries, within seconds.
    fn default() -> Self {
        Self::CHART_IMG
    }
}

impl RetryPolicy {
    /// Chart-IMG calls (throttles, 5xx, timeouts): a handful of retries within 20 s.
    pub const CHART_IMG: Self = Self {
        max_retries: 4,
        min_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(4),
        max_total_delay: Duration::from_secs(20),
    };

    /// Firestore transactions and calls: contention on a usage counter (about one write per second per document)
    /// clears within seconds, and an outage of a few seconds must not fail a step whose charts were paid for.
    pub const FIRESTORE: Self = Self {
        max_retries: 16,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
        max_total_delay: Duration::from_secs(30),
    };

    /// Cloud Storage uploads and reads: an upload carries a paid chart, so a blip of a few seconds is waited out.
    pub const GCS: Self = Self {
        max_retries: 12,
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(4),
        max_total_delay: Duration::from_secs(30),
    };

    /// A policy that never retries.
    pub const NONE: Self = Self {
        max_retries: 0,
        min_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        max_total_delay: Duration::ZERO,
    };

    /// The backoff delays (backon's exponential builder with jitter).
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_max_times(self.max_retries)
            .with_total_delay(Some(self.max_total_delay))
            .with_jitter()
    }

    /// The retry state of one operation, for loops that cannot be a closure (a transaction keeps state across its
    /// attempts).
    pub fn start(&self) -> Attempts {
        Attempts {
            started: Instant::now(),
            delays: self.backoff().build(),
            max_total: self.max_total_delay,
            retries: 0,
        }
    }

    /// Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or the budget is spent (then the
    /// last error is returned). `notify` sees each retried error and the backoff before the next attempt.
    pub async fn run<T, E, Fut>(
        &self,
        attempt: impl FnMut() -> Fut,
        retryable: impl Fn(&E) -> bool,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_timed_from(|| None, attempt, retryable, notify).await
    }

    /// [`RetryPolicy::run`] whose time budget starts at the instant `budget_from` answers (when it answers one)
    /// instead of the first attempt's start: for operations whose attempts first wait their turn (a Chart-IMG call
    /// queued for its key's rate slot), so the queue does not eat the retries.
    pub async fn run_timed_from<T, E, Fut>(
        &self,
        budget_from: impl Fn() -> Option<Instant>,
        mut attempt: impl FnMut() -> Fut,
        retryable: impl Fn(&E) -> bool,
        mut notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut state = self.start();
        loop {
            let e = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !retryable(&e) {
                return Err(e);
            }
            if let Some(from) = budget_from() {
                state.started = from;
            }
            match state.next_delay() {
                Some(d) => {
                    notify(&e, d);
                    tokio::time::sleep(d).await;
                }
                None => return Err(e),
            }
        }
    }
}

/// The retry state of one operation (see [`RetryPolicy::start`]).
#[derive(Debug)]
pub struct Attempts {
    started: Instant,
    delays: ExponentialBackoff,
    max_total: Duration,
    retries: u32,
}

impl Attempts {
    /// The backoff before the next attempt, or `None` when the budget (attempts or total time) is spent.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let d = self.delays.next()?;
        if self.started.elapsed() + d > self.max_total {
            return None;
        }
        self.retries += 1;
        Some(d)
    }

    /// After a retryable failure: sleeps the backoff and answers `true`, or answers `false` when the budget is spent.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }

    /// Attempts made so far (after a failed one: including it).
    pub fn attempts(&self) -> u32 {
        self.retries + 1
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A Chart-IMG call that first waited 30 s for its key's rate slot still gets its retries: the budget runs from
    /// the first call sent, not from the wait (with `run`, the 20 s budget is spent before the first failure).
    #[tokio::test(start_paused = true)]
    async fn a_budget_timed_from_the_first_send_ignores_the_wait_before_it() {
        for timed in [false, true] {
            let calls = AtomicU32::new(0);
            let first_send: std::sync::Mutex<Option<Instant>> = Default::default();
            let attempt = || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await; // queued for a rate slot
                }
                first_send.lock().unwrap().get_or_insert(Instant::now());
                tokio::time::sleep(Duration::from_secs(7)).await; // a 504 after 7 s
                Err::<(), &str>("504")
            };
            let from = || if timed { *first_send.lock().unwrap() } else { None };
            let out = RetryPolicy::CHART_IMG
                .run_timed_from(from, attempt, |_| true, |_, _| {})
                .await;
            assert_eq!(out, Err("504"));
            let n = calls.load(Ordering::SeqCst);
            if timed {
                assert!(n >= 3, "retried within 20 s of the first send: {n} calls");
            } else {
                assert_eq!(n, 1, "the wait spent the budget");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_within_the_budget() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let out: Result<u32, &str> = RetryPolicy::GCS
            .run(
                || async {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n < 3 {
                        Err("503")
                    } else {
                        Ok(n)
                    }
                },
                |_| true,
                |_, _| {},
            )
            .await;
        assert_eq!(out, Ok(3));
        assert!(started.elapsed() < RetryPolicy::GCS.max_total_delay);
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_retryable_error_returns_at_once() {
        let calls = AtomicU32::new(0);
        let out: Result<(), &str> = RetryPolicy::FIRESTORE
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err("403")
                },
                |e| *e != "403",
                |_, _| {},
            )
            .await;
        assert_eq!(out, Err("403"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_and_total_time_are_both_bounded() {
        // Attempts bound: instant failures stop after max_retries + 1 calls.
        let calls = AtomicU32::new(0);
        let p = RetryPolicy {
            max_retries: 3,
            ..RetryPolicy::FIRESTORE
        };
        let _: Result<(), ()> = p
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(())
                },
                |_| true,
                |_, _| {},
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Time bound: attempts that each take 4 s stop once the next one would start past 30 s.
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let _: Result<(), ()> = RetryPolicy::GCS
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    Err(())
                },
                |_| true,
                |_, _| {},
            )
            .await;
        let n = calls.load(Ordering::SeqCst);
        assert!((5..=8).contains(&n), "{n} attempts");
        assert!(
            started.elapsed() <= RetryPolicy::GCS.max_total_delay + Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_two_second_outage_is_survived_by_the_store_and_upload_policies() {
        for p in [RetryPolicy::FIRESTORE, RetryPolicy::GCS] {
            let started = Instant::now();
            let out: Result<(), ()> = p
                .run(
                    || async {
                        if started.elapsed() < Duration::from_secs(2) {
                            Err(())
                        } else {
                            Ok(())
                        }
                    },
                    |_| true,
                    |_, _| {},
                )
                .await;
            assert_eq!(out, Ok(()), "{p:?}");
        }
    }
}
