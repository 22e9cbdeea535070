//! The Kubernetes API: one watch of the pods on this node (field selector
//! `spec.nodeName=<node>`, list served from the API server's cache), and a
//! GET per PVC and PV, cached by the caller. Nothing cluster-wide is watched,
//! so the API load of a node stays proportional to its pods.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::{Deserialize, Deserializer};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::kubelet::quantity::parse_size;
use crate::model::{PodVolumes, PvInfo, PvSource, SourceId, SourceStatus, VolumeMode};

#[derive(Debug, Error)]
pub enum KubeError {
    #[error("no cluster access: {0}")]
    Config(String),
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("kubernetes client: {0}")]
    Client(String),
}

/// A client from `--kubeconfig`, else `$KUBECONFIG` / `~/.kube/config`, else
/// the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = config(kubeconfig).await?;
    Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}

/// The API server's configuration (address, CA, credentials) from
/// `--kubeconfig`, else `$KUBECONFIG` / `~/.kube/config`, else the in-cluster
/// service account.
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, KubeError> {
    Ok(match kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|e| KubeError::Kubeconfig {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Kubeconfig {
                    path: shown,
                    message: e.to_string(),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?,
    })
}

/// The PVC-relevant view of a pod, or which field it lacks.
pub fn pod_volumes(pod: &Pod) -> Result<PodVolumes, String> {
    let meta = &pod.metadata;
    let name = meta.name.clone().ok_or("pod without metadata.name")?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or_else(|| format!("pod {name} without metadata.namespace"))?;
    let uid = meta
        .uid
        .clone()
        .ok_or_else(|| format!("pod {namespace}/{name} without metadata.uid"))?;
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let mut claims: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(pvc) = &v.persistent_volume_claim {
                Some(pvc.claim_name.clone())
            } else {
                // A generic ephemeral volume's PVC is named <pod>-<volume>.
                v.ephemeral.as_ref().map(|_| format!("{name}-{}", v.name))
            }
        })
        .filter(|c| !c.is_empty())
        .collect();
    // Kept for the pod's life: cut to its length (a first push reserves four).
    claims.shrink_to_fit();
    Ok(PodVolumes {
        namespace,
        name,
        uid,
        running,
        claims,
        storage: super::pod_spec::pod_storage_spec(pod),
    })
}

/// A pod as the watch receives it: decoded, or why it could not be.
///
/// Decoding `Pod` itself would make one malformed object (a field of the
/// wrong type) fail the whole list or watch response that carries it: the
/// watcher would then re-list forever while that pod exists, leaving every
/// other pod of the node stale, and kube's client would log the whole list
/// body on each attempt. Decoded this way, the bad pod fails alone, with an
/// error naming it and the field.
///
/// Only what kubedf uses is kept: the few fields of [`PodVolumes`] and four
/// of metadata. The whole `Pod` (and its JSON) lives only while one pod is
/// decoded, not for a whole list page: kube's watcher holds a page's items
/// until it has handed them all out, and at 1,000 pods whole `Pod`s were
/// most of kubedf's peak heap (heaptrack).
#[derive(Clone, Debug)]
pub struct WatchedPod {
    /// Name, namespace, uid and resourceVersion, as far as they could be
    /// read (the watcher needs the resourceVersion, a deletion the uid).
    metadata: ObjectMeta,
    pod: Result<PodVolumes, Unusable>,
}

/// Why a pod from the API is left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// It does not decode as a pod: the message names it and the field.
    Invalid(String),
    /// It decodes, but lacks a field kubedf needs.
    Incomplete(String),
}

impl Unusable {
    pub fn message(&self) -> &str {
        match self {
            Unusable::Invalid(m) | Unusable::Incomplete(m) => m,
        }
    }
}

