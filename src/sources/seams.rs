//! The seams the measurement loops are built on: what they need of the
//! node's pods, of the PVC/PV lookup and of the container runtime, as
//! traits. [`Kube`] implements
//! them for the real cluster; the loops' unit tests hand in fakes and run
//! them on tokio's paused clock, without an API server, mounts or root.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cri::{CriClient, RuntimeContainers};
use super::kube::{ClaimState, Kube};
use crate::model::{PodVolumes, PvInfo, SourceStatus};

/// The node's pods, kept current by a watch.
pub trait PodSource: Send + Sync + 'static {
    /// Marked changed after every event: the pods or the API's health may
    /// have changed.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// A number that changes whenever the pod set may have changed.
    fn version(&self) -> u64;
    /// The pods in the order they were first seen, shared with the watch's
    /// store rather than copied: a loop that keeps a pod keeps its `Arc`.
    fn pods(&self) -> Vec<Arc<PodVolumes>>;
    /// The API as the `kubernetes` source.
    fn source_status(&self) -> SourceStatus;
    /// Waits (bounded) until the first list has arrived.
    fn wait_synced(&self, timeout: Duration) -> impl Future<Output = bool> + Send;
}

/// GETs of PVCs and PVs; `Ok(None)` when the object does not exist, `Err`
/// when the API did not answer.
pub trait ClaimApi: Clone + Send + Sync + 'static {
    fn claim(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<ClaimState>, String>> + Send;
    fn volume(
        &self,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Result<PvInfo, String>>, String>> + Send;
}

impl PodSource for Kube {
    fn subscribe(&self) -> watch::Receiver<u64> {
        Kube::subscribe(self)
    }
    fn version(&self) -> u64 {
        Kube::version(self)
    }
    fn pods(&self) -> Vec<Arc<PodVolumes>> {
        Kube::pods(self)
    }
    fn source_status(&self) -> SourceStatus {
        Kube::source_status(self)
    }
    fn wait_synced(&self, timeout: Duration) -> impl Future<Output = bool> + Send {
        Kube::wait_synced(self, timeout)
    }
}

impl ClaimApi for Kube {
    fn claim(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<ClaimState>, String>> + Send {
        Kube::claim(self, namespace, name, timeout)
    }
    fn volume(
        &self,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Result<PvInfo, String>>, String>> + Send {
        Kube::volume(self, name, timeout)
    }
}

/// The container runtime's running containers and their writable layers.
pub trait ContainerRuntime: Send + Sync + 'static {
    fn running_containers(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<RuntimeContainers, String>> + Send;
}

impl ContainerRuntime for CriClient {
    async fn running_containers(&self, timeout: Duration) -> Result<RuntimeContainers, String> {
        CriClient::running_containers(self, timeout)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Fakes of the seams for the loops' unit tests.
#[cfg(test)]
pub mod fakes {
    use std::future::Future;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::sync::watch;

    use super::PodSource;
    use crate::model::{PodVolumes, SourceId, SourceStatus};

    pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A running pod of namespace `shop` with the PVCs `claims` and no
    /// ephemeral-storage spec.
    pub fn pod(name: &str, uid: &str, claims: &[&str]) -> PodVolumes {
        PodVolumes {
            namespace: "shop".into(),
            name: name.into(),
            uid: uid.into(),
            running: true,
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
            storage: Default::default(),
        }
    }

    /// The pod watch: a list of pods and a version bumped on each change.
    #[derive(Clone)]
    pub struct FakePods {
        pods: Arc<Mutex<(u64, Vec<PodVolumes>)>>,
        events: Arc<watch::Sender<u64>>,
    }

    impl FakePods {
        pub fn new(pods: Vec<PodVolumes>) -> FakePods {
            FakePods {
                pods: Arc::new(Mutex::new((1, pods))),
                events: Arc::new(watch::Sender::new(1)),
            }
        }

        pub fn set(&self, pods: Vec<PodVolumes>) {
            let mut state = lock(&self.pods);
            state.0 += 1;
            state.1 = pods;
            self.events.send_replace(state.0);
        }
    }

    impl PodSource for FakePods {
        fn subscribe(&self) -> watch::Receiver<u64> {
            self.events.subscribe()
        }
        fn version(&self) -> u64 {
            lock(&self.pods).0
        }
        fn pods(&self) -> Vec<Arc<PodVolumes>> {
            lock(&self.pods).1.iter().cloned().map(Arc::new).collect()
        }
        fn source_status(&self) -> SourceStatus {
            SourceStatus {
                source: SourceId::Kubernetes,
                up: true,
                last_success: None,
                duration: None,
                error: None,
            }
        }
        fn wait_synced(&self, _: Duration) -> impl Future<Output = bool> + Send {
            std::future::ready(true)
        }
    }
}
