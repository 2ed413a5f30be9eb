#!/usr/bin/env bash
# Runs every test of tandem on a fresh machine, building what they need:
#   - the Rust workspace (cargo; its target directory is kept outside the clone);
#   - kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok,
#     built from Go modules into ~/.cache/tandem (once; reused after that);
#   - a two-cluster test testbed on 127.0.0.1, stopped again at the end.
# It needs Rust (rustup), Go >= 1.26 and kubectl on PATH, and fails, naming
# what is missing, when one is not there.
#
# Environment:
#   TANDEM_CACHE          cache root (default ~/.cache/tandem)
#   CARGO_TARGET_DIR      cargo's target directory (default $TANDEM_CACHE/cargo-target)
#   TANDEM_KEEP_TESTBED=1 leave the test testbed running afterwards
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export TANDEM_CACHE=${TANDEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TANDEM_CACHE/cargo-target}
export TANDEM_TEST_TESTBED_DIR=${TANDEM_TEST_TESTBED_DIR:-$TANDEM_CACHE/test-testbed}

missing=0
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "error: '$1' is not on PATH: $2" >&2
    missing=1
  fi
}
need cargo "install Rust with rustup (https://rustup.rs)"
need go "install Go 1.26 or newer (https://go.dev/doc/install); the testbed is built from Go modules"
need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/); the tests drive the clusters with it"
[[ $missing == 0 ]] || exit 1

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo build"
cargo build --workspace --all-targets --quiet

tandem=$CARGO_TARGET_DIR/debug/tandem
step "building the testbed's Kubernetes binaries from Go modules (cached after the first time)"
"$tandem" testbed build >/dev/null

stop_testbed() {
  if [[ "${TANDEM_KEEP_TESTBED:-}" != 1 && -e "$TANDEM_TEST_TESTBED_DIR/testbed.json" ]]; then
    step "stopping the test testbed"
    "$tandem" testbed down --dir "$TANDEM_TEST_TESTBED_DIR" || true
  fi
}
trap stop_testbed EXIT

step "cargo test"
cargo test --workspace --no-fail-fast
