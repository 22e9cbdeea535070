//! kubelet's effective configuration on each major distribution's node
//! layout: a fixture host root holding that distribution's files, and a real
//! process (a static idle program under `chroot`) whose command line is that
//! distribution's kubelet's. kubedf finds it in /proc, reads what it names
//! under --path.rootfs and must arrive at kubelet's values.
//!
//! The expected values are derived by hand from kubelet's rules (facts §16,
//! server.go): defaults, then --config (no evictionHard means the Linux
//! defaults memory 100Mi, nodefs 10%, nodefs.inodesFree 5%, imagefs 15%,
//! imagefs.inodesFree 5%; a partial map stays partial), then the drop-ins in
//! WalkDir order as merge patches, then every flag (a map flag replaces the
//! whole map). Each fixture says its derivation.
//!
//! One fixture runs at a time: a real node has one kubelet, and two fixture
//! kubelets at once would be two candidates.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use kubedf::kubelet::config::{ConfigSource, KubeletConfig};
use kubedf::kubelet::eviction::ThresholdValue;
use kubedf::sources::kubelet_config::{Host, find_kubelet, read_process};
use testkit::kubelet::{FakeKubelet, kubelet_prerequisites, write_host_files};
use testkit::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

/// What kubelet runs with, by kubelet's rules.
struct Want {
    /// (signal, statement) of the disk and PID hard thresholds.
    hard: &'static [(&'static str, &'static str)],
    soft: &'static [(&'static str, &'static str)],
    gc: (i32, i32),
    root_dir: &'static str,
    endpoint: &'static str,
}

struct Distro {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    exe: &'static str,
    args: &'static [&'static str],
    want: Want,
}

/// A statement as kubelet parses it: float32(n)/100 for a percentage.
fn threshold(statement: &str) -> ThresholdValue {
    match statement.strip_suffix('%') {
        Some(n) => ThresholdValue::Percentage(n.parse::<f32>().expect("percent") / 100.0),
        None => ThresholdValue::Quantity(
            kubedf::kubelet::quantity::parse_quantity(statement).expect("quantity"),
        ),
    }
}

fn thresholds(list: &[(&str, &str)]) -> BTreeMap<String, ThresholdValue> {
    list.iter()
        .map(|(s, v)| ((*s).to_owned(), threshold(v)))
        .collect()
}

fn named(map: &kubedf::kubelet::eviction::Thresholds) -> BTreeMap<String, ThresholdValue> {
    map.iter().map(|(s, v)| (s.name().to_owned(), *v)).collect()
}

