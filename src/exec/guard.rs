//! The one guarded blocking call: every short blocking call of a
//! measurement (statfs, statx, a stat, a directory listing, resolving a host
//! path, a device's size, the mount table) goes through [`Guard::call`]:
//!
//! - it runs on the measurement [`Lane`], off the async runtime;
//! - its caller waits at most its timeout;
//! - at most one call of each kind is in flight per path across the whole
//!   process: a caller that arrives while the call for its path is younger
//!   than its timeout joins it and shares its answer (two PVCs on one
//!   directory are one call); one that arrives while the call is older is
//!   told the path is still hung, and nothing more piles up behind it;
//! - every outcome that is not the call's own is mapped to a [`Failure`] in
//!   one place: not answered in time, or still hung, is
//!   [`Reason::Timeout`]; a call that panicked, or a lane that cannot run
//!   it, is [`Reason::IoError`].
//!
//! The answers of all kinds share one table, keyed by path and kind, so the
//! table is one per process; each kind's answer type is checked when it is
//! read back.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::inflight::{Flights, Joined, Unanswered};
use super::lane::{Lane, LaneError, STALL};
use crate::model::{Failure, Reason};

/// One answer, of whatever type its kind has.
type Answer = Result<Arc<dyn Any + Send + Sync>, Failure>;