impl WatchedPod {
    pub fn from_value(value: serde_json::Value) -> WatchedPod {
        let read = value.get("metadata").map(lenient_meta).unwrap_or_default();
        let metadata = ObjectMeta {
            name: read.name,
            namespace: read.namespace,
            uid: read.uid,
            resource_version: read.resource_version,
            ..ObjectMeta::default()
        };
        let pod = match serde_path_to_error::deserialize::<_, Pod>(value) {
            Ok(pod) => pod_volumes(&pod).map_err(Unusable::Incomplete),
            Err(e) => {
                let shown = match (&metadata.namespace, &metadata.name) {
                    (Some(ns), Some(name)) => format!("{ns}/{name}"),
                    (None, Some(name)) => name.clone(),
                    _ => "without metadata.name".into(),
                };
                Err(Unusable::Invalid(format!(
                    "pod {shown}: {}: {}",
                    e.path(),
                    e.inner()
                )))
            }
        };
        WatchedPod { metadata, pod }
    }

    /// What kubedf keeps of the pod, or why it is left out.
    pub fn volumes(&self) -> Result<&PodVolumes, &Unusable> {
        self.pod.as_ref()
    }
}

/// The metadata, or as much of it as are strings where strings belong.
fn lenient_meta(value: &serde_json::Value) -> ObjectMeta {
    ObjectMeta::deserialize(value).unwrap_or_else(|_| {
        let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        ObjectMeta {
            name: field("name"),
            namespace: field("namespace"),
            uid: field("uid"),
            resource_version: field("resourceVersion"),
            ..ObjectMeta::default()
        }
    })
}

impl<'de> Deserialize<'de> for WatchedPod {
    /// Never fails on a JSON value: see [`WatchedPod`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(WatchedPod::from_value)
    }
}

impl kube::Resource for WatchedPod {
    type DynamicType = ();
    type Scope = <Pod as kube::Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What a PVC GET says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimState {
    Bound { volume_name: String },
    Unbound { phase: String },
}

pub fn claim_state(pvc: &PersistentVolumeClaim) -> ClaimState {
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase == "Bound" && !volume_name.is_empty() {
        ClaimState::Bound { volume_name }
    } else {
        ClaimState::Unbound { phase }
    }
}

/// Spec fields of a PV that are not its volume source.
const NOT_A_SOURCE: [&str; 9] = [
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
];

/// The PV's source, mode and declared capacity, or what it lacks.
pub fn pv_info(pv: &PersistentVolume) -> Result<PvInfo, String> {
    let name = pv
        .metadata
        .name
        .clone()
        .ok_or("persistent volume without metadata.name")?;
    let spec = pv
        .spec
        .as_ref()
        .ok_or_else(|| format!("persistent volume {name} without spec"))?;
    let source = if let Some(csi) = &spec.csi {
        PvSource::Csi {
            driver: csi.driver.clone(),
        }
    } else if let Some(hp) = &spec.host_path {
        PvSource::HostPath {
            path: hp.path.clone(),
        }
    } else if let Some(local) = &spec.local {
        PvSource::Local {
            path: local.path.clone(),
        }
    } else {
        // Any other in-tree source, by its field name, whatever this
        // k8s-openapi version calls it.
        let value =
            serde_json::to_value(spec).map_err(|e| format!("persistent volume {name}: {e}"))?;
        let plugin = value
            .as_object()
            .and_then(|o| {
                o.keys()
                    .find(|k| !NOT_A_SOURCE.contains(&k.as_str()))
                    .cloned()
            })
            .ok_or_else(|| format!("persistent volume {name} has no volume source in its spec"))?;
        PvSource::InTree { plugin }
    };
    let mode = match spec.volume_mode.as_deref() {
        Some("Block") => VolumeMode::Block,
        _ => VolumeMode::Filesystem,
    };
    // An unparseable capacity is left out (statfs-measured volumes do not
    // need it), but said: silently, a walked volume would lose its capacity.
    // Logged once per lookup, which is cached for minutes.
    let capacity = match spec.capacity.as_ref().and_then(|c| c.get("storage")) {
        None => None,
        Some(q) => match parse_size(&q.0) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!(persistentvolume = %name, error = %e, "ignoring the persistent volume's spec.capacity.storage, which is not a size");
                None
            }
        },
    };
    Ok(PvInfo {
        name,
        source,
        mode,
        capacity,
    })
}

