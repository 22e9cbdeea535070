//! A test node's disk layout, built once here for every integration test: a
//! temporary dir holding kubelet's root dir, its `podLogsDir` and a kubelet
//! config naming it, and the paths kubelet puts volumes at (a CSI volume's
//! `mount` dir, a block volume's device link, a pod's volume dirs). Mounts
//! and loop devices made on it are undone when it is dropped, before the
//! dir is removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mounts::Tmpfs;

/// Where kubelet mounts a CSI volume of a pod.
pub fn csi_mount_path(kubelet_root: &Path, pod_uid: &str, pv: &str) -> PathBuf {
    kubelet_root
        .join("pods")
        .join(pod_uid)
        .join("volumes/kubernetes.io~csi")
        .join(pv)
        .join("mount")
}

pub struct TestNode {
    dir: tempfile::TempDir,
    mounts: Vec<Tmpfs>,
    loops: Vec<String>,
}

impl Default for TestNode {
    fn default() -> Self {
        TestNode::new()
    }
}

impl TestNode {
    /// An empty kubelet root dir and pod logs dir, and a kubelet config
    /// whose `podLogsDir` is that dir.
    pub fn new() -> TestNode {
        let node = TestNode {
            dir: tempfile::tempdir().expect("tempdir"),
            mounts: Vec::new(),
            loops: Vec::new(),
        };
        std::fs::create_dir_all(node.root()).expect("kubelet root");
        std::fs::create_dir_all(node.logs()).expect("pod logs dir");
        std::fs::write(
            node.config(),
            format!(
                "kind: KubeletConfiguration\npodLogsDir: {}\n",
                node.logs().display()
            ),
        )
        .expect("kubelet config");
        node
    }

    /// The temporary dir everything is in (room for a kubeconfig, images,
    /// host directories).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// kubelet's root dir.
    pub fn root(&self) -> PathBuf {
        self.dir().join("kubelet")
    }

    /// kubelet's `podLogsDir`.
    pub fn logs(&self) -> PathBuf {
        self.dir().join("log-pods")
    }

    /// The kubelet config file.
    pub fn config(&self) -> PathBuf {
        self.dir().join("config.yaml")
    }

    pub fn csi_mount(&self, pod_uid: &str, pv: &str) -> PathBuf {
        csi_mount_path(&self.root(), pod_uid, pv)
    }

    /// Mounts a tmpfs of `bytes` at the CSI mount path and writes `used`
    /// bytes into it.
    pub fn mount_csi(&mut self, pod_uid: &str, pv: &str, bytes: u64, used: usize) -> PathBuf {
        let path = self.csi_mount(pod_uid, pv);
        self.mount(&path, bytes);
        std::fs::write(path.join("data"), vec![1u8; used]).expect("write into volume");
        path
    }

    /// A tmpfs of `bytes` at `path`, unmounted with the node.
    pub fn mount(&mut self, path: &Path, bytes: u64) {
        self.mounts.push(Tmpfs::mount(path, bytes));
    }

    /// A loop device of `bytes`, linked where kubelet publishes a CSI block
    /// volume.
    pub fn block_device(&mut self, pod_uid: &str, pv: &str, bytes: u64) -> String {
        let image = self.dir().join(format!("{pv}.img"));
        let file = std::fs::File::create(&image).expect("create image");
        file.set_len(bytes).expect("size image");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.loops.push(device.clone());
        let link = self
            .root()
            .join("pods")
            .join(pod_uid)
            .join("volumeDevices/kubernetes.io~csi")
            .join(pv);
        std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(&device, &link).expect("symlink device");
        device
    }

    /// A pod's volume dir (`pods/<uid>/volumes/<plugin>/<name>`), created.
    pub fn volume(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        let path = self
            .root()
            .join("pods")
            .join(uid)
            .join("volumes")
            .join(plugin)
            .join(name);
        std::fs::create_dir_all(&path).expect("volume dir");
        path
    }

    /// Files of known sizes, a hard link (counted once), a symlink out of
    /// the tree (counted, not followed) and a nested tmpfs with data in it
    /// (not counted): what the du method must get right.
    pub fn fill(&mut self, dir: &Path) {
        std::fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
        std::fs::write(dir.join("a"), vec![1u8; 300_000]).expect("write");
        std::fs::write(dir.join("sub/b"), vec![2u8; 70_000]).expect("write");
        std::fs::write(dir.join("sub/deeper/c"), vec![3u8; 5]).expect("write");
        std::fs::hard_link(dir.join("a"), dir.join("sub/a-again")).expect("hard link");
        std::os::unix::fs::symlink("/etc", dir.join("escape")).expect("symlink");
        let nested = dir.join("nested");
        self.mount(&nested, 8 << 20);
        std::fs::write(nested.join("big"), vec![4u8; 2 << 20]).expect("write");
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Unmount before the temporary dir is removed.
        self.mounts.clear();
        for device in &self.loops {
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
    }
}
