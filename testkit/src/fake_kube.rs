//! A fake Kubernetes API server for integration tests.
//!
//! It speaks enough of the real wire format (JSON lists, chunked watch
//! streams, `Status` errors) for the real `kube` client to work against it:
//! `Api::list`, `kube::runtime::watcher` (list + watch with
//! `resourceVersion`, bookmarks, 410 Expired re-lists) and `Api::get`.
//!
//! Pods, PersistentVolumeClaims and PersistentVolumes are held as
//! `serde_json::Value`, so tests can store objects exactly as a real server
//! would return them, including objects that lack fields. The server runs on
//! its own thread with its own tokio runtime, so it works from a plain
//! `#[test]` (e.g. one that spawns the kubedf binary) as well as from
//! `#[tokio::test]`. It listens on 127.0.0.1 only, plain HTTP, no auth.
//!
//! Semantics that mirror the real API server:
//! - one global resourceVersion counter, bumped by every change; each stored
//!   object carries the version of its last change in
//!   `metadata.resourceVersion` (a DELETED event carries the version of the
//!   deletion);
//! - list items have no `kind`/`apiVersion` (the list has them); GET and
//!   watch objects do;
//! - watch from `resourceVersion` absent or `"0"` first replays the current
//!   state as ADDED events; from `N` it sends every change after `N`, or a
//!   watch ERROR event with a 410 `Expired` Status when `N` predates the
//!   retained history;
//! - a MODIFIED object that starts or stops matching a watch's selectors is
//!   sent as ADDED or DELETED to that watch;
//! - unsupported field selector labels are rejected with 400 BadRequest.
//!
//! Not implemented: pagination (`limit`/`continue` are accepted, everything
//! is returned in one page without a continue token), set-based label
//! selectors (`in`, `notin`: rejected with 400), `resourceVersionMatch` on
//! lists (the current state is always returned), writes (non-GET requests
//! get 405).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

/// First resourceVersion handed out (real clusters never start at 1; a
/// watch from a small made-up version therefore gets 410, as it would).
const INITIAL_RESOURCE_VERSION: u64 = 1000;
/// History kept for resuming watches; older events are forgotten as if the
/// server had compacted them.
const MAX_HISTORY: usize = 10_000;
/// The real server picks a random timeout of at least 30 minutes when the
/// client gives none.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Every second, so that tests see bookmarks quickly; a real API server sends
/// one about every minute (its cacher's `bookmarkFrequency`), which a
/// benchmark of the cost at rest asks for with [`FakeKube::set_bookmark_interval`].
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Pod,
    Pvc,
    Pv,
    Node,
}

impl Kind {
    fn from_plural(plural: &str) -> Option<Kind> {
        match plural {
            "pods" => Some(Kind::Pod),
            "persistentvolumeclaims" => Some(Kind::Pvc),
            "persistentvolumes" => Some(Kind::Pv),
            "nodes" => Some(Kind::Node),
            _ => None,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Pvc => "persistentvolumeclaims",
            Kind::Pv => "persistentvolumes",
            Kind::Node => "nodes",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Pvc => "PersistentVolumeClaim",
            Kind::Pv => "PersistentVolume",
            Kind::Node => "Node",
        }
    }

    fn list_kind(self) -> &'static str {
        match self {
            Kind::Pod => "PodList",
            Kind::Pvc => "PersistentVolumeClaimList",
            Kind::Pv => "PersistentVolumeList",
            Kind::Node => "NodeList",
        }
    }

    fn namespaced(self) -> bool {
        !matches!(self, Kind::Pv | Kind::Node)
    }

    /// Field labels the real API server accepts in `fieldSelector`.
    fn field_supported(self, field: &str) -> bool {
        match self {
            Kind::Pod => matches!(
                field,
                "metadata.name"
                    | "metadata.namespace"
                    | "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "spec.hostNetwork"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ),
            Kind::Pvc => matches!(field, "metadata.name" | "metadata.namespace"),
            Kind::Pv => matches!(field, "metadata.name"),
            Kind::Node => matches!(field, "metadata.name" | "spec.unschedulable"),
        }
    }
}

// ---------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct FieldReq {
    field: String,
    value: String,
    negate: bool,
}

#[derive(Clone, Debug)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
}

/// What a list or watch request selects.
#[derive(Clone, Debug)]
struct Filter {
    kind: Kind,
    namespace: Option<String>,
    fields: Vec<FieldReq>,
    labels: Vec<LabelReq>,
}

