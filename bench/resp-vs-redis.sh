#!/usr/bin/env bash
# Holds corekv's RESP port against Redis 7 in one run, as issue 4 asks:
# redis-benchmark -t set,get -c 50 -d 100, unpipelined (-P 1) and pipelined
# (-P 16); each server pinned to CPU 0, the client to CPU 1. Redis runs with
# appendonly yes / appendfsync everysec, corekv with --shards 1 and the
# periodic commit log (the same durability class: ~1 s / 10 ms of loss on
# power failure, none on a process crash for corekv).
# Prints requests/s, the ratio corekv/Redis, and each server's CPU-µs per
# request (from /proc/PID/stat, user + system time).
#
# Usage: bench/resp-vs-redis.sh [requests per test, default 1000000; runs of
# a few hundred thousand swing by ±15 % on a shared VM]
# Builds and runs $CARGO_TARGET_DIR/release/corekv (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
    echo "needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools)" >&2
    exit 1
}
. bench/lib.sh

REDIS_PORT=16379
COREKV_RESP=17379
mkdir -p "$work/redis"
taskset -c 0 redis-server --port $REDIS_PORT --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
    --save "" --dir "$work/redis" --daemonize no --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!); redis_pid=$!
taskset -c 0 "$bin" serve --shards 1 --cpus 0 --commitlog-sync periodic \
    --data-dir "$work/corekv" --native-addr 127.0.0.1:17000 --resp-addr 127.0.0.1:$COREKV_RESP \
    --log warn >"$work/corekv.log" 2>&1 &
pids+=($!); corekv_pid=$!
for port in $REDIS_PORT $COREKV_RESP; do
    for _ in $(seq 1 100); do redis-cli -p $port PING >/dev/null 2>&1 && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run PORT PID TEST PIPELINE -> "rps cpu_us_per_op"
run() {
    local before after rps
    before=$(cpu_ticks "$2")
    rps=$(taskset -c 1 redis-benchmark -p "$1" -t "$3" -c 50 -d 100 -n "$N" -P "$4" -r 100000 --csv 2>/dev/null \
        | awk -F, 'NR==2 {gsub(/"/, "", $2); print $2}')
    after=$(cpu_ticks "$2")
    awk -v r="$rps" -v t=$((after - before)) -v hz="$hz" -v n="$N" \
        'BEGIN {printf "%s %.2f\n", r, t * 1e6 / hz / n}'
}

printf "%-8s %-4s %14s %14s %8s %16s %16s\n" test P "redis rps" "corekv rps" ratio "redis cpu-us/op" "corekv cpu-us/op"
for P in 1 16; do
    for t in set get; do
        read -r r_rps r_cpu < <(run $REDIS_PORT $redis_pid $t $P)
        read -r c_rps c_cpu < <(run $COREKV_RESP $corekv_pid $t $P)
        ratio=$(awk -v a="$c_rps" -v b="$r_rps" 'BEGIN {printf "%.2f", a / b}')
        printf "%-8s %-4s %14s %14s %8s %16s %16s\n" "$t" "$P" "$r_rps" "$c_rps" "$ratio" "$r_cpu" "$c_cpu"
    done
done
