# What real nodes need from Debian, installed with apt when missing. Sourced
# by scripts/test.sh, scripts/demo.sh and the benchmarks that start real
# nodes:
#   . scripts/packages.sh; install_packages [--browser]
#
# Real nodes run Debian's runc (it needs cgo and libseccomp), and kube-proxy
# and the CNI plugins call iptables; the toolbox image is busybox-static.
# --browser adds chromium, for the headless-browser tests of the pages.
install_packages() {
  local packages=()
  [[ -x /usr/sbin/runc ]] || packages+=(runc)
  command -v iptables-restore >/dev/null 2>&1 || packages+=(iptables)
  command -v nft >/dev/null 2>&1 || packages+=(nftables)
  # A dynamic /bin/busybox (Debian's busybox package) is replaced by the static one.
  if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then packages+=(busybox-static); fi
  if [[ ${1:-} == --browser ]]; then
    command -v chromium >/dev/null 2>&1 || packages+=(chromium)
  fi
  ((${#packages[@]})) || return 0
  printf '\n==> apt-get install %s\n' "${packages[*]}" >&2
  if [[ $(id -u) != 0 ]]; then
    echo "error: ${packages[*]} missing, and installing them needs root (real nodes need root anyway)" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
}
