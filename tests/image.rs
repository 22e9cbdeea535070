//! Real containers under a real containerd (Debian's package, private socket),
//! run through the CRI as kubelet runs them (tests/support/cri.rs), from
//! images the tests assemble themselves from Debian's `busybox-static`.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::containerd::{Containerd, Image};
use support::cri::{ContainerSpec, Cri, PodSpec, proto};
use support::*;

const TOOLS: &[&str] = &[
    "containerd",
    "ctr",
    "runc",
    "containerd-shim-runc-v2",
    "busybox",
];
const MIB: u64 = 1 << 20;

/// The overlay upper dir behind a running container's rootfs, from the host's
/// mountinfo (the shim mounts `<state>/.../<id>/rootfs` in this namespace).
fn upper_dir(container_id: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let suffix = format!("/{container_id}/rootfs");
    info.lines().find_map(|l| {
        let mut parts = l.split(" - ");
        let head = parts.next()?;
        let tail = parts.next()?;
        if !head.split(' ').nth(4)?.ends_with(&suffix) {
            return None;
        }
        tail.split(' ')
            .nth(2)?
            .split(',')
            .find_map(|o| o.strip_prefix("upperdir=").map(str::to_owned))
    })
}

/// `du -sxB1` and `find -xdev | wc -l` of a directory.
fn du_and_inodes(dir: &Path) -> (u64, u64) {
    let du = Command::new("du")
        .arg("-sxB1")
        .arg(dir)
        .output()
        .expect("du");
    let bytes = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a number");
    let find = Command::new("find")
        .arg(dir)
        .arg("-xdev")
        .output()
        .expect("find");
    let inodes = String::from_utf8_lossy(&find.stdout).lines().count() as u64;
    (bytes, inodes)
}

#[test]
fn a_pod_writes_its_rootfs_and_logs_as_under_kubelet() {
    let test = "a_pod_writes_its_rootfs_and_logs_as_under_kubelet";
    if !prerequisites(test, need_root_and(TOOLS)) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let containerd = Containerd::start(&dir.path().join("cd"), 256 << 20).expect("containerd");
    let cri = Cri::connect(&containerd).expect("CRI");
    let image = containerd
        .import_image(&Image::busybox("writer").expect("busybox image"))
        .expect("import");
    let logs = dir.path().join("log-pods");
    let kubelet_root = dir.path().join("kubelet");
    let mut spec = PodSpec::new(
        "team-a",
        "writer",
        "0b1c2d3e-0000-4000-8000-000000000001",
        &logs,
    );
    spec.kubelet_root = Some(kubelet_root.clone());
    let mut pod = cri.run_pod(&spec).expect("RunPodSandbox");

    // 8 MiB into the writable layer, then 2 MiB to stdout in 64-byte lines,
    // then stay up until stopped (ListContainerStats covers running containers).
    const ROOTFS_MIB: u64 = 8;
    const STDOUT_LINES: usize = (2 * MIB / 64) as usize;
    let line = "0123456789abcdef".repeat(4)[..63].to_owned();
    let script = format!(
        "dd if=/dev/urandom of=/written bs=1048576 count={ROOTFS_MIB} 2>/dev/null && \
         yes {line} | head -c {} && \
         trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
        2 * MIB
    );
    let container = ContainerSpec::new("writer", &image).shell(&script);
    let started = pod.start(&container).expect("start container");
    assert_eq!(
        started.log_path,
        logs.join("team-a_writer_0b1c2d3e-0000-4000-8000-000000000001/writer/0.log")
    );

    // The CRI log file: one `<time> stdout F <line>` record per line.
    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        let text = std::fs::read_to_string(&started.log_path).unwrap_or_default();
        let n = text
            .lines()
            .filter(|l| l.split(' ').skip(1).collect::<Vec<_>>() == ["stdout", "F", &line])
            .count();
        if n >= STDOUT_LINES || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        records,
        STDOUT_LINES,
        "log records in {}",
        started.log_path.display()
    );
    let log_size = std::fs::metadata(&started.log_path).expect("log").len();
    assert!(
        log_size > 2 * MIB,
        "log file holds the 2 MiB plus CRI prefixes"
    );

    // containerd's own answer: the writable layer holds the 8 MiB, and agrees
    // with an independent du/find of the overlay upper dir once refreshed.
    let upper = (containerd.snapshotter() == "overlayfs")
        .then(|| upper_dir(&started.id).expect("overlay upper dir of the container"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let (stats, independent) = loop {
        let stats = cri
            .container_stats(&started.id)
            .expect("ListContainerStats");
        let layer = stats.writable_layer.clone().expect("writable_layer");
        let used = layer.used_bytes.map(|v| v.value).unwrap_or(0);
        let inodes = layer.inodes_used.map(|v| v.value).unwrap_or(0);
        let independent = upper.as_ref().map(|u| du_and_inodes(Path::new(u)));
        let agreed =
            used >= ROOTFS_MIB * MIB && independent.is_none_or(|(b, i)| (b, i) == (used, inodes));
        if agreed || Instant::now() > deadline {
            break (stats, independent);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let layer = stats.writable_layer.clone().expect("writable_layer");
    let used = layer.used_bytes.map(|v| v.value).unwrap_or(0);
    let inodes = layer.inodes_used.map(|v| v.value).unwrap_or(0);
    eprintln!(
        "writable layer: {used} bytes, {inodes} inodes; du/find of {upper:?}: {independent:?}"
    );
    assert!(
        (ROOTFS_MIB * MIB..(ROOTFS_MIB + 1) * MIB).contains(&used),
        "writable layer used bytes {used}"
    );
    assert!(inodes >= 2, "writable layer inodes {inodes}");
    if let Some(independent) = independent {
        assert_eq!(independent, (used, inodes), "du -sxB1 / find of {upper:?}");
    }
    let attrs = stats.attributes.expect("attributes");
    assert_eq!(attrs.id, started.id);
    assert_eq!(attrs.metadata.expect("metadata").name, "writer");
    for (k, v) in [
        ("io.kubernetes.pod.name", "writer"),
        ("io.kubernetes.pod.namespace", "team-a"),
        (
            "io.kubernetes.pod.uid",
            "0b1c2d3e-0000-4000-8000-000000000001",
        ),
        ("io.kubernetes.container.name", "writer"),
    ] {
        assert_eq!(
            attrs.labels.get(k).map(String::as_str),
            Some(v),
            "label {k}"
        );
    }
    // The sandbox itself is no container of ListContainerStats.
    let all = cri
        .list_container_stats(proto::ContainerStatsFilter {
            pod_sandbox_id: pod.sandbox_id().to_owned(),
            ..Default::default()
        })
        .expect("ListContainerStats by sandbox");
    assert_eq!(all.len(), 1);
    assert!(
        kubelet_root
            .join("pods/0b1c2d3e-0000-4000-8000-000000000001/etc-hosts")
            .is_file()
    );

    let sandbox = pod.sandbox_id().to_owned();
    pod.remove().expect("stop and remove");
    let left = containerd
        .ctr_ns()
        .args(["containers", "ls", "-q"])
        .run(Duration::from_secs(60))
        .expect("ctr containers ls");
    assert!(
        !left.contains(&sandbox) && !left.contains(&started.id),
        "containers left after cleanup: {left}"
    );
}
