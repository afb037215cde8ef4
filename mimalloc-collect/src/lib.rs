//! Giving memory back to the system after a burst, with mimalloc as the global allocator.
//!
//! mimalloc keeps a heap per thread. Pages a thread emptied stay in its heap (retired, or in its queues of full
//! pages when other threads freed the blocks) until that thread allocates again or collects, and memory it freed
//! is returned to the OS (purged) only a while later, by a thread that calls into the allocator then. A thread of
//! a pool that goes idle after a burst does neither, so what the burst used stays resident. [`collect`] is
//! `mi_collect`; [`IdleCollect`] has every thread of a pool (tokio's workers) collect, forced, once the whole pool
//! has been quiet for a while after some work: never under load, where a forced collection would only hand back
//! pages the next requests fault in again.
//!
//! Without mimalloc as the global allocator these calls collect mimalloc's own, empty heaps: harmless, useless.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        OnceLock,
    },
    thread::Thread,
    time::{Duration, Instant},
};

// Links the C library that defines `mi_collect`.
use libmimalloc_sys as _;

#[allow(unsafe_code)]
mod ffi {
    extern "C" {
        /// `void mi_collect(bool force)` (mimalloc.h): collects the calling thread's heap; with `force`, also frees
        /// its retired and full-queue pages and purges freed memory at once instead of after `purge_delay`.
        pub fn mi_collect(force: bool);
    }
}

/// Collects the calling thread's mimalloc heap (`mi_collect`); `force`: return freed memory to the OS now.
pub fn collect(force: bool) {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time; it only walks the
    // calling thread's own heap and the arenas under their own locks.
    #[allow(unsafe_code)]
    unsafe {
        ffi::mi_collect(force)
    }
}

thread_local! {
    /// The last collection round of an [`IdleCollect`] this thread collected in.
    static ROUND: Cell<u64> = const { Cell::new(0) };
}

/// Collects every thread of a pool once the pool has been quiet for a while. The pool's threads call
/// [`busy`](Self::busy) when they wake up and [`idle`](Self::idle) when they go idle (tokio:
/// `on_thread_unpark`, `on_thread_park`); a janitor thread ([`run_janitor`](Self::run_janitor)) waits for work to
/// happen, then for `quiet` without any thread waking up, then starts a collection round and wakes the pool (its
/// `wake`), and each thread collects, forced, the next time it goes idle. Under load the threads keep waking up, so
/// no round starts; an idle process is not woken (the janitor sleeps until the next work).
#[derive(Debug)]
pub struct IdleCollect {
    quiet: Duration,
    /// Wake-ups of the pool's threads.
    activity: AtomicU64,
    /// The collection round in progress (0: none yet).
    round: AtomicU64,
    /// Threads that collected in the current round.
    collected: AtomicUsize,
    /// The janitor is parked, waiting for work.
    janitor_waiting: AtomicBool,
    janitor: OnceLock<Thread>,
    rounds: AtomicU64,
    collections: AtomicU64,
}

impl IdleCollect {
    /// A round starts after `quiet` without any thread of the pool waking up.
    pub const fn new(quiet: Duration) -> IdleCollect {
        IdleCollect {
            quiet,
            activity: AtomicU64::new(0),
            round: AtomicU64::new(0),
            collected: AtomicUsize::new(0),
            janitor_waiting: AtomicBool::new(false),
            janitor: OnceLock::new(),
            rounds: AtomicU64::new(0),
            collections: AtomicU64::new(0),
        }
    }

    /// Call when a thread of the pool wakes up (tokio: `runtime::Builder::on_thread_unpark`).
    pub fn busy(&self) {
        self.activity.fetch_add(1, Ordering::SeqCst);
        if self.janitor_waiting.load(Ordering::SeqCst) {
            if let Some(j) = self.janitor.get() {
                j.unpark();
            }
        }
    }

    /// Call when a thread of the pool goes idle (tokio: `runtime::Builder::on_thread_park`): collects, forced, if
    /// a round started since this thread last collected. Answers whether it collected.
    pub fn idle(&self) -> bool {
        let round = self.round.load(Ordering::Acquire);
        if ROUND.get() == round {
            return false;
        }
        ROUND.set(round);
        collect(true);
        self.collections.fetch_add(1, Ordering::Relaxed);
        self.collected.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Collection rounds started so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Collections made by [`idle`](Self::idle) so far.
    pub fn collections(&self) -> u64 {
        self.collections.load(Ordering::Relaxed)
    }

    /// The janitor, to run on a thread of its own (it never returns). `threads`: the pool's size; `wake` must make
    /// the pool's idle threads wake up and go idle again (tokio: spawn an empty task per worker).
    pub fn run_janitor(&self, threads: usize, wake: impl Fn()) -> ! {
        let _ = self.janitor.set(std::thread::current());
        // The activity count when the last round was over: a round needs work after it.
        let mut settled = self.activity.load(Ordering::SeqCst);
        loop {
            // Wait for work.
            self.janitor_waiting.store(true, Ordering::SeqCst);
            while self.activity.load(Ordering::SeqCst) == settled {
                std::thread::park();
            }
            self.janitor_waiting.store(false, Ordering::SeqCst);
            // Wait for `quiet` without a wake-up.
            loop {
                let before = self.activity.load(Ordering::SeqCst);
                std::thread::sleep(self.quiet);
                if self.activity.load(Ordering::SeqCst) == before {
                    break;
                }
            }
            // A round: every thread collects when it next goes idle. The wake-ups it causes are not work: the
            // round is over when every thread collected (or after a while, if one did not wake).
            self.collected.store(0, Ordering::SeqCst);
            self.round.fetch_add(1, Ordering::AcqRel);
            self.rounds.fetch_add(1, Ordering::Relaxed);
            wake();
            let deadline = Instant::now() + Duration::from_secs(1);
            while self.collected.load(Ordering::SeqCst) < threads && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            settled = self.activity.load(Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Mutex};

    #[test]
    fn the_pool_collects_once_after_work_and_a_quiet_while_never_under_load_nor_at_rest() {
        static POOL: IdleCollect = IdleCollect::new(Duration::from_millis(300));
        // A pool of two threads, a queue each: busy when a job wakes one, idle while it waits for the next.
        let mut queues = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = mpsc::channel::<()>();
            queues.push(tx);
            std::thread::spawn(move || loop {
                POOL.idle();
                let job = rx.recv();
                POOL.busy();
                if job.is_err() {
                    return;
                }
            });
        }
        let wake_queues = Mutex::new(queues.clone());
        std::thread::spawn(move || {
            POOL.run_janitor(2, move || {
                for q in wake_queues.lock().unwrap().iter() {
                    let _ = q.send(());
                }
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        let first = POOL.collections();
        assert_eq!(POOL.rounds(), 0, "no work yet: no round");
        // Under load (a job every 20 ms, never quiet for 300 ms): no round.
        for i in 0..15 {
            queues[i % 2].send(()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(POOL.rounds(), 0, "no round under load");
        // The load stops: one round, both threads collect.
        let deadline = Instant::now() + Duration::from_secs(5);
        while POOL.collections() < first + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!((POOL.rounds(), POOL.collections()), (1, first + 2));
        // At rest: the round's own wake-ups start no other round.
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(POOL.rounds(), 1, "no round at rest");
    }
}
