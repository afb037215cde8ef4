//! `chart_img_rate/{accountId}`: the time windows in which one instance may call Chart-IMG with an account's key,
//! and the pure decision every rate-window store runs inside its transaction.
//!
//! The document holds the key's shared grid as a GCRA does: its theoretical arrival time (`tatMs`), the time the
//! next call would be due if the key sent at exactly its rate. An instance with calls waiting reserves `n` of them:
//! they go at `max(start, grid + k/rate)` for `k < n`, where `start = max(now, tat − burst)` and
//! `grid = max(tat, start) − burst`, and the document's `tat` moves `n/rate` on. `burst` is the part of the plan's
//! burst tolerance the instances may use ([`WindowAsk::burst`]); with `burst = 0` the calls are `1/rate` apart from
//! `max(now, tat)`. Every call of every instance lies on one GCRA-conforming sequence in the document's time (see
//! [`crate::pacing`]'s module doc for why that keeps the key under its rate and burst).

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::ids::OpId;
use super::step::rfc3339;

/// The stored state of one account's windows. Times are milliseconds since the Unix epoch (UTC): plain integers
/// compare and add the same on every backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateDoc {
    /// The theoretical arrival time of the key's next call on the shared grid (a GCRA's TAT): calls go no earlier
    /// than `tat − burst`, then one per `1/rate`. (`nextFreeMs`, the name before the burst was shared, means the same
    /// with no burst.)
    #[serde(alias = "nextFreeMs")]
    pub tat_ms: i64,
    /// The last window reserved: its holder (an instance id, for humans), its operation and its bounds. A retried
    /// commit whose first try landed finds its operation here and gets the same window back.
    pub holder: String,
    pub op: String,
    pub window_start_ms: i64,
    /// The window's grid (absent in documents written before the burst was shared: the grid was the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_grid_ms: Option<i64>,
    pub window_end_ms: i64,
    pub updated_at: String,
}

