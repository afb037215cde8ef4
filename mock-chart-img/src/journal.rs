//! The request journal: a bounded ring buffer the admin API reads newest first.
//!
//! **Invariant:** an entry names the account, never the API key, so the journal can be shown and logged freely.
//! **Invariant:** at most `capacity` entries are kept; the oldest goes first, so memory stays flat under any load.
//!
//! The ring keeps a [`Record`] per request, built on the request path without formatting or allocating (the
//! account id and the chart's symbol and interval are shared `Arc`s, the common method and paths static); it is
//! turned into the public [`JournalEntry`] only when the admin API reads the journal.
//!
//! A record also keeps the request's and the answer's bodies, for body criteria (`crate::verify`) and snapshots
//! (`crate::admin::snapshot`), within a byte budget (`journal_body_budget`): past it, the oldest records' bodies are
//! let go first (the records stay, marked `bodies_kept: false`). Expectations are counted here, when a request is
//! journaled, so their counts are exact however many records the ring has dropped.

use std::{collections::VecDeque, sync::Mutex};

use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::record::{Bodies, JournalEntry, Record};

/// Filters of `GET /__admin/requests`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JournalQuery {
    /// Only this account.
    pub account: Option<String>,
    /// Only this status.
    pub status: Option<u16>,
    /// At most this many entries (newest first).
    pub limit: Option<usize>,
}

/// What was answered over a period: the figures of the periodic summary log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Requests answered (or dropped on purpose).
    pub requests: u64,
    /// `2xx` answers.
    pub ok: u64,
    /// `4xx` answers other than `429`.
    pub client_errors: u64,
    /// `429` answers (rate or daily quota).
    pub throttled: u64,
    /// `5xx` answers.
    pub server_errors: u64,
    /// Connections dropped by a fault, without an answer.
    pub dropped: u64,
    /// Images served from the render cache.
    pub cache_hits: u64,
    /// Sum and maximum of the answers' durations.
    pub total_ms: u64,
    pub max_ms: u64,
}

impl Traffic {
    fn count(&mut self, e: &Record) {
        self.requests += 1;
        match e.status {
            None => self.dropped += 1,
            Some(429) => self.throttled += 1,
            Some(s) if s >= 500 => self.server_errors += 1,
            Some(s) if s >= 400 => self.client_errors += 1,
            Some(_) => self.ok += 1,
        }
        self.cache_hits += u64::from(e.cache_hit == Some(true));
        self.total_ms += e.duration_ms;
        self.max_ms = self.max_ms.max(e.duration_ms);
    }
}

struct Ring {
    seq: u64,
    /// Records dropped from the ring (capacity) since the last clear: a scan of the ring is complete when 0.
    evicted: u64,
    /// Bytes of the bodies still kept, and the sequence number below which no record keeps its bodies.
    body_bytes: u64,
    bodies_from: u64,
    /// `(seq, record)`, oldest first; allocated for the whole capacity (up to 4096) at start.
    entries: VecDeque<(u64, Record)>,
    /// Counted since the last [`Journal::take_traffic`]; kept under the same lock, so counting costs no extra one.
    traffic: Traffic,
    /// Images served from the render cache since start (the health answer's `cache_hits`), counted here for the
    /// same reason.
    cache_hits: u64,
}

pub(crate) struct Journal {
    capacity: usize,
    body_budget: u64,
    inner: Mutex<Ring>,
    /// Counted on every push, outside the ring's lock.
    pub expectations: crate::verify::Expectations,
}

impl Journal {
    /// Whether records should carry bodies: to keep them (a budget), or for expectations to read the request's.
    pub fn wants_bodies(&self) -> (bool, bool) {
        let keep = self.body_budget > 0;
        (keep || !self.expectations.is_empty(), keep)
    }

    pub fn new(capacity: usize, body_budget: u64) -> Self {
        let entries = VecDeque::with_capacity(capacity.min(4096));
        Journal {
            capacity,
            body_budget,
            expectations: crate::verify::Expectations::default(),
            inner: Mutex::new(Ring {
                seq: 0,
                evicted: 0,
                body_bytes: 0,
                bodies_from: 0,
                entries,
                traffic: Traffic::default(),
                cache_hits: 0,
            }),
        }
    }

