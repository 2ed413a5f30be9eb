#!/usr/bin/env bash
# Measures a cold build of the testbed's Kubernetes binaries: empty Go build
# cache, empty module cache (every module downloaded from the proxy) and an
# empty tandem cache, all in temporary directories, so that the real caches
# are left alone. Prints the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p tandem
tandem=${CARGO_TARGET_DIR:-target}/debug/tandem
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
start=$(date +%s)
GOCACHE=$tmp/gocache GOMODCACHE=$tmp/gomod TANDEM_CACHE=$tmp/tandem "$tandem" testbed build
end=$(date +%s)
echo "cold build: $((end - start)) s on $(nproc) cores ($(uname -m))"
