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
//! (`crate::snapshot`), within a byte budget (`journal_body_budget`): past it, the oldest records' bodies are let go
//! first (the records stay, marked `bodies_kept: false`). Expectations are counted here, when a request is
//! journaled, so their counts are exact however many records the ring has dropped.

use std::{borrow::Cow, collections::VecDeque, sync::Arc, sync::Mutex};

use axum::http::Method;
use bytes::Bytes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One request as the server saw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JournalEntry {
    /// Increasing number of the request since start.
    pub seq: u64,
    /// When the answer was decided.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// `POST`, … (a `Cow`: the common values are static).
    #[schema(value_type = String)]
    pub method: Cow<'static, str>,
    /// The request path.
    #[schema(value_type = String)]
    pub path: Cow<'static, str>,
    /// The account of the key, when the key is known.
    pub account: Option<String>,
    /// `missing` (no header), `unknown`, `inactive` or `valid`: tells a typo from a missing header without
    /// showing the key.
    #[schema(value_type = String)]
    pub key_status: Cow<'static, str>,
    /// The answered status; absent when the connection was dropped on purpose.
    pub status: Option<u16>,
    /// Time spent on the answer, injected latency included.
    pub duration_ms: u64,
    /// The `message` of an error answer.
    pub error: Option<String>,
    /// The faults that fired on it.
    pub faults: Vec<String>,
    /// `symbol` of the normalized request, when it got that far.
    pub symbol: Option<String>,
    /// `interval` of the normalized request.
    pub interval: Option<String>,
    /// `false` when the symbol catalogue does not list a symbol of the chart: under `symbols: lenient` it rendered,
    /// but the real API may answer `422 Invalid Symbol` (the dashboard marks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol_listed: Option<bool>,
    /// Whether the image came from the render cache.
    pub cache_hit: Option<bool>,
    /// Whether the answer came from a cassette.
    pub replayed: Option<bool>,
    /// The query parameters, API key parameters left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    /// `false` when no route answered it (`404 Route Not Found` for an unknown path or a wrong method).
    pub routed: bool,
    /// The stub that answered it (`GET /__admin/stubs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stub: Option<u64>,
    /// Whether the request's and the answer's bodies are still kept (for body criteria and snapshots).
    pub bodies_kept: bool,
    /// Milliseconds this request's chart waited for a render slot (`render_concurrency`), when it was rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<u64>,
    /// `true` when the chart was drawn once for this and an identical request in flight at the same time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_render: Option<bool>,
}

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

/// The symbol and interval of a normalized request, shared by the journal records of all its repeats.
#[derive(Debug)]
pub(crate) struct ChartLabel {
    pub symbol: String,
    pub interval: String,
    /// The catalogue lists every symbol of the chart.
    pub listed: bool,
}

/// The bodies of a request and its answer, with their content types.
#[derive(Debug, Default)]
pub(crate) struct Bodies {
    pub request_type: Option<Cow<'static, str>>,
    pub request: Bytes,
    pub response_type: Option<Cow<'static, str>>,
    /// `None` when the answer was dropped or streamed (a fault).
    pub response: Option<Bytes>,
}

impl Bodies {
    fn size(&self) -> u64 {
        (self.request.len() + self.response.as_ref().map_or(0, Bytes::len)) as u64
    }
}

/// One request as the ring keeps it (see the module doc); [`JournalEntry`] is its public form.
#[derive(Debug)]
pub(crate) struct Record {
    pub at: DateTime<Utc>,
    pub method: Method,
    pub path: Cow<'static, str>,
    pub account: Option<Arc<str>>,
    pub key_status: &'static str,
    pub status: Option<u16>,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub faults: Vec<&'static str>,
    pub chart: Option<Arc<ChartLabel>>,
    pub cache_hit: Option<bool>,
    pub replayed: Option<bool>,
    /// The query without key parameters; `None` when there was no query (the common case).
    pub query: Pairs,
    /// Whether the key came as a query parameter rather than the `x-api-key` header.
    pub key_in_query: bool,
    pub routed: bool,
    pub stub: Option<u64>,
    pub bodies: Option<Box<Bodies>>,
    pub queue_ms: Option<u64>,
    pub shared_render: Option<bool>,
}

/// Query parameters that carry an API key: never journaled (the recorder redacts the same names).
const KEY_PARAMS: [&str; 3] = ["key", "apiKey", "api_key"];

/// Query pairs as a record keeps them: `None` for no query, the common case.
pub(crate) type Pairs = Option<Box<[(String, String)]>>;

/// The query pairs of `uri` without key parameters, and whether one was there.
pub(crate) fn query_of(uri: &axum::http::Uri) -> (Pairs, bool) {
    if uri.query().is_none_or(str::is_empty) {
        return (None, false);
    }
    let pairs: Vec<(String, String)> = axum::extract::Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let had_key = pairs.iter().any(|(k, _)| KEY_PARAMS.contains(&k.as_str()));
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| !KEY_PARAMS.contains(&k.as_str()))
        .collect();
    ((!kept.is_empty()).then(|| kept.into_boxed_slice()), had_key)
}

impl Record {
    /// A record with the request's head only; the handlers fill in the rest.
    pub fn new(at: DateTime<Utc>, method: Method, path: Cow<'static, str>) -> Record {
        Record {
            at,
            method,
            path,
            account: None,
            key_status: "missing",
            status: None,
            duration_ms: 0,
            error: None,
            faults: Vec::new(),
            chart: None,
            cache_hit: None,
            replayed: None,
            query: None,
            key_in_query: false,
            routed: true,
            stub: None,
            bodies: None,
            queue_ms: None,
            shared_render: None,
        }
    }

    /// The method as text.
    pub fn method_str(&self) -> &str {
        self.method.as_str()
    }

    /// The query pairs (empty when there were none).
    pub fn query_pairs(&self) -> &[(String, String)] {
        self.query.as_deref().unwrap_or(&[])
    }

    pub(crate) fn entry(&self, seq: u64) -> JournalEntry {
        JournalEntry {
            seq,
            at: self.at,
            method: match self.method {
                Method::POST => "POST".into(),
                Method::GET => "GET".into(),
                ref other => other.to_string().into(),
            },
            path: self.path.clone(),
            account: self.account.as_deref().map(str::to_owned),
            key_status: self.key_status.into(),
            status: self.status,
            duration_ms: self.duration_ms,
            error: self.error.clone(),
            faults: self.faults.iter().map(|f| f.to_string()).collect(),
            symbol: self.chart.as_ref().map(|c| c.symbol.clone()),
            interval: self.chart.as_ref().map(|c| c.interval.clone()),
            symbol_listed: self.chart.as_ref().map(|c| c.listed),
            cache_hit: self.cache_hit,
            replayed: self.replayed,
            query: self.query_pairs().to_vec(),
            routed: self.routed,
            stub: self.stub,
            bodies_kept: self.bodies.is_some(),
            queue_ms: self.queue_ms,
            shared_render: self.shared_render,
        }
    }
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
