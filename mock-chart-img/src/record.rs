//! One journaled request: [`Record`], as the journal's ring keeps it (built on the request path without formatting
//! or allocating), and [`JournalEntry`], its public form. What criteria ([`crate::verify`]) match, stubs answer and
//! snapshots write; the journal (`crate::journal`) keeps them.
//!
//! **Invariant:** a record names the account, never the API key, and keeps no key query parameter.

use std::{borrow::Cow, sync::Arc};

use axum::http::Method;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// One request as the server saw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JournalEntry {
    /// Increasing number of the request since start.
    pub seq: u64,
    /// When the answer was decided.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// When the request arrived (before its body was read), on the clock of `at`.
    #[schema(value_type = String, format = DateTime)]
    pub received_at: DateTime<Utc>,
    /// The label of a request sent under `/__via/<label>/` (a client naming itself, e.g. one process of several
    /// sharing a key); the rest of the path is the route. Absent for requests sent to the routes directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
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
    /// The answered status; absent when the connection was dropped on purpose or the client closed it first.
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
    /// `true` when the client closed the connection before the answer (it timed out, or its process died): no status,
    /// and the request was still counted against the quota if it had passed the gateway, as the real API counts a
    /// call whose client gave up.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_closed: bool,
    /// Milliseconds this request's chart waited for a render slot (`render_concurrency`), when it was rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<u64>,
    /// `true` when the chart was drawn once for this and an identical request in flight at the same time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_render: Option<bool>,
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
    pub(crate) fn size(&self) -> u64 {
        (self.request.len() + self.response.as_ref().map_or(0, Bytes::len)) as u64
    }
}

/// One request as the ring keeps it (see the module doc); [`JournalEntry`] is its public form.
#[derive(Debug)]
pub(crate) struct Record {
    pub at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub via: Option<Arc<str>>,
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
    pub client_closed: bool,
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
            received_at: at,
            via: None,
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
            client_closed: false,
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
            received_at: self.received_at,
            via: self.via.as_deref().map(str::to_owned),
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
            client_closed: self.client_closed,
        }
    }
}
