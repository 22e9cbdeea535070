//! A few long-lived threads for the short blocking calls of measurements
//! (statfs, statx, the stat of a file, a small directory listing), in place
//! of one tokio blocking task per call.
//!
//! Measurements come in bursts: the scheduler gathers the keys due within a
//! second, tens at a time at 1,000 volumes, each a call of microseconds.
//! Handed to tokio's blocking pool one by one, every call paid a thread
//! wake-up and two context switches, and the pool grew a thread each time a
//! call was submitted just before the previous call's thread was idle again:
//! at 1,000 volumes that was the largest part of kubedf's CPU at rest and
//! about 30 threads, each with an allocator arena (docs/benchmarks.md). Here
//! a burst is queued and drained by whichever lane thread is awake.
//!
//! A hung call (a dead NFS mount) must not hold up the calls queued behind
//! it: when calls wait while no lane thread has made progress for [`STALL`],
//! another thread is started, up to the lane's maximum. Hung threads count
//! against that maximum, so no more threads than that are ever stuck. Each
//! caller waits under its own timeout, as before, and a call whose caller
//! has given up is dropped, not run.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

/// How long queued calls wait for a thread that makes no progress before
/// another thread is started for them.
pub const STALL: Duration = Duration::from_millis(200);

/// Threads of the process-wide lane: each hung mount holds one until it
/// answers; past this, calls queue (and time out) instead of piling up
/// threads.
const MAX_THREADS: usize = 16;

/// How long an idle lane thread is kept: past the longest jitter of the
/// default volume period (2x 1 m), so a quiet node keeps its one thread
/// instead of creating it anew for each burst.
const KEEP_ALIVE: Duration = Duration::from_secs(180);

type Job = Box<dyn FnOnce() + Send>;

/// Runs blocking calls on a few threads. Cloning shares the threads.
#[derive(Clone)]
pub struct Lane {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Lane")
            .field("name", &self.shared.name)
            .field("threads", &state.threads)
            .field("queued", &state.queue.len())
            .finish()
    }
}