impl Filter {
    fn new(
        kind: Kind,
        namespace: Option<String>,
        query: &[(String, String)],
    ) -> Result<Filter, String> {
        let fields = match query_param(query, "fieldSelector") {
            Some(s) => parse_field_selector(kind, s)?,
            None => Vec::new(),
        };
        let labels = match query_param(query, "labelSelector") {
            Some(s) => parse_label_selector(s)?,
            None => Vec::new(),
        };
        Ok(Filter {
            kind,
            namespace,
            fields,
            labels,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && field_value(obj, "metadata.namespace") != *ns
        {
            return false;
        }
        let fields_ok = self
            .fields
            .iter()
            .all(|r| (field_value(obj, &r.field) == r.value) != r.negate);
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            // As in Kubernetes, `k!=v` also matches objects without label k.
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        fields_ok && labels_ok
    }
}

fn parse_field_selector(kind: Kind, selector: &str) -> Result<Vec<FieldReq>, String> {
    let mut reqs = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, false)
        } else {
            return Err(format!(
                "invalid selector: '{selector}'; can't understand '{term}'"
            ));
        };
        let field = field.trim();
        if !kind.field_supported(field) {
            // Same wording as the real API server.
            return Err(format!("field label not supported: {field}"));
        }
        reqs.push(FieldReq {
            field: field.to_string(),
            value: value.trim().to_string(),
            negate,
        });
    }
    Ok(reqs)
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelReq>, String> {
    if selector.contains('(') {
        return Err(format!(
            "fake-kube does not support set-based label selectors: '{selector}'"
        ));
    }
    let mut reqs = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let req = if let Some((k, v)) = term.split_once("!=") {
            LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_string())
        } else {
            LabelReq::Exists(term.to_string())
        };
        reqs.push(req);
    }
    Ok(reqs)
}

/// The value of a dotted field path as the API server compares it: strings
/// as-is, other scalars printed, missing fields as the empty string (so
/// `spec.nodeName=` selects unscheduled pods).
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Clone, Debug)]
struct HistoryEvent {
    rv: u64,
    kind: Kind,
    ty: EventType,
    /// The new object (ADDED, MODIFIED) or the last one (DELETED), both
    /// carrying `rv`.
    object: Value,
    /// The previous state for MODIFIED, used to turn the event into ADDED or
    /// DELETED for watches whose selectors it enters or leaves.
    old: Option<Value>,
}

impl HistoryEvent {
    /// The event as a watch with `filter` sees it, if at all.
    fn for_filter(&self, filter: &Filter) -> Option<&'static str> {
        if self.kind != filter.kind {
            return None;
        }
        let new_matches = filter.matches(&self.object);
        let old_matches = self.old.as_ref().is_some_and(|o| filter.matches(o));
        match self.ty {
            EventType::Added => new_matches.then_some("ADDED"),
            EventType::Modified => match (old_matches, new_matches) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
            EventType::Deleted => new_matches.then_some("DELETED"),
        }
    }
}

/// A request as the server saw it, with the query percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LoggedRequest {
    method: String,
    path: String,
    /// Decoded `(key, value)` pairs in order; empty pairs (kube's queries
    /// start with `?&`) are dropped.
    query: Vec<(String, String)>,
}

impl fmt::Display for LoggedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

struct Store {
    /// The global resourceVersion: the latest change or compaction.
    rv: u64,
    /// The version of the latest object change. Watches only ever advance
    /// to this (see `FakeKube::compact`).
    last_event_rv: u64,
    /// Keyed by (kind, namespace or "" for cluster-scoped, name): iteration
    /// order is the order the real server lists in.
    objects: BTreeMap<(Kind, String, String), Value>,
    history: VecDeque<HistoryEvent>,
    /// Every event with a version above this is still in `history`.
    retained_from: u64,
    /// A new watch from a version below this gets 410 Expired.
    expired_below: u64,
    requests: Vec<LoggedRequest>,
    /// What `GET /api/v1/nodes/<node>/proxy<path>` answers, by (node,
    /// path): the status and body the API server relays from the kubelet.
    proxied: BTreeMap<(String, String), (u16, String)>,
    open_watches: usize,
}

impl Store {
    fn push_event(&mut self, event: HistoryEvent) {
        self.history.push_back(event);
        while self.history.len() > MAX_HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.retained_from = old.rv;
                self.expired_below = self.expired_below.max(old.rv);
            }
        }
    }

    /// Watch lines for every event after `cursor`, or `Err` with the 410
    /// line if some of them have been forgotten.
    fn events_after(&self, filter: &Filter, cursor: u64) -> Result<Vec<String>, String> {
        if cursor < self.retained_from {
            return Err(expired_line(cursor, self.retained_from));
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.rv > cursor)
            .filter_map(|e| e.for_filter(filter).map(|ty| watch_line(ty, &e.object)))
            .collect())
    }

    /// ADDED lines for the current state, as a watch from version 0 starts.
    fn snapshot(&self, filter: &Filter) -> Vec<String> {
        self.objects
            .iter()
            .filter(|((k, _, _), obj)| *k == filter.kind && filter.matches(obj))
            .map(|(_, obj)| watch_line("ADDED", obj))
            .collect()
    }
}

