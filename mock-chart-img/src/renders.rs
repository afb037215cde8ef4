//! The render gate: charts are drawn by `render_concurrency` render threads (by default as many as the machine has
//! cores), the other requests wait in their queue, and identical requests that arrive while their chart is being
//! drawn wait for that one drawing instead of starting their own (single-flight).
//!
//! Why: a render needs a few MiB of pixels and encoder buffers for a millisecond or so. Fifty connections asking for
//! fifty different charts used to start fifty renders at once on tokio's blocking pool, which did not finish sooner
//! (two cores draw two charts at a time) but held fifty working sets at once: RSS climbed to hundreds of MiB and the
//! allocator kept the pages. Even with a bound on concurrent renders the blocking pool kept a dozen threads, each
//! with its own allocator heap; a fixed set of render threads reuses the same few heaps. The time a request waits
//! in the queue is the journal's `queue_ms`.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::OnceCell;

/// How a chart was obtained: drawn for this request or for the identical one in flight, and how long it waited.
pub(crate) struct Drawn {
    pub bytes: Bytes,
    /// `true` when this request drew it (and so counts as a render).
    pub leader: bool,
    /// Time waited in the render queue (the leader's wait, also for the requests that shared its drawing).
    pub queued: Duration,
}

type Slot = Arc<OnceCell<(Bytes, Duration)>>;
type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Renders {
    limit: usize,
    /// The render threads' queue; they end when it is dropped (with the state).
    jobs: Mutex<mpsc::Sender<Job>>,
    inflight: Mutex<HashMap<String, Slot>>,
}

/// How long a render thread waits idle after its last render before it nudges the allocator, and between nudges.
const IDLE_NUDGE: Duration = Duration::from_millis(1500);

/// Allocates and frees large blocks, without touching them. mimalloc keeps a thread's emptied pages for a few more
/// allocations of that thread ("retired"), and returns freed memory to the OS a while (1 s) after it was freed, but
/// only when it next frees a page: after the last render of a burst nothing would, and the pages the renders used
/// would stay resident. Twenty allocations release the retired pages; the second nudge, past the delay, lets it
/// purge them (and whatever else was freed meanwhile). What is allocated is never written, so it costs no memory.
fn nudge_allocator() {
    for _ in 0..20 {
        let block: Vec<u8> = Vec::with_capacity(1 << 20);
        std::hint::black_box(&block);
    }
}

/// The default number of render threads: the cores this process may use.
pub(crate) fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Renders {
    /// Starts `limit` render threads (0: [`default_concurrency`]).
    pub fn new(limit: usize) -> Renders {
        let limit = if limit == 0 { default_concurrency() } else { limit };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..limit {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("render-{i}")).spawn(move || {
                // Nudges still due since the last render (see `nudge_allocator`).
                let mut nudges = 0;
                loop {
                    // The lock is held only while waiting for the next job, not while running it.
                    let job = rx.lock().unwrap().recv_timeout(IDLE_NUDGE);
                    match job {
                        Ok(job) => {
                            // A panicking render answers 500 (its result sender is dropped) and must not take the
                            // thread with it.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            nudges = 2;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) if nudges > 0 => {
                            nudges -= 1;
                            nudge_allocator();
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a render thread");
            }
        }
        Renders {
            limit,
            jobs: Mutex::new(tx),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Renders at most this many charts at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The chart for `key`: drawn by `draw` on a render thread, then handed to `keep` (the cache), unless an
    /// identical request is drawing it already, in which case this one waits for that result. `draw` failing
    /// leaves the next waiter to try again. `Err(None)`: the render thread went away (a panic in `draw`).
    pub async fn get<E: Send + 'static>(
        &self,
        key: &str,
        draw: impl FnOnce() -> Result<Bytes, E> + Send + 'static,
        keep: impl FnOnce(&Bytes),
    ) -> Result<Drawn, Option<E>> {
        let slot: Slot = self.inflight.lock().unwrap().entry(key.to_owned()).or_default().clone();
        let mut leader = false;
        let result = slot
            .get_or_try_init(|| async {
                leader = true;
                let asked = Instant::now();
                let (tx, rx) = tokio::sync::oneshot::channel();
                let job: Job = Box::new(move || {
                    let queued = asked.elapsed();
                    let _ = tx.send(draw().map(|b| (b, queued)));
                });
                self.jobs.lock().unwrap().send(job).map_err(|_| None)?;
                let (bytes, queued) = rx.await.map_err(|_| None)?.map_err(Some)?;
                keep(&bytes);
                Ok((bytes, queued))
            })
            .await
            .cloned();
        if leader {
            // The drawing is over (done or failed): later requests find the cache, or start afresh.
            let mut inflight = self.inflight.lock().unwrap();
            if inflight.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                inflight.remove(key);
            }
        }
        result.map(|(bytes, queued)| Drawn { bytes, leader, queued })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn identical_keys_draw_once_and_the_others_queue_for_the_render_threads() {
        let gate = Arc::new(Renders::new(1));
        let draws = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let kept = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (gate, draws, busy, most, kept) =
                (gate.clone(), draws.clone(), busy.clone(), most.clone(), kept.clone());
            // Six requests for chart "a", six for six different charts.
            let key = if i % 2 == 0 { "a".to_string() } else { format!("b{i}") };
            tasks.push(tokio::spawn(async move {
                let k = key.clone();
                gate.get(
                    &key,
                    move || {
                        draws.fetch_add(1, Ordering::SeqCst);
                        let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        busy.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, ()>(Bytes::from(k))
                    },
                    |_| {
                        kept.fetch_add(1, Ordering::SeqCst);
                    },
                )
                .await
                .map_err(|_| ())
                .unwrap()
            }));
        }
        let mut leaders = 0;
        let mut waited = Duration::ZERO;
        for t in tasks {
            let d = t.await.unwrap();
            leaders += usize::from(d.leader);
            waited = waited.max(d.queued);
        }
        assert_eq!(
            draws.load(Ordering::SeqCst),
            7,
            "chart a drawn once, the six others once each"
        );
        assert_eq!((leaders, kept.load(Ordering::SeqCst)), (7, 7));
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "one render thread: never two drawings at once"
        );
        assert!(
            waited >= Duration::from_millis(30),
            "someone queued behind another drawing: {waited:?}"
        );
        assert!(gate.inflight.lock().unwrap().is_empty(), "nothing left in flight");
    }

    #[tokio::test]
    async fn a_panicking_drawing_fails_that_request_and_the_thread_renders_on() {
        let gate = Renders::new(1);
        let r = gate
            .get("p", || -> Result<Bytes, ()> { panic!("render bug") }, |_| {})
            .await;
        assert!(matches!(r, Err(None)));
        let ok = gate.get("q", || Ok::<_, ()>(Bytes::from_static(b"png")), |_| {}).await;
        assert!(ok.is_ok(), "the one render thread is still there");
    }

    #[tokio::test]
    async fn a_failed_drawing_is_not_remembered() {
        let gate = Renders::new(2);
        let r = gate.get("k", || Err::<Bytes, _>("boom"), |_| {}).await;
        assert!(matches!(r, Err(Some("boom"))));
        let ok = gate
            .get("k", || Ok::<_, &str>(Bytes::from_static(b"png")), |_| {})
            .await
            .map_err(|_| ())
            .unwrap();
        assert_eq!((ok.bytes.as_ref(), ok.leader), (&b"png"[..], true));
    }
}