struct Shared {
    name: &'static str,
    max_threads: usize,
    keep_alive: Duration,
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// When a thread last took or finished a call.
    progress: Instant,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LaneError {
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the call panicked")]
    Panicked,
    #[error("cannot start a thread for blocking calls: {0}")]
    NoThread(String),
}

impl Lane {
    pub fn new(name: &'static str, max_threads: usize, keep_alive: Duration) -> Lane {
        Lane {
            shared: Arc::new(Shared {
                name,
                max_threads: max_threads.max(1),
                keep_alive,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    progress: Instant::now(),
                }),
                ready: Condvar::new(),
            }),
        }
    }

    /// The process's lane for measurements' blocking calls.
    pub fn global() -> &'static Lane {
        static LANE: OnceLock<Lane> = OnceLock::new();
        LANE.get_or_init(|| Lane::new("kubedf-io", MAX_THREADS, KEEP_ALIVE))
    }

    /// Runs `call` on a lane thread and waits for it at most `timeout`
    /// (queueing included). A call still queued when its caller gives up
    /// is never run; one already running is left to finish on its thread.
    pub async fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LaneError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            if tx.is_closed() {
                return;
            }
            // A panic drops `tx`: the caller gets an error, the thread lives.
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(call)) {
                let _ = tx.send(value);
            }
        }))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let wake = (tokio::time::Instant::now() + STALL).min(deadline);
            match tokio::time::timeout_at(wake, &mut rx).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(_)) => return Err(LaneError::Panicked),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(LaneError::Timeout(timeout));
                }
                // Still waiting: maybe behind a hung call.
                Err(_) => self.shared.unstick(),
            }
        }
    }

    /// Queues `job` without waiting for it. A job that hangs holds its
    /// thread; calls queued behind it are taken by another thread only when
    /// someone waits on the lane ([`Lane::run`]) or submits again.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) -> Result<(), LaneError> {
        self.submit(Box::new(move || {
            // A panic must not take the lane thread with it.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
        }))
    }

    fn submit(&self, job: Job) -> Result<(), LaneError> {
        let mut state = self.shared.lock();
        state.queue.push_back(job);
        if state.idle > 0 {
            self.shared.ready.notify_one();
            return Ok(());
        }
        if (state.threads == 0 || state.progress.elapsed() >= STALL)
            && let Err(e) = Shared::start(&self.shared, &mut state)
            && state.threads == 0
        {
            // Nothing would ever run it.
            state.queue.pop_back();
            return Err(e);
        }
        Ok(())
    }

    /// Threads alive (busy, hung or idle).
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Another thread if calls wait while no thread has made progress for
    /// [`STALL`] (every thread is busy with a slow or hung call).
    fn unstick(self: &Arc<Self>) {
        let mut state = self.lock();
        if !state.queue.is_empty() && state.idle == 0 && state.progress.elapsed() >= STALL {
            // Failing to start one leaves the calls queued for the threads
            // there are; their callers time out as they would anyway.
            let _ = Shared::start(self, &mut state);
        }
    }

    fn start(this: &Arc<Self>, state: &mut State) -> Result<(), LaneError> {
        if state.threads >= this.max_threads {
            return Ok(());
        }
        let shared = Arc::clone(this);
        std::thread::Builder::new()
            .name(this.name.to_owned())
            .spawn(move || shared.work())
            .map_err(|e| LaneError::NoThread(e.to_string()))?;
        state.threads += 1;
        // The new thread is the progress: wait a full STALL before another.
        state.progress = Instant::now();
        Ok(())
    }

    fn work(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                state.progress = Instant::now();
                drop(state);
                job();
                state = self.lock();
                state.progress = Instant::now();
                continue;
            }
            state.idle += 1;
            let (next, wait) = self
                .ready
                .wait_timeout(state, self.keep_alive)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if wait.timed_out() && state.queue.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn a_burst_of_calls_runs_on_one_thread() {
        let lane = Lane::new("test-lane", 4, Duration::from_secs(5));
        let calls: Vec<_> = (0..100)
            .map(|i| lane.run(Duration::from_secs(5), move || i * 2))
            .collect();
        let results = futures::future::join_all(calls).await;
        let results: Vec<i32> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(lane.threads(), 1, "quick calls never need a second thread");
    }

    #[tokio::test]
    async fn a_hung_call_does_not_hold_up_the_calls_behind_it() {
        let lane = Lane::new("test-lane", 4, Duration::from_secs(5));
        let (release, hung) = mpsc::channel::<()>();
        let stuck = lane.run(Duration::from_secs(3), move || {
            let _ = hung.recv();
        });
        let (stuck, (quick, waited)) = tokio::join!(stuck, async {
            // Queued behind the hung call, submitted once it runs.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let asked = Instant::now();
            (
                lane.run(Duration::from_secs(5), || 7).await,
                asked.elapsed(),
            )
        });
        assert_eq!(quick, Ok(7));
        // Answered by a second thread after about one STALL, long before
        // the hung call's own timeout.
        assert!(waited < Duration::from_millis(1500), "{waited:?}");
        assert_eq!(stuck, Err(LaneError::Timeout(Duration::from_secs(3))));
        assert_eq!(lane.threads(), 2, "one thread is still in the hung call");
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn threads_stop_at_the_maximum_however_many_calls_hang() {
        let lane = Lane::new("test-lane", 2, Duration::from_secs(5));
        let (release, hung) = mpsc::channel::<()>();
        let hung = Arc::new(Mutex::new(hung));
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let hung = Arc::clone(&hung);
                lane.run(Duration::from_millis(800), move || {
                    let _ = hung.lock().unwrap().recv();
                })
            })
            .collect();
        for result in futures::future::join_all(calls).await {
            assert!(matches!(result, Err(LaneError::Timeout(_))), "{result:?}");
        }
        assert_eq!(lane.threads(), 2);
        drop(release);
    }

    #[tokio::test]
    async fn a_panicking_call_is_an_error_and_the_thread_lives_on() {
        let lane = Lane::new("test-lane", 1, Duration::from_secs(5));
        let result = lane
            .run(Duration::from_secs(5), || -> u8 { panic!("bad input") })
            .await;
        assert_eq!(result, Err(LaneError::Panicked));
        assert_eq!(lane.run(Duration::from_secs(5), || 1u8).await, Ok(1));
        assert_eq!(lane.threads(), 1);
    }

    #[tokio::test]
    async fn a_call_whose_caller_gave_up_is_not_run() {
        let lane = Lane::new("test-lane", 1, Duration::from_secs(5));
        let (release, hung) = mpsc::channel::<()>();
        let first = lane.run(Duration::from_millis(100), move || {
            let _ = hung.recv();
        });
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let second = lane.run(Duration::from_millis(100), move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let (a, b) = tokio::join!(first, second);
        assert!(a.is_err() && b.is_err());
        release.send(()).unwrap();
        // The one thread is free again: a new call runs, the abandoned one does not.
        assert_eq!(lane.run(Duration::from_secs(5), || 2u8).await, Ok(2));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[test]
    fn idle_threads_leave_after_their_keep_alive() {
        let lane = Lane::new("test-lane", 2, Duration::from_millis(50));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(lane.run(Duration::from_secs(5), || 3u8)), Ok(3));
        assert_eq!(lane.threads(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lane.threads() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(lane.threads(), 0);
    }
}
