#!/usr/bin/env bash
# Instructions per request, immune to the noise of a shared machine: runs a
# server (corekv RESP or Redis 7) under valgrind's callgrind while
# redis-benchmark sends SET then GET (-c 50 -d 100 -r 100000 -P 16), zeroing
# the counters after a warm-up and dumping them after each test. Prints
# user-space instructions per request of the server (the kernel's share is
# not counted) and leaves the profiles for callgrind_annotate.
#
# Usage: bench/resp-callgrind.sh corekv|redis [requests, default 50000] [pipeline, default 16]
# Binary: $CARGO_TARGET_DIR/release/corekv (default target/release/corekv).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?corekv or redis}
N=${2:-50000}
P=${3:-16}
out=${OUT:-/tmp/cg}
mkdir -p "$out"
work=$(mktemp -d)
port=18379
bin=${CARGO_TARGET_DIR:-target}/release/corekv
case $which in
corekv)
    taskset -c 0 valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$out/$which.%p" \
        "$bin" serve --shards 1 --cpus 0 --commitlog-sync periodic --data-dir "$work/d" \
        --native-addr 127.0.0.1:18000 --resp-addr 127.0.0.1:$port --log warn \
        >"$work/log" 2>&1 &
    ;;
redis)
    taskset -c 0 valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$out/$which.%p" \
        redis-server --port $port --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
        --save "" --dir "$work" --daemonize no --loglevel warning >"$work/log" 2>&1 &
    ;;
*) echo "corekv or redis" >&2; exit 1 ;;
esac
pid=$!
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do redis-cli -p $port PING >/dev/null 2>&1 && break; sleep 0.2; done
rm -f "$out/$which.$pid".*
bench() { taskset -c 1 redis-benchmark -p $port -t "$1" -c 50 -d 100 -r 100000 -n "$2" -P "$P" -q >/dev/null; }
# Warm-up: fill the key space so GETs hit and SETs overwrite.
bench set 200000
callgrind_control -z $pid >/dev/null
for t in set get; do
    bench $t "$N"
    callgrind_control -d "$t" $pid >/dev/null
done
for t in set get; do
    f=$(ls "$out/$which.$pid".* | xargs grep -l "^desc: Trigger: dump $t\$" | head -1)
    ir=$(grep '^summary:' "$f" | awk '{print $2}')
    echo "$which $t P$P: $(awk -v i="$ir" -v n="$N" 'BEGIN {printf "%.0f", i / n}') instructions/op ($f)"
done
