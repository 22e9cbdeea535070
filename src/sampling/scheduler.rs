//! The one measurement scheduler: a timer queue of keys (a PVC, a pod's log
//! directory, ...), each with its current plan. It decides when each key is
//! measured and keeps the rules in one place:
//!
//! - a key is due when it is first planned, then every period jittered to
//!   between 1x and 2x (as kubelet jitters its volume stats);
//! - at most one call is in flight per key, whatever happens to its plan;
//! - a key whose plan changes is due again at once, and the result of a call
//!   made under an older plan is dropped;
//! - a failed call is retried with backoff (initial, doubling, capped, also
//!   jittered 1x-2x), and the backoff resets on the first success.
//!
//! It does no I/O and reads the clock only once, for the grid's origin:
//! every method takes `now`, and the owner sleeps until
//! [`Scheduler::next_wake`] (see [`sleep_until`]) or until an event arrives. The wake is the first deadline rounded up to a grid
//! whose step is the slack (1/12 of the period, at most 5 s), laid from one
//! instant for the whole process. Keys due within one step share a
//! wake-up, and so do the schedulers of one period (the volume loop's
//! statfs calls and the pod loop's stats): at 1,000 volumes with jittered
//! deadlines, the process wakes every few seconds for tens of keys, not
//! once per key and loop (each wake-up costs a timer, a thread woken, a loop
//! pass and usually a publication; side by side at 1,000 PVCs and pods, a
//! 5 s slack instead of 1 s took 17% off kubedf's CPU at rest). No key is
//! taken more than the slack after its deadline. Nothing scans every key:
//! popping the due keys costs O(due * log n). Tests drive it with made-up
//! instants, or with tokio's paused clock.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// How often a key is measured, and how failures back off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The period; each wait is jittered to between 1x and 2x of it.
    pub period: Duration,
    /// The first wait after a failure (then doubled per failure).
    pub retry: Duration,
    /// The longest wait after failures.
    pub max_retry: Duration,
}

impl Policy {
    /// The wait after `failures` failures in a row (before jitter).
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.retry
            .saturating_mul(1u32 << doublings)
            .min(self.max_retry)
    }
}

/// The longest a key waits past its deadline to share a wake-up.
const MAX_SLACK: Duration = Duration::from_secs(5);

/// Which call a result belongs to: results under an older plan are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// How a call ended, as far as scheduling goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Next call after the jittered period.
    Done,
    /// Next call after the jittered backoff.
    Failed,
}

impl Outcome {
    /// The outcome of a call that returned `result`.
    pub fn of<T, E>(result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Done
        } else {
            Outcome::Failed
        }
    }
}

/// A key that is due, with the plan to measure it by; the key stays in
/// flight until its ticket is handed back to [`Scheduler::finish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due<K, P> {
    pub key: K,
    pub plan: P,
    pub ticket: Ticket,
}

#[derive(Debug)]
struct Slot<P> {
    plan: P,
    /// The ticket of the current plan.
    ticket: u64,
    /// Where the key sits in the queue, when it waits there.
    queued: Option<(Instant, u64)>,
    /// The ticket of the call in flight, if one is.
    in_flight: Option<u64>,
    failures: u32,
}