/// The pods of this node as the watch last saw them.
#[derive(Default)]
struct PodState {
    /// uid -> (first-seen sequence number, pod). Shared (`Arc`) with the
    /// samplers that read the pods, so a pod is held once however many
    /// loops keep it.
    pods: BTreeMap<String, (u64, Arc<PodVolumes>)>,
    next_seq: u64,
    /// Objects of a re-list in progress, swapped in at InitDone.
    relist: Option<Vec<PodVolumes>>,
    synced: bool,
    last_error: Option<String>,
    last_success: Option<SystemTime>,
    /// Bumped whenever the pod set may have changed.
    version: u64,
}

impl PodState {
    /// A list or watch response arrived.
    fn succeeded(&mut self) {
        if let Some(previous) = self.last_error.take() {
            info!(previous_error = %previous, "kubernetes API recovered");
        }
        self.last_success = Some(SystemTime::now());
    }

    /// The watch failed: logged once per change of state, not per retry.
    fn failed(&mut self, message: String) {
        if self.last_error.is_none() {
            warn!(error = %message, "kubernetes API failed; volume stats keep the last known pods");
        }
        self.last_error = Some(message);
    }

    fn upsert(&mut self, pod: PodVolumes) {
        match self.pods.get_mut(&pod.uid) {
            // An unchanged pod (most watch events: a status update) keeps
            // its `Arc`, which the samplers then find equal by pointer.
            Some(entry) if *entry.1 == pod => {}
            Some(entry) => entry.1 = Arc::new(pod),
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.pods.insert(pod.uid.clone(), (seq, Arc::new(pod)));
            }
        }
    }
}

/// Health of the API as kubedf sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiHealth {
    pub synced: bool,
    pub error: Option<String>,
    pub last_success: Option<SystemTime>,
}

/// The node's pods, kept current by a watch.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    node: String,
    state: Arc<Mutex<PodState>>,
    /// Counts the watch's events (errors included): each consumer holds its
    /// own receiver, so none misses a change while it is busy.
    events: watch::Sender<u64>,
}

impl Kube {
    pub fn new(client: Client, node: &str) -> Kube {
        Kube {
            client,
            node: node.to_owned(),
            state: Arc::default(),
            events: watch::Sender::new(0),
        }
    }

    /// A receiver that is marked changed after every event of the watch:
    /// the pod set or the API's health may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PodState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pods in the order they were first seen (shared, not copied).
    pub fn pods(&self) -> Vec<Arc<PodVolumes>> {
        let state = self.lock();
        let mut pods: Vec<&(u64, Arc<PodVolumes>)> = state.pods.values().collect();
        pods.sort_by_key(|(seq, _)| *seq);
        pods.into_iter().map(|(_, p)| Arc::clone(p)).collect()
    }

    /// The API as the `kubernetes` source: up once the first list of pods
    /// arrived and while the watch answers.
    pub fn source_status(&self) -> SourceStatus {
        let api = self.health();
        let error = api
            .error
            .or_else(|| (!api.synced).then(|| "the first list of pods has not arrived".to_owned()));
        SourceStatus {
            source: SourceId::Kubernetes,
            up: error.is_none(),
            last_success: api.last_success,
            duration: None,
            error,
        }
    }

    pub fn health(&self) -> ApiHealth {
        let state = self.lock();
        ApiHealth {
            synced: state.synced,
            error: state.last_error.clone(),
            last_success: state.last_success,
        }
    }

