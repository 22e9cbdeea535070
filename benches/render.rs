//! Placeholder replaced by the benchmark harness work.
fn main() {}
