# Sourced by the bench scripts (after `cd` to the repository root): builds
# the release binary and sets $bin to it ($CARGO_TARGET_DIR honoured, or
# $COREKV_BIN taken as it is), makes
# a scratch directory $work (under $work_parent if the script sets it, else
# the system's temporary directory), and on exit stops every process whose
# PID the script appended to $pids, runs the commands appended to
# $on_exit, and removes $work.
# COREKV_BIN=path runs that binary instead (another build, for a before /
# after comparison in one session) and skips the build.
if [ -n "${COREKV_BIN:-}" ]; then
    bin=$COREKV_BIN
else
    cargo build --release -q
    bin=${CARGO_TARGET_DIR:-target}/release/corekv
fi
work=$(mktemp -d -p "${work_parent:-${TMPDIR:-/tmp}}" .corekv-bench.XXXX)
pids=()
on_exit=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for c in "${on_exit[@]}"; do eval "$c" || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The requests per second redis-benchmark (on CPU 1) reports for test $1
# (set, get, ...) against RESP port $2, $3 requests, -P16 over 50
# connections and 100 000 keys; further redis-benchmark arguments
# (--tls, -a, ...) follow.
redis_rps() {
    local test=$1 port=$2 n=$3
    shift 3
    taskset -c 1 redis-benchmark -p "$port" "$@" -t "$test" -P 16 -c 50 \
        -n "$n" -r 100000 -q 2>/dev/null | tr '\r' '\n' |
        grep -i "requests per second" | tail -1 | awk '{print $2}'
}
