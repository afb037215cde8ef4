//! Wall-clock time for the daily quota, injectable so tests can cross a UTC midnight without waiting.
//!
//! Only the *daily* quota reads this clock. The per-second rate limiter keeps `governor`'s own monotonic clock:
//! a throttle window is about elapsed time, not about calendar days, and a test clock that jumps would make it lie.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A source of the current UTC time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; share it (`Arc`) between the test and the server's [`Config`](crate::Config).
///
/// ```
/// use mock_chart_img::ManualClock;
/// use chrono::{TimeZone, Utc, Duration};
///
/// let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 0).unwrap());
/// clock.advance(Duration::minutes(2));
/// assert_eq!(clock.now_utc().date_naive().to_string(), "2026-11-29");
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self { now: Mutex::new(start) })
    }

    /// Moves the clock to `now` (backwards is allowed: a test may want to replay a day).
    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().unwrap() = now;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap();
        *now += by;
    }

    /// The time the clock shows.
    pub fn now_utc(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now_utc()
    }
}