struct Shared {
    store: Mutex<Store>,
    /// Carries the current resourceVersion; watches wake on every change.
    rv_tx: watch::Sender<u64>,
    /// Bumped by `cut_watches()`.
    cut_tx: watch::Sender<u64>,
    /// Between two bookmarks of a watch that asked for them, in ms.
    bookmark_ms: AtomicU64,
}

impl Shared {
    /// Locks the store. A panic in another test thread must not wedge the
    /// server, so poisoning is ignored (the store is never left half-updated).
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, kind: Kind, mut obj: Value) -> u64 {
        let Some(map) = obj.as_object_mut() else {
            panic!("fake-kube: a {} must be a JSON object", kind.kind());
        };
        // The real server always fills these in.
        map.entry("apiVersion").or_insert_with(|| json!("v1"));
        map.entry("kind").or_insert_with(|| json!(kind.kind()));
        let name = field_value(&obj, "metadata.name");
        assert!(
            !name.is_empty(),
            "fake-kube: {} without metadata.name",
            kind.kind()
        );
        let namespace = if kind.namespaced() {
            field_value(&obj, "metadata.namespace")
        } else {
            String::new()
        };
        let rv = {
            let mut st = self.lock();
            st.rv += 1;
            let rv = st.rv;
            st.last_event_rv = rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            let old = st.objects.insert((kind, namespace, name), obj.clone());
            let ty = if old.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            };
            st.push_event(HistoryEvent {
                rv,
                kind,
                ty,
                object: obj,
                old,
            });
            rv
        };
        self.rv_tx.send_replace(rv);
        rv
    }

    fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        let (rv, obj) = {
            let mut st = self.lock();
            let mut obj = st
                .objects
                .remove(&(kind, namespace.to_string(), name.to_string()))?;
            st.rv += 1;
            let rv = st.rv;
            st.last_event_rv = rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.push_event(HistoryEvent {
                rv,
                kind,
                ty: EventType::Deleted,
                object: obj.clone(),
                old: None,
            });
            (rv, obj)
        };
        self.rv_tx.send_replace(rv);
        Some(obj)
    }
}

/// Decrements the open watch count when a watch task ends, however it ends.
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.open_watches = st.open_watches.saturating_sub(1);
    }
}

// ---------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------

