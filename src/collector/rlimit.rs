//! rlimit: PID headroom, as kubelet's `node.rlimit` stats.
//!
//! Source: `/proc/sys/kernel/pid_max`, `/proc/sys/kernel/threads-max` and
//! `/proc/loadavg` under `--path.procfs`.
//!
//! Families: `kubedf_rlimit_maxpid`, `kubedf_rlimit_curproc`.

use super::{Collector, Desc, Incomplete, Sink};
use crate::model::Snapshot;
use crate::model::SourceId;

pub static MAXPID: Desc = Desc::gauge(
    "kubedf_rlimit_maxpid",
    "Maximum number of process IDs on the node: the lower of kernel.pid_max and kernel.threads-max.",
    None,
    &[],
);
pub static CURPROC: Desc = Desc::gauge(
    "kubedf_rlimit_curproc",
    "Number of processes and threads on the node, from /proc/loadavg.",
    None,
    &[],
);

static DESCS: [&Desc; 2] = [&MAXPID, &CURPROC];

#[derive(Debug)]
pub struct RlimitCollector;

impl Collector for RlimitCollector {
    fn name(&self) -> &'static str {
        "rlimit"
    }

    fn description(&self) -> &'static str {
        "PID limit and number of running processes and threads"
    }

    fn descs(&self) -> &'static [&'static Desc] {
        &DESCS
    }

    fn sources(&self) -> &'static [SourceId] {
        &[SourceId::Procfs]
    }

    fn collect(&self, snapshot: &Snapshot, out: &mut Sink) -> Result<(), Incomplete> {
        let r = snapshot.rlimit()?;
        out.add(&MAXPID, [""; 0], r.maxpid);
        out.add(&CURPROC, [""; 0], r.curproc);
        Ok(())
    }
}
