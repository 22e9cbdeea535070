//! When cluster mode reads a node's kubelet `/configz` (for the image GC
//! and eviction headroom), and what a read leaves in the node's row.
//!
//! A kubelet's configuration is what it built at start: it changes only
//! when the kubelet restarts, which a summary does not show. So it is read
//! at the node's first good poll, then again every [`REFRESH_POLLS`] polls
//! and no more often than every [`REFRESH_AGE`] (both counted in polls of
//! `--cluster.poll-interval`, so a skipped cycle only makes reads rarer).
//! A read refused (401, 403: `nodes/configz` not granted, which only an
//! RBAC change mends) backs off from there, doubling up to [`MAX_BACKOFF`];
//! another failure (a timeout, a broken connection, another status, a body
//! that is not kubelet's configuration) is tried again at the next poll,
//! then doubling up to the refresh period. Pure: the loop counts the polls.

use std::time::Duration;

use crate::kubelet::config::HeadroomPolicy;
use crate::model::cluster::ConfigzEntry;
use crate::model::{Failure, Reason};

/// Polls between two reads of a node's `/configz`, at least.
pub const REFRESH_POLLS: u32 = 10;
/// Time between two reads of a node's `/configz`, at least.
pub const REFRESH_AGE: Duration = Duration::from_secs(600);
/// The longest wait after refused reads.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The schedule, in polls of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigzSchedule {
    /// Polls between two reads after a good one.
    refresh: u32,
    /// The longest wait after failed reads, in polls.
    max_wait: u32,
}

impl ConfigzSchedule {
    pub fn new(poll_interval: Duration) -> ConfigzSchedule {
        let polls = |d: Duration| -> u32 {
            let interval = poll_interval.as_nanos().max(1);
            u32::try_from(d.as_nanos().div_ceil(interval)).unwrap_or(u32::MAX)
        };
        let refresh = REFRESH_POLLS.max(polls(REFRESH_AGE));
        ConfigzSchedule {
            refresh,
            max_wait: refresh.max(polls(MAX_BACKOFF)),
        }
    }

    /// Polls to wait after the last read, by how it went.
    pub fn wait(&self, entry: &ConfigzEntry) -> u32 {
        let doubling = |base: u32, cap: u32| {
            let shift = entry.failures_in_a_row.saturating_sub(1).min(31);
            base.checked_shl(shift)
                .filter(|w| w >> shift == base)
                .unwrap_or(u32::MAX)
                .min(cap)
        };
        match &entry.failure {
            None => self.refresh,
            Some(f) if matches!(f.reason, Reason::Forbidden | Reason::Unauthorized) => {
                doubling(self.refresh, self.max_wait)
            }
            Some(_) => doubling(1, self.refresh),
        }
    }

    /// Whether the node's next poll reads its `/configz` too.
    pub fn due(&self, entry: &ConfigzEntry) -> bool {
        !entry.read || entry.polls_since >= self.wait(entry)
    }
}