/// A running fake API server. Dropping it stops the server and ends every
/// open connection.
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts the server on 127.0.0.1 on a free port, on its own thread with
    /// its own tokio runtime. Callable from sync and async tests alike.
    pub fn start() -> FakeKube {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("fake-kube: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fake-kube: set_nonblocking");
        let addr = listener.local_addr().expect("fake-kube: local_addr");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: INITIAL_RESOURCE_VERSION,
                last_event_rv: INITIAL_RESOURCE_VERSION,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                retained_from: INITIAL_RESOURCE_VERSION,
                expired_below: INITIAL_RESOURCE_VERSION,
                requests: Vec::new(),
                proxied: BTreeMap::new(),
                open_watches: 0,
            }),
            rv_tx: watch::Sender::new(INITIAL_RESOURCE_VERSION),
            cut_tx: watch::Sender::new(0),
            bookmark_ms: AtomicU64::new(BOOKMARK_INTERVAL.as_millis() as u64),
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fake-kube-{}", addr.port()))
            .spawn(move || serve(listener, server_shared, shutdown_rx))
            .expect("fake-kube: spawn server thread");
        FakeKube {
            addr,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The time between two bookmarks of the watches opened from now on
    /// (1 s unless set).
    pub fn set_bookmark_interval(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.shared.bookmark_ms.store(ms, Ordering::Relaxed);
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig with one cluster, a user with `token` as its bearer
    /// token (or no credentials) and a current context pointing at this
    /// server (default namespace `default`).
    fn kubeconfig_yaml(&self, token: Option<&str>) -> String {
        let user = match token {
            None => "{}".to_owned(),
            Some(token) => format!("\n    token: {token}"),
        };
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake-kube\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake-kube\n  user: {user}\n\
             contexts:\n\
             - name: fake-kube\n  context:\n    cluster: fake-kube\n    user: fake-kube\n    namespace: default\n\
             current-context: fake-kube\n\
             preferences: {{}}\n",
            url = self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(None))
    }

    /// A kubeconfig whose user sends `token`, the credentials kubedf also
    /// sends to kubelets in cluster mode.
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(Some(token)))
    }

    /// Adds or replaces (by namespace/name) a pod: ADDED or MODIFIED event.
    /// Returns the resourceVersion it was stored with.
    pub fn put_pod(&self, pod: Value) -> u64 {
        self.shared.put(Kind::Pod, pod)
    }

    /// Removes a pod: a DELETED event carrying its last state. `None` if it
    /// did not exist.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared.delete(Kind::Pod, namespace, name)
    }

    pub fn put_pvc(&self, pvc: Value) -> u64 {
        self.shared.put(Kind::Pvc, pvc)
    }

    pub fn put_pv(&self, pv: Value) -> u64 {
        self.shared.put(Kind::Pv, pv)
    }

    /// Adds or replaces a Node (cluster-scoped): ADDED or MODIFIED event.
    pub fn put_node(&self, node: Value) -> u64 {
        self.shared.put(Kind::Node, node)
    }

    /// Removes a Node: a DELETED event carrying its last state.
    /// Makes `GET /api/v1/nodes/<node>/proxy<path>` answer `status` and
    /// `body`, as the API server relays a kubelet's answer (a node with
    /// nothing set answers 503, as for a kubelet it cannot reach).
    pub fn set_node_proxy(&self, node: &str, path: &str, status: u16, body: String) {
        self.shared
            .lock()
            .proxied
            .insert((node.to_owned(), path.to_owned()), (status, body));
    }

    pub fn delete_node(&self, name: &str) -> Option<Value> {
        self.shared.delete(Kind::Node, "", name)
    }

    /// Abruptly ends every open watch stream (the connection is dropped
    /// mid-body, as when a load balancer or the API server goes away). Clients
    /// have to watch again from their last resourceVersion.
    pub fn cut_watches(&self) {
        self.shared.cut_tx.send_modify(|g| *g += 1);
    }

    /// Forgets all history and bumps the resourceVersion, so that a new watch
    /// from any resourceVersion handed out before this call gets a 410
    /// Expired ERROR event and the client must re-list. Open watches carry on
    /// (as on a real server); combine with `cut_watches()` to force the
    /// re-watch.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.rv += 1;
        st.history.clear();
        // No event carries the new version, so open watches that have seen
        // every change lose nothing...
        st.retained_from = st.last_event_rv;
        // ...but a new watch from any version handed out before is refused.
        st.expired_below = st.rv;
        // Open watches are not woken and never advance to the new version
        // (they move to `last_event_rv` only), so the versions their
        // bookmarks report stay pre-compaction. Otherwise a bookmark sent
        // between `compact()` and `cut_watches()` could let the client resume
        // without the 410 the test wants.
    }

    /// Number of watch streams currently open.
    fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    /// Blocks until at least `n` watches are open; false on timeout.
    pub fn wait_for_open_watches(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open_watches() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every request so far as `METHOD /path?k=v&...` (query decoded, in the
    /// client's order), e.g.
    /// `GET /api/v1/pods?fieldSelector=spec.nodeName=n1&limit=500` (a watcher's list).
    pub fn request_log(&self) -> Vec<String> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

fn serve(listener: StdTcpListener, shared: Arc<Shared>, shutdown: oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fake-kube-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-kube: cannot build tokio runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fake-kube: cannot use listener: {e}");
                return;
            }
        };
        let app = Router::new().fallback(handle).with_state(shared);
        // No graceful shutdown: it would wait for open watches (up to their
        // timeout). Returning here and dropping the runtime below cancels
        // every connection task instead.
        tokio::select! {
            res = axum::serve(listener, app).into_future() => {
                if let Err(e) = res {
                    eprintln!("fake-kube: server error: {e}");
                }
            }
            _ = shutdown => {}
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let logged = LoggedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: parse_query(req.uri().query().unwrap_or("")),
    };
    shared.lock().requests.push(logged.clone());
    if req.method() != Method::GET {
        return status_response(
            405,
            &format!("fake-kube: method {} is not supported", req.method()),
            None,
        );
    }
    let query = &logged.query;
    match route(&logged.path) {
        Some(Route::Collection { kind, namespace }) => {
            let filter = match Filter::new(kind, namespace, query) {
                Ok(f) => f,
                Err(msg) => return status_response(400, &msg, None),
            };
            if matches!(query_param(query, "watch"), Some("true" | "1")) {
                start_watch(&shared, filter, query)
            } else {
                list(&shared, &filter)
            }
        }
        Some(Route::Object {
            kind,
            namespace,
            name,
        }) => {
            let st = shared.lock();
            // As the API server: no resourceVersion is a quorum read, "0"
            // any version (the watch cache), a number at least that one;
            // anything else is refused.
            if let Some(rv) = query_param(query, "resourceVersion").filter(|rv| !rv.is_empty()) {
                match rv.parse::<u64>() {
                    Err(_) => {
                        return status_response(
                            400,
                            &format!(
                                "resourceVersion: Invalid value: \"{rv}\": must be a non-negative integer"
                            ),
                            None,
                        );
                    }
                    Ok(rv) if rv > st.rv => {
                        return status_response(504, "Too large resource version", None);
                    }
                    Ok(_) => {}
                }
            }
            match st.objects.get(&(kind, namespace, name.clone())) {
                Some(obj) => json_response(StatusCode::OK, obj),
                None => status_response(
                    404,
                    &format!("{} \"{name}\" not found", kind.plural()),
                    Some(json!({"name": name, "kind": kind.plural()})),
                ),
            }
        }
        Some(Route::NodeProxy { node, path }) => {
            let answer = shared.lock().proxied.get(&(node.clone(), path)).cloned();
            match answer {
                Some((code, body)) => Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .expect("proxied response"),
                None => status_response(
                    503,
                    &format!("error trying to reach service: dial tcp: node {node:?} unreachable"),
                    None,
                ),
            }
        }
        None => status_response(
            404,
            "the server could not find the requested resource",
            Some(json!({})),
        ),
    }
}

