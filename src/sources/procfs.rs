//! Process limits from /proc, as kubelet's rlimit stats: maxpid is the lower
//! of kernel.pid_max and kernel.threads-max, curproc the number of threads
//! (the figure after '/' in /proc/loadavg's fourth field).

use std::path::{Path, PathBuf};

use procfs_core::{FromRead, LoadAverage};
use thiserror::Error;

use crate::model::Rlimit;

#[derive(Debug, Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: expected a whole number, found {found:?}")]
    NotANumber { path: PathBuf, found: String },
    #[error("cannot parse {path}: {message}")]
    LoadAvg { path: PathBuf, message: String },
}

fn read_number(path: &Path) -> Result<i64, ProcError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.trim().parse().map_err(|_| ProcError::NotANumber {
        path: path.to_path_buf(),
        found: text.trim().chars().take(40).collect(),
    })
}

/// Reads the PID figures under `procfs` (normally /proc). Blocking.
pub fn read_rlimit(procfs: &Path) -> Result<Rlimit, ProcError> {
    let pid_max = read_number(&procfs.join("sys/kernel/pid_max"))?;
    let threads_max = read_number(&procfs.join("sys/kernel/threads-max"))?;
    let loadavg_path = procfs.join("loadavg");
    let loadavg = LoadAverage::from_file(&loadavg_path).map_err(|e| ProcError::LoadAvg {
        path: loadavg_path.clone(),
        message: e.to_string(),
    })?;
    Ok(Rlimit {
        maxpid: pid_max.min(threads_max),
        curproc: i64::from(loadavg.max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(pid_max: &str, threads_max: &str, loadavg: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/pid_max"), pid_max).unwrap();
        std::fs::write(dir.path().join("sys/kernel/threads-max"), threads_max).unwrap();
        std::fs::write(dir.path().join("loadavg"), loadavg).unwrap();
        dir
    }

    #[test]
    fn maxpid_is_the_lower_limit_and_curproc_counts_threads() {
        let dir = fake_proc("4194304\n", "254751\n", "0.52 0.58 0.59 3/1187 54321\n");
        let r = read_rlimit(dir.path()).unwrap();
        assert_eq!(
            r,
            Rlimit {
                maxpid: 254_751,
                curproc: 1187
            }
        );
        assert_eq!(r.available(), 253_564);
        let dir = fake_proc("32768\n", "254751\n", "0.00 0.01 0.05 1/95 700\n");
        assert_eq!(read_rlimit(dir.path()).unwrap().maxpid, 32768);
    }

    #[test]
    fn garbage_names_the_file() {
        let dir = fake_proc("lots\n", "1\n", "0 0 0 1/1 1\n");
        let err = read_rlimit(dir.path()).unwrap_err().to_string();
        assert!(err.contains("pid_max") && err.contains("lots"), "{err}");
        let dir = fake_proc("10\n", "10\n", "garbage\n");
        let err = read_rlimit(dir.path()).unwrap_err().to_string();
        assert!(err.contains("loadavg"), "{err}");
        let err = read_rlimit(Path::new("/nonexistent/proc"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/proc/sys/kernel/pid_max"),
            "{err}"
        );
    }

    #[test]
    fn this_machine() {
        let r = read_rlimit(Path::new("/proc")).unwrap();
        assert!(
            r.maxpid > 0 && r.curproc > 0 && r.curproc < r.maxpid,
            "{r:?}"
        );
    }
}
