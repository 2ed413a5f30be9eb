#!/usr/bin/env bash
# Benchmarks a weight change end to end (release build): the time from a
# TrafficSplit patch to a running `tandem proxy` sending requests by the new
# weights, over N flips of 100/0 and 0/100 between two backends. Target:
# p99 < 100 ms.
#
# A private one-cluster testbed of fake nodes (ports 26460+, a fresh
# temporary directory) holds the objects; `tandem destination` runs on the
# host, listening on 198.18.253.1, the host's end of a veth pair into a
# network namespace where `tandem proxy` runs as uid 2102 with proxy-init's
# kind of redirect (TCP to 198.19.0.0/16, the testbed's ClusterIPs, goes to
# its 4140). The backends and the prober run in that namespace, on a thread
# of the benchmark. Needs root. Everything is removed at the end. Progress
# goes to stderr, the summary to stdout, its last line as JSON.
#
#   bench/proxy-weights.sh [--changes N] [--gap-ms N] [--json FILE]
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_BASE_PORT (default 26460).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. bench/lib.sh
bench_parse "--changes --gap-ms --json" "$@"
if ((EUID != 0)); then
  echo "error: the proxy-weights benchmark needs root (network namespaces, iptables, setpriv)" >&2
  exit 1
fi
command -v kubectl >/dev/null || {
  echo "error: kubectl is not on PATH; the benchmark applies the TrafficSplit CRD with it" >&2
  exit 1
}

# The testbed is run by the build's tandem (tandem-testbed lies beside it).
bench_build

# The proxy runs as uid 2102, which may not read the build directory.
dir=$(mktemp -d)
chmod 755 "$dir"
cp "$target/tandem" "$target/tandem-bench" "$dir/"
chmod 755 "$dir/tandem" "$dir/tandem-bench"
tb=$dir/testbed
base_port=${BENCH_BASE_PORT:-26460}
ns=tandem-b-pw-$$
host_ip=198.18.253.1
cleanup() {
  status=$?
  if ((status != 0)); then
    for f in "$dir"/*.log; do
      [[ -s $f ]] && { echo "--- $f ---" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  ip netns del "$ns" 2>/dev/null || true
  bench_testbed_down "$tb"
  rm -rf "$dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_header
echo "testbed: one cluster 'bench' on 127.0.0.1:$base_port in $tb" >&2
bench_testbed_up "$tb" bench "$base_port"

# The namespace: a veth to the host (the destination service), lo for the
# backends, and the redirect of ClusterIP traffic to the proxy.
ip netns add "$ns"
ip -n "$ns" link set lo up
ip link add "tpwh$$" type veth peer name "tpwn$$" netns "$ns"
ip addr add "$host_ip/30" dev "tpwh$$"
ip link set "tpwh$$" up
ip -n "$ns" addr add 198.18.253.2/30 dev "tpwn$$"
ip -n "$ns" link set "tpwn$$" up
ip -n "$ns" route add default via "$host_ip"
nat() { ip netns exec "$ns" iptables -t nat "$@"; }
nat -A OUTPUT -m owner --uid-owner 2102 -j RETURN
nat -A OUTPUT -p tcp -d 198.19.0.0/16 -j REDIRECT --to-port 4140

"$dir/tandem-bench" proxy-weights --kubeconfig "$kubeconfig" --context bench \
  --tandem "$dir/tandem" --netns "$ns" --host-ip "$host_ip" --log-dir "$dir" "${args[@]}"
