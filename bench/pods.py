#!/usr/bin/env python3
"""The cost of kubedf's pod half at rest (issue 10), side by side in one run.

    bench/pods.py [--pods 100] [--files 10000] [--minutes 3] [--bin DIR]

Builds, under a temporary dir, a kubelet root with PODS running pods (from
the fake API server, examples/fake_kube_server.rs), each with three
containers (ephemeral-storage limits) and one emptyDir of FILES files, plus
each container's log dir under podLogsDir. Then runs `kubedf serve` twice
on it, with the pod_storage collector on and off (everything else equal,
--volume-stats-agg-period at its default 1m), waits until every pod's
emptyDir has been walked once, and measures for MINUTES minutes: CPU seconds
per minute (utime+stime of the process, /proc/PID/stat) and RSS (VmRSS).

No container runtime runs here (300 containers would need 400 shims), so
the CRI socket does not answer: writable layers are not asked for and the
log dirs are not walked (kubedf walks the logs of running containers only).
The figures are the emptyDir walks, the pod watch and the table upkeep.
Prints a Markdown table. Needs root only if --tmpfs is given.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read().decode()


def objects(n, node, ns):
    items = []
    for i in range(n):
        uid = f"00000000-0000-4000-8000-{i:012d}"
        containers = [
            {
                "name": f"c{c}",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"limits": {"ephemeral-storage": "1Gi"}},
            }
            for c in range(3)
        ]
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"pod-{i}", "namespace": ns, "uid": uid,
                             "resourceVersion": "1", "creationTimestamp": "2026-12-01T00:00:00Z"},
                "spec": {"nodeName": node, "containers": containers,
                         "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}]},
                "status": {"phase": "Running"},
            }
        )
    return items


def build_tree(base, items, files):
    root = os.path.join(base, "kubelet")
    logs = os.path.join(base, "log-pods")
    for pod in items:
        uid = pod["metadata"]["uid"]
        d = os.path.join(root, "pods", uid, "volumes", "kubernetes.io~empty-dir", "cache")
        for sub in range(files // 100):
            sd = os.path.join(d, f"d{sub}")
            os.makedirs(sd, exist_ok=True)
            for f in range(100):
                with open(os.path.join(sd, f"f{f}"), "wb") as fh:
                    fh.write(b"x")
        with open(os.path.join(root, "pods", uid, "etc-hosts"), "w") as fh:
            fh.write("127.0.0.1 localhost\n")
        for c in pod["spec"]["containers"]:
            ld = os.path.join(logs, f"{pod['metadata']['namespace']}_{pod['metadata']['name']}_{uid}", c["name"])
            os.makedirs(ld, exist_ok=True)
            with open(os.path.join(ld, "0.log"), "wb") as fh:
                fh.write(b"2026-12-01T00:00:00Z stdout F line\n" * 3000)
    return root, logs


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(bin_dir, base, kubeconfig, pod_storage, n, minutes):
    port = free_port()
    flag = "--collector.pod_storage" if pod_storage else "--no-collector.pod_storage"
    argv = [
        os.path.join(bin_dir, "kubedf"), "serve",
        "--web.listen-address", f"127.0.0.1:{port}",
        "--node-name", "node-1", "--kubeconfig", kubeconfig,
        "--kubelet.root-dir", os.path.join(base, "kubelet"),
        "--kubelet.config", os.path.join(base, "config.yaml"),
        "--cri.endpoint", "unix:///nonexistent/kubedf-bench/cri.sock",
        "--volume-stats-walk-timeout", "5m",
        flag,
    ]
    log = open(os.path.join(base, f"kubedf-{'on' if pod_storage else 'off'}.log"), "w")
    started = time.time()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 600
        while True:
            try:
                text = scrape(port)
                walked = text.count("kubedf_ephemeral_volume_used_bytes{")
                if not pod_storage or walked >= n:
                    break
            except OSError:
                pass
            if time.time() > deadline or p.poll() is not None:
                raise SystemExit(f"kubedf did not measure {n} pods (see {log.name})")
            time.sleep(1)
        warm = time.time()
        c0, t0 = cpu_seconds(p.pid), time.time()
        peak = 0
        while time.time() - t0 < minutes * 60:
            time.sleep(5)
            peak = max(peak, rss_kib(p.pid))
            scrape(port)  # a scrape every 5 s, as a busy Prometheus would
        c1, t1 = cpu_seconds(p.pid), time.time()
        return {
            "first_walks_s": warm - started,
            "cpu_s_per_min": (c1 - c0) / ((t1 - t0) / 60),
            "rss_kib": rss_kib(p.pid),
            "peak_rss_kib": peak,
        }
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--bin", default=None, help="dir with kubedf and examples/fake_kube_server")
    args = ap.parse_args()
    bin_dir = args.bin or os.path.join(ROOT, "target", "release")
    fake = os.path.join(bin_dir, "examples", "fake_kube_server")
    for exe in (os.path.join(bin_dir, "kubedf"), fake):
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"bench/pods.py: {exe} missing (cargo build --release --bin kubedf --examples)")
    base = tempfile.mkdtemp(prefix="kubedf-pods-bench.")
    fake_p = None
    try:
        items = objects(args.pods, "node-1", "bench")
        t = time.time()
        _, logs = build_tree(base, items, args.files)
        built = time.time() - t
        with open(os.path.join(base, "config.yaml"), "w") as fh:
            fh.write(f"kind: KubeletConfiguration\npodLogsDir: {logs}\n")
        obj = os.path.join(base, "objects.json")
        with open(obj, "w") as fh:
            json.dump(items, fh)
        kubeconfig = os.path.join(base, "kubeconfig")
        fake_p = subprocess.Popen([fake, "--kubeconfig", kubeconfig, "--objects", obj],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if fake_p.stdout.readline().strip() != "ready":
            raise SystemExit("fake_kube_server did not start")
        results = {}
        for on in (False, True):
            results[on] = run(bin_dir, base, kubeconfig, on, args.pods, args.minutes)
        load = os.getloadavg()
        off, on = results[False], results[True]
        print(f"pods={args.pods} containers={3 * args.pods} emptyDir files={args.pods * args.files} "
              f"(tree built in {built:.0f} s); binary {bin_dir}; load average {load[0]:.1f} on {os.cpu_count()} CPUs")
        print()
        print("| kubedf | CPU s/min at rest | RSS MiB | peak RSS MiB | until every emptyDir was walked once |")
        print("|---|---|---|---|---|")
        for name, r in (("pod_storage off", off), ("pod_storage on", on)):
            print(f"| {name} | {r['cpu_s_per_min']:.3f} | {r['rss_kib'] / 1024:.1f} | "
                  f"{r['peak_rss_kib'] / 1024:.1f} | {r['first_walks_s']:.0f} s |")
        print(f"| added by the pod half | {on['cpu_s_per_min'] - off['cpu_s_per_min']:.3f} | "
              f"{(on['rss_kib'] - off['rss_kib']) / 1024:.1f} | {(on['peak_rss_kib'] - off['peak_rss_kib']) / 1024:.1f} | |")
    finally:
        if fake_p is not None:
            fake_p.terminate()
            try:
                fake_p.wait(10)
            except subprocess.TimeoutExpired:
                fake_p.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
