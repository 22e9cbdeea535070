# syntax=docker/dockerfile:1
#
# kubedf container image.
#
#   docker build -t ghcr.io/kubedf/kubedf:0.1.0 .
#
# Stage 1 builds a release binary with the toolchain of rust:1-bookworm
# (edition 2024 needs Rust 1.88 or later). build.rs compiles proto/ with
# protox, a pure-Rust protobuf compiler, so no protoc is installed.
# Stage 2 is distroless cc (Debian 12): glibc, libgcc_s and libm, which is all
# the dynamically linked binary needs, and a CA bundle, without which the
# Kubernetes client refuses to start; no shell, no package manager.
#
# tests/image.rs assembles an image of the same runtime shape (the path of the
# binary, the user, the entrypoint and command, the port: it checks them
# against this file) from the release binary without a Docker engine, and runs
# it under containerd with deploy/daemonset.yaml's security context.

FROM rust:1-bookworm AS builder
WORKDIR /src

# Dependency layer: build every dependency (and the proto code) against stub
# sources, so that a change to the sources alone does not rebuild all crates.
# It is invalidated only by Cargo.toml, Cargo.lock, build.rs or proto/.
# Bench, test and example targets are dropped from this stage's copy of
# Cargo.toml, because their files are not here yet and cargo refuses a
# manifest that names missing targets; dependencies are the same without them.
# The workspace's other member, the tests' support library testkit/, needs
# its manifest (and a stub source) for cargo to load the workspace; only the
# kubedf package is built (`-p kubedf`), so nothing of the tests is.
COPY Cargo.toml Cargo.lock build.rs ./
COPY testkit/Cargo.toml ./testkit/
COPY proto ./proto
RUN awk '/^\[/ { skip = /^\[\[(bench|test|example)\]\]/ } !skip' Cargo.toml > Cargo.stub.toml \
    && mv Cargo.stub.toml Cargo.toml \
    && mkdir src testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs testkit/src/lib.rs \
    && cargo build --release --locked -p kubedf \
    && rm -rf src testkit/src

# The real manifest and sources (.dockerignore keeps target/ and .git out).
# COPY keeps the context's mtimes, which may be older than the stub build's
# outputs: touch the crate roots so cargo rebuilds the kubedf crate.
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p kubedf \
    && cp target/release/kubedf /kubedf

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /kubedf /kubedf
# Non-root by default (distroless' nonroot user). The DaemonSet in deploy/
# overrides this with runAsUser: 0, because kubedf must read kubelet's pod
# volume dirs (/var/lib/kubelet/pods/*, root-owned, mode 0750) and talk to the
# root-owned CRI socket; it drops every capability but DAC_READ_SEARCH and
# keeps the root filesystem read-only. `kubedf df` and `kubedf metrics` need
# the same access when run on a node.
USER 65532:65532
EXPOSE 9842
ENTRYPOINT ["/kubedf"]
CMD ["serve"]
