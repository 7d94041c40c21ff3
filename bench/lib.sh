# Sourced by the bench scripts (after `cd` to the repository root): builds
# the release binary and sets $bin to it ($CARGO_TARGET_DIR honoured), makes
# a scratch directory $work (under $work_parent if the script sets it, else
# the system's temporary directory), and on exit stops every process whose
# PID the script appended to $pids, runs the commands appended to
# $on_exit, and removes $work.
cargo build --release -q
bin=${CARGO_TARGET_DIR:-target}/release/corekv
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
