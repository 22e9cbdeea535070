//! At most one blocking call in flight per path: a call that hangs (a dead
//! NFS mount) holds its path until it returns, however late, and further
//! calls for that path are refused instead of piling up blocked threads.
//!
//! [`Flights`] lets callers that arrive while a call is still within its
//! time *join* it and share its answer: two PVCs whose PVs name one
//! directory (`D` and `D/./`) are one measurement, and the second is never
//! told the path is hung because the first is busy with it. Every guarded
//! call goes through it by way of [`super::guard::Guard`] or the walk pool.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Calls in flight, one per key (a path, or a path and a kind of call),
/// whose answers every caller that joined them receives. `R` is the call's
/// whole outcome (errors included).
#[derive(Debug)]
pub struct Flights<K, R> {
    map: FlightMap<K, R>,
}

type FlightMap<K, R> = Arc<Mutex<HashMap<K, Flight<R>>>>;

impl<K, R> Default for Flights<K, R> {
    fn default() -> Self {
        Flights {
            map: Arc::default(),
        }
    }
}

impl<K, R> Clone for Flights<K, R> {
    fn clone(&self) -> Self {
        Flights {
            map: Arc::clone(&self.map),
        }
    }
}

#[derive(Debug)]
struct Flight<R> {
    started: Instant,
    /// Which pilot flies it: a pilot dropped late frees only its own.
    id: u64,
    answer: watch::Receiver<Option<Arc<R>>>,
}

/// What [`Flights::join`] gives a caller.
#[derive(Debug)]
pub enum Joined<K: Eq + Hash + Clone, R> {
    /// Nothing was in flight: the caller must run the call and hand its
    /// outcome to the [`Pilot`]; the [`Passenger`] receives it.
    Lead(Pilot<K, R>, Passenger<R>),
    /// A call started less than `hung_after` ago is running: wait for it.
    Follow(Passenger<R>),
    /// A call has been running for longer than `hung_after`: the path is
    /// hung, and waiting again would only pile up.
    Hung(Duration),
}

/// Publishes the call's outcome to everyone waiting; frees the path when
/// dropped, answered or not (a call that never ran, or panicked).
#[derive(Debug)]
pub struct Pilot<K: Eq + Hash + Clone, R> {
    map: FlightMap<K, R>,
    key: K,
    id: u64,
    answer: watch::Sender<Option<Arc<R>>>,
    /// The path was freed already (by [`Pilot::land`]).
    freed: bool,
}

/// Waits for the outcome of a call in flight.
#[derive(Debug)]
pub struct Passenger<R> {
    answer: watch::Receiver<Option<Arc<R>>>,
}

/// Why a [`Passenger`] got no outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// The call did not finish within the caller's timeout.
    Timeout,
    /// The call was dropped without an answer (never run, or it panicked).
    Abandoned,
}

impl<K: Eq + Hash + Clone, R> Flights<K, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Flight<R>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the call in flight for `key`, or makes the caller its pilot.
    /// One lookup of the table either way (a key is hashed once per call
    /// and once more when its pilot lands: at 1,000 volumes and pods a
    /// few thousand calls a minute go through here).
    pub fn join(&self, key: K, hung_after: Duration) -> Joined<K, R> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let mut map = self.lock();
        match map.entry(key) {
            Entry::Occupied(flight) => {
                let flight = flight.get();
                let age = flight.started.elapsed();
                if age > hung_after {
                    Joined::Hung(age)
                } else {
                    Joined::Follow(Passenger {
                        answer: flight.answer.clone(),
                    })
                }
            }
            Entry::Vacant(slot) => {
                let key = slot.key().clone();
                let id = IDS.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = watch::channel(None);
                slot.insert(Flight {
                    started: Instant::now(),
                    id,
                    answer: rx.clone(),
                });
                Joined::Lead(
                    Pilot {
                        map: Arc::clone(&self.map),
                        key,
                        id,
                        answer: tx,
                        freed: false,
                    },
                    Passenger { answer: rx },
                )
            }
        }
    }

    /// Keys whose call has not returned yet.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.lock().capacity()
    }
}

