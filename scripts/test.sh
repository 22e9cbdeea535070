#!/usr/bin/env bash
# The one test command (README "Test"): installs what the tests need from
# Debian, then runs formatting, lint and every test. Tests that need a real
# peer (containerd, mounts, promtool) fail rather than skip when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests talk to: containerd (a real CRI runtime),
# prometheus (promtool, and a real Prometheus), fuse3 (the hung-mount tests).
packages=(containerd prometheus fuse3)
missing=()
command -v containerd >/dev/null && command -v ctr >/dev/null || missing+=(containerd)
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)
command -v fusermount3 >/dev/null || missing+=(fuse3)
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: need root to install ${missing[*]} (or install them yourself)" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Examples are helpers the tests run (hangfs: a FUSE mount that hangs).
cargo build --examples --locked
cargo test --all-targets --locked
