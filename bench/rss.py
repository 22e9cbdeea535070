#!/usr/bin/env python3
"""kubedf's RSS at rest, for one or more builds side by side.

    sudo python3 bench/rss.py --bin-dir target/base,target/release --ns 0,100,1000
    sudo python3 bench/rss.py --bin-dir target/release --ns 1000 --massif /tmp/m

The setup of `bench/run.sh --only rest` (bench/bench.py: the fake API server's
N running pods, each with a CSI PVC mounted as a 1 MiB tmpfs at kubelet's
path; kubedf serve with its default 1m period), without node_exporter: for
each N, each build in turn is started, waited for until it reports the N
volumes, scraped with gzip every --pace seconds for --seconds, and its
VmRSS, its anonymous memory (smaps_rollup) and its threads are read before
it is stopped. Each build directory holds `kubedf` and
`examples/fake_kube_server`.

--massif DIR runs kubedf under valgrind's massif and writes, at rest, a
detailed snapshot of the live heap to DIR/<build>-<N>.massif (read it with
ms_print); RSS figures under valgrind are not kubedf's own.

Needs root (mounts). Every process and mount it makes is released.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402


def anonymous_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return None


def measure(bench, res, n, seconds, pace, massif):
    tag = f"rss{n}-{len(res.procs)}-{int(time.monotonic() * 1000)}"
    root = os.path.join(bench.work, tag, "kubelet")
    os.makedirs(root, exist_ok=True)
    fake, kubeconfig, volumes = bench.start_fake(tag, generate=n)
    for v in volumes:
        res.mount_tmpfs(os.path.join(root, v["path"]), "1M")
    kd = bench.start_kubedf(tag, root, kubeconfig)
    if massif:
        # Started again under valgrind, with the same arguments.
        argv = kd.popen.args
        res.stop(kd)
        snap = os.path.join(massif, f"{os.path.basename(bench.bin.rstrip('/'))}-{n}.massif")
        argv = ["valgrind", "--tool=massif", "--threshold=0.3", f"--massif-out-file={snap}.all", *argv]
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        kd = res.spawn(f"kubedf-{tag}-massif", argv, port=kd.port, env=env)
    bench.wait_kubedf(kd, n, timeout=600)
    t0 = time.monotonic()
    while True:
        s = B.scrape(kd.port, gz=True, timeout=60)
        if s.status != 200:
            raise B.Fail(f"kubedf answered {s.status}")
        if time.monotonic() - t0 >= seconds:
            break
        time.sleep(pace)
    mem = B.memory_kib(kd.pid)
    out = dict(
        n=n,
        rss_kib=mem["VmRSS"],
        peak_rss_kib=mem["VmHWM"],
        anon_kib=anonymous_kib(kd.pid),
        threads=len(os.listdir(f"/proc/{kd.pid}/task")),
    )
    if massif:
        subprocess.run(["vgdb", f"--pid={kd.pid}", "detailed_snapshot", snap], check=False, capture_output=True)
    res.stop(kd, grace=30)
    res.stop(fake)
    if not res.umount_all(under=root):
        raise B.Fail(f"could not unmount everything under {root}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="comma-separated build directories, measured in turn at each N")
    ap.add_argument("--ns", default="0,100,1000")
    ap.add_argument("--seconds", type=float, default=60.0, help="at rest, after all N volumes are reported")
    ap.add_argument("--pace", type=float, default=15.0, help="seconds between gzip scrapes")
    ap.add_argument("--massif", help="a directory for massif snapshots of the live heap at rest")
    args = ap.parse_args()
    if os.geteuid() != 0:
        B.log("needs root (it mounts tmpfs)")
        return 2
    if args.massif:
        os.makedirs(args.massif, exist_ok=True)
    B.raise_on_signals()
    work = tempfile.mkdtemp(prefix=B.WORK_PREFIX)
    res = B.Resources(work)
    cfg = dict(B.MODES["full"])
    rows = []
    try:
        for n in [int(x) for x in args.ns.split(",")]:
            for bin_dir in args.bin_dir.split(","):
                bench = B.Bench(argparse.Namespace(bin_dir=bin_dir), cfg, res)
                row = dict(build=bin_dir, **measure(bench, res, n, args.seconds, args.pace, args.massif))
                B.log(f"{bin_dir} N={n}: RSS {row['rss_kib'] / 1024:.1f} MiB, anonymous {row['anon_kib'] / 1024:.1f} MiB")
                rows.append(row)
    finally:
        # The work dir (logs, kubeconfigs) goes once nothing is left in it.
        if res.close():
            shutil.rmtree(work, ignore_errors=True)
    print("| build | N | RSS MiB | anonymous MiB | peak RSS MiB | threads |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['build']} | {r['n']} | {r['rss_kib'] / 1024:.1f} | {r['anon_kib'] / 1024:.1f} "
            f"| {r['peak_rss_kib'] / 1024:.1f} | {r['threads']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
