//! A local Eventarc: Firestore's Listen API on one collection of the emulator, delivered to HTTP targets the way
//! Eventarc and its Pub/Sub push subscription deliver (see `eventarc.md` in the shared docs).
//!
//! - Every change after start-up is a `created` (no previous version), `updated` or `deleted` change, with the
//!   previous version this listener kept as `old_value` and the changed field paths as `update_mask`. It becomes one
//!   event per configured trigger type that delivers it ([`Config::types`], by default the deployment's
//!   [`TRIGGER_EVENT_TYPES`]: `written`), with that trigger's `ce-type`; a change no trigger names is not delivered.
//!   The documents that exist when it starts are its initial state, not events (a trigger sees only later writes).
//! - Delivery is a binary-mode CloudEvent: every `ce-*` header of a Firestore event, `content-type:
//!   application/protobuf` and a protobuf `DocumentEventData` body.
//! - At least once: an answer other than 200, 201, 202, 204 or 102, a broken connection, or no answer within the
//!   ack deadline is delivered again after Pub/Sub's backoff (10 s doubling to 600 s) until the retention (24 h)
//!   has passed. Every duration is multiplied by [`Config::time_scale`], so a test can run the real policy at 1/50.
//! - Optional duplicates (a second delivery chain of the same event, same `ce-id`) and reordering (a random wait
//!   before the first attempt), from a seeded RNG.
//! - Every attempt is recorded ([`Delivery`]), readable in-process and over [`LocalEventarc::admin_router`].
//!
//! Fidelity limits: Firestore's Listen API may coalesce writes that land between two snapshots into one change
//! (Eventarc delivers each write); the emulator in practice sends each commit. Targets are tried round-robin, like
//! requests spread over a service's instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use firestore::gcloud_sdk::google::firestore::v1 as fs;
use firestore::gcloud_sdk::google::firestore::v1::listen_response::ResponseType;
use firestore::{FirestoreDb, FirestoreDbOptions, FirestoreListenerTarget, FirestoreMemListenStateStorage};
use prost::Message as _;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use worker_chart_export::entry::deploy::TRIGGER_EVENT_TYPES;
use worker_chart_export::eventarc::{proto, to_event_document};
use worker_chart_export::firestore_codec::field_path;

/// The Firestore event types (the worker's, the one home of their `ce-type` strings).
pub use worker_chart_export::eventarc::EventType;

/// How the local Eventarc listens and delivers. Durations are Eventarc's real ones; [`Config::time_scale`]
/// shrinks them all.
#[derive(Debug, Clone)]
pub struct Config {
    pub project: String,
    /// Database id (`(default)`); the `ce-database` header and the document names.
    pub database: String,
    pub collection: String,
    /// `ce-location`.
    pub location: String,
    /// The event types of the triggers (one Eventarc trigger filters on one type): a change is delivered once per
    /// type here that delivers it (`written` delivers every change), with that type's `ce-type`. Default: the
    /// deployment's [`TRIGGER_EVENT_TYPES`], as `deploy-plan` prints them.
    pub types: Vec<EventType>,
    /// Multiplies every duration below (1.0 = production timing).
    pub time_scale: f64,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How long an undelivered event is kept before it is dropped.
    pub retention: Duration,
    /// How long one delivery may take before it is abandoned and redelivered.
    pub ack_deadline: Duration,
    /// Chance that an event is delivered twice (two chains, same `ce-id`).
    pub duplicate_probability: f64,
    /// Each chain first waits a random time below this (scaled), so later events can overtake earlier ones.
    pub reorder_window: Duration,
    pub seed: u64,
}

