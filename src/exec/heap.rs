//! Handing the heap's free pages back to the kernel: large buffers always
//! (see [`configure`]), the rest after a transient peak.
//!
//! glibc's allocator keeps the pages of freed memory for reuse. kubedf's
//! peaks are transient and rare: the first list of the node's pods (a list
//! response is buffered whole, then decoded), a re-list, the first
//! exposition at a new size. What they leave behind would otherwise stay in
//! the process's RSS for its whole life (docs/benchmarks.md, "What glibc
//! kept, and handing it back").
//!
//! Code that has just made such a peak calls [`after_peak`]; [`run`] then
//! waits until no peak was reported for a quiet while and calls glibc's
//! `malloc_trim(0)` once. It is never called per scrape: it walks every
//! arena (0.2-0.5 ms at 1,000 PVCs, up to 1.6 ms at 5,000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::debug;

/// How long after the last reported peak the heap is trimmed: the first
/// list of pods is followed by a burst of PVC and PV lookups and the first
/// measurements, whose garbage should go in the same trim.
pub const QUIET: Duration = Duration::from_secs(5);

/// The process's one trimmer.
static HEAP: Trimmer = Trimmer::new();

/// Reports that a transient peak of memory just ended. Cheap; with no
/// [`run`] task (the one-shot commands) it does nothing.
pub fn after_peak() {
    HEAP.after_peak();
}

/// Trims the heap once per burst of [`after_peak`] calls, `quiet` after the
/// last one of the burst, until `shutdown` changes.
pub async fn run(quiet: Duration, shutdown: watch::Receiver<bool>) {
    HEAP.run(quiet, shutdown, trim).await
}

struct Trimmer {
    peaked: Notify,
    trims: AtomicU64,
}

impl Trimmer {
    const fn new() -> Trimmer {
        Trimmer {
            peaked: Notify::const_new(),
            trims: AtomicU64::new(0),
        }
    }

    fn after_peak(&self) {
        // A permit is kept when the task is busy, so no peak is missed.
        self.peaked.notify_one();
    }

    async fn run(&self, quiet: Duration, mut shutdown: watch::Receiver<bool>, trim: fn() -> bool) {
        loop {
            tokio::select! {
                () = self.peaked.notified() => {}
                _ = shutdown.changed() => return,
            }
            loop {
                tokio::select! {
                    () = self.peaked.notified() => {}
                    () = tokio::time::sleep(quiet) => break,
                    _ = shutdown.changed() => return,
                }
            }
            let started = Instant::now();
            let released = trim();
            self.trims.fetch_add(1, Ordering::Relaxed);
            debug!(
                released,
                took_us = started.elapsed().as_micros() as u64,
                "returned the heap's free pages to the kernel"
            );
        }
    }
}

/// Allocations from this size up are mapped on their own and unmapped when
/// freed: glibc's initial threshold, which it otherwise raises to the size
/// of each such block freed (up to 32 MiB).
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Fixes glibc's mmap threshold; called once at start, before the runtime's
/// threads. With the threshold glibc raises by itself, the buffers of MiBs
/// that kubedf makes now and then (a list response of pods, an exposition)
/// come from the heap after the first is freed, and their pages stay with
/// the process: at 5,000 PVCs that was 16 MiB of RSS.
pub fn configure() {
    glibc(Call::FixMmapThreshold);
}

/// The calls kubedf makes into glibc's allocator.
#[derive(Clone, Copy)]
enum Call {
    /// `mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)`.
    FixMmapThreshold,
    /// `malloc_trim(0)`: the unused pages of every arena (not only the top
    /// of the main heap) back to the kernel.
    Trim,
}

fn trim() -> bool {
    glibc(Call::Trim)
}

/// Makes `call`; whether it did anything (the threshold was set, pages were
/// released).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn glibc(call: Call) -> bool {
    // SAFETY: neither call takes a pointer or touches a live allocation:
    // mallopt sets a tunable under the main arena's lock, and malloc_trim
    // locks each arena in turn and hands only free pages back. Both are
    // thread-safe. Rust's global allocator on this target is glibc's
    // malloc, the allocator they tune.
    unsafe {
        match call {
            Call::FixMmapThreshold => libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1,
            Call::Trim => libc::malloc_trim(0) == 1,
        }
    }
}

/// Other allocators (musl's, the BSDs') offer no such calls.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc(_: Call) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of peaks is one trim, after the quiet time; a later peak is
    /// another. Paused time, so the test does not wait.
    #[tokio::test(start_paused = true)]
    async fn one_trim_per_burst_after_the_quiet_time() {
        static T: Trimmer = Trimmer::new();
        let quiet = Duration::from_secs(5);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(T.run(quiet, stop_rx, || true));
        let trims = || T.trims.load(Ordering::Relaxed);
        for _ in 0..3 {
            T.after_peak();
            tokio::time::sleep(quiet / 2).await;
        }
        assert_eq!(trims(), 0, "no trim while peaks keep coming");
        tokio::time::sleep(quiet).await;
        assert_eq!(trims(), 1);
        tokio::time::sleep(quiet * 10).await;
        assert_eq!(trims(), 1, "no trim without a peak");
        T.after_peak();
        tokio::time::sleep(quiet * 2).await;
        assert_eq!(trims(), 2);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
