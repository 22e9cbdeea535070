#!/usr/bin/env python3
"""Two builds of kubedf's usage walk side by side, on the same trees.

    python3 bench/walk_ab.py --a OLD/examples/walk --b NEW/examples/walk [--rounds 7] [--smoke]

Each argument is a build of examples/walk.rs (`cargo build --release --example
walk`; keep a copy of the old one before rebuilding). As root, on a tmpfs of its
own (so the disk is not the variable), it makes bench.py's walk tree (200,000
files in 2,000 directories) and issue 16's tenant tree (20,000 directories under
14 nested 250-character names), then runs both builds with 1 and 2 threads under
`nice -n 19`, interleaved, the order rotating each round, after one warm-up
round. It prints the medians of each build's own timer (process start left out)
and the ratios b / a, and fails if the builds disagree on bytes or inodes (or
with du and find). A build that cannot walk a tree (the old walk beyond
PATH_MAX) is reported as failing there.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402 - the harness's tree makers and du/find oracle


def run(walk, threads, top):
    out = subprocess.run(
        ["nice", "-n", "19", walk, "--threads", str(threads), top],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    if out.returncode != 0:
        return None, out.stderr.strip().splitlines()[-1][:200]
    w = bench.json.loads(out.stdout)
    return (w["bytes"], w["inodes"], w["elapsed_seconds"]), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="examples/walk of the first build (the old one)")
    ap.add_argument("--b", required=True, help="examples/walk of the second build (the new one)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="bench.py's smoke sizes")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("walk_ab: needs root (mounts a tmpfs)", file=sys.stderr)
        return 2
    cfg = dict(bench.MODES["smoke" if args.smoke else "full"])
    work = tempfile.mkdtemp(prefix=bench.WORK_PREFIX + "ab-")
    res = bench.Resources(work)
    maker = types.SimpleNamespace(cfg=cfg)
    failed = False
    try:
        trees = {}
        top = os.path.join(work, "tree")
        res.mount_tmpfs(top, cfg["tree_size"])
        bench.Bench.make_tree(maker, top)
        trees[f"{cfg['tree_files']:,} files in {cfg['tree_top'] * (1 + cfg['tree_sub']):,} dirs"] = top
        deep = os.path.join(work, "deep")
        res.mount_tmpfs(deep, cfg["deep_size"])
        bench.Bench.make_deep_tree(maker, deep)
        trees[f"{cfg['deep_dirs']:,} dirs under {cfg['deep_names']} names of {cfg['deep_name_len']}"] = deep
        builds = {"a": args.a, "b": args.b}
        for name, path in trees.items():
            want = bench.du_find(path)
            runs = {(b, t): [] for b in builds for t in (1, 2)}
            errors = {}
            keys = list(runs)
            for r in range(args.rounds + 1):
                k = r % len(keys)
                for key in keys[k:] + keys[:k]:
                    got, err = run(builds[key[0]], key[1], path)
                    if err:
                        errors[key] = err
                    elif got[:2] != want:
                        errors[key] = f"counted {got[:2]}, du/find say {want}"
                    elif r > 0:
                        runs[key].append(got[2])
            print(f"{name}: {want[0]:,} bytes, {want[1]:,} inodes; medians of {args.rounds} rounds")
            for t in (1, 2):
                cells = []
                for b in builds:
                    if (b, t) in errors:
                        cells.append(f"{b} fails: {errors[(b, t)]}")
                    else:
                        cells.append(f"{b} {statistics.median(runs[(b, t)]) * 1e3:8.1f} ms")
                line = f"  {t} thread{'s' if t > 1 else ' '}: " + "   ".join(cells)
                if not errors.keys() & {("a", t), ("b", t)}:
                    ratio = statistics.median(runs[("b", t)]) / statistics.median(runs[("a", t)])
                    line += f"   b/a {ratio:.2f}"
                print(line)
            failed = failed or any(k[0] == "b" for k in errors)
    finally:
        res.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