/// A call's path and kind. Shared by the table, the call's pilot and the
/// batch it is part of, rather than a copy of the path each.
type CallKey = Arc<(PathBuf, &'static str)>;

/// Runs guarded blocking calls. Cloning shares the lane and the calls in
/// flight: build one per process and pass it in.
#[derive(Clone, Debug)]
pub struct Guard {
    lane: Lane,
    flights: Flights<CallKey, Answer>,
}

impl Guard {
    pub fn new(lane: Lane) -> Guard {
        Guard {
            lane,
            flights: Flights::default(),
        }
    }

    /// A guard on the process's measurement lane.
    pub fn on_global_lane() -> Guard {
        Guard::new(Lane::global().clone())
    }

    /// Runs `call(path)` guarded (see the module header). `what` names the
    /// kind of call ("statfs", "reading block device") in the messages, and
    /// keys it with `path`: calls of different kinds on one path do not
    /// share answers. A kind must always answer with the same `T`.
    pub async fn call<T>(
        &self,
        what: &'static str,
        path: &Path,
        timeout: Duration,
        call: impl FnOnce(&Path) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure>
    where
        T: Clone + Send + Sync + 'static,
    {
        let answer = match self
            .flights
            .join(Arc::new((path.to_path_buf(), what)), timeout)
        {
            Joined::Hung(_) => return Err(still_hung(what, path)),
            Joined::Follow(passenger) => match passenger.wait(timeout).await {
                Ok(answer) => (*answer).clone(),
                Err(Unanswered::Timeout) => Err(timed_out(what, path, timeout)),
                Err(Unanswered::Abandoned) => Err(abandoned(what, path)),
            },
            Joined::Lead(pilot, _) => {
                // The pilot travels with the call: a call that outlives its
                // caller keeps the path claimed until it returns; one the
                // lane never runs (its caller gave up first) frees it at once.
                let ran = self
                    .lane
                    .run(timeout, move || {
                        let answer: Answer = call(&pilot.key().0).map(|v| Arc::new(v) as _);
                        pilot.land(answer.clone());
                        answer
                    })
                    .await;
                match ran {
                    Ok(answer) => answer,
                    Err(LaneError::Timeout(after)) => Err(timed_out(what, path, after)),
                    Err(e) => Err(Failure::new(
                        Reason::IoError,
                        format!("{what} {}: {e}", path.display()),
                    )),
                }
            }
        };
        downcast(what, path, &answer?)
    }

    /// Runs calls, each a kind and a path, as [`Guard::call`] would run
    /// each (the same per-path timeout, the same one-in-flight rule, the
    /// same failures), but as one job on the lane and one wait: the calls
    /// due at one wake-up cost one task and one queued job, not one each.
    /// The calls run one after the other; should one hang, the rest of the
    /// batch is taken by another lane thread after [`STALL`] without
    /// progress, so a hung path still holds up no other. Answers come back
    /// in the order of `calls`. The kinds of one batch answer with one type.
    pub async fn call_batch<T, F>(
        &self,
        calls: Vec<(&'static str, PathBuf, F)>,
        timeout: Duration,
    ) -> Vec<Result<T, Failure>>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce(&Path) -> Result<T, Failure> + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut answers: Vec<Option<Result<T, Failure>>> = Vec::with_capacity(calls.len());
        // Each call's kind and path, for its messages.
        let mut paths = Vec::with_capacity(calls.len());
        let mut waiting = Vec::new();
        let mut led = VecDeque::new();
        for (i, (what, path, call)) in calls.into_iter().enumerate() {
            let key = Arc::new((path, what));
            let path = &key.0;
            answers.push(match self.flights.join(Arc::clone(&key), timeout) {
                Joined::Hung(_) => Some(Err(still_hung(what, path))),
                Joined::Follow(passenger) => {
                    waiting.push((i, passenger));
                    None
                }
                Joined::Lead(pilot, passenger) => {
                    led.push_back((pilot, call));
                    waiting.push((i, passenger));
                    None
                }
            });
            paths.push(key);
        }
        let record = |answers: &mut Vec<Option<Result<T, Failure>>>,
                      i: usize,
                      answer: Result<Arc<Answer>, Unanswered>| {
            let (path, what) = &*paths[i];
            answers[i] = Some(match answer {
                Ok(answer) => (*answer).clone().and_then(|v| downcast(what, path, &v)),
                Err(_) => Err(abandoned(what, path)),
            });
        };
        // The answers are not awaited one by one as the lane lands them (a
        // wake-up of this task, and a thread switch, per call): the job that
        // empties the queue says so once, and the answers are then read
        // together. Only a call still running then is awaited on its own.
        let mut collect = led.is_empty();
        let drained = Arc::new(tokio::sync::Notify::new());
        let queue = Arc::new(Mutex::new(led));
        let drain = {
            let queue = Arc::clone(&queue);
            let drained = Arc::clone(&drained);
            move || {
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some((pilot, call)) = next else {
                        // Kept as a permit if the batch is not waiting yet.
                        drained.notify_one();
                        return;
                    };
                    // A panic drops the pilot: its callers get `Abandoned`.
                    let answer =
                        std::panic::catch_unwind(AssertUnwindSafe(|| call(&pilot.key().0)));
                    if let Ok(answer) = answer {
                        let answer: Answer = answer.map(|v| Arc::new(v) as _);
                        pilot.land(answer);
                    }
                }
            }
        };
        let queued =
            |q: &Mutex<VecDeque<_>>| !q.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
        if queued(&queue)
            && let Err(e) = self.lane.spawn(drain.clone())
        {
            // Dropping the queue's pilots abandons the calls; say why.
            queue.lock().unwrap_or_else(PoisonError::into_inner).clear();
            for (i, _) in waiting.drain(..) {
                let (path, what) = &*paths[i];
                let failed = format!("{what} {}: {e}", path.display());
                answers[i] = Some(Err(Failure::new(Reason::IoError, failed)));
            }
            collect = true;
        }
        // What is still running once the answers are read, awaited.
        let mut pending = FuturesUnordered::new();
        let stall = tokio::time::sleep(STALL.min(timeout));
        tokio::pin!(stall);
        loop {
            if collect {
                for (i, mut passenger) in waiting.drain(..) {
                    match passenger.now() {
                        Some(answer) => record(&mut answers, i, answer),
                        None => pending.push(async move { (i, passenger.answered().await) }),
                    }
                }
                if pending.is_empty() {
                    break;
                }
            }
            tokio::select! {
                () = drained.notified(), if !collect => collect = true,
                Some((i, answer)) = pending.next(), if collect => record(&mut answers, i, answer),
                () = &mut stall => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        // What landed meanwhile is an answer, not a timeout.
                        for (i, passenger) in &waiting {
                            if let Some(answer) = passenger.now() {
                                record(&mut answers, *i, answer);
                            }
                        }
                        while let Some(Some((i, answer))) = pending.next().now_or_never() {
                            record(&mut answers, i, answer);
                        }
                        break;
                    }
                    // No answer for STALL: maybe behind a hung call. Another
                    // job takes the rest of the queue (the lane starts a
                    // thread for it if its threads make no progress). With
                    // nothing left queued, what runs is awaited call by call.
                    if queued(&queue) {
                        let _ = self.lane.spawn(drain.clone());
                    } else {
                        collect = true;
                    }
                    stall.as_mut().reset((now + STALL).min(deadline));
                }
            }
        }
        answers
            .into_iter()
            .zip(&paths)
            .map(|(a, key)| a.unwrap_or_else(|| Err(timed_out(key.1, &key.0, timeout))))
            .collect()
    }

    /// Paths whose call has not returned yet.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }
}