/// A reserved window of `calls` calls: call `k` goes at `max(start, grid + k × period)`; `end = grid + calls ×
/// period` is the grid time after the last call (before `start` when every call of the window is burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub grid: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// What one reservation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowAsk {
    pub op: OpId,
    /// The reserving instance (stored for humans; the decision does not depend on it).
    pub holder: String,
    /// Calls asked for (at least one).
    pub calls: u32,
    /// `1 / rate`, the spacing of the grid.
    pub period: Duration,
    /// How far before the grid a call may go: the plan's burst tolerance `(burst − 1)/rate` less what arrival
    /// jitter and clock skew may take ([`crate::pacing::WindowSettings::jitter`]); zero uses no burst.
    pub burst: Duration,
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The next window for `ask` given the stored `doc`, and the document to write (`None`: nothing to write, the
/// operation was applied before). A GCRA's virtual scheduling over the key's shared grid: the window starts now, or
/// when the key's tolerance allows the next call, and its calls follow one per period from its grid.
pub fn plan_window(doc: Option<&RateDoc>, ask: &WindowAsk, now: DateTime<Utc>) -> (Window, Option<RateDoc>) {
    if let Some(d) = doc.filter(|d| d.op == ask.op.as_str()) {
        return (
            Window {
                start: at_ms(d.window_start_ms),
                grid: at_ms(d.window_grid_ms.unwrap_or(d.window_start_ms)),
                end: at_ms(d.window_end_ms),
            },
            None,
        );
    }
    let now_ms = now.timestamp_millis();
    let period_ms = ask.period.num_milliseconds().max(1);
    let burst_ms = ask.burst.num_milliseconds().max(0);
    let tat_ms = doc.map_or(now_ms, |d| d.tat_ms);
    let start_ms = now_ms.max(tat_ms.saturating_sub(burst_ms));
    let grid_ms = tat_ms.max(start_ms).saturating_sub(burst_ms);
    let end_ms = grid_ms.saturating_add(period_ms.saturating_mul(i64::from(ask.calls.max(1))));
    let next = RateDoc {
        tat_ms: end_ms.saturating_add(burst_ms),
        holder: ask.holder.clone(),
        op: ask.op.to_string(),
        window_start_ms: start_ms,
        window_grid_ms: Some(grid_ms),
        window_end_ms: end_ms,
        updated_at: rfc3339(now),
    };
    (
        Window {
            start: at_ms(start_ms),
            grid: at_ms(grid_ms),
            end: at_ms(end_ms),
        },
        Some(next),
    )
}

impl Window {
    /// The time of call `k` of the window.
    pub fn call_at(&self, k: u32, period: Duration) -> DateTime<Utc> {
        self.start.max(self.grid + period * k as i32)
    }

    /// The calls the window holds, `(end − grid) / period`.
    pub fn calls(&self, period: Duration) -> u32 {
        let p = period.num_milliseconds().max(1);
        ((self.end - self.grid).num_milliseconds() / p).clamp(0, i64::from(u32::MAX)) as u32
    }
}

/// Tests' judge of a key's limit: whether a GCRA with period `period_ms` and tolerance `tau_ms` (the key's
/// `(burst − 1) × period`) lets every call at `calls_ms` through; `Err` names the first call it would refuse (429).
#[cfg(test)]
pub(crate) fn gcra_check(calls_ms: &[f64], period_ms: f64, tau_ms: f64) -> Result<(), String> {
    let mut tat = f64::MIN;
    for (i, &c) in calls_ms.iter().enumerate() {
        if tat - c > tau_ms + 1e-6 {
            return Err(format!("call {i} at {c} ms would get 429 (TAT {tat} ms)"));
        }
        tat = tat.max(c) + period_ms;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(op: &str, calls: u32, period_ms: i64, burst_ms: i64) -> WindowAsk {
        WindowAsk {
            op: OpId::parse(op).unwrap(),
            holder: "serve-a".into(),
            calls,
            period: Duration::milliseconds(period_ms),
            burst: Duration::milliseconds(burst_ms),
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        at_ms(1_800_000_000_000 + ms)
    }

    fn calls(w: &Window, period_ms: i64) -> Vec<i64> {
        let p = Duration::milliseconds(period_ms);
        (0..w.calls(p))
            .map(|k| (w.call_at(k, p) - t(0)).num_milliseconds())
            .collect()
    }

    fn gcra_allows(calls_ms: &[i64], t: i64, tau: i64) -> bool {
        let calls: Vec<f64> = calls_ms.iter().map(|&c| c as f64).collect();
        gcra_check(&calls, t as f64, tau as f64).is_ok()
    }

    #[test]
    fn without_burst_a_first_window_starts_now_and_the_next_where_it_ends() {
        let (w1, d1) = plan_window(None, &ask("r1", 2, 1000, 0), t(0));
        assert_eq!(calls(&w1, 1000), vec![0, 1000]);
        let d1 = d1.unwrap();
        assert_eq!(d1.tat_ms, t(2000).timestamp_millis());
        // Another instance asking 300 ms later queues behind the first window.
        let (w2, _) = plan_window(Some(&d1), &ask("r2", 1, 1000, 0), t(300));
        assert_eq!(calls(&w2, 1000), vec![2000]);
    }

    #[test]
    fn an_idle_key_lends_its_burst_and_a_busy_one_its_rate() {
        // PRO: 10/s, 900 ms of tolerance shared: ten calls at once, then one per 100 ms.
        let (w1, d1) = plan_window(None, &ask("r1", 12, 100, 900), t(0));
        assert_eq!(calls(&w1, 100), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 200]);
        // A second instance asking at 150 ms continues the grid: no second burst.
        let (w2, d2) = plan_window(d1.as_ref(), &ask("r2", 3, 100, 900), t(150));
        assert_eq!(calls(&w2, 100), vec![300, 400, 500]);
        // After a second idle, the burst is back (the key's bucket refilled at its rate).
        let (w3, _) = plan_window(d2.as_ref(), &ask("r3", 12, 100, 900), t(1600));
        let w3_calls = calls(&w3, 100);
        assert_eq!(&w3_calls[..2], &[1600, 1600]);
        let all: Vec<i64> = [calls(&w1, 100), calls(&w2, 100), w3_calls].concat();
        assert!(gcra_allows(&all, 100, 900), "{all:?}");
        assert!(
            !gcra_allows(&all, 100, 800),
            "the windows used the shared tolerance, no more: {all:?}"
        );
    }

    #[test]
    fn a_window_that_passed_unused_frees_the_key_at_once() {
        let (_, d1) = plan_window(None, &ask("r1", 2, 1000, 0), t(0));
        let (w, _) = plan_window(d1.as_ref(), &ask("r2", 2, 1000, 0), t(10_000));
        assert_eq!(
            w.start,
            t(10_000),
            "a holder that died only blocks the key until its window ends"
        );
    }

    #[test]
    fn a_retried_reservation_gets_its_window_back_and_writes_nothing() {
        let (w1, d1) = plan_window(None, &ask("r1", 4, 100, 300), t(0));
        let (again, write) = plan_window(d1.as_ref(), &ask("r1", 4, 100, 300), t(40));
        assert_eq!(again, w1);
        assert!(write.is_none());
    }

    #[test]
    fn a_document_written_before_the_burst_was_shared_still_reads() {
        let old = r#"{"nextFreeMs":1800000002050,"holder":"a","op":"r0","windowStartMs":1800000000000,"windowEndMs":1800000002000,"updatedAt":"2027-01-15T08:00:00Z"}"#;
        let doc: RateDoc = serde_json::from_str(old).unwrap();
        let (w, _) = plan_window(Some(&doc), &ask("r1", 1, 1000, 0), t(0));
        assert_eq!(w.start, t(2050));
        let (again, _) = plan_window(Some(&doc), &ask("r0", 2, 1000, 0), t(0));
        assert_eq!((again.grid, again.calls(Duration::seconds(1))), (t(0), 2));
    }
}
