pub mod kubelet;
pub mod collector;
pub mod registry;
pub mod snapshot;
pub mod sources;
