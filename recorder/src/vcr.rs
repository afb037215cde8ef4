//! `Vcr`: one cassette directory in memory, with a match index, replay cursors and a serialized writer.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fs4::FileExt;

use crate::canon::{canonicalize, is_canonical, strip_ignored};
use crate::cassette::{
    body_bytes, load_response, read_cassette, render_cassette, store_request, store_response, write_atomic,
    write_sidecar, Sidecar, StoredInteraction, StoredRequest, CASSETTE_FILE, LOCK_FILE,
};
use crate::error::Error;
use crate::miss::{diff, match_fields, Closest, Miss, MissReason, RequestSummary, Unused, UnusedInteraction};
use crate::model::{Mode, OnExhausted, Request, Response, VcrConfig, WritePolicy};
use crate::secrets::Secrets;

/// One cassette directory, loaded in memory: replays from it and, depending on the mode, records into it.
///
/// `Vcr` is `Send + Sync` and a cheap `Clone` (an `Arc` inside): share one between tasks and threads to replay in
/// parallel; every clone sees the same replay positions. Two `Vcr`s (in one process or several) may record into
/// the same directory: each rewrite of `cassette.json` happens under a file lock and merges what is on disk.
///
/// Persistence: with the default [`WritePolicy::EachInteraction`] every recorded interaction is written before
/// [`handle`](Vcr::handle) returns; with [`WritePolicy::OnFlush`] on [`flush`](Vcr::flush) and when the last clone
/// is dropped (errors on drop can only be logged, so call `flush` when you care).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use recorder::{Mode, Request, Response, Secrets, Vcr, VcrConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let secrets = Secrets::new().with_account("acc-1", "k-0123456789".into());
/// let config = VcrConfig { mode: Mode::NewEpisodes, ..VcrConfig::default() };
/// let vcr = Vcr::open(dir.path(), config, secrets.clone()).unwrap();
/// let req = Request::post_json("/v2/tradingview/advanced-chart", &serde_json::json!({"interval": "4h"}))
///     .with_header("x-api-key", "k-0123456789");
/// let live = vcr
///     .handle(req.clone(), |_| async { Ok::<_, std::io::Error>(Response::new(200).with_body("ok")) })
///     .await
///     .unwrap();
/// drop(vcr);
///
/// // Later, with no upstream at all:
/// let replayer = Vcr::open(dir.path(), VcrConfig::default(), secrets).unwrap();
/// assert_eq!(replayer.replay(&req).unwrap().body, live.body);
/// let file = std::fs::read_to_string(dir.path().join("cassette.json")).unwrap();
/// assert!(file.contains("<CHART_IMG_API_KEY:acc-1>") && !file.contains("k-0123456789"));
/// # }
/// ```
#[derive(Clone)]
pub struct Vcr {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    config: VcrConfig,
    secrets: Secrets,
    /// Whether `cassette.json` existed at open: `once` records only into a cassette that did not.
    existed: bool,
    /// Interactions and their match index. Every replay takes the read lock; only adding a recording takes the
    /// write lock, so replays never wait for disk.
    table: RwLock<Table>,
    /// Recordings not yet in the file. Held across a whole file rewrite, so that writers in this process take
    /// turns (the file lock does the same across processes).
    writer: Mutex<Writer>,
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    /// Match key → the entries with that key, in recorded order, and the next one to play.
    index: HashMap<String, Slot>,
}

struct Entry {
    stored: StoredInteraction,
    /// Materialized once at load, so a replay is a lookup and a clone of `Bytes`.
    response: Response,
    latency: Option<Duration>,
    from_disk: bool,
    /// Replayed at least once since open (or the last rewind): what [`Vcr::unused`] reports.
    used: AtomicBool,
}

struct Slot {
    positions: Vec<usize>,
    /// Atomic so that parallel replays under the read lock each take a distinct recorded answer, in order.
    next: AtomicUsize,
}

#[derive(Default)]
struct Writer {
    pending: Vec<StoredInteraction>,
    /// `all` mode: interactions loaded from disk whose request was recorded again; removed from the file on write.
    replaced: Vec<StoredInteraction>,
    /// `all` mode: match keys already recorded in this session (their old interactions are in `replaced`).
    rerecorded: HashSet<String>,
    /// The bytes this writer last wrote and the sorted interactions they hold. When the file still has exactly
    /// these bytes (compared, not guessed from metadata), the next rewrite skips parsing it again.
    last_written: Option<(Vec<u8>, Vec<Sorted>)>,
}