/// The timer queue. `K` names what is measured, `P` how (a path and a
/// method): planning an equal plan again changes nothing.
#[derive(Debug)]
pub struct Scheduler<K, P> {
    policy: Policy,
    rng: fastrand::Rng,
    /// Boxed: a hash table keeps from 1/8 to over half of its buckets
    /// empty (1,000 keys take 2,048), and an empty bucket costs what a
    /// full one does, so buckets stay a key and a pointer wide.
    slots: HashMap<K, Box<Slot<P>>>,
    /// (deadline, sequence number) -> key; the sequence number keeps equal
    /// deadlines apart and in order.
    queue: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K: Clone + Eq + Hash, P: Clone + PartialEq> Scheduler<K, P> {
    pub fn new(policy: Policy) -> Scheduler<K, P> {
        Scheduler::with_rng(policy, fastrand::Rng::new())
    }

    /// With a given random source, for repeatable tests.
    pub fn with_rng(policy: Policy, rng: fastrand::Rng) -> Scheduler<K, P> {
        Scheduler {
            policy,
            rng,
            slots: HashMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Plans `key` (new or changed plan: due now, and any call in flight
    /// under the old plan will have its result dropped). An equal plan
    /// changes nothing. Returns whether the plan is new.
    pub fn plan(&mut self, key: K, plan: P, now: Instant) -> bool {
        self.seq += 1;
        let ticket = self.seq;
        match self.slots.get_mut(&key) {
            Some(slot) if slot.plan == plan => return false,
            Some(slot) => {
                slot.plan = plan;
                slot.ticket = ticket;
                slot.failures = 0;
                if let Some(at) = slot.queued.take() {
                    self.queue.remove(&at);
                }
            }
            None => {
                self.slots.insert(
                    key.clone(),
                    Box::new(Slot {
                        plan,
                        ticket,
                        queued: None,
                        in_flight: None,
                        failures: 0,
                    }),
                );
            }
        }
        // A key in flight is queued when its call returns.
        if self.slots.get(&key).is_some_and(|s| s.in_flight.is_none()) {
            self.enqueue(key, now);
        }
        true
    }

    /// Forgets `key`; the result of a call still in flight is dropped.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.slots.remove(key) {
            Some(slot) => {
                if let Some(at) = slot.queued {
                    self.queue.remove(&at);
                }
                true
            }
            None => false,
        }
    }

    /// Keeps only the keys for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let gone: Vec<K> = self.slots.keys().filter(|k| !keep(k)).cloned().collect();
        for key in gone {
            self.remove(&key);
        }
    }

    // Observers the owners do not need (they count their own calls in
    // flight, including calls of keys removed meanwhile, which still hold a
    // thread); the tests use them to check the rules.

    #[cfg(test)]
    pub fn contains(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    /// The current plan of `key`.
    #[cfg(test)]
    pub fn plan_of(&self, key: &K) -> Option<&P> {
        self.slots.get(key).map(|s| &s.plan)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Keys with a call in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.slots
            .values()
            .filter(|s| s.in_flight.is_some())
            .count()
    }

    /// When the next key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// How late a key may be taken so that it shares a wake-up with others.
    pub fn slack(&self) -> Duration {
        (self.policy.period / 12).min(MAX_SLACK)
    }

    /// When the owner should wake to take what is due: the next deadline
    /// rounded up to the process's grid of [`Scheduler::slack`] steps (or
    /// never, with nothing planned: only an event can bring work). A key is
    /// thus taken less than the slack after its deadline, and every
    /// scheduler of the same period wakes at the same instants.
    pub fn next_wake(&self) -> Option<Instant> {
        self.next_due().map(|at| on_grid(at, self.slack()))
    }

    /// Takes the next key due at `now`, and marks it in flight.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due<K, P>> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let key = entry.remove();
        let slot = self.slots.get_mut(&key)?;
        slot.queued = None;
        slot.in_flight = Some(slot.ticket);
        Some(Due {
            key,
            plan: slot.plan.clone(),
            ticket: Ticket(slot.ticket),
        })
    }

    /// Takes every key due at `now`.
    #[cfg(test)]
    pub fn drain_due(&mut self, now: Instant) -> Vec<Due<K, P>> {
        std::iter::from_fn(|| self.pop_due(now)).collect()
    }

    /// Hands a call's ticket back. Returns true when its result belongs to
    /// the current plan and should be used; false when it is to be dropped
    /// (the key was replanned or removed meanwhile).
    pub fn finish(&mut self, key: &K, ticket: Ticket, outcome: Outcome, now: Instant) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        if slot.in_flight != Some(ticket.0) {
            // Not the call in flight (a duplicate or a very late answer).
            return false;
        }
        slot.in_flight = None;
        if slot.ticket != ticket.0 {
            // Replanned while in flight: the new plan is due now.
            self.enqueue(key.clone(), now);
            return false;
        }
        let wait = match outcome {
            Outcome::Done => {
                slot.failures = 0;
                self.policy.period
            }
            Outcome::Failed => {
                slot.failures = slot.failures.saturating_add(1);
                self.policy.backoff(slot.failures)
            }
        };
        let at = now + wait + wait.mul_f64(self.rng.f64());
        self.enqueue(key.clone(), at);
        true
    }

