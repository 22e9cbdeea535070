//! How kubedf's blocking work runs, and what it costs the process: not a
//! source of figures, but the machinery every source call goes through.
//!
//! - [`lane`]: a few long-lived threads for the short blocking calls of
//!   measurements, in place of one tokio blocking task per call.
//! - [`inflight`]: at most one call in flight per path; a caller joins the
//!   call already running for its path.
//! - [`guard`]: the one guarded blocking call (on the lane, under a timeout,
//!   one call in flight per path in the process, one mapping to a reason).
//! - [`heap`]: hands freed heap pages back to the kernel after a transient
//!   peak.

pub mod guard;
pub mod heap;
pub mod inflight;
pub mod lane;
