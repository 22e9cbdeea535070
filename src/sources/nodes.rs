//! The cluster's Nodes, watched (cluster mode): per node only what it takes
//! to reach its kubelet, its name, uid, address and port, and removals as
//! they happen, so a deleted node's series can go at once.
//!
//! Listed whole from the API server's watch cache (`resourceVersion=0`, no
//! page size: kube-rs leaves `resourceVersion=0` out of a paged list, which
//! would make every start of a replica a quorum read of all Nodes from etcd),
//! then watched. A Node is decoded from its JSON field by field, never as a
//! whole `Node`: its `status.images` can be most of its size, and one
//! malformed Node must not fail the list of 5,000 (see `WatchedPod` in
//! [`super::kube`]).
//!
//! The address is `status.addresses` of type `InternalIP` unless other types
//! are asked for, in the order asked (kubelet-facts §17); the port is
//! `status.daemonEndpoints.kubeletEndpoint.Port`. A Node lacking either is
//! reported by name, with the missing field, and left out.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use super::shard::Shard;

/// A node's kubelet, as the fleet polls it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletNode {
    pub name: String,
    pub uid: String,
    /// An IP address (or a host name, when such address types are asked).
    pub address: String,
    pub port: u16,
}

/// The address types to use, in order of preference: `InternalIP` alone
/// unless asked (`Hostname`, `ExternalIP`, `InternalDNS`, `ExternalDNS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressTypes(Vec<String>);

impl Default for AddressTypes {
    fn default() -> Self {
        AddressTypes(vec!["InternalIP".into()])
    }
}

impl AddressTypes {
    /// From a comma-separated list (`InternalIP,Hostname`).
    pub fn parse(list: &str) -> Result<AddressTypes, String> {
        const KNOWN: [&str; 5] = [
            "InternalIP",
            "ExternalIP",
            "Hostname",
            "InternalDNS",
            "ExternalDNS",
        ];
        let mut types = Vec::new();
        for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !KNOWN.contains(&t) {
                return Err(format!(
                    "node address type {:?} is none of {}",
                    t.escape_debug().to_string(),
                    KNOWN.join(", ")
                ));
            }
            types.push(t.to_owned());
        }
        if types.is_empty() {
            return Err("no node address type".into());
        }
        Ok(AddressTypes(types))
    }
}

/// A Node as the watch receives it: its metadata (for the watcher), its
/// addresses and kubelet port, or why they could not be read.
#[derive(Clone, Debug)]
pub struct WatchedNode {
    metadata: ObjectMeta,
    endpoint: Result<(Vec<(String, String)>, u16), String>,
}

impl WatchedNode {
    pub fn from_value(value: &Value) -> WatchedNode {
        let meta = value.get("metadata");
        let field = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let metadata = ObjectMeta {
            name: field("name"),
            uid: field("uid"),
            resource_version: field("resourceVersion"),
            ..ObjectMeta::default()
        };
        let status = value.get("status");
        let endpoint = addresses(status).and_then(|a| port(status).map(|p| (a, p)));
        WatchedNode { metadata, endpoint }
    }

    pub fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }

    /// The node's kubelet, or why it cannot be reached (naming the node).
    pub fn kubelet(&self, types: &AddressTypes) -> Result<KubeletNode, String> {
        let Some(name) = self.metadata.name.clone() else {
            return Err("a Node without metadata.name".into());
        };
        let shown = name.escape_debug().to_string();
        let (addresses, port) = self
            .endpoint
            .as_ref()
            .map_err(|e| format!("node {shown}: {e}"))?;
        let address = types
            .0
            .iter()
            .find_map(|t| {
                addresses
                    .iter()
                    .find(|(ty, a)| ty == t && !a.is_empty())
                    .map(|(_, a)| a.clone())
            })
            .ok_or_else(|| {
                format!(
                    "node {shown}: status.addresses has no address of type {}",
                    types.0.join(" or ")
                )
            })?;
        Ok(KubeletNode {
            name,
            uid: self.metadata.uid.clone().unwrap_or_default(),
            address,
            port: *port,
        })
    }
}