fn distros() -> Vec<Distro> {
    vec![
        Distro {
            // kubeadm's 10-kubeadm.conf runs `kubelet $KUBELET_KUBECONFIG_ARGS
            // $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS`,
            // the last two from kubeadm-flags.env and /etc/default/kubelet
            // (kubeletExtraArgs). config.yaml names no eviction: the Linux
            // defaults. The extra args' GC percents win over the file's.
            name: "kubeadm",
            files: vec![
                (
                    "/var/lib/kubelet/config.yaml",
                    format!(
                        "{HEAD}authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\nauthorization:\n  mode: Webhook\ncgroupDriver: systemd\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\nimageGCHighThresholdPercent: 85\nrotateCertificates: true\nstaticPodPath: /etc/kubernetes/manifests\n"
                    ),
                ),
                (
                    "/var/lib/kubelet/kubeadm-flags.env",
                    "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n".into(),
                ),
                (
                    "/etc/default/kubelet",
                    "KUBELET_EXTRA_ARGS=--image-gc-high-threshold=70 --image-gc-low-threshold=60\n".into(),
                ),
            ],
            exe: "/usr/bin/kubelet",
            args: &[
                "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
                "--config=/var/lib/kubelet/config.yaml",
                "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                "--pod-infra-container-image=registry.k8s.io/pause:3.10",
                "--image-gc-high-threshold=70",
                "--image-gc-low-threshold=60",
            ],
            want: Want {
                hard: &[
                    ("nodefs.available", "10%"),
                    ("nodefs.inodesFree", "5%"),
                    ("imagefs.available", "15%"),
                    ("imagefs.inodesFree", "5%"),
                ],
                soft: &[],
                gc: (70, 60),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///var/run/containerd/containerd.sock",
            },
        },
        Distro {
            // nodeadm's config.json names three evictionHard signals, so
            // imagefs has no threshold at all; the user's kubelet config is
            // the drop-in 40-nodeadm.conf (GC 75/65); a README in the drop-in
            // directory is no .conf file and is skipped.
            name: "EKS AL2023",
            files: vec![
                (
                    "/etc/kubernetes/kubelet/config.json",
                    r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","address":"0.0.0.0","authentication":{"anonymous":{"enabled":false},"webhook":{"cacheTTL":"2m0s","enabled":true},"x509":{"clientCAFile":"/etc/kubernetes/pki/ca.crt"}},"authorization":{"mode":"Webhook"},"cgroupDriver":"systemd","clusterDomain":"cluster.local","containerRuntimeEndpoint":"unix:///run/containerd/containerd.sock","evictionHard":{"memory.available":"100Mi","nodefs.available":"10%","nodefs.inodesFree":"5%"},"featureGates":{"RotateKubeletServerCertificate":true},"kubeReserved":{"cpu":"70m","ephemeral-storage":"1Gi","memory":"442Mi"},"logging":{"verbosity":2},"maxPods":29,"serverTLSBootstrap":true}"#.into(),
                ),
                (
                    "/etc/kubernetes/kubelet/config.json.d/40-nodeadm.conf",
                    r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","imageGCHighThresholdPercent":75,"imageGCLowThresholdPercent":65}"#.into(),
                ),
                (
                    "/etc/kubernetes/kubelet/config.json.d/README",
                    "imageGCHighThresholdPercent: 1\n".into(),
                ),
                (
                    "/etc/eks/kubelet/environment",
                    "NODEADM_KUBELET_ARGS=\"--node-ip=10.0.1.23 --hostname-override=ip-10-0-1-23.ec2.internal --v=2\"\n".into(),
                ),
            ],
            exe: "/usr/bin/kubelet",
            args: &[
                "--config=/etc/kubernetes/kubelet/config.json",
                "--config-dir=/etc/kubernetes/kubelet/config.json.d",
                "--kubeconfig=/var/lib/kubelet/kubeconfig",
                "--image-credential-provider-bin-dir=/etc/eks/image-credential-provider",
                "--image-credential-provider-config=/etc/eks/image-credential-provider/config.json",
                "--node-ip=10.0.1.23",
                "--cloud-provider=external",
                "--hostname-override=ip-10-0-1-23.ec2.internal",
                "--v=2",
            ],
            want: Want {
                hard: &[("nodefs.available", "10%"), ("nodefs.inodesFree", "5%")],
                soft: &[],
                gc: (75, 65),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/containerd/containerd.sock",
            },
        },
        Distro {
            // AKS: flags only (KUBELET_FLAGS in /etc/default/kubelet), no
            // --config: defaults, then --eviction-hard replaces the whole
            // map (no imagefs threshold). Flags in both forms, one unknown
            // flag with a negative value.
            name: "AKS",
            files: vec![(
                "/etc/default/kubelet",
                "KUBELET_FLAGS=--eviction-hard=memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5% --image-gc-high-threshold=85 --image-gc-low-threshold=80\n".into(),
            )],
            exe: "/usr/local/bin/kubelet",
            args: &[
                "--enable-server",
                "--node-labels=agentpool=nodepool1,kubernetes.azure.com/role=agent",
                "--v=2",
                "--volume-plugin-dir=/etc/kubernetes/volumeplugins",
                "--kubeconfig",
                "/var/lib/kubelet/kubeconfig",
                "--address=0.0.0.0",
                "--anonymous-auth=false",
                "--authorization-mode=Webhook",
                "--cgroups-per-qos=true",
                "--cluster-dns=10.0.0.10",
                "--eviction-hard=memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%",
                "--image-gc-high-threshold",
                "85",
                "--image-gc-low-threshold=80",
                "--kube-reserved=cpu=100m,memory=1638Mi",
                "--max-pods=110",
                "--oom-score-adj",
                "-999",
                "--pod-max-pids=-1",
                "--protect-kernel-defaults=true",
                "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
                "--runtime-request-timeout=15m",
            ],
            want: Want {
                hard: &[("nodefs.available", "10%"), ("nodefs.inodesFree", "5%")],
                soft: &[],
                gc: (85, 80),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/containerd/containerd.sock",
            },
        },
        Distro {
            // k3s runs the kubelet inside `k3s agent` with
            // --config-dir=<data-dir>/agent/etc/kubelet.conf.d (data-dir
            // default /var/lib/rancher/k3s), then its --kubelet-arg flags:
            // config.yaml's list (GC 70/60), then the command line's (a soft
            // threshold with its grace period). No --config: the built-in
            // defaults, into which 00-k3s-defaults.conf merges imagefs and
            // nodefs 5% key by key (the inodes defaults stay).
            name: "k3s",
            files: vec![
                (
                    "/etc/rancher/k3s/config.yaml",
                    "server: https://10.0.0.1:6443\ntoken-file: /etc/rancher/k3s/token\nkubelet-arg:\n  - \"image-gc-high-threshold=70\"\n  - \"image-gc-low-threshold=60\"\n".into(),
                ),
                (
                    "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf",
                    format!(
                        "{HEAD}authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    cacheTTL: 2m0s\n    enabled: true\nauthorization:\n  mode: Webhook\ncgroupDriver: systemd\nclusterDNS:\n- 10.43.0.10\nclusterDomain: cluster.local\ncontainerRuntimeEndpoint: unix:///run/k3s/containerd/containerd.sock\nevictionHard:\n  imagefs.available: 5%\n  nodefs.available: 5%\nevictionMinimumReclaim:\n  imagefs.available: 10%\n  nodefs.available: 10%\nfailSwapOn: false\nhealthzBindAddress: 127.0.0.1\nreadOnlyPort: 0\nserializeImagePulls: false\n"
                    ),
                ),
            ],
            exe: "/usr/local/bin/k3s",
            args: &[
                "agent",
                "--kubelet-arg=eviction-soft=nodefs.available<15%",
                "--kubelet-arg",
                "eviction-soft-grace-period=nodefs.available=2m",
            ],
            want: Want {
                hard: &[
                    ("nodefs.available", "5%"),
                    ("nodefs.inodesFree", "5%"),
                    ("imagefs.available", "5%"),
                    ("imagefs.inodesFree", "5%"),
                ],
                soft: &[("nodefs.available", "15%")],
                gc: (70, 60),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/k3s/containerd/containerd.sock",
            },
        },
        Distro {
            // RKE2 with another --data-dir: its drop-in directory moves with
            // it; config.yaml's kubelet-arg as one string (an unknown flag).
            // A user drop-in sorts after RKE2's and raises GC high to 90.
            name: "RKE2",
            files: vec![
                (
                    "/etc/rancher/rke2/config.yaml",
                    "kubelet-arg: \"max-pods=200\"\n".into(),
                ),
                (
                    "/opt/rke2/agent/etc/kubelet.conf.d/00-rke2-defaults.conf",
                    format!(
                        "{HEAD}containerRuntimeEndpoint: unix:///run/k3s/containerd/containerd.sock\nevictionHard:\n  imagefs.available: 5%\n  nodefs.available: 5%\nevictionMinimumReclaim:\n  imagefs.available: 10%\n  nodefs.available: 10%\n"
                    ),
                ),
                (
                    "/opt/rke2/agent/etc/kubelet.conf.d/50-site.conf",
                    format!("{HEAD}imageGCHighThresholdPercent: 90\n"),
                ),
            ],
            exe: "/usr/local/bin/rke2",
            args: &["server", "--data-dir", "/opt/rke2"],
            want: Want {
                hard: &[
                    ("nodefs.available", "5%"),
                    ("nodefs.inodesFree", "5%"),
                    ("imagefs.available", "5%"),
                    ("imagefs.inodesFree", "5%"),
                ],
                soft: &[],
                gc: (90, 80),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/k3s/containerd/containerd.sock",
            },
        },
        Distro {
            // k3s reading its flags as its configfilearg does: config.yaml,
            // then config.yaml.d's *.yaml and *.yml by name (a .txt file and
            // a directory named like a .yaml skipped); per key a later file
            // replaces, `key+` appends; then the command line's flags. So
            // kubelet-arg is config.yaml's GC 70/60, 10-evict's appended
            // --eviction-hard, then the command line's GC low 55; data-dir
            // from 20-data.YML moves the drop-in directory, whose
            // 00-k3s-defaults.conf map the --eviction-hard flag replaces
            // whole. The file in the default data-dir is not read.
            name: "k3s (config.yaml.d)",
            files: vec![
                (
                    "/etc/rancher/k3s/config.yaml",
                    "kubelet-arg:\n  - image-gc-high-threshold=70\n  - image-gc-low-threshold=60\ndata-dir: /var/lib/rancher/k3s\n".into(),
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/10-evict.yaml",
                    "kubelet-arg+:\n  - eviction-hard=imagefs.available<8%,nodefs.available<7%\n".into(),
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/20-data.YML",
                    "data-dir: /opt/k3s\n".into(),
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/30-notes.txt",
                    "kubelet-arg: [image-gc-high-threshold=1]\n".into(),
                ),
                (
                    "/etc/rancher/k3s/config.yaml.d/40-dir.yaml/x.yaml",
                    "kubelet-arg: [image-gc-high-threshold=2]\n".into(),
                ),
                (
                    "/opt/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf",
                    format!(
                        "{HEAD}containerRuntimeEndpoint: unix:///run/k3s/containerd/containerd.sock\nevictionHard:\n  imagefs.available: 5%\n  nodefs.available: 5%\n"
                    ),
                ),
                (
                    "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/50-stale.conf",
                    format!("{HEAD}imageGCHighThresholdPercent: 3\n"),
                ),
            ],
            exe: "/usr/local/bin/k3s",
            args: &["agent", "--kubelet-arg=image-gc-low-threshold=55"],
            want: Want {
                hard: &[("nodefs.available", "7%"), ("imagefs.available", "8%")],
                soft: &[],
                gc: (70, 55),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/k3s/containerd/containerd.sock",
            },
        },
        Distro {
            // RKE2 told `-c /etc/rke2-site.yaml`: that file and its .d, not
            // /etc/rancher/rke2/config.yaml. The drop-in's plain
            // kubelet-arg replaces the file's list (GC 88/70, not 95).
            name: "RKE2 (-c)",
            files: vec![
                (
                    "/etc/rancher/rke2/config.yaml",
                    "kubelet-arg: [image-gc-high-threshold=1]\n".into(),
                ),
                (
                    "/etc/rke2-site.yaml",
                    "kubelet-arg: [image-gc-high-threshold=95]\n".into(),
                ),
                (
                    "/etc/rke2-site.yaml.d/01-gc.yaml",
                    "kubelet-arg:\n  - image-gc-high-threshold=88\n  - image-gc-low-threshold=70\n".into(),
                ),
                (
                    "/var/lib/rancher/rke2/agent/etc/kubelet.conf.d/00-rke2-defaults.conf",
                    format!(
                        "{HEAD}containerRuntimeEndpoint: unix:///run/k3s/containerd/containerd.sock\nevictionHard:\n  imagefs.available: 5%\n  nodefs.available: 5%\n"
                    ),
                ),
            ],
            exe: "/usr/local/bin/rke2",
            args: &["server", "-c", "/etc/rke2-site.yaml"],
            want: Want {
                hard: &[
                    ("nodefs.available", "5%"),
                    ("nodefs.inodesFree", "5%"),
                    ("imagefs.available", "5%"),
                    ("imagefs.inodesFree", "5%"),
                ],
                soft: &[],
                gc: (88, 70),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/k3s/containerd/containerd.sock",
            },
        },
        Distro {
            // An OpenShift worker: kubelet.conf (MCO's, a full evictionHard),
            // then /etc/openshift/kubelet.conf.d in WalkDir order: 10-a
            // before 9-b (lexical), sub/ after both; 10-a sets imagefs 20%,
            // 9-b imagefs 25% (later wins), sub/x a soft threshold with its
            // grace period. The CRI endpoint is a bare path.
            name: "OpenShift worker",
            files: vec![
                (
                    "/etc/kubernetes/kubelet.conf",
                    format!(
                        "{HEAD}authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/kubelet-ca.crt\ncgroupDriver: systemd\ncgroupRoot: /\nclusterDNS:\n- 172.30.0.10\nevictionHard:\n  imagefs.available: 15%\n  memory.available: 100Mi\n  nodefs.available: 10%\n  nodefs.inodesFree: 5%\nevictionPressureTransitionPeriod: 0s\nimageMinimumGCAge: 0s\nmaxPods: 250\npodPidsLimit: 4096\nserializeImagePulls: false\n"
                    ),
                ),
                (
                    "/etc/openshift/kubelet.conf.d/10-a.conf",
                    format!("{HEAD}evictionHard:\n  imagefs.available: 20%\n"),
                ),
                (
                    "/etc/openshift/kubelet.conf.d/9-b.conf",
                    format!("{HEAD}evictionHard:\n  imagefs.available: 25%\n"),
                ),
                (
                    "/etc/openshift/kubelet.conf.d/sub/x.conf",
                    format!(
                        "{HEAD}evictionSoft:\n  nodefs.available: 20%\nevictionSoftGracePeriod:\n  nodefs.available: 1m30s\n"
                    ),
                ),
            ],
            exe: "/usr/bin/kubelet",
            args: &[
                "--config=/etc/kubernetes/kubelet.conf",
                "--bootstrap-kubeconfig=/etc/kubernetes/kubeconfig",
                "--kubeconfig=/var/lib/kubelet/kubeconfig",
                "--container-runtime-endpoint=/var/run/crio/crio.sock",
                "--runtime-cgroups=/system.slice/crio.service",
                "--node-labels=node-role.kubernetes.io/worker,node.openshift.io/os_id=rhcos",
                "--node-ip=10.0.0.5",
                "--minimum-container-ttl-duration=6m0s",
                "--cloud-provider=",
                "--volume-plugin-dir=/etc/kubernetes/kubelet-plugins/volume/exec",
                "--hostname-override=",
                "--provider-id=",
                "--register-with-taints=",
                "--system-reserved=cpu=500m,memory=1Gi,ephemeral-storage=1Gi",
                "--v=2",
                "--config-dir=/etc/openshift/kubelet.conf.d",
            ],
            want: Want {
                hard: &[
                    ("nodefs.available", "10%"),
                    ("nodefs.inodesFree", "5%"),
                    ("imagefs.available", "25%"),
                ],
                soft: &[("nodefs.available", "20%")],
                gc: (85, 80),
                root_dir: "/var/lib/kubelet",
                endpoint: "/var/run/crio/crio.sock",
            },
        },
        Distro {
            // kind: kubeadm's command line; config.yaml turns disk eviction
            // off with 0% (kubelet drops a 0% threshold) and names no
            // imagefs.inodesFree, so that has none either; GC high 100.
            name: "kind",
            files: vec![(
                "/var/lib/kubelet/config.yaml",
                format!(
                    "{HEAD}cgroupDriver: systemd\ncgroupRoot: /kubelet\nevictionHard:\n  imagefs.available: 0%\n  nodefs.available: 0%\n  nodefs.inodesFree: 0%\nfailSwapOn: false\nimageGCHighThresholdPercent: 100\n"
                ),
            )],
            exe: "/usr/bin/kubelet",
            args: &[
                "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
                "--config=/var/lib/kubelet/config.yaml",
                "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
                "--node-ip=172.18.0.2",
                "--node-labels=",
                "--pod-infra-container-image=registry.k8s.io/pause:3.10",
                "--provider-id=kind://docker/kind/kind-control-plane",
                "--runtime-cgroups=/system.slice/containerd.service",
            ],
            want: Want {
                hard: &[],
                soft: &[],
                gc: (100, 80),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/containerd/containerd.sock",
            },
        },
        Distro {
            // k0s: its own root dir and config path; the CRI socket is in
            // its config file. No evictionHard: the defaults.
            name: "k0s",
            files: vec![(
                "/var/lib/k0s/kubelet-config.yaml",
                format!(
                    "{HEAD}cgroupsPerQOS: true\nclusterDNS:\n- 10.96.0.10\ncontainerRuntimeEndpoint: unix:///run/k0s/containerd.sock\nkubeReservedCgroup: system.slice\nkubeletCgroups: /system.slice/containerd.service\nresolvConf: /etc/resolv.conf\ntlsMinVersion: VersionTLS12\n"
                ),
            )],
            exe: "/var/lib/k0s/bin/kubelet",
            args: &[
                "--root-dir=/var/lib/k0s/kubelet",
                "--config=/var/lib/k0s/kubelet-config.yaml",
                "--kubeconfig=/var/lib/k0s/kubelet.conf",
                "--v=1",
                "--runtime-cgroups=/system.slice/containerd.service",
                "--cert-dir=/var/lib/k0s/kubelet/pki",
            ],
            want: Want {
                hard: &[
                    ("nodefs.available", "10%"),
                    ("nodefs.inodesFree", "5%"),
                    ("imagefs.available", "15%"),
                    ("imagefs.inodesFree", "5%"),
                ],
                soft: &[],
                gc: (85, 80),
                root_dir: "/var/lib/k0s/kubelet",
                endpoint: "unix:///run/k0s/containerd.sock",
            },
        },
        Distro {
            // Talos: one file at /etc/kubernetes/kubelet.yaml; extraConfig
            // (GC 80/70) is written into it. Defaults otherwise.
            name: "Talos",
            files: vec![(
                "/etc/kubernetes/kubelet.yaml",
                format!(
                    "{HEAD}authentication:\n  webhook:\n    enabled: true\nauthorization:\n  mode: Webhook\ncgroupRoot: /\nclusterDomain: cluster.local\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\nimageGCHighThresholdPercent: 80\nimageGCLowThresholdPercent: 70\nrotateCertificates: true\nseccompDefault: true\nshutdownGracePeriod: 30s\n"
                ),
            )],
            exe: "/usr/local/bin/kubelet",
            args: &[
                "--cert-dir=/var/lib/kubelet/pki",
                "--config=/etc/kubernetes/kubelet.yaml",
                "--hostname-override=talos-default-worker-1",
                "--kubeconfig=/etc/kubernetes/kubeconfig-kubelet",
                "--node-ip=10.5.0.3",
            ],
            want: Want {
                hard: &[
                    ("nodefs.available", "10%"),
                    ("nodefs.inodesFree", "5%"),
                    ("imagefs.available", "15%"),
                    ("imagefs.inodesFree", "5%"),
                ],
                soft: &[],
                gc: (80, 70),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/containerd/containerd.sock",
            },
        },
        Distro {
            // Bottlerocket: --config in the space form; its config has only
            // what settings name, a partial evictionHard (memory, nodefs).
            name: "Bottlerocket",
            files: vec![(
                "/etc/kubernetes/kubelet/config",
                format!(
                    "---\n{HEAD}address: 0.0.0.0\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\nevictionHard:\n  memory.available: \"10%\"\n  nodefs.available: \"12%\"\nmaxPods: 58\n"
                ),
            )],
            exe: "/usr/bin/kubelet",
            args: &[
                "--cloud-provider",
                "external",
                "--kubeconfig",
                "/etc/kubernetes/kubelet/kubeconfig",
                "--config",
                "/etc/kubernetes/kubelet/config",
                "--node-ip",
                "192.168.1.10",
            ],
            want: Want {
                hard: &[("nodefs.available", "12%")],
                soft: &[],
                gc: (85, 80),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/containerd/containerd.sock",
            },
        },
        Distro {
            // GKE: /home/kubernetes/bin/kubelet --config
            // /home/kubernetes/kubelet-config.yaml, a full evictionHard
            // including pid.available.
            name: "GKE",
            files: vec![(
                "/home/kubernetes/kubelet-config.yaml",
                format!(
                    "{HEAD}cgroupRoot: /\nclusterDNS:\n- 10.0.0.10\nenableDebuggingHandlers: true\nevictionHard:\n  memory.available: 100Mi\n  nodefs.available: 10%\n  nodefs.inodesFree: 5%\n  pid.available: 10%\nfeatureGates:\n  RotateKubeletServerCertificate: true\nkernelMemcgNotification: true\nreadOnlyPort: 10255\nstaticPodPath: /etc/kubernetes/manifests\n"
                ),
            )],
            exe: "/home/kubernetes/bin/kubelet",
            args: &[
                "--v=2",
                "--cloud-provider=external",
                "--experimental-mounter-path=/home/kubernetes/containerized_mounter/mounter",
                "--cert-dir=/var/lib/kubelet/pki/",
                "--kubeconfig=/var/lib/kubelet/kubeconfig",
                "--max-pods=110",
                "--volume-plugin-dir=/home/kubernetes/flexvolume",
                "--node-status-max-images=25",
                "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
                "--runtime-cgroups=/system.slice/containerd.service",
                "--registry-qps=10",
                "--registry-burst=20",
                "--config",
                "/home/kubernetes/kubelet-config.yaml",
            ],
            want: Want {
                hard: &[
                    ("nodefs.available", "10%"),
                    ("nodefs.inodesFree", "5%"),
                    ("pid.available", "10%"),
                ],
                soft: &[],
                gc: (85, 80),
                root_dir: "/var/lib/kubelet",
                endpoint: "unix:///run/containerd/containerd.sock",
            },
        },
    ]
}