    fn enqueue(&mut self, key: K, at: Instant) {
        self.seq += 1;
        let pos = (at, self.seq);
        if let Some(slot) = self.slots.get_mut(&key) {
            if let Some(old) = slot.queued.replace(pos) {
                self.queue.remove(&old);
            }
            self.queue.insert(pos, key);
        }
    }
}

/// The first instant at or after `at` on the grid of `step` laid from the
/// process's first use of it. Laid from one instant, the grids of equal
/// steps coincide, so the schedulers that use them wake together. An
/// instant before the grid's origin (a paused test clock set back) is
/// rounded on the grid extended backwards.
pub fn on_grid(at: Instant, step: Duration) -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let step_ns = step.as_nanos();
    if step_ns == 0 {
        return at;
    }
    let wait = if at >= origin {
        let past = (at - origin).as_nanos() % step_ns;
        (step_ns - past) % step_ns
    } else {
        (origin - at).as_nanos() % step_ns
    };
    // Less than one step, which is a Duration: the cast cannot truncate.
    at + Duration::from_nanos(wait as u64)
}

/// Sleeps until `deadline`, or forever when there is none (nothing is
/// planned: only an event can wake the owner).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_due_within_the_slack_share_one_wake_and_none_waits_longer() {
        let mut s = scheduler();
        let step = Duration::from_secs(5);
        assert_eq!(s.slack(), step, "1/12 of 60 s");
        // 0.1 s past a grid point: the next one is 4.9 s on.
        let t0 = on_grid(Instant::now(), step) + Duration::from_millis(100);
        // A new key is due when planned: these fall due 0, 1.5, 3 and 7.5 s
        // after t0.
        for (key, ms) in [("a", 0), ("b", 1500), ("c", 3000), ("d", 7500)] {
            s.plan(key, "/x", t0 + Duration::from_millis(ms));
        }
        assert_eq!(s.next_due(), Some(t0));
        let wake = s.next_wake().unwrap();
        assert_eq!(
            wake,
            t0 + Duration::from_millis(4900),
            "the first deadline rounded up to the grid"
        );
        // One wake takes the three due by then; the fourth waits.
        let taken: Vec<_> = s.drain_due(wake).into_iter().map(|d| d.key).collect();
        assert_eq!(taken, ["a", "b", "c"]);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(7500)));
        assert_eq!(
            s.next_wake(),
            Some(t0 + Duration::from_millis(9900)),
            "no key is taken a step or more after its deadline"
        );
        // A short period has a proportionally short slack.
        let short: Scheduler<&str, &str> = Scheduler::new(Policy {
            period: Duration::from_millis(300),
            retry: Duration::from_millis(100),
            max_retry: Duration::from_millis(300),
        });
        assert_eq!(short.slack(), Duration::from_millis(25));
        let long: Scheduler<&str, &str> = Scheduler::new(Policy {
            period: Duration::from_secs(600),
            ..policy()
        });
        assert_eq!(long.slack(), MAX_SLACK, "capped");
    }

    #[test]
    fn schedulers_of_one_period_wake_at_the_same_instants() {
        let mut volumes = scheduler();
        let mut pods: Scheduler<&str, &str> = Scheduler::new(policy());
        let t0 = Instant::now();
        let step = volumes.slack();
        // Deadlines 0.3 s apart within one step, on two schedulers.
        let first = on_grid(t0, step) + Duration::from_millis(100);
        volumes.plan("pvc", "/v", first);
        pods.plan("pod", "/p", first + Duration::from_millis(300));
        assert_eq!(
            volumes.next_wake(),
            pods.next_wake(),
            "one wake-up for both"
        );
        let wake = volumes.next_wake().unwrap();
        assert_eq!(wake, on_grid(first, step));
        assert!(wake - first < step);
        // A deadline on the grid is its own wake; one just past waits a step.
        assert_eq!(on_grid(wake, step), wake);
        assert_eq!(
            on_grid(wake + Duration::from_nanos(1), step),
            wake + step,
            "the next grid point"
        );
        // An instant before the grid's origin rounds on the grid too.
        let before = t0
            .checked_sub(Duration::from_secs(3600) + Duration::from_millis(1))
            .expect("an hour back");
        let rounded = on_grid(before, step);
        assert!(rounded >= before && rounded - before < step);
        assert_eq!(
            on_grid(rounded + step * 720, step),
            rounded + step * 720,
            "the same grid an hour later"
        );
        assert_eq!(on_grid(before, Duration::ZERO), before, "no grid");
    }

    const PERIOD: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy {
            period: PERIOD,
            retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(40),
        }
    }

    fn scheduler() -> Scheduler<&'static str, &'static str> {
        Scheduler::with_rng(policy(), fastrand::Rng::with_seed(7))
    }

    #[test]
    fn a_new_key_is_due_at_once_then_every_one_to_two_periods() {
        let mut s = scheduler();
        let t0 = Instant::now();
        assert_eq!(s.next_due(), None, "nothing planned: nothing to wake for");
        assert!(s.plan("a", "/a", t0));
        assert!(
            !s.plan("a", "/a", t0),
            "the same plan again changes nothing"
        );
        assert_eq!(s.next_due(), Some(t0));
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..200 {
            let due = s.pop_due(now).expect("due");
            assert_eq!((due.key, due.plan), ("a", "/a"));
            assert!(s.finish(&"a", due.ticket, Outcome::Done, now));
            let next = s.next_due().expect("rescheduled");
            let wait = next - now;
            assert!(
                (PERIOD..PERIOD * 2).contains(&wait),
                "wait {wait:?} is outside 1x-2x the period"
            );
            assert!(s.pop_due(next - Duration::from_millis(1)).is_none());
            waits.push(wait);
            now = next;
        }
        // Spread over the whole range, not stuck at one end.
        let low = waits.iter().filter(|w| **w < PERIOD * 3 / 2).count();
        assert!(
            (60..140).contains(&low),
            "{low} of 200 waits in the lower half"
        );
    }

    #[test]
    fn one_call_in_flight_per_key() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.plan("a", "/a", t0);
        s.plan("b", "/b", t0);
        let due = s.drain_due(t0);
        assert_eq!(due.len(), 2);
        assert_eq!(s.in_flight(), 2);
        // However late the call is, the key is not handed out again.
        let much_later = t0 + PERIOD * 10;
        assert!(s.pop_due(much_later).is_none());
        assert_eq!(s.next_due(), None);
        assert!(s.finish(&"a", due[0].ticket, Outcome::Done, much_later));
        assert!(
            !s.finish(&"a", due[0].ticket, Outcome::Done, much_later),
            "a ticket is handed back once"
        );
        assert_eq!(s.in_flight(), 1);
    }

    #[test]
    fn a_replan_is_due_at_once_and_drops_the_old_plans_result() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.plan("a", "/old", t0);
        let old = s.pop_due(t0).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        assert!(s.plan("a", "/new", t1), "the PV changed");
        // Still one call in flight: the new plan waits for the old call.
        assert!(s.pop_due(t1).is_none());
        let t2 = t0 + Duration::from_secs(2);
        assert!(
            !s.finish(&"a", old.ticket, Outcome::Done, t2),
            "the old plan's result is dropped"
        );
        let new = s.pop_due(t2).expect("the new plan is due at once");
        assert_eq!(new.plan, "/new");
        assert_ne!(new.ticket, old.ticket);
        assert!(s.finish(&"a", new.ticket, Outcome::Done, t2));

        // Replanned while waiting: due at once, not after the period.
        let t3 = t2 + Duration::from_secs(3);
        s.plan("a", "/newer", t3);
        assert_eq!(s.next_due(), Some(t3));
        assert_eq!(s.pop_due(t3).unwrap().plan, "/newer");
    }

    #[test]
    fn results_of_removed_keys_are_dropped() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.plan("a", "/a", t0);
        s.plan("b", "/b", t0);
        let due = s.pop_due(t0).unwrap();
        s.retain(|k| *k != due.key);
        assert!(!s.contains(&due.key));
        assert!(!s.finish(&due.key, due.ticket, Outcome::Done, t0));
        // Planned again, the key starts afresh: its old ticket is worthless.
        s.plan(due.key, "/again", t0);
        let again = s.pop_due(t0).unwrap();
        assert!(!s.finish(&due.key, due.ticket, Outcome::Done, t0));
        assert!(s.finish(&again.key, again.ticket, Outcome::Done, t0));
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_cap_and_reset_on_success() {
        let mut s = scheduler();
        let mut now = Instant::now();
        s.plan("a", "/a", now);
        let mut bases = Vec::new();
        for _ in 0..6 {
            let due = s.pop_due(now).unwrap();
            assert!(s.finish(&"a", due.ticket, Outcome::Failed, now));
            let next = s.next_due().unwrap();
            let wait = next - now;
            // The base is the lower bound of the 1x-2x window.
            let base = [5u64, 10, 20, 40, 40, 40]
                .map(Duration::from_secs)
                .into_iter()
                .find(|b| (*b..*b * 2).contains(&wait))
                .unwrap_or_else(|| panic!("wait {wait:?} fits no backoff step"));
            bases.push(base.as_secs());
            now = next;
        }
        assert_eq!(bases, [5, 10, 20, 40, 40, 40]);
        let due = s.pop_due(now).unwrap();
        assert!(s.finish(&"a", due.ticket, Outcome::Done, now));
        let wait = s.next_due().unwrap() - now;
        assert!(wait >= PERIOD, "a success waits the period again");
        now += wait;
        let due = s.pop_due(now).unwrap();
        s.finish(&"a", due.ticket, Outcome::Failed, now);
        let wait = s.next_due().unwrap() - now;
        assert!(
            wait < Duration::from_secs(10),
            "the backoff starts over after a success: {wait:?}"
        );
    }

    #[test]
    fn due_keys_come_out_in_deadline_order() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.plan("late", "/l", t0 + Duration::from_secs(1));
        s.plan("early", "/e", t0);
        let order: Vec<&str> = s
            .drain_due(t0 + Duration::from_secs(1))
            .into_iter()
            .map(|d| d.key)
            .collect();
        assert_eq!(order, ["early", "late"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_owner_sleeps_until_the_next_deadline_on_tokios_clock() {
        let mut s = scheduler();
        let t0 = Instant::now();
        s.plan("a", "/a", t0);
        let due = s.pop_due(t0).unwrap();
        s.finish(&"a", due.ticket, Outcome::Done, t0);
        let deadline = s.next_due().unwrap();
        assert!(deadline - t0 >= PERIOD);
        sleep_until(Some(deadline)).await;
        let woke = Instant::now();
        // tokio's timer has millisecond resolution.
        assert!(
            woke >= deadline && woke - deadline <= Duration::from_millis(1),
            "woke {:?} after the deadline",
            woke - deadline
        );
        assert!(s.pop_due(woke).is_some());
        // Nothing planned: the sleep never ends by itself.
        let idle = tokio::time::timeout(PERIOD * 100, sleep_until(None)).await;
        assert!(idle.is_err());
    }
}