enum Route {
    /// `nodes/<node>/proxy<path>`: the API server relaying to a kubelet.
    NodeProxy { node: String, path: String },
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        namespace: String,
        name: String,
    },
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/api/v1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["nodes", node, "proxy", path @ ..] if !node.is_empty() => Some(Route::NodeProxy {
            node: (*node).to_string(),
            path: format!("/{}", path.join("/")),
        }),
        [plural] => Kind::from_plural(plural).map(|kind| Route::Collection {
            kind,
            namespace: None,
        }),
        [plural, name] => Kind::from_plural(plural)
            .filter(|k| !k.namespaced() && !name.is_empty())
            .map(|kind| Route::Object {
                kind,
                namespace: String::new(),
                name: (*name).to_string(),
            }),
        ["namespaces", ns, plural] => {
            Kind::from_plural(plural)
                .filter(|k| k.namespaced())
                .map(|kind| Route::Collection {
                    kind,
                    namespace: Some((*ns).to_string()),
                })
        }
        ["namespaces", ns, plural, name] => Kind::from_plural(plural)
            .filter(|k| k.namespaced() && !name.is_empty())
            .map(|kind| Route::Object {
                kind,
                namespace: (*ns).to_string(),
                name: (*name).to_string(),
            }),
        _ => None,
    }
}