    /// A number that changes whenever the pod set may have changed.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Waits (bounded) until the first list has been received.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.lock().synced {
                return true;
            }
            match tokio::time::timeout_at(deadline, events.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.lock().synced,
            }
        }
    }

    /// Runs the watch until `shutdown` changes. Errors are retried with
    /// backoff; a cut stream is re-watched and an expired one re-listed by
    /// kube's watcher.
    pub async fn watch_pods(self, mut shutdown: watch::Receiver<bool>) {
        let api: Api<WatchedPod> = Api::all(self.client.clone());
        let mut config = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", self.node))
            .any_semantic();
        // Listed whole from the watch cache, as kubelet lists its pods: with
        // a page size, kube-rs leaves out `resourceVersion=0` (a paged list
        // must be consistent), and every start of kubedf on every node would
        // be a quorum read of all the cluster's pods from etcd, filtered by
        // node in the API server. One node's pods fit one response.
        config.page_size = None;
        let mut stream = watcher(api, config).default_backoff().boxed();
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = shutdown.changed() => return,
            };
            let Some(event) = event else { return };
            self.apply(event);
            self.events.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn apply(&self, event: Result<watcher::Event<WatchedPod>, watcher::Error>) {
        let mut state = self.lock();
        let event = match event {
            Ok(event) => event,
            // 410 Expired: the API answered that its history no longer
            // reaches the watch's resourceVersion (etcd compaction, an API
            // server restart), and the watcher re-lists. Routine (client-go
            // logs it at V(4)), not the API failing: it must not mark the
            // source down nor warn.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                info!(reason = %status.message, "kubernetes API: the watch of the node's pods expired; re-listing them");
                return;
            }
            Err(e) => {
                state.failed(format!("watch of pods on node {}: {e}", self.node));
                return;
            }
        };
        // `Init` is the watcher starting a list, before any request was
        // answered: it says nothing about the API. Every other event carries
        // what a list or watch response said.
        if !matches!(event, watcher::Event::Init) {
            state.succeeded();
            state.version += 1;
        }
        let convert = |pod: WatchedPod| match pod.pod {
            Ok(p) => Some(p),
            Err(Unusable::Invalid(e)) => {
                warn!(error = %e, "ignoring a pod the API returned that is not a valid pod");
                None
            }
            Err(Unusable::Incomplete(e)) => {
                warn!(error = %e, "ignoring a pod the API returned without a required field");
                None
            }
        };
        match event {
            watcher::Event::Init => state.relist = Some(Vec::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(p) = convert(pod) {
                    state.relist.get_or_insert_with(Vec::new).push(p);
                }
            }
            watcher::Event::InitDone => {
                let listed = state.relist.take().unwrap_or_default();
                let keep: std::collections::HashSet<String> =
                    listed.iter().map(|p| p.uid.clone()).collect();
                state.pods.retain(|uid, _| keep.contains(uid));
                for p in listed {
                    state.upsert(p);
                }
                state.synced = true;
                // The list's buffers (its response, whole, and each pod's
                // JSON) are freed by now.
                crate::exec::heap::after_peak();
            }
            watcher::Event::Apply(pod) => {
                if let Some(p) = convert(pod) {
                    state.upsert(p);
                }
            }
            watcher::Event::Delete(pod) => {
                // By uid, which the metadata gives even of a malformed pod.
                if let Some(uid) = pod.metadata.uid {
                    state.pods.remove(&uid);
                }
            }
        }
    }

    /// GETs a PVC: `Ok(None)` when it does not exist.
    pub async fn claim(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<ClaimState>, String> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &path_segment("namespace", namespace)?);
        let pvc = tokio::time::timeout(
            timeout,
            get_cached(&api, &path_segment("persistentvolumeclaim", name)?),
        )
        .await
        .map_err(|_| {
            format!(
                "GET persistentvolumeclaim {namespace}/{name} did not answer within {timeout:?}"
            )
        })?
        .map_err(|e| format!("GET persistentvolumeclaim {namespace}/{name}: {e}"))?;
        Ok(pvc.as_ref().map(claim_state))
    }

    /// GETs a PV: `Ok(None)` when it does not exist.
    pub async fn volume(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<Result<PvInfo, String>>, String> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = tokio::time::timeout(
            timeout,
            get_cached(&api, &path_segment("persistentvolume", name)?),
        )
        .await
        .map_err(|_| format!("GET persistentvolume {name} did not answer within {timeout:?}"))?
        .map_err(|e| format!("GET persistentvolume {name}: {e}"))?;
        Ok(pv.as_ref().map(pv_info))
    }
}

