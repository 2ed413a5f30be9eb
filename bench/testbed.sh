#!/usr/bin/env bash
# Benchmarks the testbed: warm start of two clusters (binaries already built)
# to Ready nodes, in a fresh directory each run, and the memory (RSS) of all
# testbed processes once up. Prints each run and the medians.
#
#   bench/testbed.sh [RUNS]      (default 5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-5}
cargo build -q -p tandem
tandem=${CARGO_TARGET_DIR:-target}/debug/tandem
"$tandem" testbed build >/dev/null
base_port=${BENCH_BASE_PORT:-25440}

starts=() restarts=() rss=()
for i in $(seq 1 "$runs"); do
  dir=$(mktemp -d)
  t0=$(date +%s.%N)
  "$tandem" testbed up --nodes fake --dir "$dir" --base-port "$base_port" >/dev/null 2>"$dir.log"
  t1=$(date +%s.%N)
  bytes=$("$tandem" testbed status --dir "$dir" -o json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(c.get("rss_bytes") or 0 for cl in s["clusters"] for c in cl["components"]))')
  "$tandem" testbed down --dir "$dir" 2>/dev/null
  t2=$(date +%s.%N)
  "$tandem" testbed up --nodes fake --dir "$dir" --base-port "$base_port" >/dev/null 2>>"$dir.log"
  t3=$(date +%s.%N)
  "$tandem" testbed down --purge --dir "$dir" 2>/dev/null
  rm -f "$dir.log"
  start=$(awk "BEGIN {print $t1 - $t0}") restart=$(awk "BEGIN {print $t3 - $t2}")
  starts+=("$start") restarts+=("$restart") rss+=("$bytes")
  printf 'run %d: fresh start %.1f s, restart %.1f s, RSS %d MiB\n' "$i" "$start" "$restart" $((bytes / 1048576))
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '\nmedian of %d runs on %s (%d cores):\n' "$runs" "$(uname -m)" "$(nproc)"
printf '  warm start, two clusters to Ready nodes (fresh dir): %.1f s\n' "$(median "${starts[@]}")"
printf '  restart of an existing testbed (data kept):          %.1f s\n' "$(median "${restarts[@]}")"
printf '  RSS of all testbed processes, two clusters:          %d MiB\n' $(( $(median "${rss[@]}" | cut -d. -f1) / 1048576 ))