/// An interaction with its sort key (`StoredRequest::sort_key`), computed once per interaction.
type Sorted = (String, StoredInteraction);

enum Decision {
    Replay(Response, Option<Duration>),
    Record,
    Miss(Box<Miss>),
}

impl Vcr {
    /// Loads the cassette in `dir` (a missing directory or `cassette.json` is an empty cassette; nothing is
    /// created until something is recorded). Every body file is read and checked against its SHA-256 here, so
    /// replay cannot fail on I/O later.
    pub fn open(dir: impl AsRef<Path>, config: VcrConfig, secrets: Secrets) -> Result<Vcr, Error> {
        let dir = dir.as_ref().to_path_buf();
        let file = read_cassette(&dir)?;
        let existed = file.is_some();
        let mut cache = HashMap::new();
        let mut table = Table::default();
        for mut stored in file.map(|f| f.interactions).unwrap_or_default() {
            // Hand-edited cassettes may have unsorted keys; matching needs the canonical form.
            if let Some(body) = stored.request.body.as_mut() {
                if let Some(json) = body.json.take_if(|j| !is_canonical(j)) {
                    body.json = Some(canonicalize(json));
                }
            }
            let response = load_response(&stored.response, &dir, &mut cache)?;
            let latency = stored.latency_ms.map(Duration::from_millis);
            let key = match_key(&stored.request, &config);
            table.push(
                key,
                Entry {
                    stored,
                    response,
                    latency,
                    from_disk: true,
                    used: AtomicBool::new(false),
                },
                false,
            );
        }
        Ok(Vcr {
            inner: Arc::new(Inner {
                dir,
                config,
                secrets,
                existed,
                table: RwLock::new(table),
                writer: Mutex::new(Writer::default()),
            }),
        })
    }

    /// Answers from the cassette if the request matches; otherwise, as the mode allows, calls `upstream` with
    /// the request (secrets intact) and records the redacted interaction. The live response is returned as is.
    ///
    /// Needs a Tokio runtime when it records: the file write runs on the blocking pool.
    pub async fn handle<F, Fut, E>(&self, req: Request, upstream: F) -> Result<Response, VcrError<E>>
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = Result<Response, E>>,
    {
        let inner = &self.inner;
        let (stored, sidecar) = store_request(&req, &inner.secrets, &inner.config);
        let key = match_key(&stored, &inner.config);
        match inner.decide(&stored, &key, inner.config.mode) {
            Decision::Replay(resp, latency) => {
                if let (true, Some(d)) = (inner.config.replay_latency, latency) {
                    tokio::time::sleep(d).await;
                }
                return Ok(resp);
            }
            Decision::Miss(miss) => return Err(VcrError::Miss(*miss)),
            Decision::Record => {}
        }
        let started = Instant::now();
        let resp = upstream(req).await.map_err(VcrError::Upstream)?;
        let latency = started.elapsed();
        let job = {
            let inner = Arc::clone(inner);
            let resp = resp.clone();
            move || inner.record(stored, sidecar, key, &resp, latency)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => match rt.spawn_blocking(job).await {
                Ok(result) => result?,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => {
                    return Err(VcrError::Store(Error::Io {
                        path: inner.dir.clone(),
                        source: std::io::Error::other(format!("recording task did not finish: {e}")),
                    }))
                }
            },
            Err(_) => job()?,
        }
        Ok(resp)
    }

    // `Miss` is large, but it is the rare error path and a plain struct with public fields is what callers
    // (the worker, mock-chart-img) destructure; boxing it would only move the allocation into their code.
    #[allow(clippy::result_large_err)]
    /// Replay only, whatever the mode (this is what `mock-chart-img` and the worker's `mock` mode call).
    /// Identical requests get the recorded answers in order, then the last again or a miss per `on_exhausted`.
    pub fn replay(&self, req: &Request) -> Result<Response, Miss> {
        self.replay_with_latency(req).map(|(r, _)| r)
    }

    #[allow(clippy::result_large_err)]
    /// As [`replay`](Vcr::replay), plus the recorded latency when the cassette has one.
    pub fn replay_with_latency(&self, req: &Request) -> Result<(Response, Option<Duration>), Miss> {
        let (stored, _) = store_request(req, &self.inner.secrets, &self.inner.config);
        let key = match_key(&stored, &self.inner.config);
        match self.inner.decide(&stored, &key, Mode::None) {
            Decision::Replay(r, latency) => Ok((r, latency)),
            Decision::Miss(m) => Err(*m),
            Decision::Record => unreachable!("mode none never records"),
        }
    }

