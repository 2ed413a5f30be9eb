#!/usr/bin/env bash
# Benchmarks the failover controller (release build) on a private one-cluster
# testbed: reaction time to readiness flips with 1,000 TrafficSplits and 2,000
# Services, the controller's RSS with 1,000 and 10,000 TrafficSplits, and the
# reaction in the first 60 s after a restart with 10,000 splits to record,
# under 100 unrelated endpoint changes a second (--restart-secs 0 skips it).
# The testbed (ports 25440-25445, a fresh temporary directory) is always
# stopped and deleted at the end. Progress goes to stderr, the summary to
# stdout, its last line as JSON. See BENCHMARKS.md.
#
#   bench/failover.sh [--flips N] [--splits N] [--rss-splits N] [--gap-ms N]
#                     [--restart-secs N] [--noise-per-sec N] [--json FILE]
#                     [--controller TANDEM]
#
# --controller runs another tandem binary as the controller (the testbed and
# the benchmark stay this build's): an earlier commit's release build, to
# compare two builds in the same session on the same machine.
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_BASE_PORT (default 25440).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. bench/lib.sh
bench_parse "--flips --splits --rss-splits --gap-ms --restart-secs --noise-per-sec --json --controller" "$@"
controller=
bench_args=()
for ((i = 0; i < ${#args[@]}; i += 2)); do
  case ${args[i]} in
    --controller) controller=${args[i + 1]} ;;
    *) bench_args+=("${args[i]}" "${args[i + 1]}") ;;
  esac
done
if [[ -n $controller && ! -x $controller ]]; then
  echo "error: --controller $controller is not an executable file" >&2
  exit 2
fi
command -v kubectl >/dev/null || {
  echo "error: kubectl is not on PATH; the benchmark applies the TrafficSplit CRD with it" >&2
  exit 1
}

bench_build

base_port=${BENCH_BASE_PORT:-25440}
dir=$(mktemp -d)
log=$dir.controller.log
bench_trap_testbed "$dir" "$log" controller

bench_header
echo "testbed: one cluster 'bench' on 127.0.0.1:$base_port in $dir" >&2
bench_testbed_up "$dir" bench "$base_port"

if [[ -n $controller ]]; then
  echo "controller: $controller ($("$controller" --version))" >&2
fi
"$bench" failover --kubeconfig "$kubeconfig" --context bench --tandem "${controller:-$tandem}" \
  --controller-log "$log" "${bench_args[@]}"
