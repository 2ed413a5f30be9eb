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