/// GETs one object from the API server's watch cache (`resourceVersion=0`,
/// "any version"), not with a quorum read from etcd: `Ok(None)` when it
/// does not exist. A PVC or PV a few hundred milliseconds stale is as good
/// as a fresh one here (a capacity or binding is re-read later anyway), and
/// a DaemonSet's nodes then cost etcd nothing, at start or at rest.
async fn get_cached<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_with(name, &kube::api::GetParams::any()).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A name as one segment of a request path. kube-rs puts names into URLs
/// as they are, and the names come from other objects (a pod's `claimName`,
/// a PVC's `volumeName`): a name the API server could never have created
/// as a path segment (`.`, `..`, one holding `/` or `%`, apimachinery's
/// `IsValidPathSegmentName`) is refused, naming it; anything else outside a
/// URL's unreserved characters is percent-encoded, so no name can reach
/// another path or break the request line.
fn path_segment(kind: &str, name: &str) -> Result<String, String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
        return Err(format!(
            "{kind} name {name:?} cannot name an API object (empty, '.', '..', or holding '/' or '%')"
        ));
    }
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    Ok(percent_encoding::utf8_percent_encode(name, KEEP).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_escaped_path_segment() {
        assert_eq!(path_segment("pvc", "data-web-0").unwrap(), "data-web-0");
        assert_eq!(path_segment("pvc", "a.b").unwrap(), "a.b");
        assert_eq!(path_segment("pvc", "a b?c#\n").unwrap(), "a%20b%3Fc%23%0A");
        assert_eq!(path_segment("pvc", "é").unwrap(), "%C3%A9");
        for bad in ["", ".", "..", "../secrets", "a/b", "100%"] {
            let err = path_segment("persistentvolumeclaim", bad).unwrap_err();
            assert!(
                err.contains("persistentvolumeclaim") && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    /// The store hands out its pods shared, in first-seen order; an update
    /// that changes nothing kubedf keeps (a status heartbeat) keeps the
    /// pod's `Arc`, so the samplers find it equal by pointer, and a real
    /// change replaces it.
    #[test]
    fn the_store_shares_its_pods_and_keeps_an_unchanged_one() {
        let slim = |uid: &str, claim: &str| {
            let p = pod(serde_json::json!({
                "metadata": {"name": format!("web-{uid}"), "namespace": "shop", "uid": uid},
                "spec": {"containers": [], "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": claim}}
                ]},
                "status": {"phase": "Running"}
            }));
            pod_volumes(&p).unwrap()
        };
        let mut state = PodState::default();
        state.upsert(slim("u-2", "a"));
        state.upsert(slim("u-1", "b"));
        let first = state.pods["u-2"].1.clone();
        state.upsert(slim("u-2", "a"));
        assert!(
            Arc::ptr_eq(&first, &state.pods["u-2"].1),
            "an equal pod keeps its Arc"
        );
        state.upsert(slim("u-2", "c"));
        assert!(!Arc::ptr_eq(&first, &state.pods["u-2"].1));
        assert_eq!(state.pods["u-2"].1.claims, vec!["c"]);
        // First seen first, whatever the uids' order.
        let mut seen: Vec<_> = state.pods.values().collect();
        seen.sort_by_key(|(seq, _)| *seq);
        let uids: Vec<&str> = seen.iter().map(|(_, p)| p.uid.as_str()).collect();
        assert_eq!(uids, ["u-2", "u-1"]);
    }

    #[test]
    fn pvc_and_ephemeral_volumes_are_claims() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "cache", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "x"}}
            ]},
            "status": {"phase": "Running"}
        }));
        let v = pod_volumes(&p).unwrap();
        assert!(v.running);
        assert_eq!(v.claims, vec!["data-web-0", "web-0-scratch"]);
    }

    #[test]
    fn pods_missing_fields_are_reported() {
        let p = pod(serde_json::json!({"metadata": {"name": "x", "namespace": "ns"}}));
        assert!(pod_volumes(&p).unwrap_err().contains("metadata.uid"));
        let p = pod(serde_json::json!({"metadata": {"name": "x", "namespace": "ns", "uid": "u"}}));
        let v = pod_volumes(&p).unwrap();
        assert!(
            !v.running && v.claims.is_empty(),
            "no spec, no status: nothing to report"
        );
    }

    #[test]
    fn a_malformed_pod_fails_alone_and_names_itself() {
        let good = serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}
            ]}
        });
        let mut bad = good.clone();
        bad["metadata"]["name"] = "web-1".into();
        bad["metadata"]["uid"] = "u-2".into();
        bad["spec"]["volumes"] = "data".into();
        // A list (and so a watcher's re-list) with a malformed pod in it
        // still decodes; the malformed pod's error names it and its field.
        let list: kube::core::ObjectList<WatchedPod> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "9"},
            "items": [good, bad]
        }))
        .unwrap();
        let v = list.items[0].volumes().unwrap();
        assert_eq!(v.claims, vec!["data-web-0"]);
        let e = list.items[1].volumes().unwrap_err().message();
        assert!(
            e.contains("pod shop/web-1") && e.contains("spec.volumes"),
            "{e}"
        );
        assert_eq!(list.items[1].metadata.uid.as_deref(), Some("u-2"));
        // Malformed metadata: the strings that can be read still are.
        let p = WatchedPod::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": "ns", "uid": "u-3",
                         "resourceVersion": "8", "labels": ["a"]},
        }));
        let e = p.volumes().unwrap_err();
        assert!(matches!(e, Unusable::Invalid(_)) && e.message().contains("metadata.labels"));
        assert_eq!(p.metadata.uid.as_deref(), Some("u-3"));
        assert_eq!(p.metadata.resource_version.as_deref(), Some("8"));
    }

    #[test]
    fn pv_sources() {
        let pv = |spec: serde_json::Value| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pv-1"}, "spec": spec}))
                .unwrap()
        };
        let info = pv_info(&pv(serde_json::json!({
            "capacity": {"storage": "10Gi"}, "volumeMode": "Filesystem",
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}
        })))
        .unwrap();
        assert_eq!(
            info.source,
            PvSource::Csi {
                driver: "ebs.csi.aws.com".into()
            }
        );
        assert_eq!(info.capacity, Some(10 << 30));
        let info = pv_info(&pv(serde_json::json!({"capacity": {"storage": "2Gi"}, "hostPath": {"path": "/opt/local-path/pv-1"}}))).unwrap();
        assert_eq!(
            info.source,
            PvSource::HostPath {
                path: "/opt/local-path/pv-1".into()
            }
        );
        let info = pv_info(&pv(
            serde_json::json!({"volumeMode": "Block", "local": {"path": "/dev/sdb"}}),
        ))
        .unwrap();
        assert_eq!((info.mode, info.capacity), (VolumeMode::Block, None));
        let info = pv_info(&pv(serde_json::json!({"accessModes": ["ReadWriteMany"], "nfs": {"server": "10.0.0.1", "path": "/export"}}))).unwrap();
        assert_eq!(
            info.source,
            PvSource::InTree {
                plugin: "nfs".into()
            }
        );
        assert!(
            pv_info(&pv(serde_json::json!({"capacity": {"storage": "1Gi"}})))
                .unwrap_err()
                .contains("no volume source")
        );
    }

    #[test]
    fn claim_states() {
        let pvc = |json: serde_json::Value| -> PersistentVolumeClaim {
            serde_json::from_value(json).unwrap()
        };
        assert_eq!(
            claim_state(&pvc(
                serde_json::json!({"spec": {"volumeName": "pv-1"}, "status": {"phase": "Bound"}})
            )),
            ClaimState::Bound {
                volume_name: "pv-1".into()
            }
        );
        assert_eq!(
            claim_state(&pvc(
                serde_json::json!({"spec": {}, "status": {"phase": "Pending"}})
            )),
            ClaimState::Unbound {
                phase: "Pending".into()
            }
        );
        assert_eq!(
            claim_state(&pvc(serde_json::json!({}))),
            ClaimState::Unbound {
                phase: "Unknown".into()
            }
        );
    }
}
