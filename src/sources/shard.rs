//! Sharding the fleet between replicas of cluster mode (`--shard`,
//! `--total-shards`), as kube-state-metrics shards objects: every replica
//! sees every Node and keeps those whose shard is its own.
//!
//! The hash: the first 8 bytes of SHA-256 of the node's name (UTF-8, no
//! salt), read big-endian as a u64, modulo the number of shards. SHA-256
//! (ring's, already linked through rustls) is stable across versions,
//! platforms and restarts, unlike std's `DefaultHasher`, so a node stays on
//! its replica through rollouts, and anyone can recompute it
//! (`printf %s NAME | sha256sum`, the first 16 hex digits).
//!
//! A StatefulSet's pod is named `<set>-<ordinal>`: [`ordinal_of`] reads the
//! ordinal, so `--shard` can come from the pod's own name.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("--total-shards must be at least 1, got {0}")]
    NoShards(u32),
    #[error("--shard {shard} is not below --total-shards {total}")]
    OutOfRange { shard: u32, total: u32 },
    #[error("pod name {name:?} does not end in a StatefulSet ordinal (-<number>)")]
    NoOrdinal { name: String },
}

/// This replica's share of the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    total: u32,
}

impl Shard {
    /// The one shard of an unsharded replica: every node.
    pub const ALL: Shard = Shard { index: 0, total: 1 };

    pub fn new(index: u32, total: u32) -> Result<Shard, ShardError> {
        if total == 0 {
            return Err(ShardError::NoShards(total));
        }
        if index >= total {
            return Err(ShardError::OutOfRange {
                shard: index,
                total,
            });
        }
        Ok(Shard { index, total })
    }

    /// The shard of a StatefulSet pod named `pod_name` (`kubedf-2` is 2).
    pub fn from_pod_name(pod_name: &str, total: u32) -> Result<Shard, ShardError> {
        Shard::new(ordinal_of(pod_name)?, total)
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn total(self) -> u32 {
        self.total
    }

    /// Whether this replica polls `node`.
    pub fn owns(self, node: &str) -> bool {
        shard_of(node, self.total) == self.index
    }
}

/// The stable hash of a node's name (see the module's header).
pub fn node_hash(node: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, node.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The shard, below `total`, that polls `node`. `total` 0 is treated as 1.
pub fn shard_of(node: &str, total: u32) -> u32 {
    // The remainder is below `total`, a u32.
    (node_hash(node) % u64::from(total.max(1))) as u32
}

/// The ordinal a StatefulSet appends to its pods' names.
pub fn ordinal_of(pod_name: &str) -> Result<u32, ShardError> {
    let bad = || ShardError::NoOrdinal {
        name: pod_name.to_owned(),
    };
    let (set, ordinal) = pod_name.rsplit_once('-').ok_or_else(bad)?;
    if set.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // A leading zero is never a StatefulSet's ordinal ("kubedf-01").
    if ordinal.len() > 1 && ordinal.starts_with('0') {
        return Err(bad());
    }
    ordinal.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_hash_is_sha256s_first_eight_bytes() {
        // printf %s node-1 | sha256sum
        let expected = std::process::Command::new("sh")
            .args(["-c", "printf %s node-1 | sha256sum"])
            .output()
            .expect("sha256sum");
        let hex = String::from_utf8(expected.stdout).expect("utf-8");
        let first = u64::from_str_radix(&hex[..16], 16).expect("hex");
        assert_eq!(node_hash("node-1"), first);
    }

    #[test]
    fn ordinals_of_statefulset_pods() {
        assert_eq!(ordinal_of("kubedf-0"), Ok(0));
        assert_eq!(ordinal_of("kubedf-cluster-12"), Ok(12));
        for bad in [
            "kubedf",
            "kubedf-",
            "-3",
            "kubedf-x1",
            "kubedf-01",
            "kubedf-99999999999",
        ] {
            assert_eq!(
                ordinal_of(bad),
                Err(ShardError::NoOrdinal { name: bad.into() }),
                "{bad}"
            );
        }
        assert_eq!(
            Shard::from_pod_name("kubedf-4", 4),
            Err(ShardError::OutOfRange { shard: 4, total: 4 })
        );
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards(0)));
        assert_eq!(Shard::from_pod_name("kubedf-3", 4), Shard::new(3, 4));
    }

    #[test]
    fn one_shard_owns_everything() {
        for name in ["a", "node-1", "ip-10-0-0-1.ec2.internal"] {
            assert!(Shard::ALL.owns(name));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Every node in exactly one shard, and no shard far from its share.
        #[test]
        fn shards_partition_and_balance(
            names in proptest::collection::hash_set("[a-z0-9][a-z0-9.-]{0,40}", 2000..2500),
            total in 1u32..9,
        ) {
            let shards: Vec<Shard> = (0..total).map(|i| Shard::new(i, total).unwrap()).collect();
            let mut counts = vec![0usize; total as usize];
            for name in &names {
                let owners: Vec<u32> = shards.iter().filter(|s| s.owns(name)).map(|s| s.index()).collect();
                prop_assert_eq!(owners.len(), 1, "{} owned by {:?}", name, owners);
                counts[owners[0] as usize] += 1;
            }
            let share = names.len() as f64 / f64::from(total);
            for (i, &n) in counts.iter().enumerate() {
                // ~2,000 names over at most 8 shards: a shard's count is
                // within 25% of its share far beyond 6 standard deviations.
                prop_assert!((n as f64 - share).abs() < share * 0.25, "shard {} holds {} of {}, share {}", i, n, names.len(), share);
            }
        }
    }
}
