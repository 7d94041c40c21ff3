#!/usr/bin/env bash
# Two (or more) corekv builds, alternately, on the same RESP figure: one
# shard pinned to CPU 0, redis-benchmark on CPU 1, 100 000 keys of 100 B
# loaded with SET first, then TEST (get or set) with -P 16, N requests.
# Alternating rounds keep drift (the VM's neighbours, frequency) out of
# the comparison; read the rounds side by side, not against other runs.
# cpu-us/op (the server's user + system time per request) is steadier
# than the rate when other work shares the machine.
#
#   bench/resp-ab.sh ROUNDS TEST BINARY... (N=2000000 by default)
#   e.g. bench/resp-ab.sh 3 get /tmp/corekv-before target/release/corekv
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: $0 ROUNDS get|set BINARY..." >&2; exit 2; }
rounds=$1 test=$2
shift 2
N=${N:-2000000}
command -v redis-benchmark >/dev/null || {
    echo "needs redis-benchmark (Debian: apt-get install redis-tools)" >&2
    exit 1
}
work=$(mktemp -d -p "${TMPDIR:-/tmp}" .corekv-ab.XXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
port=17579
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf "%-6s %-40s %12s %12s\n" round binary "$test/s" "cpu-us/op"
for r in $(seq 1 "$rounds"); do
    for b in "$@"; do
        rm -rf "$work/data"
        taskset -c 0 "$b" serve --shards 1 --cpus 0 --commitlog-sync periodic \
            --data-dir "$work/data" --native-addr 127.0.0.1:17500 --resp-addr "127.0.0.1:$port" \
            --peer-addr 127.0.0.1:17510 --admin-addr off --log warn >"$work/log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do redis-cli -p $port PING >/dev/null 2>&1 && break; sleep 0.1; done
        taskset -c 1 redis-benchmark -p $port -t set -c 50 -d 100 -n 300000 -P 16 -r 100000 --csv >/dev/null 2>&1
        before=$(cpu_ticks "$pid")
        rps=$(taskset -c 1 redis-benchmark -p $port -t "$test" -c 50 -d 100 -n "$N" -P 16 -r 100000 --csv 2>/dev/null \
            | awk -F, 'NR==2 {gsub(/"/, "", $2); print $2}')
        after=$(cpu_ticks "$pid")
        cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$N" 'BEGIN {printf "%.3f", t * 1e6 / hz / n}')
        printf "%-6s %-40s %12s %12s\n" "$r" "$b" "$rps" "$cpu"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        pid=
    done
done