/// Builds the distribution's host root and starts its kubelet.
fn set_up(d: &Distro, root: &Path) -> FakeKubelet {
    let files: Vec<(&str, &str)> = d.files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    write_host_files(root, &files);
    FakeKubelet::start(root, d.exe, d.args)
}

#[test]
fn every_distribution_gives_kubelets_effective_values() {
    let test = "every_distribution_gives_kubelets_effective_values";
    if !prerequisites(test, kubelet_prerequisites()) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for d in distros() {
        let root = tempfile::tempdir().expect("tempdir");
        let kubelet = set_up(&d, root.path());
        let host = Host::new(root.path(), "/proc");
        let found = find_kubelet(&host).unwrap_or_else(|| panic!("{}: no kubelet found", d.name));
        assert_eq!(found.pid, kubelet.pid(), "{}: another process", d.name);
        let cfg: KubeletConfig =
            read_process(&host, &found).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        assert_eq!(cfg.source, ConfigSource::Process, "{}", d.name);
        assert_eq!(
            named(&cfg.eviction.hard),
            thresholds(d.want.hard),
            "{}: hard",
            d.name
        );
        assert_eq!(
            named(&cfg.eviction.soft),
            thresholds(d.want.soft),
            "{}: soft",
            d.name
        );
        assert_eq!(
            (
                cfg.image_gc.high_threshold_percent,
                cfg.image_gc.low_threshold_percent
            ),
            d.want.gc,
            "{}: image GC",
            d.name
        );
        assert_eq!(cfg.root_dir.as_deref(), Some(d.want.root_dir), "{}", d.name);
        assert_eq!(
            cfg.container_runtime_endpoint.as_deref(),
            Some(d.want.endpoint),
            "{}",
            d.name
        );
        assert_eq!(cfg.pod_logs_dir, "/var/log/pods", "{}", d.name);
        assert_eq!(
            cfg.volume_stats_agg_period,
            Some(std::time::Duration::from_secs(60)),
            "{}",
            d.name
        );
        drop(kubelet);
    }
}

