#!/usr/bin/env bash
# Benchmarks the testbed with real nodes (needs root): a warm start of two
# clusters (binaries and image archives cached) until each node and CoreDNS
# is Ready, pod start latency (create to Ready), and the memory of everything
# the testbed runs. Prints each run and the medians.
#
#   bench/nodes.sh [RUNS] [PODS]     (default 5 runs, 20 pods per run)
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_NODES_BASE_PORT
# (default 16440).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-5}
pods=${2:-20}
. scripts/packages.sh && install_packages
cargo build -q -p tandem
tandem=${CARGO_TARGET_DIR:-target}/debug/tandem
"$tandem" testbed build >/dev/null
base_port=${BENCH_NODES_BASE_PORT:-16440}

# Resident memory of a set of pids, in bytes.
rss_of() {
  local total=0 kib
  for pid in "$@"; do
    kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${kib:-0} * 1024))
  done
  echo "$total"
}

starts=() p50s=() p90s=() rss=()
for i in $(seq 1 "$runs"); do
  dir=$(mktemp -d)
  trap '"$tandem" testbed down --purge --dir "$dir" >/dev/null 2>&1 || true' EXIT
  t0=$(date +%s.%N)
  "$tandem" testbed up --nodes real --dir "$dir" --base-port "$base_port" >/dev/null 2>"$dir.log"
  t1=$(date +%s.%N)
  export KUBECONFIG=$dir/kubeconfig

  # Pods one after another: `kubectl create`, then a watch until Ready.
  lat=()
  for p in $(seq 1 "$pods"); do
    s=$(date +%s.%N)
    kubectl --context east run "bench-$p" --image ghcr.io/tandem-io/toolbox:latest \
      --image-pull-policy=Never --restart=Never --command -- sleep 3600 >/dev/null
    kubectl --context east wait --for=condition=Ready "pod/bench-$p" --timeout=60s >/dev/null
    e=$(date +%s.%N)
    lat+=("$(awk "BEGIN {print $e - $s}")")
  done

  # Every process of the testbed: its components, the containerd shims and
  # what runs in the pods' cgroups.
  slot=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["slot"])' "$dir/testbed.json")
  pids=$("$tandem" testbed status --dir "$dir" -o json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join(str(c["pid"]) for cl in s["clusters"] for c in cl["components"] if c.get("pid")))')
  shims=$(grep -l "/run/tandem/$slot/" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 | tr '\n' ' ' || true)
  pods_pids=$(cat /sys/fs/cgroup/pids/tandem"$slot"-*/cgroup.procs /sys/fs/cgroup/pids/tandem"$slot"-*/*/cgroup.procs \
    /sys/fs/cgroup/pids/tandem"$slot"-*/*/*/cgroup.procs /sys/fs/cgroup/pids/tandem"$slot"-*/*/*/*/cgroup.procs 2>/dev/null | sort -u | tr '\n' ' ')
  # shellcheck disable=SC2086
  bytes=$(rss_of $(printf '%s\n' $pids $shims $pods_pids | sort -u))
  "$tandem" testbed down --purge --dir "$dir" >/dev/null 2>&1
  trap - EXIT
  rm -f "$dir.log"

  start=$(awk "BEGIN {print $t1 - $t0}")
  sorted=$(printf '%s\n' "${lat[@]}" | sort -g)
  p50=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  p90=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int(NR*0.9+0.999)]}')
  starts+=("$start") p50s+=("$p50") p90s+=("$p90") rss+=("$bytes")
  printf 'run %d: warm start %.1f s, pod create->Ready p50 %.2f s p90 %.2f s (%d pods), RSS %d MiB\n' \
    "$i" "$start" "$p50" "$p90" "$pods" $((bytes / 1048576))
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '\nmedian of %d runs on %s (%d cores):\n' "$runs" "$(uname -m)" "$(nproc)"
printf '  warm start, two clusters with real nodes to Ready nodes and CoreDNS: %.1f s\n' "$(median "${starts[@]}")"
printf '  pod create -> Ready, p50 / p90:                                      %.2f / %.2f s\n' "$(median "${p50s[@]}")" "$(median "${p90s[@]}")"
printf '  RSS of the whole testbed (components, shims, %d pods + CoreDNS):     %d MiB\n' "$pods" $(( $(median "${rss[@]}" | cut -d. -f1) / 1048576 ))
