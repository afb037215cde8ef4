//! Giving memory back to the system after a burst, with mimalloc as the global allocator.
//!
//! mimalloc keeps a heap per thread. Pages a thread emptied stay in its heap (retired, or in its queues of full
//! pages when other threads freed the blocks) until that thread allocates again or collects, and memory it freed
//! is returned to the OS (purged) only a while later, by a thread that calls into the allocator then. A thread of
//! a pool that goes idle after a burst does neither, so what the burst used stays resident. [`collect`] is
//! `mi_collect`; [`IdleCollect`] calls it, forced, when a pool thread goes idle (tokio's `on_thread_park`), at most
//! once per period per thread, and has a janitor wake the pool once more after a period when a thread went idle
//! within one (so the last idle moment of a burst is not skipped).
//!
//! Without mimalloc as the global allocator these calls collect mimalloc's own, empty heaps: harmless, useless.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
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
    /// This thread's last collection by an [`IdleCollect`], and whether it went idle since without collecting.
    static LAST: Cell<(Option<Instant>, bool)> = const { Cell::new((None, false)) };
}

/// A forced [`collect`] when a thread of a pool goes idle, at most once per `every` per thread. See the crate doc.
#[derive(Debug)]
pub struct IdleCollect {
    every: Duration,
    /// Threads that went idle within `every` of their last collection and did not collect.
    pending: AtomicUsize,
    /// Counts the threads that became pending: the janitor wakes up for each change.
    became_pending: AtomicU64,
    janitor: OnceLock<Thread>,
    collections: AtomicU64,
}

impl IdleCollect {
    /// Collects at most once per `every` per thread.
    pub const fn new(every: Duration) -> IdleCollect {
        IdleCollect {
            every,
            pending: AtomicUsize::new(0),
            became_pending: AtomicU64::new(0),
            janitor: OnceLock::new(),
            collections: AtomicU64::new(0),
        }
    }

    /// Call when the calling thread goes idle (tokio: `runtime::Builder::on_thread_park`). Under load a pool thread
    /// goes idle often, so this collects only when the thread's last collection is `every` old; otherwise the
    /// thread is marked pending for the janitor ([`run_janitor`](Self::run_janitor)). Answers whether it collected.
    pub fn idle(&self) -> bool {
        let now = Instant::now();
        let (last, pending) = LAST.get();
        if last.is_none_or(|t| now.duration_since(t) >= self.every) {
            collect(true);
            LAST.set((Some(now), false));
            if pending {
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
            self.collections.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if !pending {
            LAST.set((last, true));
            self.pending.fetch_add(1, Ordering::Relaxed);
            self.became_pending.fetch_add(1, Ordering::Release);
            if let Some(j) = self.janitor.get() {
                j.unpark();
            }
        }
        false
    }

    /// Forced collections made by [`idle`](Self::idle) so far.
    pub fn collections(&self) -> u64 {
        self.collections.load(Ordering::Relaxed)
    }

    /// Threads idle without their collection yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The janitor, to run on a thread of its own (it never returns): whenever a thread went idle without
    /// collecting, waits `every`, then calls `wake`, which must make the pool's idle threads wake up and go idle
    /// again (tokio: spawn a few empty tasks), so that each collects; up to three times while some stay pending.
    /// It sleeps (parked) while nothing is pending: an idle process is not woken by it.
    pub fn run_janitor(&self, wake: impl Fn()) -> ! {
        let _ = self.janitor.set(std::thread::current());
        let mut seen = 0;
        loop {
            let now = self.became_pending.load(Ordering::Acquire);
            if now == seen || self.pending() == 0 {
                seen = now;
                std::thread::park();
                continue;
            }
            seen = now;
            for _ in 0..3 {
                std::thread::sleep(self.every);
                if self.pending() == 0 {
                    break;
                }
                wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_thread_collects_once_per_period_and_the_janitor_gets_the_skipped_idle_moment() {
        static IDLE: IdleCollect = IdleCollect::new(Duration::from_millis(50));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        // A "pool" of one thread: it goes idle whenever it waits for the next job.
        let pool = {
            let rx = rx.clone();
            std::thread::spawn(move || loop {
                IDLE.idle();
                if rx.lock().unwrap().recv().is_err() {
                    return;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(IDLE.collections(), 1, "the first idle moment collects");
        // A burst: many idle moments within the period, none collects; the thread is pending.
        for _ in 0..20 {
            tx.send(()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!((IDLE.collections(), IDLE.pending()), (1, 1));
        // The janitor wakes the pool after the period (here: one more job), and that idle moment collects.
        let wake_tx = std::sync::Mutex::new(tx.clone());
        std::thread::spawn(move || IDLE.run_janitor(move || wake_tx.lock().unwrap().send(()).unwrap()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while IDLE.collections() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!((IDLE.collections(), IDLE.pending()), (2, 0));
        drop(tx);
        // The janitor's sender keeps the channel open; the pool thread is left waiting (the test process ends).
        drop(pool);
    }
}
