//! The request journal: a bounded ring buffer the admin API reads newest first.
//!
//! **Invariant:** an entry names the account, never the API key, so the journal can be shown and logged freely.
//! **Invariant:** at most `capacity` entries are kept; the oldest goes first, so memory stays flat under any load.
//!
//! The ring keeps a [`Record`] per request, built on the request path without formatting or allocating (the
//! account id and the chart's symbol and interval are shared `Arc`s, the common method and paths static); it is
//! turned into the public [`JournalEntry`] only when the admin API reads the journal.

use std::{borrow::Cow, collections::VecDeque, sync::Arc, sync::Mutex};

use axum::http::Method;

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
    pub queue_ms: Option<u64>,
    pub shared_render: Option<bool>,
}

impl Record {
    fn entry(&self, seq: u64) -> JournalEntry {
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
    inner: Mutex<Ring>,
}

impl Journal {
    pub fn new(capacity: usize) -> Self {
        let entries = VecDeque::with_capacity(capacity.min(4096));
        Journal {
            capacity,
            inner: Mutex::new(Ring {
                seq: 0,
                entries,
                traffic: Traffic::default(),
                cache_hits: 0,
            }),
        }
    }

    /// Appends `record` and answers the sequence number it got.
    pub fn push(&self, record: Record) -> u64 {
        let mut g = self.inner.lock().unwrap();
        g.seq += 1;
        let seq = g.seq;
        g.traffic.count(&record);
        g.cache_hits += u64::from(record.cache_hit == Some(true));
        // The record dropped here (the oldest) holds nothing costly to free: `Arc`s and, rarely, a string.
        let oldest = if g.entries.len() >= self.capacity {
            g.entries.pop_front()
        } else {
            None
        };
        if self.capacity > 0 {
            g.entries.push_back((seq, record));
        }
        drop(g);
        drop(oldest);
        seq
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

    pub fn clear(&self) {
        self.inner.lock().unwrap().entries.clear();
    }
}
