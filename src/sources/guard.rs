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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::inflight::{Flights, Joined, Unanswered};
use super::lane::{Lane, LaneError};
use crate::model::{Failure, Reason};

/// One answer, of whatever type its kind has.
type Answer = Result<Arc<dyn Any + Send + Sync>, Failure>;

/// Runs guarded blocking calls. Cloning shares the lane and the calls in
/// flight: build one per process and pass it in.
#[derive(Clone, Debug)]
pub struct Guard {
    lane: Lane,
    flights: Flights<(PathBuf, &'static str), Answer>,
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
        let shown = || path.display();
        let answer = match self.flights.join(&(path.to_path_buf(), what), timeout) {
            Joined::Hung(_) => {
                return Err(Failure::new(
                    Reason::Timeout,
                    format!("{what} {} is still hung from an earlier call", shown()),
                ));
            }
            Joined::Follow(passenger) => match passenger.wait(timeout).await {
                Ok(answer) => (*answer).clone(),
                Err(Unanswered::Timeout) => Err(timed_out(what, path, timeout)),
                Err(Unanswered::Abandoned) => Err(Failure::new(
                    Reason::IoError,
                    format!(
                        "{what} {}: the call was dropped without an answer (it panicked)",
                        shown()
                    ),
                )),
            },
            Joined::Lead(pilot, _) => {
                let owned = path.to_path_buf();
                // The pilot travels with the call: a call that outlives its
                // caller keeps the path claimed until it returns; one the
                // lane never runs (its caller gave up first) frees it at once.
                let ran = self
                    .lane
                    .run(timeout, move || {
                        let answer: Answer = call(&owned).map(|v| Arc::new(v) as _);
                        pilot.land(answer.clone());
                        answer
                    })
                    .await;
                match ran {
                    Ok(answer) => answer,
                    Err(LaneError::Timeout(after)) => Err(timed_out(what, path, after)),
                    Err(e) => Err(Failure::new(
                        Reason::IoError,
                        format!("{what} {}: {e}", shown()),
                    )),
                }
            }
        };
        let value = answer?;
        value.downcast_ref::<T>().cloned().ok_or_else(|| {
            // Two call sites gave one kind two answer types: a bug, reported
            // as an error rather than a panic.
            Failure::new(
                Reason::IoError,
                format!("{what} {}: answer of an unexpected type", shown()),
            )
        })
    }

    /// Paths whose call has not returned yet.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }
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
