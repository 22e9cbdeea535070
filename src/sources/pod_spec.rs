//! What a pod's spec says about its local ephemeral storage, read as kubelet
//! reads it: which volumes count (`IsLocalEphemeralVolume`), which limits its
//! eviction manager enforces (`PodLimits`, container limits, emptyDir
//! `sizeLimit`). Pure: an API object in, a small view out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::kubelet::quantity::parse_size;
use crate::model::pod::{EphemeralVolume, PodStorageSpec, VolumeKind};

const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// Reads the storage view of a pod. Never fails: a bad quantity is recorded
/// in `problems` and leaves its limit out.
pub fn pod_storage_spec(pod: &Pod) -> PodStorageSpec {
    let mut out = PodStorageSpec::default();
    let Some(spec) = &pod.spec else {
        return out;
    };
    let mut problems = Vec::new();
    // PodLimits: the sum over regular containers of the limits they name; a
    // container without one adds nothing (it does not remove the pod's limit).
    let mut limit: Option<i64> = None;
    let mut container_limits = BTreeMap::new();
    for c in &spec.containers {
        if let Some(q) = limit_of(c) {
            let field = format!("container {} limits.{EPHEMERAL_STORAGE}", c.name);
            if let Some(v) = read(&mut problems, field, q) {
                limit = Some(limit.unwrap_or(0).saturating_add(v));
                // containerEphemeralStorageLimitEviction skips a zero limit.
                if v != 0 {
                    container_limits.insert(c.name.clone(), v);
                }
            }
        }
    }
    // Init containers: restartable ones (sidecars) add to the sum and to what
    // every later init container runs beside; the pod's limit is at least the
    // largest init container's limit plus the sidecars started before it.
    let mut sidecars: Option<i64> = None;
    let mut init_max: Option<i64> = None;
    for c in spec.init_containers.iter().flatten() {
        let own = limit_of(c).and_then(|q| {
            read(
                &mut problems,
                format!("init container {} limits.{EPHEMERAL_STORAGE}", c.name),
                q,
            )
        });
        let restartable = c.restart_policy.as_deref() == Some("Always");
        let candidate = if restartable {
            if let Some(v) = own {
                limit = Some(limit.unwrap_or(0).saturating_add(v));
                sidecars = Some(sidecars.unwrap_or(0).saturating_add(v));
            }
            sidecars
        } else {
            match (own, sidecars) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            }
        };
        if let Some(v) = candidate {
            init_max = Some(init_max.map_or(v, |m| m.max(v)));
        }
    }
    if let Some(m) = init_max {
        limit = Some(limit.map_or(m, |l| l.max(m)));
    }
    // Pod-level resources cover cpu, memory and hugepages only, never
    // ephemeral-storage. The overhead is added to a non-zero limit.
    if let (Some(l), Some(q)) = (
        limit,
        spec.overhead
            .as_ref()
            .and_then(|o| o.get(EPHEMERAL_STORAGE)),
    ) && l != 0
        && let Some(v) = read(&mut problems, format!("overhead.{EPHEMERAL_STORAGE}"), q)
    {
        limit = Some(l.saturating_add(v));
    }
    out.limit = limit;
    out.container_limits = container_limits;
    for v in spec.volumes.iter().flatten() {
        if let Some(pvc) = &v.persistent_volume_claim {
            out.claims.push((v.name.clone(), pvc.claim_name.clone()));
            continue;
        }
        if v.ephemeral.is_some() {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            out.claims
                .push((v.name.clone(), format!("{pod_name}-{}", v.name)));
            continue;
        }
        let (kind, size_limit) = if let Some(ed) = &v.empty_dir {
            // Only the default medium is on the node's disk.
            if ed.medium.as_deref().is_some_and(|m| !m.is_empty()) {
                continue;
            }
            let size = ed.size_limit.as_ref().and_then(|q| {
                let field = format!("volume {} emptyDir.sizeLimit", v.name);
                read(&mut problems, field, q)
            });
            (VolumeKind::EmptyDir, size.filter(|s| *s > 0))
        } else if v.config_map.is_some() {
            (VolumeKind::ConfigMap, None)
        } else if v.git_repo.is_some() {
            (VolumeKind::GitRepo, None)
        } else {
            continue;
        };
        out.volumes.push(EphemeralVolume {
            name: v.name.clone(),
            kind,
            size_limit,
        });
    }
    out.problems = problems;
    // Kept for the pod's life: vectors cut to their length (a first push
    // reserves four).
    out.claims.shrink_to_fit();
    out.volumes.shrink_to_fit();
    out.problems.shrink_to_fit();
    out
}

fn limit_of(c: &Container) -> Option<&Quantity> {
    c.resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get(EPHEMERAL_STORAGE))
}

