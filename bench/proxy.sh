#!/usr/bin/env bash
# Benchmarks the sidecar proxy (release build): the latency a client proxy
# plus a server proxy add to HTTP/1.1 requests, against the same app reached
# directly, at a fixed open-loop rate (default 1,000 rps for 10 s per path),
# and both proxies' RSS idle and under that load. Targets: p99 added < 1 ms,
# RSS < 20 MiB.
#
# Two network namespaces joined by a veth pair stand in for two pods: the
# client's iptables redirect its TCP to the server address to 4140 (the
# proxy's uid 2102 and the benchmark's direct path, marked 0x2102, are
# exempt); the server's redirect port 8080 to 4143; the app answers on 8080
# (behind the server proxy) and 8081 (direct). Needs root. Everything is
# removed at the end. Progress goes to stderr, the summary to stdout, its
# last line as JSON.
#
# --pin puts the client side (load generator, client proxy) on one CPU and
# the server side (server proxy, app) on another (taskset), as two pods on
# two nodes; without it the scheduler places them. --proxy-cores sets
# LINKERD2_PROXY_CORES (1, the default, is a single-threaded runtime).
#
#   bench/proxy.sh [--rps N] [--secs N] [--pin] [--proxy-cores N]
#
# Environment: CARGO_TARGET_DIR (default ./target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. bench/lib.sh

args=()
pin=false
cores=1
while (($#)); do
  case $1 in
    --rps | --secs)
      if (($# < 2)); then
        echo "error: $1 needs a value" >&2
        exit 2
      fi
      args+=("$1" "$2")
      shift 2
      ;;
    --proxy-cores)
      if (($# < 2)) || ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
        echo "error: --proxy-cores needs a positive number" >&2
        exit 2
      fi
      cores=$2
      shift 2
      ;;
    --pin)
      pin=true
      shift
      ;;
    -h | --help)
      bench_usage
      exit 0
      ;;
    *)
      echo "error: unknown argument $1 (see --help)" >&2
      exit 2
      ;;
  esac
done
if ((EUID != 0)); then
  echo "error: the proxy benchmark needs root (network namespaces, iptables, setpriv)" >&2
  exit 1
fi
. scripts/packages.sh && install_packages

# The CPUs this process may use; --pin takes the first two.
mapfile -t cpus < <(taskset -pc $$ | sed 's/.*: //' | tr ',' '\n' |
  awk -F- '{ if (NF == 2) { for (i = $1; i <= $2; i++) print i } else print $1 }')
client_side=()
server_side=()
if $pin; then
  if ((${#cpus[@]} < 2)); then
    echo "error: --pin needs two CPUs; this process may use ${cpus[*]}" >&2
    exit 1
  fi
  client_side=(taskset -c "${cpus[0]}")
  server_side=(taskset -c "${cpus[1]}")
fi

cargo build --release -q -p tandem -p tandem-bench
target=${CARGO_TARGET_DIR:-target}/release

# The proxies run as uid 2102, which may not read the build directory.
dir=$(mktemp -d)
chmod 755 "$dir"
cp "$target/tandem" "$target/tandem-bench" "$dir/"
chmod 755 "$dir/tandem" "$dir/tandem-bench"

ns_c=tandem-b-pc-$$
ns_s=tandem-b-ps-$$
pids=()
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((status != 0)); then
    for f in "$dir"/*.log; do
      [[ -s $f ]] && { echo "--- $f ---" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  ip netns del "$ns_c" 2>/dev/null || true
  ip netns del "$ns_s" 2>/dev/null || true
  rm -rf "$dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

client_ip=198.18.254.1
server_ip=198.18.254.2
ip netns add "$ns_c"
ip netns add "$ns_s"
ip -n "$ns_c" link set lo up
ip -n "$ns_s" link set lo up
ip link add "tpc$$" netns "$ns_c" type veth peer name "tps$$" netns "$ns_s"
ip -n "$ns_c" addr add "$client_ip/30" dev "tpc$$"
ip -n "$ns_s" addr add "$server_ip/30" dev "tps$$"
ip -n "$ns_c" link set "tpc$$" up
ip -n "$ns_s" link set "tps$$" up
nat_c() { ip netns exec "$ns_c" iptables -t nat "$@"; }
nat_s() { ip netns exec "$ns_s" iptables -t nat "$@"; }
nat_c -A OUTPUT -m owner --uid-owner 2102 -j RETURN
nat_c -A OUTPUT -m mark --mark 0x2102 -j RETURN
nat_c -A OUTPUT -p tcp -d "$server_ip" -j REDIRECT --to-port 4140
nat_s -A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-port 4143

proxy() { # NS LOG TASKSET...
  local ns=$1 log=$2
  shift 2
  "$@" ip netns exec "$ns" setpriv --reuid 2102 --regid 2102 --clear-groups \
    env LINKERD2_PROXY_IDENTITY_DISABLED=disabled LINKERD2_PROXY_LOG=warn \
    LINKERD2_PROXY_CORES="$cores" "$dir/tandem" proxy 2>"$log" &
  pids+=($!)
}
"${server_side[@]}" ip netns exec "$ns_s" "$dir/tandem-bench" proxy-app \
  --listen 0.0.0.0:8080 --listen 0.0.0.0:8081 2>"$dir/app.log" &
pids+=($!)
proxy "$ns_s" "$dir/server-proxy.log" "${server_side[@]}"
server_pid=$!
proxy "$ns_c" "$dir/client-proxy.log" "${client_side[@]}"
client_pid=$!
for ns in "$ns_c" "$ns_s"; do
  for _ in $(seq 100); do
    ip netns exec "$ns" curl -sf http://127.0.0.1:4191/ready >/dev/null && break
    sleep 0.1
  done
  ip netns exec "$ns" curl -sf http://127.0.0.1:4191/ready >/dev/null || {
    echo "error: the proxy in $ns never got ready" >&2
    exit 1
  }
done

echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)'); cores: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg); pinned: $pin; proxy cores: $cores" >&2
"${client_side[@]}" ip netns exec "$ns_c" "$dir/tandem-bench" proxy \
  --proxied "$server_ip:8080" --direct "$server_ip:8081" \
  --pid "client=$client_pid" --pid "server=$server_pid" "${args[@]}"
