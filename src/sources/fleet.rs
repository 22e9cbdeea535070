//! One poll of the fleet: every node's `/stats/summary` through the one
//! [`KubeletClient`], decoded, with at most `concurrency` requests in flight
//! and each node's start spread by a random offset over `spread`, so that
//! 5,000 kubelets are not all asked in the same instant and a hung kubelet
//! holds one slot until its deadline, never the cycle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::Semaphore;

use super::kubelet_client::{KubeletClient, KubeletClientError};
use super::kubelet_summary::{Decoded, SummaryError, decode};
use super::nodes::KubeletNode;

#[derive(Debug, Error)]
pub enum PollError {
    #[error(transparent)]
    Kubelet(#[from] KubeletClientError),
    #[error(transparent)]
    Summary(#[from] SummaryError),
}

/// One node's poll.
#[derive(Debug)]
pub struct NodePoll {
    pub node: String,
    /// From the request to the decoded summary (the jitter left out).
    pub duration: Duration,
    pub result: Result<Decoded, PollError>,
}

/// `node`'s summary, read and decoded.
pub async fn poll_summary(
    client: &KubeletClient,
    node: &KubeletNode,
) -> Result<Decoded, PollError> {
    let body = client.get(&node.name, &node.url("/stats/summary")).await?;
    Ok(decode(&body, &node.name)?)
}

/// Every node of `nodes`, at most `concurrency` at a time (at least one),
/// each started after a random delay below `spread`. The polls come back in
/// the order they finished.
pub async fn poll_all(
    client: &KubeletClient,
    nodes: Vec<KubeletNode>,
    concurrency: usize,
    spread: Duration,
) -> Vec<NodePoll> {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    for node in nodes {
        let (client, slots) = (client.clone(), Arc::clone(&slots));
        let delay = Duration::from_millis(if spread_ms == 0 {
            0
        } else {
            fastrand::u64(..spread_ms)
        });
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            // Never closed: acquire cannot fail.
            let _slot = slots.acquire_owned().await;
            let start = Instant::now();
            let result = poll_summary(&client, &node).await;
            NodePoll {
                node: node.name,
                duration: start.elapsed(),
                result,
            }
        });
    }
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        // A poll does not panic on input; a panic would be a bug, reported
        // as the task's absence rather than taking the cycle down.
        if let Ok(poll) = joined {
            out.push(poll);
        }
    }
    out
}
