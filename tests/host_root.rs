//! Host paths resolved inside `--path.rootfs` as the host resolves them.
//!
//! - Property: for random trees of directories, files and symlinks (absolute
//!   and relative, climbing with `..`, chains, loops) and random host paths,
//!   kubedf's resolution (the kernel's `openat2` and the userspace emulation
//!   alike) equals the host's own, chrooted into the tree: busybox's
//!   `realpath` where the path exists, `ELOOP` where the kernel meets a loop;
//!   elsewhere the two agree. Nothing ever resolves outside the tree.
//! - A host whose containerd root is an absolute symlink to another disk: the
//!   imagefs, image GC and imagefs eviction figures are that disk's.
//! - hostPath PVs whose paths cross symlinks: measured at the target inside
//!   the host root (du's figures), never outside it.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kubedf::sources::{HostPathError, HostRoot};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use testkit::containerd::Containerd;
use testkit::fake_kube::{self, FakeKube};
use testkit::*;

const BUSYBOX: &str = "/bin/busybox";

/// Directory and file names, link names, and the components of link
/// targets and host paths.
const NAMES: [&str; 3] = ["a", "b", "c"];
const LINKS: [&str; 3] = ["l", "m", "n"];
const COMPONENTS: [&str; 8] = ["a", "b", "c", "l", "m", "n", "..", "."];

#[derive(Clone, Debug)]
struct Link {
    dir: Vec<&'static str>,
    name: &'static str,
    absolute: bool,
    target: Vec<&'static str>,
}

#[derive(Clone, Debug)]
struct Tree {
    dirs: Vec<Vec<&'static str>>,
    files: Vec<(Vec<&'static str>, &'static str)>,
    links: Vec<Link>,
}

fn names(max: usize) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::collection::vec(select(&NAMES[..]), 0..=max)
}

fn tree() -> impl Strategy<Value = Tree> {
    let link = (
        names(2),
        select(&LINKS[..]),
        any::<bool>(),
        proptest::collection::vec(select(&COMPONENTS[..]), 0..=5),
    )
        .prop_map(|(dir, name, absolute, target)| Link {
            dir,
            name,
            absolute,
            target,
        });
    (
        proptest::collection::vec(names(3), 1..7),
        proptest::collection::vec((names(2), select(&NAMES[..])), 0..3),
        proptest::collection::vec(link, 0..8),
    )
        .prop_map(|(dirs, files, links)| Tree { dirs, files, links })
}

/// A tree and host paths to resolve in it: most begin with one of the
/// tree's directories or links, so that many exist, and go on with random
/// components (`..` and `.` included).
fn tree_and_paths() -> impl Strategy<Value = (Tree, Vec<String>)> {
    tree().prop_flat_map(|tree| {
        let mut prefixes: Vec<Vec<&'static str>> = vec![Vec::new()];
        prefixes.extend(tree.dirs.iter().cloned());
        prefixes.extend(tree.links.iter().map(|l| {
            let mut p = l.dir.clone();
            p.push(l.name);
            p
        }));
        let path = (
            select(prefixes),
            proptest::collection::vec(select(&COMPONENTS[..]), 0..=2),
        )
            .prop_map(|(prefix, rest)| format!("/{}", [prefix, rest].concat().join("/")));
        (Just(tree), proptest::collection::vec(path, 1..10))
    })
}

impl Tree {
    /// Builds the tree under `root`; an entry whose place is taken (or lies
    /// below a file or link) is left out, as the host would refuse it.
    fn build(&self, root: &Path) {
        for dir in &self.dirs {
            let _ = std::fs::create_dir_all(root.join(dir.join("/")));
        }
        for (dir, name) in &self.files {
            let _ = std::fs::write(root.join(dir.join("/")).join(name), b"file");
        }
        for link in &self.links {
            let parent = root.join(link.dir.join("/"));
            let _ = std::fs::create_dir_all(&parent);
            let target = match (link.absolute, link.target.is_empty()) {
                (true, _) => format!("/{}", link.target.join("/")),
                (false, true) => ".".to_owned(),
                (false, false) => link.target.join("/"),
            };
            let _ = symlink(target, parent.join(link.name));
        }
    }
}

