#!/usr/bin/env bash
# kubedf against node_exporter: the one benchmark command.
#
#   bench/run.sh            full run (~15 min once built): release build, then
#                           writes docs/benchmarks.md, docs/benchmark-scrape-latency.png
#                           and bench/results.json
#   bench/run.sh --smoke    the harness on small N (0 and 10) with a few seconds per
#                           step, debug build, report written to a temp dir (never
#                           docs/); exits non-zero if any step fails. Under a minute
#                           once the debug build is done (the test suite runs it).
#
# Options: --out-dir DIR (where the report goes), --only scrape,rest,hung,walk,walkrss,render.
# Env: BENCH_NOTE="text" adds a note under the machine description;
# BENCH_REST_NS=0,1000 measures the cost at rest at those N only.
#
# What it measures, for kubedf and node_exporter 1.5.0 (Debian's
# prometheus-node-exporter with only the filesystem collector) looking at the same
# N filesystems, in one run on one machine (see docs/benchmarks.md for the method):
#   a. N = 0, 100, 1000 tmpfs (size=1M) at kubelet's CSI volume paths of running pods
#      served by a fake API server (examples/fake_kube_server.rs): sequential scrape
#      latency p50/p99, wrk -c 8 -t 2 (req/s, p99), CPU per scrape, RSS and peak RSS,
#      bytes per scrape; plain and gzip.
#   b. one hung FUSE mount (examples/hangfs.rs, statfs never answers) added to N=100:
#      scrapes 1, 2 and 10 of each exporter against a control run without it.
#   c. kubedf's usage walk against kubelet's du method (du -x -s -B 1 + find -xdev)
#      on 200,000 files in 2,000 directories on a tmpfs; results must be identical.
#      Then kubedf serve's peak RSS (VmHWM) while it walks a hostPath PV into which a
#      tenant puts 20,000 directories under 14 nested 250-character names, against
#      its RSS walking the PV empty (issue 16; target: within 8 MiB).
#   d. benches/render.rs (criterion): rendering 1,000 and 10,000 PVCs.
#   e. kubedf's sampling cost: CPU per volume per period at N=1000 with a 2s period,
#      and CPU per minute idling at N=1000 with the default 1m period.
#
# Needs: root (mounts), Debian packages prometheus-node-exporter, wrk and fuse3
# (installed with apt-get when missing, without starting node_exporter's service),
# python3 (standard library; the full run pip-installs matplotlib into bench/.venv
# for the chart and falls back to a plain-Python PNG writer if that fails), cargo.
# Every server listens on 127.0.0.1 only; every process and mount is cleaned up.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
out_dir=
only=
while (($#)); do
    case "$1" in
    --smoke) mode=smoke ;;
    --out-dir) out_dir=$2; shift ;;
    --only) only=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh: needs root (it mounts tmpfs and FUSE filesystems)" >&2
    exit 2
fi

missing=()
command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
command -v wrk >/dev/null || missing+=(wrk)
command -v fusermount3 >/dev/null || missing+=(fuse3)
if ((${#missing[@]})); then
    echo "bench/run.sh: installing ${missing[*]}" >&2
    # Keep the package scripts from starting node_exporter's service (it would
    # listen on every interface): the standard policy-rc.d "deny".
    policy_added=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    status=0
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
    ((status == 0)) || { echo "bench/run.sh: apt-get failed" >&2; exit 2; }
fi

# Build. The smoke run uses the debug profile (already built by `cargo test
# --all-targets`); the full run the release profile, and criterion's bench profile.
if [ "$mode" = smoke ]; then
    cargo build --locked --bin kubedf --examples
    bin_dir=target/debug
    bench_exe=$(cargo test --locked --bench render --no-run --message-format=json |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "render" and m.get("executable"):
        print(m["executable"])')
else
    cargo build --release --locked --bin kubedf --examples
    bin_dir=target/release
    bench_exe=$(cargo bench --locked --bench render --no-run --message-format=json |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "render" and m.get("executable"):
        print(m["executable"])')
fi
if [ -z "$bench_exe" ]; then
    echo "bench/run.sh: could not build benches/render.rs" >&2
    exit 1
fi

plot_python=
if [ "$mode" = full ]; then
    out_dir=${out_dir:-docs}
    results=bench/results.json
    if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c 'import matplotlib' 2>/dev/null; then
        { python3 -m venv bench/.venv && bench/.venv/bin/pip install -q matplotlib; } >&2 ||
            echo "bench/run.sh: matplotlib unavailable; the chart is drawn by bench/pngplot.py" >&2
    fi
    bench/.venv/bin/python -c 'import matplotlib' 2>/dev/null && plot_python=bench/.venv/bin/python
else
    # Reports of earlier smoke runs are kept for a day.
    find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'kubedf-smoke-report.*' -mtime +0 -exec rm -rf {} + 2>/dev/null || true
    out_dir=${out_dir:-$(mktemp -d "${TMPDIR:-/tmp}/kubedf-smoke-report.XXXXXX")}
    results=$out_dir/results.json
fi
mkdir -p "$out_dir"
raw=$(mktemp -d "${TMPDIR:-/tmp}/kubedf-results.XXXXXX")
trap 'rm -rf "$raw"' EXIT

# The full run measures copies of the binaries: target/ is shared, and a
# build started by someone else must not swap them in the middle of a run.
if [ "$mode" = full ]; then
    mkdir -p "$raw/bin/examples"
    cp "$bin_dir/kubedf" "$raw/bin/"
    for example in fake_kube_server hangfs walk; do
        cp "$bin_dir/examples/$example" "$raw/bin/examples/"
    done
    cp "$bench_exe" "$raw/bin/render"
    bin_dir=$raw/bin
    bench_exe=$raw/bin/render
fi

status=0
profile=release
[ "$mode" = smoke ] && profile=debug
python3 bench/bench.py --mode "$mode" --bin-dir "$bin_dir" --render-bench "$bench_exe" --profile "$profile" \
    --out-dir "$raw" ${only:+--only "$only"} || status=$?
if [ ! -f "$raw/results.json" ]; then
    echo "bench/run.sh: the harness wrote no results (exit $status)" >&2
    exit $((status ? status : 1))
fi
cp "$raw/results.json" "$results"

report_args=("$results" --md "$out_dir/benchmarks.md")
if [ "$mode" = full ]; then
    report_args+=(--png "$out_dir/benchmark-scrape-latency.png" --results-path "$results")
    [ -n "$plot_python" ] && report_args+=(--plot-python "$plot_python")
fi
python3 bench/report.py "${report_args[@]}" || status=$((status ? status : 1))

echo "bench/run.sh: $mode run finished with status $status; report: $out_dir/benchmarks.md" >&2
exit "$status"