/// A quantity's value, or a problem naming the field.
fn read(problems: &mut Vec<String>, field: String, q: &Quantity) -> Option<i64> {
    match parse_size(&q.0) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{field}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> PodStorageSpec {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": json,
        }))
        .unwrap();
        pod_storage_spec(&pod)
    }

    fn container(name: &str, limit: Option<&str>) -> serde_json::Value {
        match limit {
            Some(l) => {
                serde_json::json!({"name": name, "resources": {"limits": {"ephemeral-storage": l, "cpu": "1"}}})
            }
            None => serde_json::json!({"name": name, "resources": {"limits": {"memory": "1Gi"}}}),
        }
    }

    #[test]
    fn a_container_limit_is_the_pod_limit() {
        let s = spec(serde_json::json!({"containers": [container("app", Some("1Gi"))]}));
        assert_eq!(s.limit, Some(1 << 30));
        assert_eq!(s.container_limits.get("app"), Some(&(1 << 30)));
    }

    #[test]
    fn pod_limit_sums_containers_and_skips_those_without() {
        let all = spec(serde_json::json!({"containers": [
            container("a", Some("1Gi")), container("b", Some("500Mi"))
        ]}));
        assert_eq!(all.limit, Some((1 << 30) + 500 * (1 << 20)));
        // PodLimits adds what each container names: one without a limit adds
        // nothing, and kubelet still enforces the sum of the others.
        let some = spec(serde_json::json!({"containers": [
            container("a", Some("1Gi")), container("b", None)
        ]}));
        assert_eq!(some.limit, Some(1 << 30));
        assert_eq!(some.container_limits.len(), 1);
        let none = spec(serde_json::json!({"containers": [container("a", None)]}));
        assert_eq!(none.limit, None);
        assert!(none.container_limits.is_empty());
    }

    #[test]
    fn a_zero_container_limit_is_no_container_threshold_but_a_pod_limit() {
        let s = spec(serde_json::json!({"containers": [container("a", Some("0"))]}));
        assert!(s.container_limits.is_empty());
        assert_eq!(s.limit, Some(0));
    }

    #[test]
    fn init_containers_and_sidecars() {
        let s = spec(serde_json::json!({
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"limits": {"ephemeral-storage": "100"}}},
                {"name": "setup", "resources": {"limits": {"ephemeral-storage": "5000"}}}
            ],
            "containers": [container("a", Some("1000"))]
        }));
        // max(1000 + 100, 5000 + 100)
        assert_eq!(s.limit, Some(5100));
        assert_eq!(
            s.container_limits.len(),
            1,
            "init containers have no container threshold"
        );
    }

    #[test]
    fn overhead_is_added_to_a_nonzero_limit_only() {
        let s = spec(serde_json::json!({
            "overhead": {"ephemeral-storage": "10"},
            "containers": [container("a", Some("1000"))]
        }));
        assert_eq!(s.limit, Some(1010));
        let s = spec(serde_json::json!({
            "overhead": {"ephemeral-storage": "10"},
            "containers": [container("a", None)]
        }));
        assert_eq!(s.limit, None);
    }

    #[test]
    fn local_ephemeral_volumes() {
        let s = spec(serde_json::json!({"containers": [], "volumes": [
            {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "zero", "emptyDir": {"sizeLimit": "0"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"name": "huge", "emptyDir": {"medium": "HugePages"}},
            {"name": "cfg", "configMap": {"name": "x"}},
            {"name": "repo", "gitRepo": {"repository": "https://example.invalid/r.git"}},
            {"name": "sec", "secret": {"secretName": "s"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "c"}}
        ]}));
        let got: Vec<(&str, VolumeKind, Option<i64>)> = s
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.kind, v.size_limit))
            .collect();
        assert_eq!(
            got,
            vec![
                ("cache", VolumeKind::EmptyDir, Some(1 << 30)),
                ("scratch", VolumeKind::EmptyDir, None),
                ("zero", VolumeKind::EmptyDir, None),
                ("cfg", VolumeKind::ConfigMap, None),
                ("repo", VolumeKind::GitRepo, None),
            ]
        );
    }

    #[test]
    fn a_bad_quantity_is_a_problem_not_a_limit() {
        let s = spec(
            serde_json::json!({"containers": [container("a", Some("lots"))],
            "volumes": [{"name": "c", "emptyDir": {"sizeLimit": "1Qi"}}]}),
        );
        assert_eq!(s.limit, None);
        assert_eq!(s.volumes[0].size_limit, None);
        assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
        assert!(s.problems[0].contains("container a"), "{:?}", s.problems);
    }

    #[test]
    fn a_negative_quantity_is_refused_as_the_api_server_refuses_it() {
        let s = spec(
            serde_json::json!({"containers": [container("a", Some("-1Gi"))],
            "volumes": [{"name": "c", "emptyDir": {"sizeLimit": "-5"}}]}),
        );
        assert_eq!(s.limit, None);
        assert_eq!(s.volumes[0].size_limit, None);
        assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
        assert!(
            s.problems
                .iter()
                .all(|p| p.contains("greater than or equal to 0")),
            "{:?}",
            s.problems
        );
    }
}