fn list(shared: &Shared, filter: &Filter) -> Response {
    let st = shared.lock();
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|((k, _, _), obj)| *k == filter.kind && filter.matches(obj))
        .map(|(_, obj)| {
            let mut item = obj.clone();
            // The real server omits these on list items.
            if let Some(m) = item.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            item
        })
        .collect();
    let body = json!({
        "kind": filter.kind.list_kind(),
        "apiVersion": "v1",
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

/// Where a watch starts.
enum WatchStart {
    /// Replay the current state as ADDED events (resourceVersion absent or
    /// "0", or sendInitialEvents=true).
    Snapshot,
    /// Send the changes after this version.
    After(u64),
}

struct WatchSpec {
    filter: Filter,
    start: WatchStart,
    initial_events_end: bool,
    bookmarks: bool,
    bookmark_interval: Duration,
    timeout: Duration,
}

fn start_watch(shared: &Arc<Shared>, filter: Filter, query: &[(String, String)]) -> Response {
    let send_initial = query_param(query, "sendInitialEvents") == Some("true");
    let start = match query_param(query, "resourceVersion") {
        _ if send_initial => WatchStart::Snapshot,
        None | Some("" | "0") => WatchStart::Snapshot,
        Some(s) => match s.parse::<u64>() {
            Ok(n) => WatchStart::After(n),
            Err(_) => {
                return status_response(400, &format!("invalid resource version \"{s}\""), None);
            }
        },
    };
    let requested = query_param(query, "timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    // Counted here rather than in the task so that a test that sees the
    // response headers also sees the watch as open.
    shared.lock().open_watches += 1;
    let bookmark_interval = Duration::from_millis(shared.bookmark_ms.load(Ordering::Relaxed));
    let timeout = requested;
    let guard = OpenWatch(Arc::clone(shared));
    let spec = WatchSpec {
        filter,
        start,
        initial_events_end: send_initial,
        bookmarks: query_param(query, "allowWatchBookmarks") == Some("true"),
        bookmark_interval,
        timeout,
    };
    // Subscribe before reading the state, so no change can slip in between.
    let rv_rx = shared.rv_tx.subscribe();
    let cut_rx = shared.cut_tx.subscribe();
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(256);
    tokio::spawn(run_watch(
        Arc::clone(shared),
        spec,
        tx,
        rv_rx,
        cut_rx,
        guard,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Feeds one watch stream. Ends cleanly on timeout or after an ERROR event,
/// with a body error (connection dropped mid-chunk) on `cut_watches()`, and
/// when the client goes away.
async fn run_watch(
    shared: Arc<Shared>,
    spec: WatchSpec,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    mut rv_rx: watch::Receiver<u64>,
    mut cut_rx: watch::Receiver<u64>,
    _guard: OpenWatch,
) {
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);

    // Everything up to `cursor` has been sent (or did not match).
    let (mut cursor, first) = {
        let st = shared.lock();
        let first = match spec.start {
            WatchStart::Snapshot => Ok(st.snapshot(&spec.filter)),
            WatchStart::After(n) if n < st.expired_below => Err(expired_line(n, st.expired_below)),
            WatchStart::After(n) => st.events_after(&spec.filter, n),
        };
        let cursor = match spec.start {
            WatchStart::Snapshot => st.rv,
            WatchStart::After(n) => n.max(st.last_event_rv),
        };
        (cursor, first)
    };
    match first {
        Ok(lines) => {
            if !send_lines(&tx, lines).await {
                return;
            }
        }
        Err(line) => {
            // Like the real server: one ERROR event, then the stream ends.
            let _ = send_lines(&tx, vec![line]).await;
            return;
        }
    }
    if spec.initial_events_end {
        let line = bookmark_line(spec.filter.kind, cursor, true);
        if !send_lines(&tx, vec![line]).await {
            return;
        }
    } else if spec.bookmarks {
        let line = bookmark_line(spec.filter.kind, cursor, false);
        if !send_lines(&tx, vec![line]).await {
            return;
        }
    }

    let mut ticker = tokio::time::interval(spec.bookmark_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the start bookmark was sent above.
    ticker.tick().await;

    loop {
        let send_bookmark = tokio::select! {
            biased;
            _ = cut_rx.changed() => {
                let _ = tx
                    .send(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "fake-kube: watch cut")))
                    .await;
                return;
            }
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = ticker.tick(), if spec.bookmarks => true,
        };
        // Catch up before any bookmark, so that a bookmark never claims a
        // version whose events this watch has not been sent.
        let (lines, rv) = {
            let st = shared.lock();
            (st.events_after(&spec.filter, cursor), st.last_event_rv)
        };
        match lines {
            Ok(lines) => {
                cursor = cursor.max(rv);
                if !send_lines(&tx, lines).await {
                    return;
                }
            }
            Err(line) => {
                let _ = send_lines(&tx, vec![line]).await;
                return;
            }
        }
        if send_bookmark
            && !send_lines(&tx, vec![bookmark_line(spec.filter.kind, cursor, false)]).await
        {
            return;
        }
    }
}

/// False when the client has gone away.
async fn send_lines(tx: &mpsc::Sender<Result<Bytes, io::Error>>, lines: Vec<String>) -> bool {
    for line in lines {
        if tx.send(Ok(Bytes::from(line))).await.is_err() {
            return false;
        }
    }
    true
}

fn watch_line(ty: &str, object: &Value) -> String {
    let mut line = json!({"type": ty, "object": object}).to_string();
    line.push('\n');
    line
}

fn bookmark_line(kind: Kind, rv: u64, initial_events_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": kind.kind(), "apiVersion": "v1", "metadata": metadata}),
    )
}

fn expired_line(requested: u64, oldest: u64) -> String {
    watch_line(
        "ERROR",
        &status_body(
            410,
            &format!("too old resource version: {requested} ({oldest})"),
            None,
        ),
    )
}

fn status_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

fn status_body(code: u16, message: &str, details: Option<Value>) -> Value {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": status_reason(code),
        "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    body
}

fn status_response(code: u16, message: &str, details: Option<Value>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &status_body(code, message, details))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn query_param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// application/x-www-form-urlencoded decoding ('+' is a space).
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Object builders
// ---------------------------------------------------------------------------

/// RFC 3339 UTC timestamp with second precision, as in `creationTimestamp`.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn fnv1a(seed: u64, data: &str) -> u64 {
    data.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable UUIDv4-shaped uid derived from `seed`.
pub fn fake_uid(seed: &str) -> String {
    let a = fnv1a(0xcbf2_9ce4_8422_2325, seed);
    let b = fnv1a(0x8422_2325_cbf2_9ce4, seed);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// A pod as the API server returns it. `node` empty means unscheduled (no
/// `spec.nodeName`). `phase` is Pending, Running, Succeeded or Failed; the
/// status (conditions, IPs, container statuses) follows it. One container
/// mounts every volume at `/data/<volume name>`.
pub fn pod(ns: &str, name: &str, uid: &str, node: &str, phase: &str, volumes: Vec<Value>) -> Value {
    let ts = now_rfc3339();
    let mounts: Vec<Value> = volumes
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .map(|v| json!({"name": v, "mountPath": format!("/data/{v}")}))
        .collect();
    let image = "registry.k8s.io/pause:3.10";
    let mut spec = json!({
        "volumes": volumes,
        "containers": [{
            "name": "app",
            "image": image,
            "resources": {},
            "volumeMounts": mounts,
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
    });
    if !node.is_empty() {
        spec["nodeName"] = json!(node);
    }

    let h = fnv1a(0xcbf2_9ce4_8422_2325, &format!("{ns}/{name}"));
    let pod_ip = format!("10.244.{}.{}", (h >> 8) & 0xff, (h & 0xfd) + 2);
    let host_ip = format!("10.0.0.{}", (fnv1a(0xcbf2_9ce4_8422_2325, node) & 0xfd) + 2);
    let cond = |ty: &str, status: &str| json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": ts});
    let mut status = json!({"phase": phase, "qosClass": "BestEffort"});
    if node.is_empty() {
        let mut c = cond("PodScheduled", "False");
        c["reason"] = json!("Unschedulable");
        c["message"] = json!("0/1 nodes are available");
        status["conditions"] = json!([c]);
        return pod_object(ns, name, uid, &ts, spec, status);
    }
    let running = phase == "Running";
    let finished = matches!(phase, "Succeeded" | "Failed");
    let started = running || finished;
    status["conditions"] = json!([
        cond(
            "PodReadyToStartContainers",
            if running { "True" } else { "False" }
        ),
        cond("Initialized", "True"),
        cond("Ready", if running { "True" } else { "False" }),
        cond("ContainersReady", if running { "True" } else { "False" }),
        cond("PodScheduled", "True"),
    ]);
    status["hostIP"] = json!(host_ip);
    status["hostIPs"] = json!([{"ip": host_ip}]);
    status["startTime"] = json!(ts);
    if started {
        status["podIP"] = json!(pod_ip);
        status["podIPs"] = json!([{"ip": pod_ip}]);
    }
    let state = if running {
        json!({"running": {"startedAt": ts}})
    } else if finished {
        let exit_code = if phase == "Succeeded" { 0 } else { 1 };
        let reason = if phase == "Succeeded" {
            "Completed"
        } else {
            "Error"
        };
        json!({"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": ts, "finishedAt": ts, "containerID": format!("containerd://{}", fake_uid(name).replace('-', ""))}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    let mut cs = json!({
        "name": "app",
        "state": state,
        "lastState": {},
        "ready": running,
        "restartCount": 0,
        "image": image,
        "imageID": "",
        "started": running,
    });
    if started {
        cs["imageID"] = json!(
            "registry.k8s.io/pause@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a"
        );
        cs["containerID"] = json!(format!(
            "containerd://{}",
            fake_uid(&format!("{uid}/app")).replace('-', "")
        ));
    }
    status["containerStatuses"] = json!([cs]);
    pod_object(ns, name, uid, &ts, spec, status)
}

fn pod_object(ns: &str, name: &str, uid: &str, ts: &str, spec: Value, status: Value) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "creationTimestamp": ts,
            "labels": {"app": name},
        },
        "spec": spec,
        "status": status,
    })
}

/// A pod volume backed by an existing claim.
pub fn pvc_volume(vol_name: &str, claim: &str) -> Value {
    json!({"name": vol_name, "persistentVolumeClaim": {"claimName": claim}})
}

/// A generic ephemeral volume. Kubernetes names its claim
/// `<pod name>-<volume name>`.
pub fn ephemeral_volume(vol_name: &str) -> Value {
    json!({
        "name": vol_name,
        "ephemeral": {
            "volumeClaimTemplate": {
                "metadata": {"creationTimestamp": null},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "storageClassName": "standard",
                    "volumeMode": "Filesystem",
                },
            },
        },
    })
}

pub fn emptydir_volume(name: &str) -> Value {
    json!({"name": name, "emptyDir": {}})
}

/// A claim for 1Gi of class `standard`. With `volume_name` it is bound to
/// that PV (spec.volumeName, bind annotations, status capacity); `phase` is
/// Bound, Pending or Lost.
pub fn pvc(ns: &str, name: &str, volume_name: Option<&str>, phase: &str) -> Value {
    let mut obj = json!({
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": fake_uid(&format!("pvc/{ns}/{name}")),
            "creationTimestamp": now_rfc3339(),
            "finalizers": ["kubernetes.io/pvc-protection"],
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "standard",
            "volumeMode": "Filesystem",
        },
        "status": {"phase": phase},
    });
    if let Some(volume) = volume_name {
        obj["metadata"]["annotations"] = json!({
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
        });
        obj["spec"]["volumeName"] = json!(volume);
    }
    if phase == "Bound" {
        obj["status"]["accessModes"] = json!(["ReadWriteOnce"]);
        obj["status"]["capacity"] = json!({"storage": "1Gi"});
    }
    obj
}

fn pv_object(
    name: &str,
    capacity: &str,
    storage_class: &str,
    reclaim: &str,
    volume_mode: &str,
    source: (&str, Value),
) -> Value {
    let mut obj = json!({
        "kind": "PersistentVolume",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": fake_uid(&format!("pv/{name}")),
            "creationTimestamp": now_rfc3339(),
            "finalizers": ["kubernetes.io/pv-protection"],
        },
        "spec": {
            "capacity": {"storage": capacity},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": storage_class,
            "volumeMode": volume_mode,
        },
        "status": {"phase": "Available", "lastPhaseTransitionTime": now_rfc3339()},
    });
    obj["spec"][source.0] = source.1;
    obj
}

/// A dynamically provisioned CSI volume (`volume_mode` Filesystem or Block).
/// Status Available; see `bind_pv`.
pub fn pv_csi(name: &str, driver: &str, handle: &str, capacity: &str, volume_mode: &str) -> Value {
    let mut csi = json!({
        "driver": driver,
        "volumeHandle": handle,
        "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": format!("1700000000000-1234-{driver}")},
    });
    if volume_mode != "Block" {
        csi["fsType"] = json!("ext4");
    }
    let mut obj = pv_object(
        name,
        capacity,
        "standard",
        "Delete",
        volume_mode,
        ("csi", csi),
    );
    obj["metadata"]["annotations"] = json!({"pv.kubernetes.io/provisioned-by": driver});
    obj["metadata"]["finalizers"] = json!([
        "external-provisioner.volume.kubernetes.io/finalizer",
        "kubernetes.io/pv-protection"
    ]);
    obj
}

