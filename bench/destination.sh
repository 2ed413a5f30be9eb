#!/usr/bin/env bash
# Benchmarks the destination service (release build) on a private one-cluster
# testbed: the time from a TrafficSplit weight change (the patch sent) to a
# GetProfile subscriber seeing the new overrides, over N changes, with many
# splits and profiles subscribed. Target: p99 < 100 ms. The testbed (ports
# 26440-26445, a fresh temporary directory) is always stopped and deleted at
# the end. Progress goes to stderr, the summary to stdout, its last line as
# JSON.
#
#   bench/destination.sh [--changes N] [--splits N] [--gap-ms N] [--json FILE]
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_BASE_PORT (default 26440).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. bench/lib.sh
bench_parse "--changes --splits --gap-ms --json" "$@"
command -v kubectl >/dev/null || {
  echo "error: kubectl is not on PATH; the benchmark applies the TrafficSplit CRD with it" >&2
  exit 1
}

bench_build

base_port=${BENCH_BASE_PORT:-26440}
dir=$(mktemp -d)
log=$dir.destination.log
bench_trap_testbed "$dir" "$log" destination

bench_header
echo "testbed: one cluster 'bench' on 127.0.0.1:$base_port in $dir" >&2
bench_testbed_up "$dir" bench "$base_port"

"$bench" destination --kubeconfig "$kubeconfig" --context bench --tandem "$tandem" \
  --log "$log" "${args[@]}"
