//! One poll of the fleet: every node's `/stats/summary` through the one
//! [`KubeletClient`], decoded, with at most `concurrency` requests in flight
//! and each node's start spread by a random offset over `spread`, so that
//! 5,000 kubelets are not all asked in the same instant and a hung kubelet
//! holds one slot until its deadline, never the cycle. A node whose
//! `/configz` the caller asks for has it read after a good summary, in the
//! same slot, through the same client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::Semaphore;

use super::configz::ConfigzError;
use super::kubelet_client::{KubeletClient, KubeletClientError};
use super::kubelet_summary::{Decoded, SummaryError, decode};
use super::nodes::KubeletNode;
use crate::kubelet::config::KubeletConfig;

#[derive(Debug, Error)]
pub enum PollError {
    #[error(transparent)]
    Kubelet(#[from] KubeletClientError),
    #[error(transparent)]
    Summary(#[from] SummaryError),
}

#[derive(Debug, Error)]
pub enum ConfigzPollError {
    #[error(transparent)]
    Kubelet(#[from] KubeletClientError),
    #[error(transparent)]
    Configz(#[from] ConfigzError),
}

/// One node's poll.
#[derive(Debug)]
pub struct NodePoll {
    pub node: String,
    /// From the request to the decoded summary (the jitter left out).
    pub duration: Duration,
    pub result: Result<Decoded, PollError>,
    /// The node's `/configz`, when it was asked for and the summary was
    /// good.
    pub configz: Option<Result<KubeletConfig, ConfigzPollError>>,
}

/// `node`'s kubelet configuration, from its `/configz`.
pub async fn poll_configz(
    client: &KubeletClient,
    node: &KubeletNode,
) -> Result<KubeletConfig, ConfigzPollError> {
    let url = client.url(node, "/configz");
    let body = client.get(&node.name, &url).await?;
    let text = std::str::from_utf8(&body).map_err(|e| ConfigzError::Body {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    Ok(super::configz::parse(text, &url)?)
}

/// `node`'s summary, read and decoded.
pub async fn poll_summary(
    client: &KubeletClient,
    node: &KubeletNode,
) -> Result<Decoded, PollError> {
    let body = client
        .get(&node.name, &client.url(node, "/stats/summary"))
        .await?;
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
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    let delay = move |_: &KubeletNode| {
        Duration::from_millis(if spread_ms == 0 {
            0
        } else {
            fastrand::u64(..spread_ms)
        })
    };
    let mut out = Vec::with_capacity(nodes.len());
    poll_each(
        client,
        nodes,
        concurrency,
        delay,
        |_| false,
        |p| p,
        |p| out.push(p),
    )
    .await;
    out
}

/// Every node of `nodes`, at most `concurrency` at a time (at least one),
/// node `n` started `delay(n)` after the call, its `/configz` read too
/// (after a good summary, in the same slot) when `with_configz(n)`. Each
/// poll goes through
/// `convert` in its own task as soon as it ends (so a caller that keeps only
/// a few figures of a summary never holds a cycle of summaries), then to
/// `each`, in the order they finished. Returns when every poll has.
pub async fn poll_each<T, D, W, C, E>(
    client: &KubeletClient,
    nodes: Vec<KubeletNode>,
    concurrency: usize,
    delay: D,
    with_configz: W,
    convert: C,
    mut each: E,
) where
    T: Send + 'static,
    D: Fn(&KubeletNode) -> Duration,
    W: Fn(&KubeletNode) -> bool,
    C: Fn(NodePoll) -> T + Clone + Send + 'static,
    E: FnMut(T),
{
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for node in nodes {
        let (client, slots, convert) = (client.clone(), Arc::clone(&slots), convert.clone());
        let delay = delay(&node);
        let configz = with_configz(&node);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            // Never closed: acquire cannot fail.
            let _slot = slots.acquire_owned().await;
            let start = Instant::now();
            let result = poll_summary(&client, &node).await;
            let duration = start.elapsed();
            let configz = match (&result, configz) {
                (Ok(_), true) => Some(poll_configz(&client, &node).await),
                _ => None,
            };
            convert(NodePoll {
                node: node.name,
                duration,
                result,
                configz,
            })
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // A poll does not panic on input; a panic would be a bug, reported
        // as the task's absence rather than taking the cycle down.
        if let Ok(poll) = joined {
            each(poll);
        }
    }
}