/// A kind's answer as its type. Two call sites that gave one kind two answer
/// types would be a bug, reported as an error rather than a panic.
fn downcast<T: Clone + 'static>(
    what: &str,
    path: &Path,
    value: &Arc<dyn Any + Send + Sync>,
) -> Result<T, Failure> {
    value.downcast_ref::<T>().cloned().ok_or_else(|| {
        Failure::new(
            Reason::IoError,
            format!("{what} {}: answer of an unexpected type", path.display()),
        )
    })
}

/// A path whose earlier call is older than the caller's timeout.
fn still_hung(what: &str, path: &Path) -> Failure {
    Failure::new(
        Reason::Timeout,
        format!(
            "{what} {} is still hung from an earlier call",
            path.display()
        ),
    )
}

/// A call that ended without an answer: it panicked.
fn abandoned(what: &str, path: &Path) -> Failure {
    Failure::new(
        Reason::IoError,
        format!(
            "{what} {}: the call was dropped without an answer (it panicked)",
            path.display()
        ),
    )
}

fn timed_out(what: &str, path: &Path, after: Duration) -> Failure {
    Failure::new(
        Reason::Timeout,
        format!("{what} {} did not answer within {after:?}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    type TestCall = Box<dyn FnOnce(&Path) -> Result<u32, Failure> + Send>;

    fn guard() -> Guard {
        Guard::new(Lane::new("test-guard", 4, Duration::from_secs(5)))
    }

    #[tokio::test]
    async fn callers_within_the_timeout_share_one_call() {
        let guard = guard();
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let calls = (0..5).map(|_| {
            let runs = Arc::clone(&runs);
            let gate = Arc::clone(&gate);
            guard.call("stat", Path::new("/d"), Duration::from_secs(5), move |_| {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = gate.lock().unwrap().recv();
                Ok(7u32)
            })
        });
        let (answers, ()) = tokio::join!(futures::future::join_all(calls), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            release.send(()).unwrap();
        });
        for answer in answers {
            assert_eq!(answer, Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one call for one path");
        assert_eq!(guard.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_hung_call_times_out_then_is_still_hung_and_never_piles_up() {
        let guard = guard();
        let (release, hung) = mpsc::channel::<()>();
        let first = guard
            .call(
                "statfs",
                Path::new("/nfs"),
                Duration::from_millis(100),
                move |_| {
                    let _ = hung.recv();
                    Ok(1u8)
                },
            )
            .await
            .unwrap_err();
        assert_eq!(first.reason, Reason::Timeout);
        assert!(
            first.message.contains("statfs /nfs did not answer"),
            "{first}"
        );
        let again = guard
            .call(
                "statfs",
                Path::new("/nfs"),
                Duration::from_millis(50),
                |_| -> Result<u8, Failure> {
                    panic!("must not run while the first call holds the path")
                },
            )
            .await
            .unwrap_err();
        assert_eq!(again.reason, Reason::Timeout);
        assert!(again.message.contains("still hung"), "{again}");
        // Another kind, or another path, is not held up.
        let other = guard
            .call("stat", Path::new("/nfs"), Duration::from_secs(5), |_| {
                Ok(2u8)
            })
            .await;
        assert_eq!(other, Ok(2));
        release.send(()).unwrap();
    }

    /// A call of kind "stat" for each of `paths` answering its path's
    /// length, but `/nfs`, which hangs until the sender returned sends (or
    /// is dropped).
    fn calls_with_nfs_hung(
        paths: &[&str],
    ) -> (Vec<(&'static str, PathBuf, TestCall)>, mpsc::Sender<()>) {
        let (release, hung) = mpsc::channel::<()>();
        let hung = Arc::new(std::sync::Mutex::new(hung));
        let calls = paths
            .iter()
            .map(|p| {
                let hung = Arc::clone(&hung);
                let call: TestCall = Box::new(move |path: &Path| {
                    if path == Path::new("/nfs") {
                        let _ = hung.lock().unwrap().recv();
                    }
                    Ok(path.as_os_str().len() as u32)
                });
                ("stat", PathBuf::from(p), call)
            })
            .collect();
        (calls, release)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_wakes_its_caller_once_not_once_per_answer() {
        let guard = guard();
        let calls: Vec<(&'static str, PathBuf, TestCall)> = (0..20)
            .map(|i| {
                let call: TestCall = Box::new(|_: &Path| {
                    std::thread::sleep(Duration::from_millis(2));
                    Ok(7)
                });
                ("stat", PathBuf::from(format!("/v/{i}")), call)
            })
            .collect();
        let mut batch = Box::pin(guard.call_batch(calls, Duration::from_secs(5)));
        let mut polls = 0;
        let answers = std::future::poll_fn(|cx| {
            polls += 1;
            batch.as_mut().poll(cx)
        })
        .await;
        assert_eq!(answers, vec![Ok(7); 20]);
        // Awaiting each answer as it landed took about one poll per call.
        assert!(polls <= 4, "{polls} polls for 20 calls");
    }

    #[tokio::test]
    async fn an_answer_that_landed_before_the_timeout_is_not_a_timeout() {
        // The timeout is shorter than the stall check, and the call behind
        // the first hangs: the batch ends at the deadline with the first
        // answer, never told the queue was drained.
        let guard = guard();
        let (calls, release) = calls_with_nfs_hung(&["/a", "/nfs"]);
        let answers = guard.call_batch(calls, STALL / 2).await;
        assert_eq!(answers[0], Ok(2));
        assert_eq!(answers[1].as_ref().unwrap_err().reason, Reason::Timeout);
        let _ = release.send(());
    }

    #[tokio::test]
    async fn a_batch_is_one_job_and_a_hung_call_in_it_holds_up_no_other() {
        let guard = guard();
        let (calls, release) = calls_with_nfs_hung(&["/a", "/nfs", "/b", "/c"]);
        let started = std::time::Instant::now();
        let answers = guard.call_batch(calls, Duration::from_secs(3)).await;
        assert_eq!(answers[0], Ok(2));
        assert_eq!(
            answers[2],
            Ok(2),
            "the calls queued behind the hung one ran"
        );
        assert_eq!(answers[3], Ok(2));
        let e = answers[1].clone().unwrap_err();
        assert_eq!(e.reason, Reason::Timeout);
        assert!(e.message.contains("stat /nfs did not answer"), "{e}");
        assert!(started.elapsed() >= Duration::from_secs(3));
        // The hung path is still held: a second batch is told so at once,
        // and a single call of the same kind too.
        let again = guard
            .call_batch(
                vec![("stat", PathBuf::from("/nfs"), |_: &Path| Ok(0u32))],
                Duration::from_secs(3),
            )
            .await;
        assert!(
            again[0]
                .as_ref()
                .unwrap_err()
                .message
                .contains("still hung")
        );
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn a_batch_joins_a_call_in_flight_for_its_path() {
        let guard = guard();
        let (release, gate) = mpsc::channel::<()>();
        let single = guard.call("stat", Path::new("/d"), Duration::from_secs(5), move |_| {
            let _ = gate.recv();
            Ok(1u32)
        });
        let batch = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            guard
                .call_batch(
                    vec![(
                        "stat",
                        PathBuf::from("/d"),
                        |_: &Path| -> Result<u32, Failure> {
                            panic!("the batch must join the call in flight")
                        },
                    )],
                    Duration::from_secs(5),
                )
                .await
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            release.send(()).unwrap();
        };
        let (single, batch, ()) = tokio::join!(single, batch, release);
        assert_eq!(single, Ok(1));
        assert_eq!(batch, vec![Ok(1)]);
        assert_eq!(guard.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_calls_own_failure_and_a_panic_are_reported() {
        let guard = guard();
        let own = guard
            .call("stat", Path::new("/x"), Duration::from_secs(5), |p| {
                Err::<u8, _>(Failure::new(
                    Reason::NotFound,
                    format!("{}: gone", p.display()),
                ))
            })
            .await;
        assert_eq!(own, Err(Failure::new(Reason::NotFound, "/x: gone")));
        let panicked = guard
            .call(
                "stat",
                Path::new("/y"),
                Duration::from_secs(5),
                |_| -> Result<u8, Failure> { panic!("bad input") },
            )
            .await
            .unwrap_err();
        assert_eq!(panicked.reason, Reason::IoError);
        assert!(panicked.message.contains("stat /y"), "{panicked}");
        assert_eq!(guard.in_flight(), 0, "a panicked call frees its path");
    }
}