/// The node's `/configz` state after one poll: `read` is `None` when the
/// poll did not read it (not due, or the summary failed).
pub fn next(prev: &ConfigzEntry, read: Option<Result<HeadroomPolicy, Failure>>) -> ConfigzEntry {
    match read {
        None => ConfigzEntry {
            polls_since: prev.polls_since.saturating_add(1),
            ..prev.clone()
        },
        // The poll that read counts as the first since.
        Some(Ok(policy)) => ConfigzEntry {
            policy: Some(policy),
            read: true,
            failure: None,
            failures_in_a_row: 0,
            polls_since: 1,
        },
        Some(Err(failure)) => ConfigzEntry {
            policy: prev.policy,
            read: true,
            failure: Some(failure),
            failures_in_a_row: prev.failures_in_a_row.saturating_add(1),
            polls_since: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::config::KubeletConfig;

    fn policy() -> HeadroomPolicy {
        KubeletConfig::defaults(std::path::PathBuf::new()).headroom()
    }

    /// The polls at which a node whose reads go as `outcome` says (by read
    /// number) reads its `/configz`, over `polls` polls.
    fn reads(
        schedule: ConfigzSchedule,
        polls: u32,
        outcome: impl Fn(u32) -> Result<HeadroomPolicy, Failure>,
    ) -> Vec<u32> {
        let mut entry = ConfigzEntry::default();
        let mut at = Vec::new();
        for poll in 0..polls {
            let read = schedule.due(&entry).then(|| {
                at.push(poll);
                outcome(at.len() as u32 - 1)
            });
            entry = next(&entry, read);
        }
        at
    }

    #[test]
    fn read_at_the_first_poll_then_every_ten_polls_or_ten_minutes() {
        // A 1 m interval: every 10 polls (10 minutes).
        let every_minute = ConfigzSchedule::new(Duration::from_secs(60));
        assert_eq!(reads(every_minute, 35, |_| Ok(policy())), [0, 10, 20, 30]);
        // A 10 s interval: ten minutes are 60 polls.
        let every_10s = ConfigzSchedule::new(Duration::from_secs(10));
        assert_eq!(reads(every_10s, 130, |_| Ok(policy())), [0, 60, 120]);
        // A 1 h interval: still 10 polls.
        let hourly = ConfigzSchedule::new(Duration::from_secs(3600));
        assert_eq!(reads(hourly, 25, |_| Ok(policy())), [0, 10, 20]);
        // 7 s does not divide 10 minutes: rounded up, never more often.
        assert_eq!(ConfigzSchedule::new(Duration::from_secs(7)).refresh, 86);
    }

    #[test]
    fn a_refused_read_backs_off_to_an_hour() {
        let schedule = ConfigzSchedule::new(Duration::from_secs(60));
        let forbidden = |_| Err(Failure::new(Reason::Forbidden, "403"));
        // 10, 20, 40, then 60 minutes apart.
        assert_eq!(
            reads(schedule, 300, forbidden),
            [0, 10, 30, 70, 130, 190, 250]
        );
        let unauthorized = |_| Err(Failure::new(Reason::Unauthorized, "401"));
        assert_eq!(reads(schedule, 31, unauthorized), [0, 10, 30]);
    }

    #[test]
    fn another_failure_is_tried_again_soon_and_a_good_read_resets() {
        let schedule = ConfigzSchedule::new(Duration::from_secs(60));
        let timeouts = |_| Err(Failure::new(Reason::Timeout, "no answer"));
        // The next poll, then 2, 4, 8 apart, then the refresh period.
        assert_eq!(reads(schedule, 50, timeouts), [0, 1, 3, 7, 15, 25, 35, 45]);
        // Two timeouts, then good: back to every 10 polls.
        let flaky = |n| {
            if n < 2 {
                Err(Failure::new(Reason::Timeout, "no answer"))
            } else {
                Ok(policy())
            }
        };
        assert_eq!(reads(schedule, 25, flaky), [0, 1, 3, 13, 23]);
    }

    #[test]
    fn a_failed_re_read_keeps_the_last_good_policy() {
        let good = next(&ConfigzEntry::default(), Some(Ok(policy())));
        assert_eq!(good.policy, Some(policy()));
        let skipped = next(&good, None);
        assert_eq!((skipped.polls_since, skipped.policy), (2, Some(policy())));
        let failed = next(&skipped, Some(Err(Failure::new(Reason::Forbidden, "403"))));
        assert_eq!(failed.policy, Some(policy()));
        assert_eq!(failed.failures_in_a_row, 1);
        assert_eq!(
            failed.failure.as_ref().map(|f| f.reason),
            Some(Reason::Forbidden)
        );
        // Never read well: no policy.
        let refused = next(
            &ConfigzEntry::default(),
            Some(Err(Failure::new(Reason::Forbidden, "403"))),
        );
        assert!(refused.read && refused.policy.is_none());
    }
}
