#!/usr/bin/env bash
# The cost of client authentication on the RESP hot path (issue 20): one
# node (--shards 1, pinned to CPU 0), redis-benchmark on CPU 1, SET and GET
# with -P 16 -c 50 over 100 000 keys; alternating rounds of the same build
# with authentication off and with `requirepass` (redis-benchmark -a), so
# drift hits both alike. Prints requests/s and the ratio on/off per test.
#
# Usage: bench/auth-cost.sh [requests per test, default 1000000] [rounds, default 2]
# Builds and runs $CARGO_TARGET_DIR/release/corekv (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

n=${1:-1000000}
rounds=${2:-2}
password="auth-cost bench password"
native=127.0.0.1:29200 resp_port=29210 peer=127.0.0.1:29220 admin=127.0.0.1:29230

# One server run: $1 = "off" or "on"; prints "set RPS" and "get RPS".
one_run() {
    local mode=$1 dir cfg pid auth=()
    dir=$(mktemp -d -p "$work")
    cfg=$dir/node.toml
    : >"$cfg"
    if [ "$mode" = on ]; then
        echo "requirepass = \"$password\"" >"$cfg"
        auth=(-a "$password")
    fi
    taskset -c 0 "$bin" serve --config "$cfg" --data-dir "$dir/data" --shards 1 \
        --native-addr "$native" --resp-addr "127.0.0.1:$resp_port" \
        --peer-addr "$peer" --admin-addr "$admin" 2>"$dir/log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        redis-cli -p "$resp_port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    for t in set get; do
        echo "$t $(redis_rps "$t" "$resp_port" "$n" "${auth[@]}")"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

off_set=() off_get=() on_set=() on_get=()
printf '%-6s %-5s %12s %12s\n' round auth "SET req/s" "GET req/s"
for r in $(seq "$rounds"); do
    for mode in off on; do
        out=$(one_run "$mode")
        set_rps=$(awk '$1 == "set" {print $2}' <<<"$out")
        get_rps=$(awk '$1 == "get" {print $2}' <<<"$out")
        printf '%-6s %-5s %12s %12s\n' "$r" "$mode" "$set_rps" "$get_rps"
        eval "${mode}_set+=($set_rps)"
        eval "${mode}_get+=($get_rps)"
    done
done
mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }' <<<"$*"; }
for t in set get; do
    eval "off=(\"\${off_${t}[@]}\")"
    eval "on=(\"\${on_${t}[@]}\")"
    a=$(mean "${off[@]}")
    b=$(mean "${on[@]}")
    awk -v t="$t" -v a="$a" -v b="$b" \
        'BEGIN { printf "%s: off %.0f, requirepass %.0f req/s: ratio %.3f\n", toupper(t), a, b, b / a }'
done
