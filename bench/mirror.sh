#!/usr/bin/env bash
# Benchmarks the service mirror (release build) on a private two-cluster
# testbed: the time to mirror 1,000 Services exported at once, each with a
# ready endpoint (and, as a yardstick, the time the local API server takes
# to create as many Services and slices directly), the time for a remote
# readiness change to reach the mirror's EndpointSlice, and the mirror's
# RSS. The testbed (east on 21440-21445, west on 21450-21455, a fresh
# temporary directory) is always stopped and deleted at the end. Progress
# goes to stderr, the summary to stdout, its last line as JSON. See
# BENCHMARKS.md.
#
#   bench/mirror.sh [--services N] [--flips N] [--gap-ms N] [--in-flight N] [--json FILE]
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_MIRROR_BASE_PORT (default 21440).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. bench/lib.sh
bench_parse "--services --flips --gap-ms --in-flight --json" "$@"
command -v kubectl >/dev/null || {
  echo "error: kubectl is not on PATH; the benchmark applies what tandem prints with it" >&2
  exit 1
}

bench_build

base_port=${BENCH_MIRROR_BASE_PORT:-21440}
dir=$(mktemp -d)
work=$dir.work
bench_pid=
cleanup() {
  status=$?
  trap - INT TERM
  if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
    # tandem-bench stops the mirror and the gateway it started when it gets SIGTERM.
    kill -TERM "$bench_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$bench_pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  if ((status != 0)); then
    for log in "$work/mirror.log" "$work/gateway.log"; do
      if [[ -s $log ]]; then
        echo "--- last lines of $log ---" >&2
        tail -n 30 "$log" >&2
      fi
    done
  fi
  bench_testbed_down "$dir"
  rm -rf "$dir" "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_header
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: other work skews the figures)" >&2
echo "testbed: clusters east (127.0.0.1:$base_port) and west (127.0.0.1:$((base_port + 10))) in $dir" >&2
bench_testbed_up "$dir" east,west "$base_port"

mkdir -p "$work"
"$bench" mirror --kubeconfig "$kubeconfig" --local-context east --remote-context west \
  --remote-api-server "https://127.0.0.1:$((base_port + 10))" --tandem "$tandem" \
  --work-dir "$work" "${args[@]}" &
bench_pid=$!
wait "$bench_pid"