impl<K: Eq + Hash + Clone, R> Pilot<K, R> {
    /// The key the call is flying for.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Frees the path, then hands `outcome` to every passenger: a caller
    /// that arrives after this starts a fresh call.
    pub fn land(mut self, outcome: R) {
        self.free();
        // Passengers that gave up are gone; nothing to tell them.
        self.answer.send_replace(Some(Arc::new(outcome)));
    }

    fn free(&mut self) {
        if std::mem::replace(&mut self.freed, true) {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Only this pilot's flight: should another pilot's hold the path
        // (the table emptied by hand, as a test does), it is put back.
        match map.remove(&self.key) {
            Some(flight) if flight.id != self.id => {
                map.insert(self.key.clone(), flight);
            }
            _ => {}
        }
        // A hash table keeps the capacity of its largest burst (the
        // first measurement of every pod's files at start-up: 2,000
        // paths at 1,000 pods, about 250 KB): once empty, it gives
        // back what is past a few calls' share.
        if map.is_empty() && map.capacity() > KEPT_CAPACITY {
            map.shrink_to(KEPT_CAPACITY);
        }
    }
}

/// The capacity an empty table keeps. The table is empty between
/// wake-ups, and a wake-up's calls (about 250 at 1,000 volumes and pods)
/// regrow it in a few steps, which costs less than keeping 70 KB for it.
const KEPT_CAPACITY: usize = 32;

impl<K: Eq + Hash + Clone, R> Drop for Pilot<K, R> {
    fn drop(&mut self) {
        self.free();
    }
}

impl<R> Passenger<R> {
    /// The call's outcome if it is already known, without waiting: `None`
    /// while the call runs.
    pub fn now(&self) -> Option<Result<Arc<R>, Unanswered>> {
        if let Some(outcome) = &*self.answer.borrow() {
            return Some(Ok(Arc::clone(outcome)));
        }
        // The pilot is gone without an answer (checked after the value: a
        // pilot drops its sender right after landing).
        self.answer
            .has_changed()
            .is_err()
            .then_some(Err(Unanswered::Abandoned))
    }

    /// The call's outcome, however long it takes (the caller bounds it).
    pub async fn answered(&mut self) -> Result<Arc<R>, Unanswered> {
        match self.answer.wait_for(Option::is_some).await {
            Ok(outcome) => (*outcome).clone().ok_or(Unanswered::Abandoned),
            Err(_) => Err(Unanswered::Abandoned),
        }
    }

    /// The call's outcome, waiting at most `timeout` for it.
    pub async fn wait(mut self, timeout: Duration) -> Result<Arc<R>, Unanswered> {
        let answered = tokio::time::timeout(timeout, self.answer.wait_for(Option::is_some)).await;
        match answered {
            Ok(Ok(outcome)) => (*outcome).clone().ok_or(Unanswered::Abandoned),
            Ok(Err(_)) => Err(Unanswered::Abandoned),
            Err(_) => Err(Unanswered::Timeout),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[tokio::test]
    async fn callers_within_the_time_share_one_call() {
        let flights: Flights<PathBuf, u32> = Flights::default();
        let Joined::Lead(pilot, first) = flights.join(PathBuf::from("/d"), Duration::from_secs(5))
        else {
            panic!("nothing was in flight");
        };
        let Joined::Follow(second) = flights.join(PathBuf::from("/d"), Duration::from_secs(5))
        else {
            panic!("the second caller should join the first call");
        };
        assert!(matches!(
            flights.join(PathBuf::from("/other"), Duration::from_secs(5)),
            Joined::Lead(..)
        ));
        pilot.land(7);
        assert_eq!(*first.wait(Duration::from_secs(1)).await.unwrap(), 7);
        assert_eq!(*second.wait(Duration::from_secs(1)).await.unwrap(), 7);
        assert!(
            matches!(
                flights.join(PathBuf::from("/d"), Duration::from_secs(5)),
                Joined::Lead(..)
            ),
            "a landed call frees its path"
        );
    }

    #[tokio::test]
    async fn a_call_older_than_the_timeout_is_hung_and_a_dropped_one_abandoned() {
        let flights: Flights<PathBuf, u32> = Flights::default();
        let Joined::Lead(pilot, passenger) = flights.join(PathBuf::from("/d"), Duration::ZERO)
        else {
            panic!("nothing was in flight");
        };
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            flights.join(PathBuf::from("/d"), Duration::from_millis(1)),
            Joined::Hung(_)
        ));
        assert_eq!(
            Passenger {
                answer: passenger.answer.clone()
            }
            .wait(Duration::from_millis(10))
            .await
            .unwrap_err(),
            Unanswered::Timeout
        );
        drop(pilot);
        assert_eq!(
            passenger.wait(Duration::from_secs(1)).await.unwrap_err(),
            Unanswered::Abandoned
        );
        assert!(flights.is_empty());
    }

