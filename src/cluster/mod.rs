//! Cluster mode's pipeline (`kubedf serve --mode=cluster`): the Node watch
//! ([`crate::sources::nodes`]) says which kubelets this shard polls; every
//! `--cluster.poll-interval` each of them is asked for its `/stats/summary`
//! through the one client, at most `--cluster.concurrency` at once, each at
//! its own fixed offset within the interval (so a node is polled every
//! interval, and 5,000 are not asked in one instant), each under
//! `--kubelet.timeout`. A poll's summary is turned into the few figures
//! kubedf exports in the poll's own task ([`figures`]), and dropped there.
//! At a node's first good poll, and rarely after ([`configz`]), the poll
//! reads the kubelet's `/configz` too, in the same slot, and keeps of it
//! only the image GC and eviction thresholds; a node whose `/configz` is
//! refused keeps its figures and has no headroom series.
//!
//! The loop is the one writer of the [`ClusterTable`]: it applies each poll
//! to its node's row and publishes the table on the board (at most every
//! [`PUBLISH_EVERY`]), whole and immutable. A node deleted from the API
//! leaves the table at the watch's event; a node that fails
//! `--cluster.down-after` polls in a row loses its figures but keeps its
//! health series, which say why; a node the watch skipped (no address, no
//! port) has health series saying `no_address`.

pub mod configz;
pub mod figures;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::kubelet::config::HeadroomPolicy;
use crate::model::cluster::{ClusterTable, NodeEntry, NodeFigures, PollHealth};
use crate::model::snapshot::SnapshotHandle;
use crate::model::{Change, Failure, NodeSample, Reason};
use crate::sources::fleet::{NodePoll, poll_each};
use crate::sources::kubelet_client::KubeletClient;
use crate::sources::nodes::{NodeList, NodeState};
use crate::sources::shard::{Shard, node_hash};

