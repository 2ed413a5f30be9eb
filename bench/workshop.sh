#!/usr/bin/env bash
# Benchmarks the workshop's payoff on real nodes: `tandem demo` with
# vote-bot at --rate votes a second (200 requests a second to web at the
# default 100: a list and a vote each), failing over and back --failovers
# times (scale emoji in east to 0, then to 1). It prints p50/p99/max of the
# time from `kubectl scale` until all of emoji's traffic reaches west (and
# until it is back), and vote-bot's failed requests over all the rounds
# (the target is 0; the deliberate :doughnut: failures are counted apart).
# The demo's testbed (a fresh temporary directory, ports from 26740) is
# always stopped and deleted at the end. The demo's output goes to stderr,
# the figures to stdout, the last line as JSON. See BENCHMARKS.md.
#
#   bench/workshop.sh [--failovers N] [--rate R] [--mode init|cni]
#                     [--sidecar classic|native] [--json FILE]
#
# --mode cni runs the demo in CNI mode (tandem install-cni, the app injected
# with --linkerd-cni-enabled: its pods start without an init container); the
# default, init, is the workshop's (proxy-init as an init container).
# --sidecar native installs with --native-sidecar: the app's proxies are
# native sidecars (init containers that keep running); the default,
# classic, is the workshop's (the proxy first among the containers).
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_BASE_PORT (default 26740),
# TMPDIR (default /tmp; keep it short: the kubelet's Unix sockets live under it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. bench/lib.sh
bench_parse "--failovers --rate --mode --sidecar --json" "$@"
. scripts/packages.sh && install_packages
failovers=10
rate=100
mode=init
sidecar=classic
json=
for ((i = 0; i < ${#args[@]}; i += 2)); do
  case ${args[i]} in
    --failovers) failovers=${args[i + 1]} ;;
    --rate) rate=${args[i + 1]} ;;
    --mode) mode=${args[i + 1]} ;;
    --sidecar) sidecar=${args[i + 1]} ;;
    --json) json=${args[i + 1]} ;;
  esac
done
case $mode in
  init) mode_flag=() ;;
  cni) mode_flag=(--cni) ;;
  *)
    echo "error: --mode is init or cni, not $mode" >&2
    exit 2
    ;;
esac
case $sidecar in
  classic) ;;
  native) mode_flag+=(--native-sidecar) ;;
  *)
    echo "error: --sidecar is classic or native, not $sidecar" >&2
    exit 2
    ;;
esac
command -v kubectl >/dev/null || {
  echo "error: kubectl is not on PATH; the demo runs it" >&2
  exit 1
}

# A release build, as a user's images would be: the testbed's images take
# the proxy (tandem) and the app (emojivoto) from beside the demo tool.
cargo build --release -q -p tandem -p tandem-emojivoto
tandem=$(realpath "${CARGO_TARGET_DIR:-target}/release/tandem")
dir=$(mktemp -d "${TMPDIR:-/tmp}/tandem-workshop.XXXXXX")
summary=$dir/summary.json
trap '"$tandem" demo --down --dir "$dir/demo" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

status=0
"$tandem" demo --dir "$dir/demo" --base-port "${BENCH_BASE_PORT:-26740}" \
  --failovers "$failovers" --rate "$rate" "${mode_flag[@]}" --summary "$summary" >&2 || status=$?
if [[ ! -f $summary ]]; then
  echo "error: the demo failed before its figures (exit $status); its output is above" >&2
  exit 1
fi
python3 - "$summary" <<'PY'
import json, math, sys
s = json.load(open(sys.argv[1]))
def spread(v):
    v = sorted(v)
    rank = lambda q: v[max(1, math.ceil(q * len(v))) - 1]
    return rank(0.5), rank(0.99), v[-1]
mode = "CNI mode (tandem-cni)" if s.get("cni") else "proxy-init as an init container"
if s.get("native_sidecar"):
    mode += ", native sidecars"
print(f"{s['failovers']} failovers and failbacks, vote-bot at {s['rate']}/s, {mode}")
for what in ("failover", "failback"):
    p50, p99, mx = spread(s[what + "_ms"])
    print(f"{what}: scale to all of emoji's traffic moved  p50 {p50} ms  p99 {p99} ms  max {mx} ms")
    # Where it went (see BENCHMARKS.md): until the endpoints changed it is
    # Kubernetes', until the weights did tandem's controller's.
    for step in ("endpoints", "weights"):
        seen = [m[step + "_ms"] for m in s.get(what + "_steps", []) if m.get(step + "_ms") is not None]
        if seen:
            p50, p99, mx = spread(seen)
            print(f"  {step} changed  p50 {p50} ms  p99 {p99} ms  max {mx} ms  (seen in {len(seen)} of {s['failovers']})")
print(f"failed requests: {s['failed_requests']}  (ok {s['ok_requests']}, deliberate :doughnut: {s['doughnut_failures']})")
PY
if [[ -n $json ]]; then cp "$summary" "$json"; fi
jq -c . "$summary" 2>/dev/null || python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$summary"
exit "$status"
