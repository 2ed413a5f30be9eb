#!/usr/bin/env bash
# The main job: `tandem demo`, the whole workshop on local clusters with real
# nodes, checked and timed. Arguments go to `tandem demo` (--keep, --pause,
# --down, ...).
#
# It builds tandem into the same target directory as scripts/test.sh (under
# ~/.cache/tandem, outside the clone), so the two commands share one build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TANDEM_CACHE=${TANDEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$TANDEM_CACHE/cargo-target}
# Real nodes need Debian's runc, iptables, nftables and busybox-static.
. scripts/packages.sh
install_packages
# All of tandem's binaries: `tandem demo` runs `tandem-demo` beside it.
cargo build --quiet -p tandem
exec "$CARGO_TARGET_DIR/debug/tandem" demo "$@"