/// Why cluster mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cluster mode needs the Kubernetes API (--kubeconfig, else in-cluster): {0}")]
    Kube(#[from] crate::sources::kube::KubeError),
    #[error("cluster mode: {0}")]
    Client(#[from] crate::sources::kubelet_client::KubeletClientError),
}

/// Cluster mode, running: its board for the HTTP edge, and its tasks (the
/// Node watch and the poll loop), which end when `stop` turns true.
pub struct Started {
    pub board: SnapshotHandle,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts cluster mode: the Node watch and the poll loop, with the API
/// server's credentials (from `kubeconfig`, else in-cluster) for both the
/// API and the kubelets. No host path, CRI socket or kubelet configuration
/// is read.
pub async fn start(
    kubeconfig: Option<&std::path::Path>,
    client_options: crate::sources::kubelet_client::KubeletClientOptions,
    address_types: crate::sources::nodes::AddressTypes,
    config: ClusterConfig,
    stop: watch::Receiver<bool>,
) -> Result<Started, StartError> {
    let api = crate::sources::kube::config(kubeconfig).await?;
    let kube = kube::Client::try_from(api.clone())
        .map_err(|e| StartError::Kube(crate::sources::kube::KubeError::Client(e.to_string())))?;
    let client = KubeletClient::new(api, &client_options)?;
    let kubelet = Arc::new(crate::kubelet::config::KubeletConfig::defaults(
        std::path::PathBuf::new(),
    ));
    let board: SnapshotHandle = Arc::new(crate::model::Board::new(
        kubelet,
        NodeSample::unsampled(SystemTime::now()),
    ));
    board.publish_cluster(Arc::new(ClusterTable::default()));
    let list = NodeList::new(address_types);
    let tasks = vec![
        tokio::spawn(Arc::clone(&list).run(kube, stop.clone())),
        tokio::spawn(run(list, client, Arc::clone(&board), config, stop)),
    ];
    Ok(Started { board, tasks })
}

/// How often, at most, the table is published while polls come in.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// The loop's settings (from the `--cluster.*`, `--kubelet.timeout` and
/// `--shard` flags).
#[derive(Clone, Copy, Debug)]
pub struct ClusterConfig {
    pub poll_interval: Duration,
    pub kubelet_timeout: Duration,
    pub concurrency: usize,
    pub down_after: u32,
    pub shard: Shard,
}

impl ClusterConfig {
    /// When node `name` is polled within a cycle: a fixed offset from its
    /// name's hash, below `interval - timeout`, so that its poll ends before
    /// the next cycle.
    pub fn offset(&self, name: &str) -> Duration {
        let spread = self.poll_interval.saturating_sub(self.kubelet_timeout);
        let ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(node_hash(name) % ms)
        }
    }
}

/// One poll, as the loop applies it.
#[derive(Debug)]
pub struct Polled {
    pub node: String,
    pub duration: Duration,
    pub at: SystemTime,
    pub result: Result<Good, Failure>,
    /// The node's `/configz`, when this poll read it: only what headroom
    /// needs of it.
    pub configz: Option<Result<HeadroomPolicy, Failure>>,
}

/// A good poll: the figures and the pods the summary had to skip.
#[derive(Debug)]
pub struct Good {
    pub figures: NodeFigures,
    pub skipped_pods: usize,
    pub first_skipped: Option<String>,
}

impl Polled {
    /// A finished poll, its summary turned into figures and dropped.
    pub fn of(poll: NodePoll) -> Polled {
        let result = match poll.result {
            Ok(decoded) => Ok(Good {
                skipped_pods: decoded.skipped.len(),
                first_skipped: decoded.skipped.first().map(ToString::to_string),
                figures: figures::figures(decoded.summary),
            }),
            Err(e) => Err(figures::failure(&e)),
        };
        let configz = poll.configz.map(|read| {
            read.map(|config| config.headroom())
                .map_err(|e| figures::configz_failure(&e))
        });
        Polled {
            node: poll.node,
            duration: poll.duration,
            at: SystemTime::now(),
            result,
            configz,
        }
    }
}

/// `prev` (the node's row, if any) after `polled`: a good poll replaces the
/// figures; a failed one keeps them until `down_after` failures in a row.
/// A `/configz` read replaces the thresholds, or says why it failed (the
/// last good thresholds kept).
pub fn apply(prev: Option<&NodeEntry>, polled: Polled, down_after: u32) -> NodeEntry {
    let before = prev.map(|e| &e.health);
    let configz = configz::next(
        &prev.map(|e| e.configz.clone()).unwrap_or_default(),
        polled.configz,
    );
    match polled.result {
        Ok(good) => NodeEntry {
            health: PollHealth {
                failure: None,
                polled: true,
                duration: Some(polled.duration),
                last_success: Some(polled.at),
                failures_in_a_row: 0,
                skipped_pods: good.skipped_pods,
            },
            figures: Some(Arc::new(good.figures)),
            configz,
        },
        Err(failure) => {
            let failures_in_a_row = before
                .filter(|h| h.polled)
                .map_or(0, |h| h.failures_in_a_row)
                .saturating_add(1);
            let figures = prev
                .and_then(|e| e.figures.clone())
                .filter(|_| failures_in_a_row < down_after);
            NodeEntry {
                health: PollHealth {
                    failure: Some(failure),
                    polled: true,
                    duration: Some(polled.duration),
                    last_success: before.and_then(|h| h.last_success),
                    failures_in_a_row,
                    skipped_pods: before.map_or(0, |h| h.skipped_pods),
                },
                figures,
                configz,
            }
        }
    }
}

/// The row of a node the watch skipped: why, and no figures.
fn skipped_entry(reason: &str) -> NodeEntry {
    NodeEntry {
        health: PollHealth {
            failure: Some(Failure::new(Reason::NoAddress, reason)),
            ..PollHealth::default()
        },
        ..NodeEntry::default()
    }
}

/// Brings `table` in line with the watch's `state` for `shard`: rows of
/// nodes gone are removed, nodes skipped get their row saying why, a node
/// listed but not yet polled gets an empty row (so `/nodes/<node>/metrics`
/// answers for it from the start), a node no longer skipped loses that row
/// until its first poll. Returns this shard's polled nodes and whether the
/// table changed.
pub fn sync(
    table: &mut BTreeMap<String, Arc<NodeEntry>>,
    state: &NodeState,
    shard: Shard,
) -> (BTreeSet<String>, bool) {
    let targets: BTreeSet<String> = state
        .nodes
        .keys()
        .filter(|n| shard.owns(n))
        .cloned()
        .collect();
    let mut changed = false;
    table.retain(|name, entry| {
        let keep = if targets.contains(name) {
            // A row of the node's skipped days goes.
            entry.health.polled || entry.health.failure.is_none()
        } else {
            state.skipped.contains_key(name)
        };
        changed |= !keep;
        keep
    });
    for name in &targets {
        if !table.contains_key(name) {
            table.insert(name.clone(), Arc::new(NodeEntry::default()));
            changed = true;
        }
    }
    for (name, reason) in &state.skipped {
        if !shard.owns(name) {
            continue;
        }
        let entry = skipped_entry(reason);
        if table.get(name).is_none_or(|e| **e != entry) {
            table.insert(name.clone(), Arc::new(entry));
            changed = true;
        }
    }
    (targets, changed)
}

/// Says a node's failure once per change of state, never once per poll.
fn log_change(node: &str, before: Option<&NodeEntry>, after: &NodeEntry, down_after: u32) {
    let was = before.and_then(|e| e.health.failure.as_ref());
    let now = after.health.failure.as_ref();
    match Change::of(was, now) {
        Change::Failed(f) => {
            warn!(node = %node.escape_debug(), reason = %f.reason, error = %f.message, "kubelet poll failing")
        }
        Change::Recovered(f) => {
            info!(node = %node.escape_debug(), was = %f.reason, "kubelet poll recovered")
        }
        Change::Unchanged => {}
    }
    if before.is_some_and(|e| e.figures.is_some()) && after.figures.is_none() && after.health.polled
    {
        warn!(node = %node.escape_debug(), failures = after.health.failures_in_a_row, down_after, "node's figures dropped: its kubelet failed too many polls in a row");
    }
}

/// Says a node's `/configz` failure once per change of state; a refusal
/// (`nodes/configz` not granted, likely for every node) once per process.
fn log_configz_change(
    node: &str,
    before: Option<&NodeEntry>,
    after: &NodeEntry,
    refusal_said: &mut bool,
) {
    let was = before.and_then(|e| e.configz.failure.as_ref());
    let now = after.configz.failure.as_ref();
    match Change::of(was, now) {
        Change::Failed(f) if matches!(f.reason, Reason::Forbidden | Reason::Unauthorized) => {
            if !*refusal_said {
                warn!(node = %node.escape_debug(), reason = %f.reason, error = %f.message, "kubelet /configz refused: no image GC or eviction headroom for nodes that refuse it (kubedf_kubelet_configz_error says which); said once");
                *refusal_said = true;
            }
        }
        Change::Failed(f) => {
            warn!(node = %node.escape_debug(), reason = %f.reason, error = %f.message, "kubelet /configz read failing")
        }
        Change::Recovered(f) => {
            info!(node = %node.escape_debug(), was = %f.reason, "kubelet /configz read recovered")
        }
        Change::Unchanged => {}
    }
}

/// Polls this shard's kubelets every interval and publishes the table on
/// `board` until `stop` turns true.
pub async fn run(
    list: Arc<NodeList>,
    client: KubeletClient,
    board: SnapshotHandle,
    config: ClusterConfig,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Polled>();
    let mut changes = list.subscribe();
    // The list may have been received before this loop subscribed: look at
    // it once at the start whatever the change count says.
    changes.mark_changed();
    let mut ticker = tokio::time::interval(config.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut table: BTreeMap<String, Arc<NodeEntry>> = BTreeMap::new();
    let mut targets: BTreeSet<String> = BTreeSet::new();
    let mut synced = false;
    let mut watch_error: Option<String> = None;
    let mut cycle: Option<JoinHandle<()>> = None;
    let mut overrun_said = false;
    let mut refusal_said = false;
    let schedule = configz::ConfigzSchedule::new(config.poll_interval);
    let mut dirty = true;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                if synced {
                    let due = configz_due(&table, schedule);
                    start_cycle(&mut cycle, &mut overrun_said, &list, &client, &tx, config, due);
                }
                board.publish_node(NodeSample::unsampled(SystemTime::now()));
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    // The watch is gone (it only ends with the process).
                    let _ = stop.changed().await;
                    break;
                }
                let state = list.state();
                let first_sync = state.synced && !synced;
                let (t, table_changed) = sync(&mut table, &state, config.shard);
                targets = t;
                dirty |= table_changed
                    || synced != state.synced
                    || watch_error != state.error;
                synced = state.synced;
                watch_error = state.error;
                if first_sync {
                    info!(nodes = targets.len(), shard = config.shard.index(), total_shards = config.shard.total(), "cluster mode: nodes listed; polling their kubelets");
                    let due = configz_due(&table, schedule);
                    start_cycle(&mut cycle, &mut overrun_said, &list, &client, &tx, config, due);
                    ticker.reset();
                }
            }
            Some(polled) = rx.recv() => {
                // A poll of a node deleted (or moved to another shard) since
                // it started is dropped.
                if targets.contains(&polled.node) {
                    let name = polled.node.clone();
                    let before = table.get(&name).cloned();
                    if let Ok(good) = &polled.result
                        && good.skipped_pods != before.as_ref().map_or(0, |e| e.health.skipped_pods)
                        && let Some(first) = &good.first_skipped
                    {
                        warn!(node = %name.escape_debug(), pods = good.skipped_pods, first = %first, "pods of the kubelet's summary skipped");
                    }
                    let after = apply(before.as_deref(), polled, config.down_after);
                    log_change(&name, before.as_deref(), &after, config.down_after);
                    log_configz_change(&name, before.as_deref(), &after, &mut refusal_said);
                    table.insert(name, Arc::new(after));
                    dirty = true;
                }
            }
            _ = publish.tick() => {
                if dirty {
                    board.publish_cluster(Arc::new(ClusterTable {
                        nodes: table.clone(),
                        synced,
                        watch_error: watch_error.clone(),
                    }));
                    dirty = false;
                }
            }
        }
    }
    if let Some(c) = cycle {
        c.abort();
    }
}

