# What the benchmark scripts share; each sources it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Prints the calling script's help: its header comment, from the second line
# to the first line that is not a comment.
bench_usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# bench_parse "--opt1 --opt2 ..." "$@": every argument must be one of the
# options given, each followed by its value, or -h/--help (prints the help
# and exits 0). Leaves the pairs in the array `args`; anything else exits 2
# with an error on stderr.
bench_parse() {
  local known=" $1 "
  shift
  args=()
  while (($#)); do
    case $1 in
      -h | --help)
        bench_usage
        exit 0
        ;;
      *)
        if [[ $known != *" $1 "* ]]; then
          echo "error: unknown argument $1 (see --help)" >&2
          exit 2
        fi
        if (($# < 2)); then
          echo "error: $1 needs a value" >&2
          exit 2
        fi
        args+=("$1" "$2")
        shift 2
        ;;
    esac
  done
}

# Builds tandem and tandem-bench in release mode, and the testbed's
# Kubernetes binaries; sets `target` (the build directory), `tandem` and
# `bench` (the two binaries).
bench_build() {
  cargo build --release -q -p tandem -p tandem-bench
  target=${CARGO_TARGET_DIR:-target}/release
  tandem=$(realpath "$target/tandem")
  bench=$(realpath "$target/tandem-bench")
  "$tandem" testbed build >/dev/null
}

# Says on stderr when, and at which commit, the figures were taken.
bench_header() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')" >&2
}

# bench_testbed_up DIR CLUSTERS BASE_PORT: a testbed of fake nodes in DIR;
# sets `kubeconfig`. On failure, shows what `testbed up` said and exits 1.
bench_testbed_up() {
  local export_line
  export_line=$("$tandem" testbed up --nodes fake --clusters "$2" --base-port "$3" --dir "$1" 2>"$1.up.log") || {
    cat "$1.up.log" >&2
    rm -f "$1.up.log"
    exit 1
  }
  rm -f "$1.up.log"
  kubeconfig=${export_line#export KUBECONFIG=}
  kubeconfig=${kubeconfig/#\~/$HOME}
}

# bench_testbed_down DIR: stops and deletes the testbed in DIR, or says how.
bench_testbed_down() {
  "$tandem" testbed down --purge --dir "$1" >/dev/null 2>&1 ||
    echo "warning: stopping the benchmark testbed in $1 failed; run: $tandem testbed down --purge --dir $1" >&2
}

# bench_trap_testbed DIR LOG WHAT: on exit, shows the last lines of LOG (the
# log of WHAT) if the run failed, stops and deletes the testbed in DIR, and
# removes LOG after a success.
bench_trap_testbed() {
  bench_dir=$1
  bench_log=$2
  bench_what=$3
  trap bench_cleanup_testbed EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup_testbed() {
  local status=$?
  if ((status != 0)) && [[ -s $bench_log ]]; then
    echo "--- last lines of the $bench_what log ($bench_log) ---" >&2
    tail -n 30 "$bench_log" >&2
  fi
  bench_testbed_down "$bench_dir"
  rm -rf "$bench_dir"
  ((status != 0)) || rm -f "$bench_log"
  exit "$status"
}
