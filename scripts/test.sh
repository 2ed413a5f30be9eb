#!/usr/bin/env bash
# Runs every test of tandem on a fresh machine, building what they need:
#   - the Rust workspace (cargo; its target directory is kept outside the clone);
#   - kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok,
#     built from Go modules into ~/.cache/tandem (once; reused after that);
#   - kubelet, kube-proxy, containerd, the CNI plugins and CoreDNS, built from
#     Go modules the same way, and the pause binary (gcc);
#   - Debian's runc, iptables, nftables and busybox-static (apt), for real nodes,
#     and chromium (apt), for the headless-browser tests of the pages;
#   - two two-cluster test testbeds: one of fake nodes on 127.0.0.1, one of
#     real nodes (network namespaces on 198.18.0.0/15), stopped at the end.
# It needs Rust (rustup), Go >= 1.26, gcc and kubectl on PATH, and root for
# the real nodes, and fails, naming what is missing, when one is not there.
#
# Environment:
#   TANDEM_CACHE          cache root (default ~/.cache/tandem)
#   CARGO_TARGET_DIR      cargo's target directory (default $TANDEM_CACHE/cargo-target)
#   TANDEM_KEEP_TESTBED=1 leave the test testbed running afterwards
#   TANDEM_TEST_TESTBED_DIR, TANDEM_TEST_REAL_TESTBED_DIR, TANDEM_TEST_BASE_PORT,
#   TANDEM_TEST_REAL_BASE_PORT  where the two shared test testbeds live and
#                         listen (defaults: under the cache, ports 27440 and 18440),
#                         so that two checkouts can run tests at once
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export TANDEM_CACHE=${TANDEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TANDEM_CACHE/cargo-target}
export TANDEM_TEST_TESTBED_DIR=${TANDEM_TEST_TESTBED_DIR:-$TANDEM_CACHE/test-testbed}
export TANDEM_TEST_REAL_TESTBED_DIR=${TANDEM_TEST_REAL_TESTBED_DIR:-$TANDEM_CACHE/test-testbed-real}

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
need gcc "install gcc and libc6-dev (apt-get install gcc libc6-dev); the pause binary is built with it"
[[ $missing == 0 ]] || exit 1

step() { printf '\n==> %s\n' "$*" >&2; }

# Debian's runc, iptables, nftables and busybox-static for real nodes, and
# chromium for the browser tests, when they are missing.
. scripts/packages.sh
install_packages --browser

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo build"
cargo build --workspace --all-targets --quiet

tandem=$CARGO_TARGET_DIR/debug/tandem
step "building the testbed's Kubernetes binaries from Go modules (cached after the first time)"
"$tandem" testbed build >/dev/null

# For the whole suite, nftables counts in the host's namespace the packets
# from the testbeds' range (198.18.0.0/15) that leave through anything but
# loopback and the testbeds' bridges, and the packets the host forwards out
# of a bridge. Both must stay 0: nothing of the testbed leaves the machine.
egress_table="tandem_suite_egress_$$"
nft -f - <<NFT
table inet $egress_table {
  chain egress { type filter hook postrouting priority 0; policy accept;
    oifname != "lo" oifname != "tandem*" ip saddr 198.18.0.0/15 counter
  }
  chain forwarded { type filter hook forward priority 0; policy accept;
    oifname != "tandem*" counter
  }
}
NFT

stop_testbed() {
  if [[ "${TANDEM_KEEP_TESTBED:-}" != 1 ]]; then
    for dir in "$TANDEM_TEST_TESTBED_DIR" "$TANDEM_TEST_REAL_TESTBED_DIR"; do
      if [[ -e "$dir/testbed.json" ]]; then
        step "stopping the test testbed in $dir"
        "$tandem" testbed down --dir "$dir" || true
      fi
    done
  fi
  nft delete table inet "$egress_table" 2>/dev/null || true
}
trap stop_testbed EXIT

step "cargo test"
status=0
cargo test --workspace --no-fail-fast || status=$?

leaked=$(nft list table inet "$egress_table" | grep -o 'packets [0-9]*' | awk '{s += $2} END {print s + 0}')
forward=$(cat /proc/sys/net/ipv4/ip_forward)
step "left the machine during the suite: $leaked packet(s); the host's ip_forward: $forward"
if [[ $leaked != 0 || $forward != 0 ]]; then
  echo "error: testbed traffic left the machine ($leaked packets), or the host forwards (ip_forward=$forward)" >&2
  status=1
fi
exit "$status"
