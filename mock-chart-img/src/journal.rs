//! The request journal: a bounded ring buffer the admin API reads newest first.
//!
//! **Invariant:** an entry names the account, never the API key, so the journal can be shown and logged freely.
//! **Invariant:** at most `capacity` entries are kept; the oldest goes first, so memory stays flat under any load.

use std::{collections::VecDeque, sync::Mutex};

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
    /// `POST`, …
    pub method: String,
    /// The request path.
    pub path: String,
    /// The account of the key, when the key is known.
    pub account: Option<String>,
    /// `missing` (no header), `unknown`, `inactive` or `valid`: tells a typo from a missing header without
    /// showing the key.
    pub key_status: String,
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
    /// Whether the image came from the render cache.
    pub cache_hit: Option<bool>,
    /// Whether the answer came from a cassette.
    pub replayed: Option<bool>,
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

pub(crate) struct Journal {
    capacity: usize,
    inner: Mutex<(u64, VecDeque<JournalEntry>)>,
}

impl Journal {
    pub fn new(capacity: usize) -> Self {
        Journal { capacity, inner: Mutex::new((0, VecDeque::with_capacity(capacity.min(4096)))) }
    }

    /// Appends `entry` and answers the sequence number it got.
    pub fn push(&self, mut entry: JournalEntry) -> u64 {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        entry.seq = g.0;
        if g.1.len() >= self.capacity {
            g.1.pop_front();
        }
        g.1.push_back(entry);
        g.0
    }

    pub fn query(&self, q: &JournalQuery) -> Vec<JournalEntry> {
        let g = self.inner.lock().unwrap();
        g.1.iter()
            .rev()
            .filter(|e| q.account.as_ref().is_none_or(|a| e.account.as_ref() == Some(a)))
            .filter(|e| q.status.is_none_or(|s| e.status == Some(s)))
            .take(q.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().1.len()
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap().1.clear();
    }
}