pub fn pv_host_path(name: &str, path: &str, capacity: &str) -> Value {
    pv_object(
        name,
        capacity,
        "manual",
        "Retain",
        "Filesystem",
        ("hostPath", json!({"path": path, "type": ""})),
    )
}

/// A local volume (real ones also carry `spec.nodeAffinity`).
pub fn pv_local(name: &str, path: &str, capacity: &str) -> Value {
    pv_object(
        name,
        capacity,
        "local-storage",
        "Retain",
        "Filesystem",
        ("local", json!({"path": path})),
    )
}

pub fn pv_nfs(name: &str, server: &str, path: &str, capacity: &str) -> Value {
    pv_object(
        name,
        capacity,
        "nfs",
        "Retain",
        "Filesystem",
        ("nfs", json!({"server": server, "path": path})),
    )
}

/// Marks `pv` Bound to `pvc` (spec.claimRef with the claim's namespace, name,
/// uid and resourceVersion, when present).
pub fn bind_pv(mut pv: Value, pvc: &Value) -> Value {
    let mut claim_ref = json!({
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": field_value(pvc, "metadata.namespace"),
        "name": field_value(pvc, "metadata.name"),
    });
    for (key, field) in [
        ("uid", "metadata.uid"),
        ("resourceVersion", "metadata.resourceVersion"),
    ] {
        let value = field_value(pvc, field);
        if !value.is_empty() {
            claim_ref[key] = json!(value);
        }
    }
    pv["spec"]["claimRef"] = claim_ref;
    pv["status"]["phase"] = json!("Bound");
    pv
}

/// A Node as the API server serves it: its addresses (InternalIP first, then
/// Hostname, as kubelet reports them) and its kubelet's port in
/// `status.daemonEndpoints`.
pub fn node(name: &str, internal_ip: &str, kubelet_port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": fake_uid(&format!("node/{name}")),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}
