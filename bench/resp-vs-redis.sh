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
# Then the durable pair (issue 23): corekv's `batch` commit log (ack after
# fdatasync, the default) against Redis with appendfsync always (ack after
# fsync), SET with -P 16 on redis-benchmark's single default key, -P 16
# over 1 000 000 keys, and -P 1 over 1 000 000 keys. DURABLE_N requests per
# test (default N / 4: each fsync costs ~1 ms on a virtio disk).
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

# start_pair NAME REDIS_PORT APPENDFSYNC COREKV_RESP COMMITLOG_SYNC BASE_PORT:
# Redis and corekv on CPU 0, both answering PING; sets redis_pid and
# corekv_pid (corekv's native, peer ports at BASE_PORT, BASE_PORT + 10).
start_pair() {
    local name=$1 rport=$2 fsync=$3 cport=$4 sync=$5 base=$6
    mkdir -p "$work/redis-$name"
    taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --appendonly yes --appendfsync "$fsync" \
        --save "" --dir "$work/redis-$name" --daemonize no --loglevel warning >"$work/redis-$name.log" 2>&1 &
    pids+=($!); redis_pid=$!
    taskset -c 0 "$bin" serve --shards 1 --cpus 0 --commitlog-sync "$sync" \
        --data-dir "$work/corekv-$name" --native-addr "127.0.0.1:$base" --resp-addr "127.0.0.1:$cport" \
        --peer-addr "127.0.0.1:$((base + 10))" --admin-addr off --log warn >"$work/corekv-$name.log" 2>&1 &
    pids+=($!); corekv_pid=$!
    for port in "$rport" "$cport"; do
        for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
    done
}

REDIS_PORT=16379
COREKV_RESP=17379
start_pair periodic $REDIS_PORT everysec $COREKV_RESP periodic 17000

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run PORT PID TEST PIPELINE [KEYSPACE, default 100000; 0 = one key]
# [REQUESTS, default N] -> "rps cpu_us_per_op"
run() {
    local before after rps keys=${5:-100000} n=${6:-$N}
    local range=(-r "$keys")
    [ "$keys" = 0 ] && range=()
    before=$(cpu_ticks "$2")
    rps=$(taskset -c 1 redis-benchmark -p "$1" -t "$3" -c 50 -d 100 -n "$n" -P "$4" "${range[@]}" --csv 2>/dev/null \
        | awk -F, 'NR==2 {gsub(/"/, "", $2); print $2}')
    after=$(cpu_ticks "$2")
    awk -v r="$rps" -v t=$((after - before)) -v hz="$hz" -v n="$n" \
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

# The durable pair: fresh servers, ack after fsync on both sides.
DURABLE_N=${DURABLE_N:-$((N / 4))}
kill "$redis_pid" "$corekv_pid"
wait "$redis_pid" "$corekv_pid" 2>/dev/null || true
REDIS_DURABLE=16380
COREKV_DURABLE=17380
start_pair durable $REDIS_DURABLE always $COREKV_DURABLE batch 17100
echo
echo "durable: corekv commitlog_sync = batch against Redis appendfsync always, SET, $DURABLE_N requests each"
printf "%-8s %-4s %-10s %14s %14s %8s\n" test P keys "redis rps" "corekv rps" ratio
for spec in "16 0" "16 1000000" "1 1000000"; do
    read -r P keys <<<"$spec"
    read -r r_rps _ < <(run $REDIS_DURABLE $redis_pid set "$P" "$keys" "$DURABLE_N")
    read -r c_rps _ < <(run $COREKV_DURABLE $corekv_pid set "$P" "$keys" "$DURABLE_N")
    ratio=$(awk -v a="$c_rps" -v b="$r_rps" 'BEGIN {printf "%.2f", a / b}')
    label=$keys; [ "$keys" = 0 ] && label="one key"
    printf "%-8s %-4s %-10s %14s %14s %8s\n" set "$P" "$label" "$r_rps" "$c_rps" "$ratio"
done