fn addresses(status: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    let Some(list) = status.and_then(|s| s.get("addresses")) else {
        return Err("no status.addresses".into());
    };
    let Some(list) = list.as_array() else {
        return Err("status.addresses is not a list".into());
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let ty = a.get("type").and_then(Value::as_str);
        let address = a.get("address").and_then(Value::as_str);
        match (ty, address) {
            (Some(ty), Some(address)) => out.push((ty.to_owned(), address.to_owned())),
            _ => {
                return Err(format!(
                    "status.addresses[{i}] lacks a string type or address"
                ));
            }
        }
    }
    Ok(out)
}

fn port(status: Option<&Value>) -> Result<u16, String> {
    const FIELD: &str = "status.daemonEndpoints.kubeletEndpoint.Port";
    let value = status
        .and_then(|s| s.get("daemonEndpoints"))
        .and_then(|d| d.get("kubeletEndpoint"))
        .and_then(|k| k.get("Port"))
        .filter(|v| !v.is_null());
    match value.and_then(Value::as_u64) {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Some(p) => Err(format!("{FIELD} {p} is not a port")),
        None => match value {
            None => Err(format!("no {FIELD}")),
            Some(v) => Err(format!("{FIELD} {v} is not a port")),
        },
    }
}

impl<'de> Deserialize<'de> for WatchedNode {
    /// Never fails on a JSON value: see [`WatchedNode`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|v| WatchedNode::from_value(&v))
    }
}

impl kube::Resource for WatchedNode {
    type DynamicType = ();
    type Scope = <Node as kube::Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Node as kube::Resource>::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        <Node as kube::Resource>::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        <Node as kube::Resource>::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        <Node as kube::Resource>::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the watch knows.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    /// By node name.
    pub nodes: BTreeMap<String, KubeletNode>,
    /// Nodes left out, by name, and why.
    pub skipped: BTreeMap<String, String>,
    /// A whole list was received at least once.
    pub synced: bool,
    /// The last failure of the list or watch, cleared by the next answer.
    pub error: Option<String>,
}

/// The fleet's node list, filled by [`NodeList::run`].
#[derive(Debug)]
pub struct NodeList {
    types: AddressTypes,
    state: Mutex<NodeState>,
    /// Pending state of a re-list, swapped in whole at its end so that a
    /// re-list never shows a partial fleet.
    relist: Mutex<Option<NodeState>>,
    /// Bumped at every change; to wait for one.
    changes: watch::Sender<u64>,
}

impl NodeList {
    pub fn new(types: AddressTypes) -> Arc<NodeList> {
        Arc::new(NodeList {
            types,
            state: Mutex::new(NodeState::default()),
            relist: Mutex::new(None),
            changes: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of what is known.
    pub fn state(&self) -> NodeState {
        self.lock().clone()
    }

    /// The kubelets of `shard`, by name.
    pub fn targets(&self, shard: Shard) -> Vec<KubeletNode> {
        self.lock()
            .nodes
            .values()
            .filter(|n| shard.owns(&n.name))
            .cloned()
            .collect()
    }

    /// Notified at every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Lists and watches Nodes until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, client: Client, mut shutdown: watch::Receiver<bool>) {
        let api: Api<WatchedNode> = Api::all(client);
        let mut config = watcher::Config::default().any_semantic();
        config.page_size = None;
        let mut stream = watcher(api, config).default_backoff().boxed();
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = shutdown.changed() => return,
            };
            let Some(event) = event else { return };
            self.apply(event);
        }
    }