/// The nodes of `table` whose next poll should read `/configz` too: those
/// [`configz::ConfigzSchedule::due`] says are due (every target has a row
/// from [`sync`]; one listed since has none and reads at its next cycle).
pub fn configz_due(
    table: &BTreeMap<String, Arc<NodeEntry>>,
    schedule: configz::ConfigzSchedule,
) -> BTreeSet<String> {
    table
        .iter()
        .filter(|(_, e)| schedule.due(&e.configz))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Starts a cycle over this shard's kubelets, unless the last one still
/// runs (more nodes than `--cluster.concurrency` can poll in an interval);
/// that is said once. The nodes in `due` read their `/configz` too.
fn start_cycle(
    cycle: &mut Option<JoinHandle<()>>,
    overrun_said: &mut bool,
    list: &NodeList,
    client: &KubeletClient,
    tx: &mpsc::UnboundedSender<Polled>,
    config: ClusterConfig,
    due: BTreeSet<String>,
) {
    if cycle.as_ref().is_some_and(|c| !c.is_finished()) {
        if !*overrun_said {
            warn!(
                interval = ?config.poll_interval,
                concurrency = config.concurrency,
                "the last poll cycle is still running; this one is skipped (raise --cluster.concurrency or --cluster.poll-interval)"
            );
            *overrun_said = true;
        }
        return;
    }
    *overrun_said = false;
    let nodes = list.targets(config.shard);
    let (client, tx) = (client.clone(), tx.clone());
    *cycle = Some(tokio::spawn(async move {
        poll_each(
            &client,
            nodes,
            config.concurrency,
            |n| config.offset(&n.name),
            |n| due.contains(&n.name),
            Polled::of,
            |polled| {
                let _ = tx.send(polled);
            },
        )
        .await;
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(node: &str, used: u64) -> Polled {
        Polled {
            node: node.into(),
            duration: Duration::from_millis(5),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
            result: Ok(Good {
                figures: {
                    let mut f = NodeFigures::default();
                    f.max_pid = Some(used as i64);
                    f
                },
                skipped_pods: 0,
                first_skipped: None,
            }),
            configz: None,
        }
    }

    fn bad(node: &str, reason: Reason) -> Polled {
        Polled {
            node: node.into(),
            duration: Duration::from_secs(1),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(2000),
            result: Err(Failure::new(reason, "node n1: it failed")),
            configz: None,
        }
    }

    #[test]
    fn figures_are_kept_until_down_after_failures_in_a_row() {
        let e = apply(None, good("n1", 7), 3);
        assert_eq!(e.figures.as_ref().and_then(|f| f.max_pid), Some(7));
        let e = apply(Some(&e), bad("n1", Reason::Timeout), 3);
        assert_eq!(e.health.failures_in_a_row, 1);
        assert!(e.figures.is_some(), "one failure keeps the figures");
        assert_eq!(
            e.health.last_success,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1000))
        );
        let e = apply(Some(&e), bad("n1", Reason::Timeout), 3);
        assert!(e.figures.is_some());
        let e = apply(Some(&e), bad("n1", Reason::Unauthorized), 3);
        assert_eq!(e.health.failures_in_a_row, 3);
        assert!(e.figures.is_none(), "dropped after three");
        assert_eq!(
            e.health.failure.as_ref().map(|f| f.reason),
            Some(Reason::Unauthorized)
        );
        // Recovery brings figures back and clears the count.
        let e = apply(Some(&e), good("n1", 9), 3);
        assert_eq!(e.health.failures_in_a_row, 0);
        assert_eq!(e.figures.as_ref().and_then(|f| f.max_pid), Some(9));
        // down-after 1: the first failure drops them.
        let e = apply(Some(&e), bad("n1", Reason::Tls), 1);
        assert!(e.figures.is_none());
        // A node never polled well fails with no figures.
        let e = apply(None, bad("n2", Reason::Connection), 3);
        assert!(e.figures.is_none() && e.health.last_success.is_none());
    }

    #[test]
    fn a_configz_read_rides_on_a_poll_and_outlives_failed_ones() {
        let policy =
            crate::kubelet::config::KubeletConfig::defaults(std::path::PathBuf::new()).headroom();
        let schedule = configz::ConfigzSchedule::new(Duration::from_secs(60));
        let mut table = BTreeMap::new();
        table.insert("n1".to_owned(), Arc::new(NodeEntry::default()));
        assert_eq!(
            configz_due(&table, schedule),
            BTreeSet::from(["n1".to_owned()])
        );
        let mut first = good("n1", 7);
        first.configz = Some(Ok(policy));
        let e = apply(None, first, 3);
        assert_eq!(e.configz.policy, Some(policy));
        assert!(e.configz.read && e.configz.failure.is_none());
        table.insert("n1".into(), Arc::new(e.clone()));
        assert!(configz_due(&table, schedule).is_empty());
        // A failed poll reads nothing and keeps the thresholds; so does a
        // good one that was not due.
        let e = apply(Some(&e), bad("n1", Reason::Timeout), 3);
        let e = apply(Some(&e), good("n1", 8), 3);
        assert_eq!(e.configz.policy, Some(policy));
        assert_eq!(e.configz.polls_since, 3);
        // A refused re-read: kept, and said.
        let mut refused = good("n1", 9);
        refused.configz = Some(Err(Failure::new(Reason::Forbidden, "node n1: HTTP 403")));
        let e = apply(Some(&e), refused, 3);
        assert_eq!(e.configz.policy, Some(policy));
        assert_eq!(
            e.configz.failure.as_ref().map(|f| f.reason),
            Some(Reason::Forbidden)
        );
        // A skipped node's row has never read.
        assert!(!skipped_entry("no address").configz.read);
    }

    #[test]
    fn sync_removes_the_deleted_and_names_the_skipped() {
        let mut state = NodeState::default();
        for n in ["a", "b"] {
            state.nodes.insert(
                n.into(),
                crate::sources::nodes::KubeletNode {
                    name: n.into(),
                    uid: String::new(),
                    address: "10.0.0.1".into(),
                    port: 10250,
                },
            );
        }
        state
            .skipped
            .insert("c".into(), "node c: no status.addresses".into());
        let mut table = BTreeMap::new();
        table.insert("a".into(), Arc::new(apply(None, good("a", 1), 3)));
        table.insert("gone".into(), Arc::new(apply(None, good("gone", 1), 3)));
        let (targets, changed) = sync(&mut table, &state, Shard::ALL);
        assert!(changed);
        assert_eq!(targets, ["a".to_owned(), "b".to_owned()].into());
        assert_eq!(
            table.keys().cloned().collect::<Vec<_>>(),
            ["a".to_owned(), "b".to_owned(), "c".to_owned()]
        );
        // b is listed, not yet polled: an empty row.
        assert_eq!(*table["b"], NodeEntry::default());
        assert!(table["a"].figures.is_some(), "a's row is kept");
        let c = &table["c"];
        assert_eq!(
            c.health.failure,
            Some(Failure::new(
                Reason::NoAddress,
                "node c: no status.addresses"
            ))
        );
        assert!(!c.health.polled && c.figures.is_none());
        // Nothing new: no change.
        assert!(!sync(&mut table, &state, Shard::ALL).1);
        // c gets its address: its skipped row goes until it is polled.
        state.skipped.clear();
        state.nodes.insert(
            "c".into(),
            crate::sources::nodes::KubeletNode {
                name: "c".into(),
                uid: String::new(),
                address: "10.0.0.3".into(),
                port: 10250,
            },
        );
        let (targets, changed) = sync(&mut table, &state, Shard::ALL);
        assert!(changed && targets.contains("c"));
        assert_eq!(*table["c"], NodeEntry::default());
    }

    #[test]
    fn sync_keeps_to_its_shard() {
        let mut state = NodeState::default();
        for i in 0..40 {
            state
                .skipped
                .insert(format!("n{i}"), "node: no status.addresses".into());
        }
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        sync(&mut a, &state, Shard::new(0, 2).expect("shard"));
        sync(&mut b, &state, Shard::new(1, 2).expect("shard"));
        assert_eq!(a.len() + b.len(), 40);
        assert!(a.keys().all(|k| !b.contains_key(k)));
    }

    /// The loop itself, fed Node events by hand, polling kubelets that
    /// refuse connections: rows appear with their reason, a skipped node
    /// says no_address, a deleted node's row goes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_publishes_polls_and_follows_the_node_list() {
        use crate::sources::kubelet_client::KubeletClientOptions;
        use crate::sources::nodes::{AddressTypes, WatchedNode};
        use kube::runtime::watcher::Event;
        use serde_json::json;
        let node = |name: &str, port: serde_json::Value| {
            WatchedNode::from_value(&json!({
                "metadata": {"name": name, "uid": format!("uid-{name}")},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}
            }))
        };
        let list = NodeList::new(AddressTypes::default());
        let api = kube::Config::new("https://127.0.0.1:6443".parse().expect("url"));
        let options = KubeletClientOptions {
            timeout: Duration::from_millis(500),
            insecure_skip_tls_verify: true,
            ..KubeletClientOptions::default()
        };
        let client = KubeletClient::new(api, &options).expect("client");
        let board: SnapshotHandle = Arc::new(crate::model::Board::new(
            Arc::new(crate::kubelet::config::KubeletConfig::defaults(
                std::path::PathBuf::new(),
            )),
            NodeSample::unsampled(SystemTime::now()),
        ));
        let config = ClusterConfig {
            poll_interval: Duration::from_secs(1),
            kubelet_timeout: Duration::from_millis(500),
            concurrency: 2,
            down_after: 3,
            shard: Shard::ALL,
        };
        // The list is whole before the loop starts: it must look anyway.
        list.apply(Ok(Event::Init));
        list.apply(Ok(Event::InitApply(node("refusing", json!(1)))));
        list.apply(Ok(Event::InitApply(node(
            "portless",
            serde_json::Value::Null,
        ))));
        list.apply(Ok(Event::InitDone));
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(
            Arc::clone(&list),
            client,
            Arc::clone(&board),
            config,
            stop,
        ));
        let reason = |name: &str| {
            board
                .snapshot()
                .cluster
                .and_then(|t| t.nodes.get(name).cloned())
                .and_then(|e| e.health.failure.as_ref().map(|f| f.reason))
        };
        let wait_for = |what: &'static str, ok: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !ok() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        tokio::task::block_in_place(|| {
            wait_for("both rows with their reasons", &|| {
                reason("refusing") == Some(Reason::Connection)
                    && reason("portless") == Some(Reason::NoAddress)
            });
        });
        let table = board.snapshot().cluster.expect("table");
        assert!(table.synced);
        assert!(table.nodes["refusing"].health.polled);
        assert!(table.nodes["refusing"].figures.is_none());
        list.apply(Ok(Event::Delete(node("refusing", json!(1)))));
        tokio::task::block_in_place(|| {
            wait_for("the deleted node's row gone", &|| {
                board
                    .snapshot()
                    .cluster
                    .is_some_and(|t| !t.nodes.contains_key("refusing"))
            });
        });
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop stops")
            .expect("no panic");
    }

    #[test]
    fn offsets_are_stable_and_leave_room_for_the_deadline() {
        let config = ClusterConfig {
            poll_interval: Duration::from_secs(60),
            kubelet_timeout: Duration::from_secs(10),
            concurrency: 4,
            down_after: 3,
            shard: Shard::ALL,
        };
        for i in 0..200 {
            let name = format!("node-{i}");
            let o = config.offset(&name);
            assert!(o < Duration::from_secs(50), "{name}: {o:?}");
            assert_eq!(o, config.offset(&name));
        }
    }
}