impl Config {
    pub fn new(project: impl Into<String>) -> Self {
        Config {
            project: project.into(),
            database: "(default)".into(),
            collection: "flow_runs".into(),
            location: "nam5".into(),
            types: TRIGGER_EVENT_TYPES.to_vec(),
            time_scale: 1.0,
            min_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(600),
            retention: Duration::from_secs(24 * 3600),
            ack_deadline: Duration::from_secs(600),
            duplicate_probability: 0.0,
            reorder_window: Duration::ZERO,
            seed: 1,
        }
    }

    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale.max(0.0))
    }

    /// The wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed, unscaled.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .min_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
        doubled.min(self.max_backoff)
    }
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The target answered with this HTTP status.
    Status { code: u16 },
    /// The connection failed or broke before an answer (refused, reset, closed).
    Error { message: String },
    /// No answer within the ack deadline: abandoned (the connection is closed) and redelivered.
    AckDeadline,
    /// No target was registered at the time.
    NoTarget,
}

impl Outcome {
    /// Pub/Sub push success codes.
    pub fn acked(&self) -> bool {
        matches!(
            self,
            Outcome::Status {
                code: 200 | 201 | 202 | 204 | 102
            }
        )
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `ce-id` of the event.
    pub event_id: String,
    /// `flow_runs/<id>`.
    pub document: String,
    /// The change: `created`, `updated` or `deleted`.
    pub kind: EventType,
    /// The trigger type it was delivered as (its `ce-type`).
    pub delivered_as: EventType,
    /// 0 for the event's chain, 1 for an injected duplicate, [`REDELIVERY_CHAIN`] for [`LocalEventarc::redeliver`].
    pub chain: u32,
    /// 1-based within its chain.
    pub attempt: u32,
    pub target: Option<String>,
    /// When the attempt started, in ms since the local Eventarc started (real time).
    pub at_ms: u64,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// The answer's body, at most 2 KiB.
    pub body: String,
}

/// One event, and where its delivery stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub id: String,
    pub document: String,
    /// The change: `created`, `updated` or `deleted`.
    pub kind: EventType,
    /// The trigger type it was delivered as (its `ce-type`).
    pub delivered_as: EventType,
    pub update_mask: Vec<String>,
    pub published_ms: u64,
    /// Chains still delivering.
    pub pending_chains: u32,
    pub acked: bool,
    /// The retention passed before any chain was acknowledged.
    pub gave_up: bool,
}

struct Event {
    record_index: usize,
    id: String,
    document: String,
    kind: EventType,
    delivered_as: EventType,
    time: String,
    body: Vec<u8>,
}

struct State {
    started: Instant,
    targets: Vec<String>,
    next_target: usize,
    /// Last version seen, by document name.
    previous: HashMap<String, fs::Document>,
    ready: bool,
    events: Vec<EventRecord>,
    deliveries: Vec<Delivery>,
    /// The latest event of each document (`flow_runs/<id>`), for [`LocalEventarc::redeliver`].
    latest: HashMap<String, Arc<Event>>,
    rng: rand::rngs::StdRng,
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    state: Mutex<State>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running local Eventarc. Dropping it stops listening and delivering.
pub struct LocalEventarc {
    inner: Arc<Inner>,
    listener: tokio::sync::Mutex<Option<firestore::FirestoreListener<FirestoreDb, FirestoreMemListenStateStorage>>>,
}

impl std::fmt::Debug for LocalEventarc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEventarc")
            .field("project", &self.inner.config.project)
            .finish_non_exhaustive()
    }
}

const LISTEN_TARGET: u32 = 17;

/// [`Delivery::chain`] of an attempt made by [`LocalEventarc::redeliver`].
pub const REDELIVERY_CHAIN: u32 = 2;

