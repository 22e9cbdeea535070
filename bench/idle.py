#!/usr/bin/env python3
"""kubedf's CPU per minute at rest, for several builds or flag sets side by side.

    sudo python3 bench/idle.py --n 0 --seconds 240 \\
        --variant 'base;target/base;gz' \\
        --variant 'new;target/release;gz' \\
        --variant 'no-scrape;target/release;none' \\
        --variant 'no-cri;target/release;gz;--no-collector.eviction'

The setup of `bench/run.sh --only rest` (bench/bench.py: the fake API server's
N running pods, each with a CSI PVC mounted as a 1 MiB tmpfs at kubelet's
path, its watch bookmarks once a minute as a real API server's
(--bookmark-interval); kubedf serve with its default 1m period, a missing
--kubelet.config and CRI socket), without node_exporter. Every variant runs at the same time
against the same fake server and mounts, so their figures share the
machine's conditions and can be compared with one another. A variant is
`label;build dir;gz|none[;extra kubedf arguments]`: `gz` scrapes it with
gzip every --pace seconds as Prometheus does, `none` never scrapes it after
it reported its N volumes.

For each variant: CPU per minute by utime+stime (clock ticks) and by the
scheduler's per-thread nanosecond clock, and the latter by thread name
(tokio's workers, its blocking pool, the measurement lane, the walk pool).
Needs root (mounts). Every process and mount it makes is released.
"""

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402


def threads(pid):
    """{tid: (comm, on-CPU ns)}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[tid] = (comm, ns)
    return out


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_variant(text):
    parts = text.split(";")
    if len(parts) < 3 or parts[2] not in ("gz", "none"):
        raise SystemExit(f"--variant {text!r}: want 'label;build dir;gz|none[;extra args]'")
    return dict(label=parts[0], bin_dir=parts[1], scrape=parts[2] == "gz", extra=shlex.split(";".join(parts[3:])))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=240.0, help="the measured window")
    ap.add_argument("--warmup", type=float, default=20.0, help="after every variant reports its N volumes")
    ap.add_argument("--pace", type=float, default=15.0, help="seconds between gzip scrapes")
    ap.add_argument(
        "--bookmark-interval",
        type=float,
        default=B.REAL_BOOKMARK_INTERVAL,
        help="seconds between the fake API server's watch bookmarks (a real one: about 60)",
    )
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    if os.geteuid() != 0:
        B.log("needs root (it mounts tmpfs)")
        return 2
    B.raise_on_signals()
    work = tempfile.mkdtemp(prefix=B.WORK_PREFIX)
    res = B.Resources(work)
    cfg = dict(B.MODES["full"])
    rows = []
    try:
        tag = f"idle{args.n}"
        root = os.path.join(work, tag, "kubelet")
        os.makedirs(root, exist_ok=True)
        first = B.Bench(argparse.Namespace(bin_dir=variants[0]["bin_dir"]), cfg, res)
        fake, kubeconfig, volumes = first.start_fake(tag, generate=args.n, bookmark_interval=args.bookmark_interval)
        for v in volumes:
            res.mount_tmpfs(os.path.join(root, v["path"]), "1M")
        for i, v in enumerate(variants):
            bench = B.Bench(argparse.Namespace(bin_dir=v["bin_dir"]), cfg, res)
            v["proc"] = bench.start_kubedf(f"{tag}-{i}-{v['label']}", root, kubeconfig, extra=v["extra"])
            v["bench"] = bench
        for v in variants:
            if "--no-collector.volume_stats" in v["extra"]:
                # Without the volume half there is no volume to wait for.
                B.wait_port(v["proc"], 30)
            else:
                v["bench"].wait_kubedf(v["proc"], args.n, timeout=600)
        time.sleep(args.warmup)
        B.log(f"N={args.n}: {len(variants)} variants side by side for {args.seconds:.0f}s")
        for v in variants:
            v["t0"], v["c0"] = threads(v["proc"].pid), ticks(v["proc"].pid)
        t0 = time.monotonic()
        i = 0
        while True:
            at = t0 + i * args.pace
            if at > t0 + args.seconds:
                break
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for v in variants:
                if v["scrape"]:
                    s = B.scrape(v["proc"].port, gz=True, timeout=30)
                    if s.status != 200:
                        raise B.Fail(f"{v['label']} answered {s.status}")
            i += 1
        # The window ends at the last pace step, not after a sleep past it.
        wall = time.monotonic() - t0
        for v in variants:
            pid = v["proc"].pid
            t1, c1 = threads(pid), ticks(pid)
            per_name = {}
            for tid, (comm, ns) in t1.items():
                used = ns - v["t0"].get(tid, (comm, 0))[1]
                per_name[comm] = per_name.get(comm, 0) + used
            total_ns = sum(per_name.values())
            rows.append(
                dict(
                    label=v["label"],
                    ticks_ms=(c1 - v["c0"]) / wall * 60e3,
                    sched_ms=total_ns / 1e6 / wall * 60,
                    by_thread={k: ns / 1e6 / wall * 60 for k, ns in sorted(per_name.items(), key=lambda kv: -kv[1])},
                    threads=len(t1),
                    exited=len(set(v["t0"]) - set(t1)),
                    started=len(set(t1) - set(v["t0"])),
                )
            )
    finally:
        if res.close():
            shutil.rmtree(work, ignore_errors=True)
    print(f"N={args.n}, {args.seconds:.0f}s window, scrapes every {args.pace:.0f}s")
    print("| variant | CPU ms/min (ticks) | CPU ms/min (sched) | threads (started/exited) | by thread, ms/min |")
    print("|---|---|---|---|---|")
    for r in rows:
        by = ", ".join(f"{k} {ms:.1f}" for k, ms in r["by_thread"].items() if ms >= 0.05)
        print(
            f"| {r['label']} | {r['ticks_ms']:.1f} | {r['sched_ms']:.1f} | {r['threads']} ({r['started']}/{r['exited']}) | {by} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
