#!/usr/bin/env bash
# Benchmarks connection churn (release build): requests over pooled HTTP/1
# connections that the server closes, without a word, just as they are
# reused (3 answers in 10 close their connection 0-300 µs later). The same
# N requests (default 1,000,000, 16 at a time) go through hyper-util's
# pooled client alone and through the proxy's endpoint client. For each, it
# counts the requests answered, failed and hung (no end after 5 s). Target:
# 0 hung through the endpoint client. One thread spins beside the clients
# (--busy-threads), as the race shows mostly on a loaded machine. Loopback
# only; needs no testbed.
# Progress goes to stderr, the summary to stdout, its last line as JSON.
#
#   bench/churn.sh [--requests N] [--clients N] [--hung-after SECONDS] [--busy-threads N] [--json FILE]
#
# Environment: CARGO_TARGET_DIR (default ./target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. bench/lib.sh
bench_parse "--requests --clients --hung-after --busy-threads --json" "$@"
cargo build --release -q -p tandem-bench
bench=$(realpath "${CARGO_TARGET_DIR:-target}/release/tandem-bench")
bench_header
"$bench" churn "${args[@]}"
