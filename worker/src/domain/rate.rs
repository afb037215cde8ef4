//! `chart_img_rate/{accountId}`: the time windows in which one instance may call Chart-IMG with an account's key,
//! and the pure decision every rate-window store runs inside its transaction.
//!
//! The document holds the first moment no window covers (`nextFreeMs`). An instance with calls waiting reserves
//! `[max(now, nextFree), +length)` and moves `nextFree` past it by a guard gap; inside its window it paces calls at
//! the plan's rate. Windows never overlap in the document's time, so the key sees one instance's paced calls at a
//! time (see [`crate::pacing`]'s module doc for why that keeps the key under rate + burst).

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::ids::OpId;
use super::step::rfc3339;

/// The stored state of one account's windows. Times are milliseconds since the Unix epoch (UTC): plain integers
/// compare and add the same on every backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateDoc {
    /// No window covers this moment or any later one.
    pub next_free_ms: i64,
    /// The last window reserved: its holder (an instance id, for humans), its operation and its bounds. A retried
    /// commit whose first try landed finds its operation here and gets the same window back.
    pub holder: String,
    pub op: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub updated_at: String,
}

/// A reserved window `[start, end)`; calls go at `start`, `start + 1/rate`, … while before `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// What one reservation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowAsk {
    pub op: OpId,
    /// The reserving instance (stored for humans; the decision does not depend on it).
    pub holder: String,
    /// The window's length.
    pub length: Duration,
    /// Time left unreserved after the window, against clock skew between instances.
    pub gap: Duration,
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The next window for `ask` given the stored `doc`, and the document to write (`None`: nothing to write, the
/// operation was applied before). The window starts when the last one (plus its gap) ends, or now if that is past.
pub fn plan_window(doc: Option<&RateDoc>, ask: &WindowAsk, now: DateTime<Utc>) -> (Window, Option<RateDoc>) {
    if let Some(d) = doc.filter(|d| d.op == ask.op.as_str()) {
        return (
            Window {
                start: at_ms(d.window_start_ms),
                end: at_ms(d.window_end_ms),
            },
            None,
        );
    }
    let now_ms = now.timestamp_millis();
    let start_ms = doc.map_or(now_ms, |d| d.next_free_ms.max(now_ms));
    let end_ms = start_ms.saturating_add(ask.length.num_milliseconds().max(1));
    let next = RateDoc {
        next_free_ms: end_ms.saturating_add(ask.gap.num_milliseconds().max(0)),
        holder: ask.holder.clone(),
        op: ask.op.to_string(),
        window_start_ms: start_ms,
        window_end_ms: end_ms,
        updated_at: rfc3339(now),
    };
    (
        Window {
            start: at_ms(start_ms),
            end: at_ms(end_ms),
        },
        Some(next),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(op: &str, length_ms: i64) -> WindowAsk {
        WindowAsk {
            op: OpId::parse(op).unwrap(),
            holder: "serve-a".into(),
            length: Duration::milliseconds(length_ms),
            gap: Duration::milliseconds(50),
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        at_ms(1_800_000_000_000 + ms)
    }

    #[test]
    fn a_first_window_starts_now_and_the_next_after_it_and_its_gap() {
        let (w1, d1) = plan_window(None, &ask("r1", 2000), t(0));
        assert_eq!((w1.start, w1.end), (t(0), t(2000)));
        let d1 = d1.unwrap();
        assert_eq!(d1.next_free_ms, t(2050).timestamp_millis());
        // Another instance asking 300 ms later queues behind the first window and its gap.
        let (w2, d2) = plan_window(Some(&d1), &ask("r2", 1000), t(300));
        assert_eq!((w2.start, w2.end), (t(2050), t(3050)));
        assert_eq!(d2.unwrap().next_free_ms, t(3100).timestamp_millis());
    }

    #[test]
    fn a_window_that_passed_unused_frees_the_key_at_once() {
        let (_, d1) = plan_window(None, &ask("r1", 2000), t(0));
        let (w, _) = plan_window(d1.as_ref(), &ask("r2", 2000), t(10_000));
        assert_eq!(
            w.start,
            t(10_000),
            "a holder that died only blocks the key until its window ends"
        );
    }

    #[test]
    fn a_retried_reservation_gets_its_window_back_and_writes_nothing() {
        let (w1, d1) = plan_window(None, &ask("r1", 2000), t(0));
        let (again, write) = plan_window(d1.as_ref(), &ask("r1", 2000), t(40));
        assert_eq!(again, w1);
        assert!(write.is_none());
    }
}