/// The value of the first sample of `family` whose labels include `labels`.
fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<String> {
    value(text, family, labels)
}

#[test]
fn kubedf_takes_root_dir_cri_endpoint_and_thresholds_from_the_kubelet() {
    let test = "kubedf_takes_root_dir_cri_endpoint_and_thresholds_from_the_kubelet";
    if !prerequisites(test, kubelet_prerequisites()) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let k0s = distros()
        .into_iter()
        .find(|d| d.name == "k0s")
        .expect("k0s fixture");
    let root = tempfile::tempdir().expect("tempdir");
    let _kubelet = set_up(&k0s, root.path());
    std::fs::create_dir_all(root.path().join("var/lib/k0s/kubelet")).expect("root dir");
    let rootfs = root.path().to_str().expect("utf-8");
    let out = kubedf!().run(&["metrics", "--path.rootfs", rootfs, "--path.procfs", "/proc"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        sample(
            &text,
            "kubedf_kubelet_config_info",
            &[
                ("path", "/var/lib/k0s/kubelet-config.yaml"),
                ("source", "process")
            ]
        )
        .as_deref(),
        Some("1"),
        "{text}\n{stderr}"
    );
    // nodefs is the filesystem of k0s's root dir, and its 10% threshold
    // (kubelet's default, float32 0.1) is taken of that capacity.
    let capacity: i64 = sample(
        &text,
        "kubedf_eviction_signal_capacity",
        &[("signal", "nodefs.available")],
    )
    .expect("nodefs observed")
    .parse()
    .expect("integer");
    let [blocks, ..] = statfs_figures(&root.path().join("var/lib/k0s/kubelet"));
    assert!(blocks > 0);
    let want = (capacity as f64 * f64::from(0.1f32)) as i64;
    assert_eq!(
        sample(
            &text,
            "kubedf_eviction_threshold",
            &[("signal", "nodefs.available"), ("kind", "hard")]
        ),
        Some(want.to_string()),
        "{text}"
    );
    // The CRI endpoint is k0s's socket, reached under --path.rootfs (no
    // runtime listens there: the error names it).
    let socket = format!("{rootfs}/run/k0s/containerd.sock");
    assert!(
        stderr.contains(&socket) || text.contains(&socket),
        "{stderr}"
    );
    let df = kubedf!().run(&["df", "--path.rootfs", rootfs, "--path.procfs", "/proc"]);
    let df_text = String::from_utf8_lossy(&df.stdout);
    assert!(
        df_text.contains("kubelet config source: process (kubelet (pid"),
        "{df_text}"
    );
    // A kubedf flag given explicitly still wins.
    let out = kubedf!().run(&[
        "df",
        "--path.rootfs",
        rootfs,
        "--path.procfs",
        "/proc",
        "--kubelet.root-dir",
        "/nonexistent/kubedf/root",
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("/nonexistent/kubedf/root"), "{all}");
}

/// nodefs.available's hard threshold in bytes and the capacity it is taken
/// of, from an exposition.
fn nodefs_threshold(text: &str) -> Option<(i64, i64)> {
    let capacity = sample(
        text,
        "kubedf_eviction_signal_capacity",
        &[("signal", "nodefs.available")],
    )?
    .parse()
    .ok()?;
    let threshold = sample(
        text,
        "kubedf_eviction_threshold",
        &[("signal", "nodefs.available"), ("kind", "hard")],
    )?
    .parse()
    .ok()?;
    Some((threshold, capacity))
}

/// kubelet's threshold for a percentage of `capacity`: float64(capacity) *
/// float64(float32(percent)/100), truncated.
fn percent_of(capacity: i64, percent: f32) -> i64 {
    (capacity as f64 * f64::from(percent / 100.0)) as i64
}

#[test]
fn a_restarted_kubelet_with_other_flags_is_followed_while_serving() {
    let test = "a_restarted_kubelet_with_other_flags_is_followed_while_serving";
    if !prerequisites(test, kubelet_prerequisites()) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().expect("tempdir");
    write_host_files(
        root.path(),
        &[(
            "/var/lib/kubelet/config.yaml",
            &format!("{HEAD}cgroupDriver: systemd\n"),
        )],
    );
    let start = |percent: u32, config: &str| {
        FakeKubelet::start(
            root.path(),
            "/usr/bin/kubelet",
            &[
                &format!("--config={config}"),
                &format!("--eviction-hard=nodefs.available<{percent}%"),
            ],
        )
    };
    let first = start(10, "/var/lib/kubelet/config.yaml");
    let rootfs = root.path().to_str().expect("utf-8");
    let served = kubedf!().serve(&[
        "--path.rootfs",
        rootfs,
        "--path.procfs",
        "/proc",
        "--cri.endpoint",
        NO_RUNTIME,
        "--sample-interval",
        "200ms",
        "--kubelet.config-refresh-interval",
        "500ms",
    ]);
    let wait = std::time::Duration::from_secs(60);
    served.scrape_until(wait, "nodefs.available at 10%", |text| {
        nodefs_threshold(text).is_some_and(|(t, c)| t == percent_of(c, 10.0))
    });
    // kubelet restarts with another threshold: a new pid, new flags.
    drop(first);
    let second = start(20, "/var/lib/kubelet/config.yaml");
    served.scrape_until(wait, "nodefs.available at 20% after the restart", |text| {
        nodefs_threshold(text).is_some_and(|(t, c)| t == percent_of(c, 20.0))
    });
    // A kubelet whose configuration cannot be read: the last good one stays,
    // and the log names the file.
    drop(second);
    let _third = start(30, "/var/lib/kubelet/missing.yaml");
    let deadline = std::time::Instant::now() + wait;
    while !served.log_text().contains("/var/lib/kubelet/missing.yaml") {
        assert!(
            std::time::Instant::now() < deadline,
            "no error naming the file:\n{}",
            served.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = served.scrape();
    let (t, c) = nodefs_threshold(&text).expect("nodefs threshold");
    assert_eq!(t, percent_of(c, 20.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "kubedf_kubelet_config_info",
            &[("source", "process")]
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
}

/// The `path` label of kubedf_nodefs_capacity_bytes and its value, when one is
/// exposed.
fn nodefs_series(text: &str) -> Vec<(String, String)> {
    samples(text)
        .into_iter()
        .filter(|l| l.name == "kubedf_nodefs_capacity_bytes")
        .map(|l| {
            let path = l.labels.get("path").cloned().unwrap_or_default();
            (path, l.value.clone())
        })
        .collect()
}

/// The fewest descriptors `pid` held over a few looks (a sample opens and
/// closes some on its own).
fn settled_fds(pid: u32) -> usize {
    (0..5)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(usize::MAX)
        })
        .min()
        .unwrap_or(usize::MAX)
}

#[test]
fn a_kubelet_restarted_with_another_root_dir_and_runtime_is_followed_unless_pinned() {
    let test = "a_kubelet_restarted_with_another_root_dir_and_runtime_is_followed_unless_pinned";
    if !prerequisites(
        test,
        kubelet_prerequisites().or_else(|| need_root_and(&["containerd", "ctr"])),
    ) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().expect("tempdir");
    write_host_files(
        root.path(),
        &[(
            "/var/lib/kubelet/config.yaml",
            &format!("{HEAD}cgroupDriver: systemd\n"),
        )],
    );
    // kubeadm's layout first: the default root dir, containerd's usual
    // socket where no runtime listens. Then k0s's: its root dir on a 64 MiB
    // tmpfs and a real containerd at its socket.
    let kubeadm = |root_dir: &str| -> Vec<String> {
        vec![
            "--config=/var/lib/kubelet/config.yaml".into(),
            format!("--root-dir={root_dir}"),
            "--container-runtime-endpoint=unix:///run/containerd/containerd.sock".into(),
        ]
    };
    let k0s = || -> Vec<String> {
        vec![
            "--config=/var/lib/kubelet/config.yaml".into(),
            "--root-dir=/var/lib/k0s/kubelet".into(),
            "--container-runtime-endpoint=unix:///run/k0s/containerd.sock".into(),
        ]
    };
    let start = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        FakeKubelet::start(root.path(), "/usr/bin/kubelet", &args)
    };
    let nodefs_bytes: u64 = 64 << 20;
    let _nodefs = Tmpfs::mount(&root.path().join("var/lib/k0s/kubelet"), nodefs_bytes);
    let containerd = testkit::containerd::Containerd::start(&root.path().join("run/k0s"), 32 << 20)
        .expect("containerd");
    assert_eq!(
        containerd.socket(),
        root.path()
            .canonicalize()
            .expect("real")
            .join("run/k0s/containerd.sock")
    );
    let mut kubelet = start(kubeadm("/var/lib/kubelet"));
    let rootfs = root.path().to_str().expect("utf-8");
    let common = [
        "--path.rootfs",
        rootfs,
        "--path.procfs",
        "/proc",
        "--sample-interval",
        "200ms",
        "--kubelet.config-refresh-interval",
        "500ms",
    ];
    let follows = kubedf!().serve(&common);
    let pinned = kubedf!().serve(
        &[
            &common[..],
            &[
                "--kubelet.root-dir",
                "/var/lib/kubelet",
                "--cri.endpoint",
                NO_RUNTIME,
            ],
        ]
        .concat(),
    );
    let wait = std::time::Duration::from_secs(60);
    let kubeadm_node = |text: &str| {
        nodefs_series(text)
            .iter()
            .map(|(p, _)| p.as_str())
            .eq(["/var/lib/kubelet"])
            && !has_family(text, "kubedf_cri_info")
    };
    follows.scrape_until(wait, "nodefs at /var/lib/kubelet, no runtime", kubeadm_node);
    pinned.scrape_until(wait, "nodefs at /var/lib/kubelet, no runtime", kubeadm_node);
    let k0s_node = |text: &str| {
        nodefs_series(text) == [("/var/lib/k0s/kubelet".to_owned(), nodefs_bytes.to_string())]
            && value(text, "kubedf_source_up", &[("source", "cri")]).as_deref() == Some("1")
            && has_family(text, "kubedf_cri_info")
    };
    // kubelet restarts as k0s's: kubedf follows with no restart of its own,
    // and the old root dir's series are gone.
    drop(kubelet);
    kubelet = start(k0s());
    let text = follows.scrape_until(wait, "nodefs and the runtime of k0s's kubelet", k0s_node);
    assert_eq!(
        value(
            &text,
            "kubedf_kubelet_config_info",
            &[("source", "process")]
        )
        .as_deref(),
        Some("1"),
        "{text}"
    );
    let log = follows.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("samplers now use the new ones"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{log}");
    let real = root.path().canonicalize().expect("real");
    for both in [
        "root dir \\\"/var/lib/kubelet\\\" -> \\\"/var/lib/k0s/kubelet\\\"".to_owned(),
        format!("{}/run/containerd/containerd.sock", real.display()),
        format!("{}/run/k0s/containerd.sock", real.display()),
    ] {
        assert!(said[0].contains(&both), "{both} in {}", said[0]);
    }
    // The pinned one keeps its flags: the same root dir, no runtime.
    let text = pinned.scrape();
    assert!(kubeadm_node(&text), "{text}");
    assert!(
        !pinned.log_text().contains("samplers now use the new ones"),
        "{}",
        pinned.log_text()
    );
    // Back and forth: each generation is dropped whole (its runtime
    // connection included), so the descriptors do not grow.
    let pid = follows.child.id();
    let fds = settled_fds(pid);
    for _ in 0..3 {
        drop(kubelet);
        kubelet = start(kubeadm("/var/lib/kubelet"));
        follows.scrape_until(wait, "back on kubeadm's layout", kubeadm_node);
        drop(kubelet);
        kubelet = start(k0s());
        follows.scrape_until(wait, "back on k0s's layout", k0s_node);
    }
    let after = settled_fds(pid);
    assert!(
        after <= fds,
        "{fds} descriptors, {after} after 6 generations"
    );
    drop(kubelet);
    drop(containerd);
}