    /// One event of the watcher; subscribers are notified.
    pub fn apply(&self, event: Result<watcher::Event<WatchedNode>, watcher::Error>) {
        self.apply_quietly(event);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn apply_quietly(&self, event: Result<watcher::Event<WatchedNode>, watcher::Error>) {
        let event = match event {
            Ok(event) => event,
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                info!(reason = %status.message, "kubernetes API: the watch of nodes expired; re-listing them");
                return;
            }
            Err(e) => {
                warn!(error = %e, "kubernetes API: the watch of nodes failed");
                self.lock().error = Some(format!("watch of nodes: {e}"));
                return;
            }
        };
        let mut relist = self.relist.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Init => *relist = Some(NodeState::default()),
            watcher::Event::InitApply(node) => {
                if let Some(pending) = relist.as_mut() {
                    self.insert(pending, &node);
                }
            }
            watcher::Event::InitDone => {
                let mut state = self.lock();
                let mut fresh = relist.take().unwrap_or_default();
                fresh.synced = true;
                fresh.error = None;
                *state = fresh;
            }
            watcher::Event::Apply(node) => {
                let mut state = self.lock();
                state.error = None;
                self.insert(&mut state, &node);
            }
            watcher::Event::Delete(node) => {
                let mut state = self.lock();
                state.error = None;
                if let Some(name) = node.name() {
                    state.nodes.remove(name);
                    state.skipped.remove(name);
                }
            }
        }
    }

    fn insert(&self, state: &mut NodeState, node: &WatchedNode) {
        let Some(name) = node.name().map(str::to_owned) else {
            warn!("kubernetes API: a Node without metadata.name; skipped");
            return;
        };
        match node.kubelet(&self.types) {
            Ok(kubelet) => {
                state.skipped.remove(&name);
                state.nodes.insert(name, kubelet);
            }
            Err(reason) => {
                warn!(node = %name.escape_debug(), %reason, "node skipped: its kubelet cannot be reached");
                state.nodes.remove(&name);
                state.skipped.insert(name, reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kubelet_client::kubelet_url;
    use super::*;
    use serde_json::json;

    fn node(name: &str, addresses: Value, port: Value) -> Value {
        json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "status": {"addresses": addresses, "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                "images": [{"names": ["registry/big:1"], "sizeBytes": 1}]}
        })
    }

    #[test]
    fn the_internal_ip_and_kubelet_port() {
        let n = WatchedNode::from_value(&node(
            "n1",
            json!([{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}]),
            json!(10250),
        ));
        let k = n.kubelet(&AddressTypes::default()).expect("reachable");
        assert_eq!(
            k,
            KubeletNode {
                name: "n1".into(),
                uid: "uid-n1".into(),
                address: "10.0.0.1".into(),
                port: 10250
            }
        );
        assert_eq!(
            kubelet_url(&k.address, k.port, "/stats/summary"),
            "https://10.0.0.1:10250/stats/summary"
        );
    }

    #[test]
    fn other_address_types_only_when_asked() {
        let n = WatchedNode::from_value(&node(
            "n2",
            json!([{"type": "Hostname", "address": "n2.example"}, {"type": "ExternalIP", "address": "1.2.3.4"}]),
            json!(10250),
        ));
        let e = n
            .kubelet(&AddressTypes::default())
            .expect_err("no InternalIP");
        assert_eq!(
            e,
            "node n2: status.addresses has no address of type InternalIP"
        );
        let types = AddressTypes::parse("InternalIP, ExternalIP,Hostname").expect("parses");
        assert_eq!(n.kubelet(&types).expect("asked").address, "1.2.3.4");
        assert!(AddressTypes::parse("InternalIp").is_err());
        assert!(AddressTypes::parse(" , ").is_err());
    }

    #[test]
    fn a_node_missing_fields_is_named() {
        let types = AddressTypes::default();
        let cases = [
            (
                json!({"metadata": {"name": "a"}, "status": {}}),
                "node a: no status.addresses",
            ),
            (
                node(
                    "b",
                    json!([{"type": "InternalIP", "address": "10.0.0.2"}]),
                    Value::Null,
                ),
                "node b: no status.daemonEndpoints.kubeletEndpoint.Port",
            ),
            (
                node(
                    "c",
                    json!([{"type": "InternalIP", "address": "10.0.0.3"}]),
                    json!(0),
                ),
                "node c: status.daemonEndpoints.kubeletEndpoint.Port 0 is not a port",
            ),
            (
                node(
                    "d",
                    json!([{"type": "InternalIP", "address": "10.0.0.4"}]),
                    json!("10250"),
                ),
                "node d: status.daemonEndpoints.kubeletEndpoint.Port \"10250\" is not a port",
            ),
            (
                node("e", json!({"type": "InternalIP"}), json!(10250)),
                "node e: status.addresses is not a list",
            ),
            (
                node(
                    "f",
                    json!([{"type": "InternalIP", "address": 5}]),
                    json!(10250),
                ),
                "node f: status.addresses[0] lacks a string type or address",
            ),
            (json!({"metadata": {}}), "a Node without metadata.name"),
        ];
        for (value, want) in cases {
            let e = WatchedNode::from_value(&value)
                .kubelet(&types)
                .expect_err(want);
            assert_eq!(e, want);
        }
    }

    #[test]
    fn events_add_replace_skip_and_remove() {
        let list = NodeList::new(AddressTypes::default());
        let good = |name: &str, ip: &str| {
            WatchedNode::from_value(&node(
                name,
                json!([{"type": "InternalIP", "address": ip}]),
                json!(10250),
            ))
        };
        list.apply(Ok(watcher::Event::Init));
        list.apply(Ok(watcher::Event::InitApply(good("n1", "10.0.0.1"))));
        list.apply(Ok(watcher::Event::InitApply(good("n2", "10.0.0.2"))));
        // Nothing shows before the list is whole.
        assert!(!list.state().synced && list.state().nodes.is_empty());
        list.apply(Ok(watcher::Event::InitDone));
        let names = |l: &NodeList| l.state().nodes.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&list), ["n1", "n2"]);
        list.apply(Ok(watcher::Event::Apply(good("n1", "10.0.0.9"))));
        assert_eq!(list.state().nodes["n1"].address, "10.0.0.9");
        list.apply(Ok(watcher::Event::Apply(WatchedNode::from_value(&node(
            "n2",
            json!([]),
            json!(10250),
        )))));
        assert_eq!(names(&list), ["n1"]);
        assert!(list.state().skipped["n2"].contains("no address of type InternalIP"));
        list.apply(Ok(watcher::Event::Delete(good("n2", "10.0.0.2"))));
        list.apply(Ok(watcher::Event::Delete(good("n1", "10.0.0.9"))));
        let state = list.state();
        assert!(state.nodes.is_empty() && state.skipped.is_empty());
        // A re-list replaces the whole set: a node deleted while the watch
        // was down is gone.
        list.apply(Ok(watcher::Event::Apply(good("old", "10.0.0.5"))));
        list.apply(Ok(watcher::Event::Init));
        list.apply(Ok(watcher::Event::InitApply(good("new", "10.0.0.6"))));
        list.apply(Ok(watcher::Event::InitDone));
        assert_eq!(names(&list), ["new"]);
    }

    #[test]
    fn targets_of_a_shard() {
        let list = NodeList::new(AddressTypes::default());
        list.apply(Ok(watcher::Event::Init));
        for i in 0..50 {
            list.apply(Ok(watcher::Event::InitApply(WatchedNode::from_value(
                &node(
                    &format!("node-{i}"),
                    json!([{"type": "InternalIP", "address": format!("10.0.0.{i}")}]),
                    json!(10250),
                ),
            ))));
        }
        list.apply(Ok(watcher::Event::InitDone));
        let a = list.targets(Shard::new(0, 2).expect("shard"));
        let b = list.targets(Shard::new(1, 2).expect("shard"));
        assert_eq!(a.len() + b.len(), 50);
        assert!(a.iter().all(|n| !b.contains(n)));
        assert_eq!(list.targets(Shard::ALL).len(), 50);
    }
}