    /// Appends `record` and answers the sequence number it got.
    pub fn push(&self, mut record: Record) -> u64 {
        self.expectations.observe(&record);
        let size = record.bodies.as_ref().map_or(0, |b| b.size());
        if size > self.body_budget {
            record.bodies = None;
        }
        let mut g = self.inner.lock().unwrap();
        g.seq += 1;
        let seq = g.seq;
        g.traffic.count(&record);
        g.cache_hits += u64::from(record.cache_hit == Some(true));
        // The record dropped here (the oldest) holds nothing costly to free: `Arc`s, and its bodies (`Bytes`).
        let oldest = if g.entries.len() >= self.capacity {
            g.evicted += 1;
            g.entries.pop_front()
        } else {
            None
        };
        if let Some(b) = oldest.as_ref().and_then(|(_, r)| r.bodies.as_ref()) {
            g.body_bytes -= b.size();
        }
        g.body_bytes += record.bodies.as_ref().map_or(0, |b| b.size());
        if self.capacity > 0 {
            g.entries.push_back((seq, record));
        }
        // Past the budget, the oldest records let their bodies go first (usually one: a `Vec` only for more).
        let mut released: (Option<Box<Bodies>>, Vec<Box<Bodies>>) = (None, Vec::new());
        if g.body_bytes > self.body_budget {
            let Ring {
                entries,
                body_bytes,
                bodies_from,
                ..
            } = &mut *g;
            // Sequence numbers in the ring are consecutive: start at the first record that may still keep bodies.
            let first = entries.front().map_or(0, |(s, _)| *s);
            let start = usize::try_from(bodies_from.saturating_sub(first)).unwrap_or(usize::MAX);
            for (s, r) in entries.range_mut(start.min(entries.len())..) {
                if *body_bytes <= self.body_budget {
                    break;
                }
                if let Some(b) = r.bodies.take() {
                    *body_bytes -= b.size();
                    match released.0 {
                        None => released.0 = Some(b),
                        Some(_) => released.1.push(b),
                    }
                }
                *bodies_from = *s + 1;
            }
        }
        drop(g);
        drop(oldest);
        drop(released);
        seq
    }

    /// Runs `f` over the records, newest first, under the ring's lock; also says whether the ring still holds
    /// every record since the last clear.
    pub fn scan<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (u64, &Record)>, bool) -> R) -> R {
        let g = self.inner.lock().unwrap();
        let complete = g.evicted == 0;
        let mut it = g.entries.iter().rev().map(|(s, r)| (*s, r));
        f(&mut it, complete)
    }

    /// The traffic since the previous call.
    pub fn take_traffic(&self) -> Traffic {
        std::mem::take(&mut self.inner.lock().unwrap().traffic)
    }

    pub fn query(&self, q: &JournalQuery) -> Vec<JournalEntry> {
        let g = self.inner.lock().unwrap();
        g.entries
            .iter()
            .rev()
            .filter(|(_, e)| q.account.as_deref().is_none_or(|a| e.account.as_deref() == Some(a)))
            .filter(|(_, e)| q.status.is_none_or(|s| e.status == Some(s)))
            .take(q.limit.unwrap_or(usize::MAX))
            .map(|(seq, e)| e.entry(*seq))
            .collect()
    }

    /// Images served from the render cache since start.
    pub fn cache_hits(&self) -> u64 {
        self.inner.lock().unwrap().cache_hits
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().entries.len()
    }

    /// Empties the ring and starts the expectations' counts over.
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap();
        g.entries.clear();
        g.evicted = 0;
        g.body_bytes = 0;
        drop(g);
        self.expectations.reset_counts();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use bytes::Bytes;
    use chrono::Utc;

    fn record(bytes: usize) -> Record {
        let mut r = Record::new(Utc::now(), Method::POST, "/x".into());
        r.bodies = Some(Box::new(Bodies {
            request: Bytes::from(vec![b'{'; bytes]),
            ..Bodies::default()
        }));
        r
    }

    fn kept(j: &Journal) -> Vec<(u64, bool)> {
        j.scan(|rs, _| rs.map(|(s, r)| (s, r.bodies.is_some())).collect())
    }

    #[test]
    fn past_the_budget_the_oldest_bodies_go_first_and_the_ring_stays_consistent() {
        let j = Journal::new(4, 250);
        for _ in 0..3 {
            j.push(record(100));
        }
        assert_eq!(kept(&j), [(3, true), (2, true), (1, false)]);
        // A body over the whole budget is not kept at all; the others stay.
        j.push(record(300));
        assert_eq!(kept(&j), [(4, false), (3, true), (2, true), (1, false)]);
        // Ring evictions give their bytes back: records 5..=8 of 100 bytes keep the newest two.
        for _ in 0..4 {
            j.push(record(100));
        }
        assert_eq!(kept(&j), [(8, true), (7, true), (6, false), (5, false)]);
        assert_eq!(j.inner.lock().unwrap().body_bytes, 200);
        j.clear();
        j.push(record(100));
        assert_eq!(kept(&j), [(9, true)]);
        assert_eq!(j.inner.lock().unwrap().body_bytes, 100);
    }
}