impl LocalEventarc {
    /// Connects to the Firestore emulator (`FIRESTORE_EMULATOR_HOST`), starts listening on the collection and
    /// returns once the listener holds the collection's current state: every later write is an event.
    pub async fn start(config: Config, targets: Vec<String>) -> anyhow::Result<LocalEventarc> {
        anyhow::ensure!(
            config.time_scale > 0.0,
            "time_scale must be above 0, got {}",
            config.time_scale
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&config.duplicate_probability),
            "duplicate_probability must be within 0..=1, got {}",
            config.duplicate_probability
        );
        let mut options = FirestoreDbOptions::new(config.project.clone());
        options.database_id = config.database.clone();
        let db = FirestoreDb::with_options(options)
            .await
            .context("local eventarc: cannot connect to Firestore")?;
        let http = reqwest::Client::builder()
            // One connection per attempt, as independent push requests: a killed target's pooled connection
            // must not turn the next attempt into a spurious error.
            .pool_max_idle_per_host(0)
            .build()?;
        let inner = Arc::new(Inner {
            http,
            state: Mutex::new(State {
                started: Instant::now(),
                targets,
                next_target: 0,
                previous: HashMap::new(),
                ready: false,
                events: Vec::new(),
                deliveries: Vec::new(),
                latest: HashMap::new(),
                rng: rand::rngs::StdRng::seed_from_u64(config.seed),
            }),
            config,
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        });
        let mut listener = db
            .create_listener(FirestoreMemListenStateStorage::new())
            .await
            .context("local eventarc: cannot create a Firestore listener")?;
        db.fluent()
            .select()
            .from(inner.config.collection.as_str())
            .listen()
            .add_target(FirestoreListenerTarget::new(LISTEN_TARGET), &mut listener)
            .context("local eventarc: cannot add the listen target")?;
        let cb_inner = inner.clone();
        listener
            .start(move |event| {
                let inner = cb_inner.clone();
                async move {
                    on_listen_event(&inner, event);
                    Ok(())
                }
            })
            .await
            .context("local eventarc: cannot start listening")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !inner.lock().ready {
            anyhow::ensure!(
                Instant::now() < deadline,
                "local eventarc: Firestore's Listen stream did not become current within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(LocalEventarc {
            inner,
            listener: tokio::sync::Mutex::new(Some(listener)),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Replaces the URLs deliveries go to (e.g. after a process was killed or a new one started).
    pub fn set_targets(&self, targets: Vec<String>) {
        let mut s = self.inner.lock();
        s.targets = targets;
        s.next_target = 0;
    }

    pub fn targets(&self) -> Vec<String> {
        self.inner.lock().targets.clone()
    }

    /// Sends the latest event of `document` (`flow_runs/<id>`) once more, now, to `target`: a redelivery at a moment
    /// the test chooses, as Pub/Sub may make one to any instance at any time (at least once). Recorded as a
    /// [`Delivery`] of chain [`REDELIVERY_CHAIN`]; the event's own chains go on as before.
    pub async fn redeliver(&self, document: &str, target: &str) -> anyhow::Result<Delivery> {
        let (ev, attempt) = {
            let s = self.inner.lock();
            let ev = s
                .latest
                .get(document)
                .cloned()
                .with_context(|| format!("local eventarc: no event of {document} to redeliver"))?;
            let before = s
                .deliveries
                .iter()
                .filter(|d| d.event_id == ev.id && d.chain == REDELIVERY_CHAIN)
                .count();
            (ev, 1 + before as u32)
        };
        let d = attempt_once(&self.inner, &ev, REDELIVERY_CHAIN, attempt, Some(target.to_owned())).await;
        if d.outcome.acked() {
            self.inner.lock().events[ev.record_index].acked = true;
        }
        Ok(d)
    }

    /// Every attempt so far, in the order they ended.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().deliveries.clone()
    }

    /// Every event so far, in publication order.
    pub fn events(&self) -> Vec<EventRecord> {
        self.inner.lock().events.clone()
    }

    /// Milliseconds since start (the time base of [`Delivery::at_ms`]).
    pub fn now_ms(&self) -> u64 {
        self.inner.lock().started.elapsed().as_millis() as u64
    }

    /// Events with a chain still delivering.
    pub fn pending(&self) -> usize {
        self.inner.lock().events.iter().filter(|e| e.pending_chains > 0).count()
    }

    /// Waits until no event is being delivered and nothing new arrived for `quiet`; false after `timeout`.
    pub async fn wait_settled(&self, quiet: Duration, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut since: Option<(Instant, usize)> = None;
        loop {
            let (pending, n) = {
                let s = self.inner.lock();
                (
                    s.events.iter().filter(|e| e.pending_chains > 0).count(),
                    s.events.len() + s.deliveries.len(),
                )
            };
            if pending == 0 {
                match since {
                    Some((t, m)) if m == n && t.elapsed() >= quiet => return true,
                    Some((_, m)) if m == n => {}
                    _ => since = Some((Instant::now(), n)),
                }
            } else {
                since = None;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening and abandons every delivery still pending.
    pub async fn shutdown(&self) {
        if let Some(mut l) = self.listener.lock().await.take() {
            let _ = l.shutdown_with_timeout(Duration::from_secs(2)).await;
        }
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        tasks.shutdown().await;
    }

    /// `GET /deliveries`, `GET /events`, `GET /targets`, `PUT /targets` (a JSON array of URLs), `GET /health`.
    pub fn admin_router(self: &Arc<Self>) -> axum::Router {
        use axum::routing::get;
        use axum::Json;
        let (a, b, c, d) = (self.clone(), self.clone(), self.clone(), self.clone());
        axum::Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/deliveries", get(move || async move { Json(a.deliveries()) }))
            .route("/events", get(move || async move { Json(b.events()) }))
            .route(
                "/targets",
                get(move || async move { Json(c.targets()) }).put(move |Json(t): Json<Vec<String>>| async move {
                    d.set_targets(t);
                    Json(d.targets())
                }),
            )
    }
}

impl Drop for LocalEventarc {
    fn drop(&mut self) {
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()).abort_all();
    }
}

fn on_listen_event(inner: &Arc<Inner>, event: ResponseType) {
    match event {
        ResponseType::TargetChange(tc) => {
            if tc.target_change_type == fs::target_change::TargetChangeType::Current as i32 {
                inner.lock().ready = true;
            }
        }
        ResponseType::DocumentChange(dc) => {
            if let Some(doc) = dc.document {
                let previous = {
                    let mut s = inner.lock();
                    let prev = s.previous.insert(doc.name.clone(), doc.clone());
                    if !s.ready {
                        return;
                    }
                    prev
                };
                // A resumed stream re-sends versions it already sent: same update time, no new write.
                if previous.as_ref().is_some_and(|p| p.update_time == doc.update_time) {
                    return;
                }
                let kind = if previous.is_some() {
                    EventType::Updated
                } else {
                    EventType::Created
                };
                publish(inner, kind, Some(doc), previous);
            }
        }
        ResponseType::DocumentDelete(dd) => deleted(inner, &dd.document),
        ResponseType::DocumentRemove(dr) => deleted(inner, &dr.document),
        ResponseType::Filter(_) => {}
    }
}

fn deleted(inner: &Arc<Inner>, name: &str) {
    let previous = {
        let mut s = inner.lock();
        let prev = s.previous.remove(name);
        if !s.ready {
            return;
        }
        prev
    };
    if previous.is_some() {
        publish(inner, EventType::Deleted, None, previous);
    }
}

/// The field paths that differ between two versions, down to the leaves of maps (`steps.charts_4h.status`).
pub fn changed_paths(old: &HashMap<String, fs::Value>, new: &HashMap<String, fs::Value>) -> Vec<String> {
    fn walk(
        prefix: &mut Vec<String>,
        old: &HashMap<String, fs::Value>,
        new: &HashMap<String, fs::Value>,
        out: &mut Vec<String>,
    ) {
        let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            prefix.push(k.clone());
            match (old.get(k).and_then(as_map), new.get(k).and_then(as_map)) {
                (Some(a), Some(b)) => walk(prefix, a, b, out),
                _ => {
                    if old.get(k) != new.get(k) {
                        let segments: Vec<&str> = prefix.iter().map(String::as_str).collect();
                        out.push(field_path(&segments));
                    }
                }
            }
            prefix.pop();
        }
    }
    fn as_map(v: &fs::Value) -> Option<&HashMap<String, fs::Value>> {
        match &v.value_type {
            Some(fs::value::ValueType::MapValue(m)) => Some(&m.fields),
            _ => None,
        }
    }
    let mut out = Vec::new();
    walk(&mut Vec::new(), old, new, &mut out);
    out
}

/// One event per configured trigger type that delivers a change of `kind`.
fn publish(inner: &Arc<Inner>, kind: EventType, value: Option<fs::Document>, old: Option<fs::Document>) {
    for t in inner.config.types.iter().copied().filter(|t| t.delivers(kind)) {
        publish_as(inner, kind, t, value.as_ref(), old.as_ref());
    }
}

fn publish_as(
    inner: &Arc<Inner>,
    kind: EventType,
    delivered_as: EventType,
    value: Option<&fs::Document>,
    old: Option<&fs::Document>,
) {
    let cfg = &inner.config;
    let Some(name) = value.or(old).map(|d| d.name.clone()) else {
        return;
    };
    let document = name
        .split_once("/documents/")
        .map(|(_, p)| p.to_owned())
        .unwrap_or_else(|| name.clone());
    let update_mask = match (value, old, kind) {
        (Some(v), Some(o), EventType::Updated) => changed_paths(&o.fields, &v.fields),
        _ => Vec::new(),
    };
    let time = value
        .and_then(|v| v.update_time)
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = proto::DocumentEventData {
        value: value.map(to_event_document),
        old_value: old.map(to_event_document),
        update_mask: (kind == EventType::Updated).then(|| proto::DocumentMask {
            field_paths: update_mask.clone(),
        }),
    }
    .encode_to_vec();
    let id = uuid::Uuid::new_v4().to_string();
    let (record_index, chains) = {
        let mut s = inner.lock();
        let duplicate = cfg.duplicate_probability > 0.0 && s.rng.random_bool(cfg.duplicate_probability);
        let chains = if duplicate { 2 } else { 1 };
        let waits: Vec<Duration> = (0..chains)
            .map(|_| {
                if cfg.reorder_window.is_zero() {
                    Duration::ZERO
                } else {
                    cfg.reorder_window.mul_f64(s.rng.random::<f64>())
                }
            })
            .collect();
        let published_ms = s.started.elapsed().as_millis() as u64;
        s.events.push(EventRecord {
            id: id.clone(),
            document: document.clone(),
            kind,
            delivered_as,
            update_mask,
            published_ms,
            pending_chains: chains,
            acked: false,
            gave_up: false,
        });
        (s.events.len() - 1, waits)
    };
    tracing::debug!(event = "local_eventarc_published", ceId = %id, document = %document, kind = %kind, ceType = delivered_as.ce_type());
    let event = Arc::new(Event {
        record_index,
        id,
        document,
        kind,
        delivered_as,
        time,
        body,
    });
    inner.lock().latest.insert(event.document.clone(), event.clone());
    let mut tasks = inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
    for (chain, wait) in chains.into_iter().enumerate() {
        let (inner, event) = (inner.clone(), event.clone());
        tasks.spawn(async move { deliver(inner, event, chain as u32, wait).await });
    }
}

async fn deliver(inner: Arc<Inner>, ev: Arc<Event>, chain: u32, wait: Duration) {
    let cfg = &inner.config;
    tokio::time::sleep(cfg.scaled(wait)).await;
    let first = Instant::now();
    let mut attempt = 0u32;
    let acked = loop {
        attempt += 1;
        let target = {
            let mut s = inner.lock();
            if s.targets.is_empty() {
                None
            } else {
                let i = s.next_target % s.targets.len();
                s.next_target = s.next_target.wrapping_add(1);
                Some(s.targets[i].clone())
            }
        };
        let acked = attempt_once(&inner, &ev, chain, attempt, target).await.outcome.acked();
        if acked {
            break true;
        }
        let backoff = cfg.scaled(cfg.backoff(attempt));
        if first.elapsed() + backoff > cfg.scaled(cfg.retention) {
            break false;
        }
        tokio::time::sleep(backoff).await;
    };
    let mut s = inner.lock();
    let rec = &mut s.events[ev.record_index];
    rec.pending_chains = rec.pending_chains.saturating_sub(1);
    rec.acked |= acked;
    if rec.pending_chains == 0 && !rec.acked {
        rec.gave_up = true;
    }
}

/// One delivery attempt of `ev` to `target`, recorded in [`LocalEventarc::deliveries`].
async fn attempt_once(inner: &Inner, ev: &Event, chain: u32, attempt: u32, target: Option<String>) -> Delivery {
    let cfg = &inner.config;
    let at_ms = inner.lock().started.elapsed().as_millis() as u64;
    let t0 = Instant::now();
    let (outcome, body) = match &target {
        None => (Outcome::NoTarget, String::new()),
        Some(url) => match tokio::time::timeout(cfg.scaled(cfg.ack_deadline), send(inner, ev, url)).await {
            Err(_) => (Outcome::AckDeadline, String::new()),
            Ok(Err(e)) => (
                Outcome::Error {
                    message: error_chain(&e),
                },
                String::new(),
            ),
            Ok(Ok((code, body))) => (Outcome::Status { code }, body),
        },
    };
    tracing::debug!(event = "local_eventarc_delivery", ceId = %ev.id, chain, attempt, outcome = ?outcome);
    let d = Delivery {
        event_id: ev.id.clone(),
        document: ev.document.clone(),
        kind: ev.kind,
        delivered_as: ev.delivered_as,
        chain,
        attempt,
        target,
        at_ms,
        duration_ms: t0.elapsed().as_millis() as u64,
        outcome,
        body,
    };
    inner.lock().deliveries.push(d.clone());
    d
}

fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn send(inner: &Inner, ev: &Event, url: &str) -> Result<(u16, String), reqwest::Error> {
    let cfg = &inner.config;
    let (p, db) = (&cfg.project, &cfg.database);
    let resp = inner
        .http
        .post(url)
        .header("content-type", "application/protobuf")
        .header("ce-specversion", "1.0")
        .header("ce-id", &ev.id)
        .header("ce-source", format!("//firestore.googleapis.com/projects/{p}/databases/{db}"))
        .header("ce-type", ev.delivered_as.ce_type())
        .header("ce-subject", format!("documents/{}", ev.document))
        .header("ce-time", &ev.time)
        .header(
            "ce-dataschema",
            "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto",
        )
        .header("ce-database", db.as_str())
        .header("ce-namespace", "(default)")
        .header("ce-document", &ev.document)
        .header("ce-location", &cfg.location)
        .header("ce-project", p.as_str())
        .body(ev.body.clone())
        .send()
        .await?;
    let code = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).into_owned();
    Ok((code, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_10_s_to_600_s() {
        let c = Config::new("p");
        let secs: Vec<u64> = (1..=9).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(c.backoff(1000).as_secs(), 600);
    }

    #[test]
    fn success_codes_are_pubsubs() {
        for code in [200, 201, 202, 204, 102] {
            assert!(Outcome::Status { code }.acked());
        }
        for code in [203, 301, 400, 429, 500, 503] {
            assert!(!Outcome::Status { code }.acked(), "{code}");
        }
        assert!(!Outcome::AckDeadline.acked() && !Outcome::NoTarget.acked());
    }

    #[test]
    fn changed_paths_reach_the_leaves_of_maps() {
        use worker_chart_export::firestore_codec::json_to_value;
        let fields = |v: serde_json::Value| -> HashMap<String, fs::Value> {
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect()
        };
        let old = fields(serde_json::json!({"a": 1, "steps": {"s-1": {"status": "READY", "x": 1}}, "gone": true}));
        let new = fields(
            serde_json::json!({"a": 1, "steps": {"s-1": {"status": "RUNNING", "x": 1, "lease": "t"}}, "new": 2}),
        );
        assert_eq!(
            changed_paths(&old, &new),
            ["gone", "new", "steps.`s-1`.lease", "steps.`s-1`.status"]
        );
    }
}