    /// Writes recordings not yet on disk (only [`WritePolicy::OnFlush`] leaves any).
    pub fn flush(&self) -> Result<(), Error> {
        let mut writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.flush_locked(&mut writer)
    }

    /// Starts every replay position over, as if the cassette had just been opened (nothing counts as used).
    pub fn rewind(&self) {
        let table = self.inner.table.read().unwrap_or_else(PoisonError::into_inner);
        table.index.values().for_each(|s| s.next.store(0, Ordering::SeqCst));
        table
            .entries
            .iter()
            .filter(|e| e.from_disk)
            .for_each(|e| e.used.store(false, Ordering::Relaxed));
    }

    /// The interactions loaded from the cassette that no request has used since it was opened (or rewound), in
    /// cassette order; built from the stored (redacted) requests only.
    pub fn unused(&self) -> Vec<UnusedInteraction> {
        let table = self.inner.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.from_disk && !e.used.load(Ordering::Relaxed))
            .map(|(index, e)| UnusedInteraction {
                index,
                request: RequestSummary::from_stored(&e.stored.request),
                status: e.stored.response.status,
            })
            .collect()
    }

    /// With `allow_unused: false` (VCR's `allow_unused_http_interactions`), the report of the interactions no
    /// request used; `Ok` when every one was used, or when unused ones are allowed (the default). Call it at the end
    /// of what the cassette was for: a test, a step, a proxy session.
    pub fn check_unused(&self) -> Result<(), Unused> {
        if self.inner.config.allow_unused {
            return Ok(());
        }
        let interactions = self.unused();
        if interactions.is_empty() {
            return Ok(());
        }
        Err(Unused {
            cassette: self.inner.dir.display().to_string(),
            total: self
                .inner
                .table
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .entries
                .iter()
                .filter(|e| e.from_disk)
                .count(),
            interactions,
        })
    }

    /// The cassette directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configured mode.
    pub fn mode(&self) -> Mode {
        self.inner.config.mode
    }

    /// Number of interactions in memory (loaded plus recorded in this session).
    pub fn len(&self) -> usize {
        self.inner
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Whether there is no interaction at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every known API key in `text` by its placeholder (for callers' own error messages).
    pub fn redact(&self, text: &str) -> String {
        self.inner.secrets.redact(text).into_owned()
    }
}

impl std::fmt::Debug for Vcr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcr")
            .field("dir", &self.inner.dir)
            .field("mode", &self.inner.config.mode)
            .field("interactions", &self.len())
            .finish()
    }
}

/// The error of [`Vcr::handle`](crate::Vcr::handle).
///
/// `Display` never prints the upstream error itself: upstream errors (a URL with a key in its query, a header dump)
/// are outside this crate's redaction. Reach it through the `Upstream` variant or `source()`.
// `Miss` makes this enum large; it is an error path, and a plain `Miss(Miss)` is easier to match on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum VcrError<E> {
    /// No recorded answer, and the mode does not allow calling upstream.
    Miss(Miss),
    /// Upstream was called and failed; nothing was recorded.
    Upstream(E),
    /// Reading or writing the cassette failed.
    Store(Error),
}

impl<E> std::fmt::Display for VcrError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VcrError::Miss(m) => write!(f, "{m}"),
            VcrError::Upstream(_) => {
                f.write_str("the upstream call failed (error not shown here: it may hold secrets)")
            }
            VcrError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for VcrError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VcrError::Miss(_) => None,
            VcrError::Upstream(e) => Some(e),
            VcrError::Store(e) => Some(e),
        }
    }
}

impl<E> From<Error> for VcrError<E> {
    fn from(e: Error) -> Self {
        VcrError::Store(e)
    }
}

impl<E> From<Miss> for VcrError<E> {
    fn from(m: Miss) -> Self {
        VcrError::Miss(m)
    }
}

/// The string two requests must share to match: method, path, the query without ignored parameters, the
/// matched headers and the canonical body without ignored fields.
fn match_key(req: &StoredRequest, config: &VcrConfig) -> String {
    let query: Vec<&(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !config.ignore_query_params.iter().any(|i| i == k))
        .collect();
    let headers: Vec<(&String, &String)> = req
        .headers
        .iter()
        .filter(|(k, _)| config.match_headers.iter().any(|h| h.eq_ignore_ascii_case(k)))
        .collect();
    let body = match &req.body {
        None => String::new(),
        Some(b) => match (&b.json, &b.text, &b.file) {
            (Some(v), _, _) if config.ignore_json_fields.is_empty() => format!("j{v}"),
            (Some(v), _, _) => {
                let mut v = v.clone();
                strip_ignored(&mut v, &config.ignore_json_fields);
                format!("j{v}")
            }
            (_, Some(t), _) => format!("t{t}"),
            // The file name is the content hash (+ extension from the content type).
            (_, _, Some(f)) => format!("f{f}"),
            _ => String::new(),
        },
    };
    serde_json::to_string(&(&req.method, &req.path, query, headers, body)).expect("keys serialize")
}

