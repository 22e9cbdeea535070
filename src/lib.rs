pub mod kubelet;
pub mod sources;
