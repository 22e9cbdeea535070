#!/usr/bin/env bash
# The one test command (README "Test"): installs what the tests need, then
# runs formatting, lint, every test and a smoke run of the benchmarks. Tests that need a real peer
# (containerd, mounts, promtool, Prometheus, kubectl, kubernetes-validate)
# fail rather than skip when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests talk to: containerd (a real CRI runtime),
# prometheus (promtool and a real Prometheus), fuse3 (the hung-mount tests),
# curl and openssl (the TLS tests), chromium (the landing page, headless),
# kubectl (kustomize; the machine image may
# already ship one from another package, which Debian's would conflict with).
missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }
need containerd containerd
need ctr containerd
# busybox-static: the tests build their container images from it.
need busybox busybox-static
# The CA bundle that kubedf's image carries, as its distroless base does.
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
need promtool prometheus
need prometheus prometheus
need fusermount3 fuse3
need curl curl
need openssl openssl
need losetup mount
need kubectl kubernetes-client
need chromium chromium
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: need root to install ${missing[*]} (or install them yourself)" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
# kubernetes-validate (PyPI) checks the built-in kinds of deploy/ and of the
# chart's renders.
if ! command -v kubernetes-validate >/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi
# helm-python-sdk (PyPI) embeds the real Helm v4 engine as a library:
# tests/chart.rs lints and renders charts/kubedf with it (no helm binary).
if ! python3 -c 'import helm_python' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check helm-python-sdk
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Examples are helpers the tests run (hangfs: a FUSE mount that hangs).
cargo build --examples --locked
# tests/image.rs packages the release binary into kubedf's image, as the
# Dockerfile does.
# Only the kubedf package (-p): the binary then has the features the
# Dockerfile's build gives it, not those the testkit's dependencies would add.
cargo build --release --locked -p kubedf --bin kubedf
export KUBEDF_IMAGE_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/release/kubedf"
cargo test --all-targets --locked
# A smoke run of the benchmark harness (small N, under a minute), so that it
# cannot rot; it installs node_exporter and wrk itself if they are missing.
bench/run.sh --smoke
