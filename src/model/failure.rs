//! Why something measured on a schedule has no figure: one [`Reason`]
//! vocabulary for every measurement (a PVC, a part of a pod), so the
//! `reason` label means the same in `kubedf_volume_stats_error` and
//! `kubedf_pod_storage_error`, and an alert written for one half catches the
//! other.

use std::fmt;

/// Why a measurement has no figure; the `reason` label of the error
/// families. Each value names the cause, not the half that met it: a walk
/// that ran out of its budget is `walk_budget_exceeded` whether it walked a
/// PVC or an emptyDir.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A filesystem call did not answer in time, or an earlier call for the
    /// same path is still hung.
    Timeout,
    /// The volume directory is not a mount point: statfs would report the
    /// node's root filesystem.
    NotMounted,
    /// The directory, file or device does not exist (yet).
    NotFound,
    /// A du-method walk ran out of `--volume-stats-walk-timeout`.
    WalkBudgetExceeded,
    /// The PVC does not exist.
    PvcNotFound,
    /// The PVC is not bound to a PV.
    PvcUnbound,
    /// The PV the PVC is bound to does not exist.
    PvNotFound,
    /// A path from the API, the runtime or the config kubedf refuses
    /// (relative, leaving its directory, a symlink loop).
    BadPath,
    /// The Kubernetes API did not answer.
    ApiError,
    /// The container runtime did not answer ListContainers /
    /// ListContainerStats.
    CriUnavailable,
    /// The runtime listed the container but reported no writable layer.
    NoCriStats,
    /// Any other I/O error (permissions, a failed read, an entry the walk
    /// could not read).
    IoError,
    /// Cluster mode: the kubelet refused kubedf's credentials (HTTP 401).
    Unauthorized,
    /// Cluster mode: the kubelet's authorizer refused (HTTP 403): kubedf's
    /// service account lacks `get` on `nodes/stats` (a poll) or
    /// `nodes/configz` (a read of `/configz`).
    Forbidden,
    /// Cluster mode: the kubelet answered another error status.
    HttpError,
    /// Cluster mode: the kubelet's TLS handshake failed (an unknown CA, a
    /// name or address the certificate does not cover).
    Tls,
    /// Cluster mode: the connection to the kubelet failed or broke.
    Connection,
    /// Cluster mode: the kubelet's answer was larger than the body cap.
    TooLarge,
    /// Cluster mode: the answer was not a Summary (or another node's), or
    /// not a kubelet configuration kubelet itself would accept.
    BadBody,
    /// Cluster mode: the Node has no usable address or kubelet port.
    NoAddress,
}

impl Reason {
    /// Every reason, in the order the docs list them.
    pub const ALL: [Reason; 20] = [
        Reason::Timeout,
        Reason::NotMounted,
        Reason::NotFound,
        Reason::WalkBudgetExceeded,
        Reason::PvcNotFound,
        Reason::PvcUnbound,
        Reason::PvNotFound,
        Reason::BadPath,
        Reason::ApiError,
        Reason::CriUnavailable,
        Reason::NoCriStats,
        Reason::IoError,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::HttpError,
        Reason::Tls,
        Reason::Connection,
        Reason::TooLarge,
        Reason::BadBody,
        Reason::NoAddress,
    ];

    /// The `reason` label value.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::NotMounted => "not_mounted",
            Reason::NotFound => "not_found",
            Reason::WalkBudgetExceeded => "walk_budget_exceeded",
            Reason::PvcNotFound => "pvc_not_found",
            Reason::PvcUnbound => "pvc_unbound",
            Reason::PvNotFound => "pv_not_found",
            Reason::BadPath => "bad_path",
            Reason::ApiError => "api_error",
            Reason::CriUnavailable => "cri_unavailable",
            Reason::NoCriStats => "no_cri_stats",
            Reason::IoError => "io_error",
            Reason::Unauthorized => "unauthorized",
            Reason::Forbidden => "forbidden",
            Reason::HttpError => "http_error",
            Reason::Tls => "tls",
            Reason::Connection => "connection",
            Reason::TooLarge => "too_large",
            Reason::BadBody => "bad_body",
            Reason::NoAddress => "no_address",
        }
    }

    /// The reason of an I/O error: a missing path is `not_found`, anything
    /// else `io_error`.
    pub fn of_io(e: &std::io::Error) -> Reason {
        if e.kind() == std::io::ErrorKind::NotFound {
            Reason::NotFound
        } else {
            Reason::IoError
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reason with the message that explains it (naming the path or object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Failure {}

/// How a state moved from one reading to the next: what a failing source or
/// measurement logs, once per change of state and never once per sample.
/// `E` is the failure as compared (a [`Failure`], a message): a different
/// failure is a change, the same one again is not.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a, E> {
    /// A failure that was not there before, or another one: log it.
    Failed(&'a E),
    /// Failing before, fine now: log the recovery, with what it recovered
    /// from.
    Recovered(&'a E),
    /// Nothing to log.
    Unchanged,
}

impl<'a, E: PartialEq> Change<'a, E> {
    pub fn of(before: Option<&'a E>, after: Option<&'a E>) -> Change<'a, E> {
        match (before, after) {
            (before, Some(now)) if before != Some(now) => Change::Failed(now),
            (Some(was), None) => Change::Recovered(was),
            _ => Change::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn label_values_are_distinct_snake_case_and_all_listed() {
        let names: HashSet<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Reason::ALL.len(), "two reasons share a label");
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        // The values the pod half used to have are gone (renamed).
        assert!(!names.contains("walk_failed") && !names.contains("budget_exceeded"));
    }

    #[test]
    fn a_change_of_state_is_logged_once() {
        let a = Failure::new(Reason::Timeout, "statfs /a");
        let b = Failure::new(Reason::NotFound, "statfs /a");
        assert_eq!(Change::of(None, Some(&a)), Change::Failed(&a));
        assert_eq!(Change::of(Some(&a), Some(&a)), Change::Unchanged);
        assert_eq!(Change::of(Some(&a), Some(&b)), Change::Failed(&b));
        assert_eq!(Change::of(Some(&b), None), Change::Recovered(&b));
        assert_eq!(Change::<Failure>::of(None, None), Change::Unchanged);
    }

    #[test]
    fn a_missing_path_is_not_found_and_other_io_errors_io_error() {
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(Reason::of_io(&gone), Reason::NotFound);
        assert_eq!(Reason::of_io(&denied), Reason::IoError);
    }
}