    /// The call for `path`, which nothing holds yet.
    fn lead(flights: &Flights<PathBuf, u32>, path: &str) -> Pilot<PathBuf, u32> {
        match flights.join(PathBuf::from(path), Duration::from_secs(5)) {
            Joined::Lead(pilot, _) => pilot,
            _ => panic!("nothing was in flight for {path}"),
        }
    }

    #[test]
    fn an_empty_table_gives_back_a_bursts_capacity() {
        let flights: Flights<PathBuf, u32> = Flights::default();
        let burst: Vec<_> = (0..2000)
            .map(|i| lead(&flights, &format!("/p/{i}")))
            .collect();
        assert!(flights.capacity() >= 2000);
        for pilot in burst {
            pilot.land(1);
        }
        assert!(flights.is_empty());
        assert!(
            flights.capacity() <= 2 * KEPT_CAPACITY,
            "{} slots kept",
            flights.capacity()
        );
        // A wake-up's share is given back too, once it has landed.
        let share: Vec<_> = (0..250)
            .map(|i| lead(&flights, &format!("/q/{i}")))
            .collect();
        assert!(flights.capacity() >= 250);
        drop(share);
        assert!(flights.capacity() <= 2 * KEPT_CAPACITY);
    }

    #[tokio::test]
    async fn an_answer_is_read_at_once_once_landed_and_a_dropped_call_is_abandoned() {
        let flights: Flights<PathBuf, u32> = Flights::default();
        let Joined::Lead(pilot, passenger) =
            flights.join(PathBuf::from("/d"), Duration::from_secs(5))
        else {
            panic!("nothing was in flight");
        };
        assert_eq!(pilot.key(), &PathBuf::from("/d"));
        assert!(passenger.now().is_none(), "still running");
        pilot.land(3);
        assert_eq!(*passenger.now().unwrap().unwrap(), 3);
        let Joined::Lead(pilot, passenger) =
            flights.join(PathBuf::from("/d"), Duration::from_secs(5))
        else {
            panic!("a landed call frees its path");
        };
        drop(pilot);
        assert_eq!(passenger.now().unwrap().unwrap_err(), Unanswered::Abandoned);
    }

    #[test]
    fn a_pilot_dropped_late_frees_only_its_own_flight() {
        let flights: Flights<PathBuf, u32> = Flights::default();
        let old = lead(&flights, "/d");
        // No caller can replace a flight (one past its time is told the path
        // is hung), so the table is emptied by hand to put another in.
        flights.lock().clear();
        let new = lead(&flights, "/d");
        drop(old);
        assert_eq!(flights.len(), 1, "the new flight is kept");
        drop(new);
        assert!(flights.is_empty());
    }
}
