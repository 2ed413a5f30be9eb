#!/usr/bin/env bash
# Benchmarks what the injected init container does in a pod's start: it
# installs proxy-init's nat rules in a fresh network namespace. Two ways,
# alternated in one run so that the machine's noise hits both alike:
#   - "restore": `tandem proxy-init` (one iptables-nft-restore transaction,
#     with an iptables-nft-save before and after);
#   - "one by one": the same rules as Linkerd's proxy-init runs them, one
#     iptables-nft command each (the rules `--simulate` prints, each as its
#     own command), with the same two saves.
# Each round creates a namespace, installs, checks that the 8 rules are
# there, and deletes the namespace. Prints the median of each and their
# ratio, the last line as JSON. Needs root, ip and iptables-nft.
#
#   bench/proxy-init.sh [--rounds N]   (default 21)
#
# Environment: CARGO_TARGET_DIR (default ./target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. bench/lib.sh
bench_parse "--rounds" "$@"
. scripts/packages.sh && install_packages
rounds=21
for ((i = 0; i < ${#args[@]}; i += 2)); do
  case ${args[i]} in
    --rounds) rounds=${args[i + 1]} ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || {
  echo "error: --rounds must be a whole number above 0, not $rounds" >&2
  exit 2
}
[[ $(id -u) == 0 ]] || {
  echo "error: needs root (it creates network namespaces)" >&2
  exit 1
}
for tool in ip iptables-nft iptables-nft-save; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool is not on PATH (Debian packages iproute2, iptables)" >&2
    exit 1
  }
done
cargo build --release -q -p tandem
tandem=$(realpath "${CARGO_TARGET_DIR:-target}/release/tandem")
ports=(--inbound-ports-to-ignore 4190,4191,4567,4568 --outbound-ports-to-ignore 4567,4568)
ns=tandem-b-init-$$
work=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT

# The one-by-one commands: the -N of each chain before its first rule.
"$tandem" proxy-init --simulate "${ports[@]}" | grep '^-A ' >"$work/rules"
{
  echo "iptables-nft-save -t nat >/dev/null"
  declared=" "
  while read -r rule; do
    chain=$(awk '{print $2}' <<<"$rule")
    case $chain in PREROUTING | OUTPUT) ;; *)
      if [[ $declared != *" $chain "* ]]; then
        echo "iptables-nft -t nat -N $chain"
        declared+="$chain "
      fi
      ;;
    esac
    echo "iptables-nft -t nat $rule"
  done <"$work/rules"
  echo "iptables-nft-save -t nat >/dev/null"
} >"$work/one-by-one.sh"

now_us() { echo $(($(date +%s%N) / 1000)); }
# round WAY: prints the microseconds the install took.
round() {
  ip netns add "$ns"
  local start end
  start=$(now_us)
  if [[ $1 == restore ]]; then
    ip netns exec "$ns" "$tandem" proxy-init "${ports[@]}" >/dev/null
  else
    ip netns exec "$ns" sh -e "$work/one-by-one.sh"
  fi
  end=$(now_us)
  local n
  n=$(ip netns exec "$ns" iptables-nft-save -t nat | grep -c '^-A .*PROXY_INIT_')
  ip netns del "$ns"
  if [[ $n != 8 ]]; then
    echo "error: $1 left $n proxy-init rules, not 8" >&2
    exit 1
  fi
  echo $((end - start))
}
for ((r = 0; r < rounds; r++)); do
  echo "$(round restore) $(round one-by-one)"
done >"$work/times"
python3 - "$work/times" <<'EOF'
import json, statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
restore = statistics.median(int(a) for a, _ in rows) / 1000
one = statistics.median(int(b) for _, b in rows) / 1000
print(f"{len(rows)} rounds: restore p50 {restore:.1f} ms, one by one p50 {one:.1f} ms, ratio {one / restore:.2f}")
print(json.dumps({"rounds": len(rows), "restore_ms": restore, "one_by_one_ms": one, "ratio": round(one / restore, 2)}))
EOF