impl Table {
    /// Adds an entry; `consumed` marks it as already played (a live recording answered this request).
    fn push(&mut self, key: String, entry: Entry, consumed: bool) -> usize {
        let pos = self.entries.len();
        self.entries.push(entry);
        let slot = self.index.entry(key).or_insert_with(|| Slot {
            positions: Vec::new(),
            next: AtomicUsize::new(0),
        });
        slot.positions.push(pos);
        if consumed {
            slot.next.fetch_max(slot.positions.len(), Ordering::SeqCst);
        }
        pos
    }
}

impl Inner {
    fn decide(&self, stored: &StoredRequest, key: &str, mode: Mode) -> Decision {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        if mode == Mode::All {
            // Re-recorded: the old interactions answered to this request are replaced, not left unused.
            for &pos in table.index.get(key).map_or(&[][..], |s| &s.positions) {
                table.entries[pos].used.store(true, Ordering::Relaxed);
            }
            return Decision::Record;
        }
        let replay = |pos: usize| {
            let e = &table.entries[pos];
            e.used.store(true, Ordering::Relaxed);
            Decision::Replay(e.response.clone(), e.latency)
        };
        match table.index.get(key) {
            Some(slot) => {
                let n = slot.next.fetch_add(1, Ordering::SeqCst);
                if let Some(&pos) = slot.positions.get(n) {
                    return replay(pos);
                }
                let last = *slot.positions.last().expect("slots are never empty");
                match (mode, self.config.on_exhausted) {
                    (Mode::NewEpisodes, _) | (Mode::Spy, OnExhausted::Error) => Decision::Record,
                    (_, OnExhausted::Repeat) => replay(last),
                    (_, OnExhausted::Error) => Decision::Miss(Box::new(self.miss(
                        &table,
                        stored,
                        MissReason::Exhausted {
                            recorded: slot.positions.len(),
                        },
                        Some(last),
                    ))),
                }
            }
            None => match mode {
                Mode::None => Decision::Miss(Box::new(self.miss(&table, stored, MissReason::NoMatch, None))),
                Mode::Once if self.existed => {
                    Decision::Miss(Box::new(self.miss(&table, stored, MissReason::NoMatch, None)))
                }
                _ => Decision::Record,
            },
        }
    }

    /// Builds the report. The closest interaction is the one with the fewest differing fields, looked for among
    /// the same method and path first (a miss is rare, so a linear scan is fine).
    fn miss(&self, table: &Table, stored: &StoredRequest, reason: MissReason, closest: Option<usize>) -> Miss {
        let actual = match_fields(stored, &self.config);
        let best = closest
            .map(|pos| (pos, match_fields(&table.entries[pos].stored.request, &self.config)))
            .or_else(|| {
                let same_route: Vec<usize> = (0..table.entries.len())
                    .filter(|&i| {
                        let r = &table.entries[i].stored.request;
                        r.method == stored.method && r.path == stored.path
                    })
                    .collect();
                let candidates: Vec<usize> = if same_route.is_empty() {
                    (0..table.entries.len()).collect()
                } else {
                    same_route
                };
                candidates
                    .into_iter()
                    .map(|i| (i, match_fields(&table.entries[i].stored.request, &self.config)))
                    .min_by_key(|(i, fields)| (diff(fields, &actual).len(), *i))
            });
        let (closest, diffs) = match best {
            Some((pos, fields)) => (
                Some(Closest {
                    index: pos,
                    request: RequestSummary::from_stored(&table.entries[pos].stored.request),
                }),
                diff(&fields, &actual),
            ),
            None => (None, Vec::new()),
        };
        Miss {
            cassette: self.dir.display().to_string(),
            mode: self.config.mode,
            reason,
            request: RequestSummary::from_stored(stored),
            closest,
            diffs,
        }
    }