/// What the host says of a path, chrooted into the tree: whether the
/// kernel finds it (`test -e`), why not (`stat -L`), and busybox's
/// `realpath` of it.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    /// The path exists and resolves to this host path.
    Resolves(String),
    /// Too many levels of symbolic links.
    Loop,
    /// Not there, in whole or in part. busybox's `realpath` is not asked:
    /// for a dangling relative symlink at the end it resolves the target
    /// from the root, not from the link's directory (`/b/l -> a` gives
    /// `/a`; GNU realpath gives `/b/a`).
    Missing,
}

/// What the host says of each path, chrooted into `root` (whose `/busybox`
/// is a static busybox).
fn host_realpath(root: &Path, paths: &[String]) -> Vec<Host> {
    let script = r#"for p in "$@"; do
        if /busybox test -e "$p"; then
            echo "OK $(/busybox realpath "$p")"
        elif /busybox stat -L "$p" 2>&1 | /busybox grep -q "Too many levels"; then
            echo LOOP
        else
            echo MISSING
        fi
    done"#;
    let out = Command::new("chroot")
        .arg(root)
        .args(["/busybox", "sh", "-c", script, "sh"])
        .args(paths)
        .output()
        .expect("run chroot");
    assert!(
        out.status.success(),
        "chroot {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Host> = text
        .lines()
        .map(|l| match l.strip_prefix("OK ") {
            Some(path) => Host::Resolves(path.to_owned()),
            None if l == "LOOP" => Host::Loop,
            None => Host::Missing,
        })
        .collect();
    assert_eq!(answers.len(), paths.len(), "one answer per path:\n{text}");
    answers
}

/// The host path `host` of the tree at `root` as this process sees it.
fn under(root: &Path, host: &str) -> PathBuf {
    root.join(host.trim_start_matches('/'))
}

fn config() -> ProptestConfig {
    // Each case builds a tree and runs one chroot: enough cases to find the
    // edges, few enough for a shared machine.
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn resolution_equals_the_hosts_own(
        (tree, paths) in tree_and_paths(),
    ) {
        if !prerequisites(
            "resolution_equals_the_hosts_own",
            need_root_and(&["chroot", "busybox"]),
        ) {
            return Ok(());
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root_path = dir.path().canonicalize().expect("canonical tempdir");
        std::fs::copy(BUSYBOX, root_path.join("busybox")).expect("copy busybox");
        tree.build(&root_path);
        let root = HostRoot::open(&root_path).expect("open the root");
        prop_assert_eq!(root.path(), root_path.as_path());
        let answers = host_realpath(&root_path, &paths);
        for (path, answer) in paths.iter().zip(answers) {
            let kernel = root.resolve(path);
            let emulated = root.resolve_emulated(path);
            for p in [&kernel, &emulated].into_iter().flatten() {
                prop_assert!(
                    p.starts_with(&root_path),
                    "{} resolved outside the root: {}", path, p.display()
                );
            }
            match answer {
                Host::Resolves(host) => {
                    let want = under(&root_path, &host);
                    prop_assert_eq!(&kernel, &Ok(want.clone()), "openat2 on {}", path);
                    prop_assert_eq!(&emulated, &Ok(want), "emulation on {}", path);
                }
                Host::Loop => {
                    prop_assert!(
                        matches!(kernel, Err(HostPathError::Loop { .. })),
                        "openat2 on {}: {:?}", path, kernel
                    );
                    prop_assert!(
                        matches!(emulated, Err(HostPathError::Loop { .. })),
                        "emulation on {}: {:?}", path, emulated
                    );
                }
                // kubedf keeps the missing part as written, inside
                // (`realpath -m`), and still finds a loop met after a `..`
                // back out of it (`/missing/../loop`).
                Host::Missing => {
                    prop_assert!(
                        matches!(kernel, Ok(_) | Err(HostPathError::Loop { .. })),
                        "openat2 on {}: {:?}", path, kernel
                    );
                    prop_assert_eq!(&kernel, &emulated, "{}", path);
                }
            }
        }
    }
}

#[test]
fn the_property_tests_trees_do_hold_links_and_loops() {
    // The oracle must be asked about trees worth asking about: a fixed tree
    // with the shapes the strategy draws, checked the same way.
    let test = "the_property_tests_trees_do_hold_links_and_loops";
    if !prerequisites(test, need_root_and(&["chroot", "busybox"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root_path = dir.path().canonicalize().expect("canonical tempdir");
    std::fs::copy(BUSYBOX, root_path.join("busybox")).expect("copy busybox");
    let link = |dir: &[&'static str], name, absolute, target: &[&'static str]| Link {
        dir: dir.to_vec(),
        name,
        absolute,
        target: target.to_vec(),
    };
    Tree {
        dirs: vec![vec!["a", "b", "c"], vec!["b"]],
        files: vec![(vec!["b"], "c")],
        links: vec![
            link(&["a"], "l", true, &["a", "b"]),
            link(&["a", "b"], "m", false, &["..", "..", "..", "..", "b"]),
            link(&[], "n", false, &["n"]),
        ],
    }
    .build(&root_path);
    let paths: Vec<String> = ["/a/l/c", "/a/b/m/../a/l", "/n/a", "/../a/./l/..", "/b/c/a"]
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    let answers = host_realpath(&root_path, &paths);
    assert_eq!(
        answers,
        [
            Host::Resolves("/a/b/c".into()),
            Host::Resolves("/a/b".into()),
            Host::Loop,
            Host::Resolves("/a".into()),
            Host::Missing,
        ]
    );
    let root = HostRoot::open(&root_path).expect("open the root");
    for (path, want) in [
        ("/a/l/c", "a/b/c"),
        ("/a/b/m/../a/l", "a/b"),
        ("/../a/./l/..", "a"),
    ] {
        assert_eq!(root.resolve(path), Ok(root_path.join(want)), "{path}");
        assert_eq!(
            root.resolve_emulated(path),
            Ok(root_path.join(want)),
            "{path}"
        );
    }
}

/// A host root whose containerd root is an absolute symlink to another disk
/// (`/mnt/disk2/containerd`, its own tmpfs), as many nodes are set up. The
/// runtime names its mountpoint as a host path; resolved inside the host
/// root, it crosses the symlink onto that disk.
#[test]
fn imagefs_behind_a_symlinked_containerd_root() {
    let test = "imagefs_behind_a_symlinked_containerd_root";
    if !prerequisites(test, need_root_and(&["containerd", "ctr", "stat"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let containerd =
        Containerd::start(&dir.path().join("cd"), 256 << 20).expect("start containerd");
    containerd
        .import_tiny_image("kubedf-symlinked", 1 << 20)
        .expect("import image");
    let mountpoint = containerd
        .snapshotter_dir()
        .to_str()
        .expect("utf-8")
        .to_owned();

    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("var/lib/kubelet")).expect("mkdir kubelet root");
    let disk2 = Tmpfs::mount(&host.join("mnt/disk2"), 24 << 20);
    let snapshotter = containerd
        .snapshotter_dir()
        .file_name()
        .expect("snapshotter dir name")
        .to_owned();
    let real = disk2.path.join("containerd").join(&snapshotter);
    std::fs::create_dir_all(&real).expect("mkdir on disk2");
    // On the host, the runtime's root is a symlink to the other disk.
    let runtime_root = under(&host, containerd.root().to_str().expect("utf-8"));
    std::fs::create_dir_all(runtime_root.parent().expect("parent")).expect("mkdir");
    symlink("/mnt/disk2/containerd", &runtime_root).expect("symlink the runtime root");

    let socket = format!("unix://{}", containerd.socket().display());
    let served = kubedf!().serve(&[
        "--path.rootfs",
        host.to_str().expect("utf-8"),
        "--cri.endpoint",
        &socket,
        "--kubelet.root-dir",
        "/var/lib/kubelet",
        "--kubelet.config",
        NO_KUBELET_CONFIG,
        "--sample-interval",
        "300ms",
    ]);
    let labels = [("mountpoint", mountpoint.as_str())];
    let text = served.scrape_until(Duration::from_secs(20), "imagefs figures", |t| {
        value(t, "kubedf_imagefs_capacity_bytes", &labels).is_some()
    });
    let fs = statfs_figures(&real);
    assert_eq!(fs[0], 24 << 20, "the other disk's own size");
    for (name, want) in [
        ("kubedf_imagefs_capacity_bytes", fs[0]),
        ("kubedf_imagefs_available_bytes", fs[1]),
        ("kubedf_imagefs_inodes", fs[3]),
        ("kubedf_imagefs_inodes_free", fs[4]),
    ] {
        assert_eq!(
            value(&text, name, &labels),
            Some(want.to_string()),
            "{name}\n{text}"
        );
    }
    assert!(
        value(&text, "kubedf_imagefs_used_bytes", &labels).is_some(),
        "the runtime's used bytes"
    );
    let (capacity, available) = (fs[0] as i64, fs[1] as i64);
    assert_eq!(
        value(&text, "kubedf_image_gc_usage_percent", &[]),
        Some((100 - available * 100 / capacity).to_string()),
        "image GC on the symlink's target\n{text}"
    );
    let signal = [("signal", "imagefs.available")];
    assert_eq!(
        value(&text, "kubedf_eviction_signal_available", &signal),
        Some(available.to_string())
    );
    assert_eq!(
        value(&text, "kubedf_eviction_signal_capacity", &signal),
        Some(capacity.to_string())
    );
    assert_eq!(
        value(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "imagefs.available"), ("kind", "hard")]
        ),
        Some(((capacity as f64 * f64::from(15f32 / 100.0)) as i64).to_string()),
        "kubelet's default imagefs.available<15%"
    );
    for collector in ["imagefs", "image_gc", "eviction"] {
        assert_eq!(
            value(
                &text,
                "kubedf_scrape_collector_success",
                &[("collector", collector)]
            )
            .as_deref(),
            Some("1"),
            "{collector}"
        );
    }
    drop(served);
    drop(disk2);
    drop(containerd);
}

const NODE: &str = "node-1";
const NS: &str = "shop";

fn files(dir: &Path, sizes: &[usize]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (i, size) in sizes.iter().enumerate() {
        std::fs::write(dir.join(format!("f{i}")), vec![7u8; *size]).expect("write");
    }
}

/// A running pod on the node using `claim`, bound to `pv`.
fn pod_with_pv(kube: &FakeKube, name: &str, claim: &str, pv: Value) {
    let uid = fake_kube::fake_uid(name);
    kube.put_pod(fake_kube::pod(
        NS,
        name,
        &uid,
        NODE,
        "Running",
        vec![fake_kube::pvc_volume("d", claim)],
    ));
    let pv_name = pv["metadata"]["name"].as_str().expect("pv name").to_owned();
    let pvc = fake_kube::pvc(NS, claim, Some(&pv_name), "Bound");
    kube.put_pv(fake_kube::bind_pv(pv, &pvc));
    kube.put_pvc(pvc);
}

fn stat(text: &str, name: &str, claim: &str) -> Option<String> {
    value(
        text,
        &format!("kubelet_volume_stats_{name}"),
        &[("namespace", NS), ("persistentvolumeclaim", claim)],
    )
}

fn volume_error(text: &str, claim: &str) -> Option<String> {
    samples(text)
        .into_iter()
        .find(|l| {
            l.name == "kubedf_volume_stats_error"
                && l.labels.get("persistentvolumeclaim").map(String::as_str) == Some(claim)
        })
        .map(|l| l.labels["reason"].clone())
}

/// hostPath PVs whose paths cross symlinks inside the host root: measured
/// at their targets inside it; a link that names `/etc` or climbs past the
/// root with `..` stays inside (the host root's own `/etc`, the host root's
/// own copy of the directory), never the directories of kubedf's container.
#[test]
fn host_path_pvs_behind_symlinks_stay_inside_the_host_root() {
    let test = "host_path_pvs_behind_symlinks_stay_inside_the_host_root";
    if !prerequisites(test, need_root_and(&["du", "find"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().canonicalize().expect("canonical tempdir");
    let host = base.join("host");
    std::fs::create_dir_all(host.join("var/lib/kubelet")).expect("mkdir kubelet root");

    // local-path-provisioner's directory moved to another disk, linked back.
    let linked = host.join("data/local-path/pv-linked");
    for d in 0..5 {
        files(&linked.join(format!("d{d}")), &[1000, 5000, 9000]);
    }
    std::fs::create_dir_all(host.join("opt")).expect("mkdir");
    symlink("/data/local-path", host.join("opt/local-path")).expect("symlink");

    // An absolute link to /etc: the host root's /etc, not the container's.
    files(&host.join("etc"), &[3000]);
    std::fs::create_dir_all(host.join("srv")).expect("mkdir");
    symlink("/etc", host.join("srv/etc")).expect("symlink");

    // A link climbing far past the root, then down to a directory that
    // exists both outside the host root (big) and inside it (small).
    let outside = base.join("outside");
    files(&outside, &[200_000]);
    let inside = under(&host, outside.to_str().expect("utf-8"));
    files(&inside, &[5000]);
    let climb = "../".repeat(host.components().count() + 3);
    symlink(&climb, host.join("srv/up")).expect("symlink");
    let climbing_path = format!("/srv/up{}", outside.display());

    let kube = FakeKube::start();
    pod_with_pv(
        &kube,
        "linked",
        "linked",
        fake_kube::pv_host_path("pv-linked", "/opt/local-path/pv-linked", "1Gi"),
    );
    pod_with_pv(
        &kube,
        "etc",
        "etc",
        fake_kube::pv_host_path("pv-etc", "/srv/etc", "1Gi"),
    );
    pod_with_pv(
        &kube,
        "climb",
        "climb",
        fake_kube::pv_host_path("pv-climb", &climbing_path, "1Gi"),
    );
    // A relative host path: refused, naming the path, the others measured.
    pod_with_pv(
        &kube,
        "relative",
        "relative",
        fake_kube::pv_host_path("pv-relative", "opt/local-path/pv-linked", "1Gi"),
    );
    let kubeconfig = base.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig)
        .expect("write kubeconfig");
    let served = kubedf!()
        .on_node(NODE, &kubeconfig, Path::new("/var/lib/kubelet"), NO_RUNTIME)
        .kubelet_config(NO_KUBELET_CONFIG)
        .serve(&[
            "--path.rootfs",
            host.to_str().expect("utf-8"),
            "--sample-interval",
            "500ms",
            "--volume-stats-agg-period",
            "300ms",
            "--volume-stats-timeout",
            "2s",
        ]);
    let claims = ["linked", "etc", "climb"];
    let text = served.scrape_until(Duration::from_secs(20), "every volume measured", |t| {
        claims.iter().all(|c| stat(t, "used_bytes", c).is_some())
            && volume_error(t, "relative").is_some()
    });
    assert_eq!(volume_error(&text, "relative").as_deref(), Some("bad_path"));
    assert_eq!(stat(&text, "used_bytes", "relative"), None);
    assert!(
        served.log_text().contains("opt/local-path/pv-linked"),
        "the error names the path"
    );
    for (claim, target, not) in [
        ("linked", linked.clone(), None),
        ("etc", host.join("etc"), Some(PathBuf::from("/etc"))),
        ("climb", inside.clone(), Some(outside.clone())),
    ] {
        let (bytes, inodes) = du_find(&target);
        assert_eq!(
            stat(&text, "used_bytes", claim),
            Some(bytes.to_string()),
            "{claim}: du -sxB1 {}\n{text}",
            target.display()
        );
        assert_eq!(
            stat(&text, "inodes_used", claim),
            Some(inodes.to_string()),
            "{claim}: find -xdev {}",
            target.display()
        );
        if let Some(not) = not {
            assert_ne!(
                du_find(&not),
                (bytes, inodes),
                "{claim}: the test cannot tell {} from {}",
                target.display(),
                not.display()
            );
        }
    }
    drop(served);
}