    /// Stores one live interaction: body files first (so the cassette never names a missing file), then the
    /// entry in memory, then (per the write policy) the cassette file.
    fn record(
        &self,
        request: StoredRequest,
        req_sidecar: Option<Sidecar>,
        key: String,
        resp: &Response,
        latency: Duration,
    ) -> Result<(), Error> {
        let (response, resp_sidecar) = store_response(resp, &self.secrets, &self.config);
        let mut cache: HashMap<String, Bytes> = HashMap::new();
        for (what, sidecar) in [("request", &req_sidecar), ("response", &resp_sidecar)] {
            if let Some(sc) = sidecar {
                if let Some(account) = self.secrets.find_in_bytes(&sc.bytes) {
                    return Err(Error::SecretInBinaryBody {
                        what,
                        account: account.to_owned(),
                    });
                }
            }
        }
        for sc in [req_sidecar, resp_sidecar].into_iter().flatten() {
            write_sidecar(&self.dir, &sc)?;
            cache.insert(sc.rel_path, sc.bytes);
        }
        let stored = StoredInteraction {
            request,
            // Latency is whole milliseconds; a sub-millisecond call is stored as 0 rather than dropped.
            latency_ms: self.config.record_latency.then_some(latency.as_millis() as u64),
            recorded_at: self
                .config
                .record_timestamps
                .then(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            response,
        };
        // What later replays in this session return is exactly what a replay from the file will return.
        let replayed = Response {
            status: stored.response.status,
            headers: stored
                .response
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: body_bytes(stored.response.body.as_ref(), &self.dir, &mut cache)?,
        };

        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            if self.config.mode == Mode::All && writer.rerecorded.insert(key.clone()) {
                if let Some(slot) = table.index.get(&key) {
                    let old: Vec<StoredInteraction> = slot
                        .positions
                        .iter()
                        .map(|&p| &table.entries[p])
                        .filter(|e| e.from_disk)
                        .map(|e| e.stored.clone())
                        .collect();
                    writer.replaced.extend(old);
                }
            }
            let latency = stored.latency_ms.map(Duration::from_millis);
            table.push(
                key,
                Entry {
                    stored: stored.clone(),
                    response: replayed,
                    latency,
                    from_disk: false,
                    used: AtomicBool::new(true),
                },
                true,
            );
        }
        writer.pending.push(stored);
        match self.config.write {
            WritePolicy::EachInteraction => self.flush_locked(&mut writer),
            WritePolicy::OnFlush => Ok(()),
        }
    }

    /// Rewrites `cassette.json` = what is on disk now − replaced + pending, sorted, under the file lock.
    /// Re-reading under the lock is what keeps two recorders from losing each other's interactions.
    fn flush_locked(&self, writer: &mut Writer) -> Result<(), Error> {
        if writer.pending.is_empty() && writer.replaced.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        FileExt::lock(&lock).map_err(Error::io(&lock_path))?;

        let result = (|| {
            let path = self.dir.join(CASSETTE_FILE);
            let current = match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::Io { path, source: e }),
            };
            let on_disk: Vec<Sorted> = match (&current, writer.last_written.take()) {
                (Some(cur), Some((bytes, interactions))) if *cur == bytes => interactions,
                (Some(_), _) => read_cassette(&self.dir)?
                    .map(|c| c.interactions)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| (i.request.sort_key(), i))
                    .collect(),
                (None, _) => Vec::new(),
            };
            let mut replaced = writer.replaced.clone();
            let mut merged: Vec<Sorted> = on_disk
                .into_iter()
                .filter(|(_, i)| match replaced.iter().position(|r| r == i) {
                    Some(p) => {
                        replaced.swap_remove(p);
                        false
                    }
                    None => true,
                })
                .chain(writer.pending.iter().map(|i| (i.request.sort_key(), i.clone())))
                .collect();
            // Stable: identical requests keep their recorded order, which replay depends on.
            merged.sort_by(|a, b| a.0.cmp(&b.0));
            let bytes = render_cassette(merged.iter().map(|(_, i)| i));
            write_atomic(&path, &bytes)?;
            writer.last_written = Some((bytes, merged));
            Ok(())
        })();
        // Closing the file would release the lock too; unlocking explicitly makes the end of the section visible.
        let _ = FileExt::unlock(&lock);
        result?;
        writer.pending.clear();
        writer.replaced.clear();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let writer = self.writer.get_mut().unwrap_or_else(PoisonError::into_inner);
        if writer.pending.is_empty() && writer.replaced.is_empty() {
            return;
        }
        let mut writer = std::mem::take(writer);
        if let Err(e) = self.flush_locked(&mut writer) {
            tracing::error!(error = %e, cassette = %self.dir.display(), "could not write recorded interactions on drop");
        }
    }
}
