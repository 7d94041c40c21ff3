#!/usr/bin/env bash
# The cost of TLS on the RESP hot path (issue 20): one node (--shards 1,
# pinned to CPU 0), redis-benchmark on CPU 1, SET and GET with -P 16 -c 50
# over 100 000 keys; alternating rounds of the same build with plain TCP
# and with TLS 1.3 (tls_cert_file / tls_key_file; redis-benchmark --tls),
# so drift hits both alike. Prints requests/s and the ratio TLS/plain per
# test (target: >= 0.85). Certificates are made with the openssl CLI.
#
# Usage: bench/tls-cost.sh [requests per test, default 1000000] [rounds, default 2]
# Builds and runs $CARGO_TARGET_DIR/release/corekv (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

n=${1:-1000000}
rounds=${2:-2}
native=127.0.0.1:29300 resp_port=29310 peer=127.0.0.1:29320 admin=127.0.0.1:29330

# A CA and a certificate for 127.0.0.1 signed by it.
pki=$work/pki
mkdir -p "$pki"
(
    cd "$pki"
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' >ext.cnf
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout node.key \
        -out node.csr -subj /CN=node 2>/dev/null
    openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem \
        -days 2 -extfile ext.cnf 2>/dev/null
)

# One server run: $1 = "plain" or "tls"; prints "set RPS" and "get RPS".
one_run() {
    local mode=$1 dir cfg pid tls=()
    dir=$(mktemp -d -p "$work")
    cfg=$dir/node.toml
    : >"$cfg"
    if [ "$mode" = tls ]; then
        printf 'tls_cert_file = "%s"\ntls_key_file = "%s"\n' "$pki/node.pem" "$pki/node.key" >"$cfg"
        tls=(--tls --cacert "$pki/ca.pem")
    fi
    taskset -c 0 "$bin" serve --config "$cfg" --data-dir "$dir/data" --shards 1 \
        --native-addr "$native" --resp-addr "127.0.0.1:$resp_port" \
        --peer-addr "$peer" --admin-addr "$admin" 2>"$dir/log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        redis-cli -p "$resp_port" "${tls[@]}" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    for t in set get; do
        echo "$t $(redis_rps "$t" "$resp_port" "$n" "${tls[@]}")"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

plain_set=() plain_get=() tls_set=() tls_get=()
printf '%-6s %-6s %12s %12s\n' round mode "SET req/s" "GET req/s"
for r in $(seq "$rounds"); do
    for mode in plain tls; do
        out=$(one_run "$mode")
        set_rps=$(awk '$1 == "set" {print $2}' <<<"$out")
        get_rps=$(awk '$1 == "get" {print $2}' <<<"$out")
        printf '%-6s %-6s %12s %12s\n' "$r" "$mode" "$set_rps" "$get_rps"
        eval "${mode}_set+=($set_rps)"
        eval "${mode}_get+=($get_rps)"
    done
done
mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }' <<<"$*"; }
for t in set get; do
    eval "a_runs=(\"\${plain_${t}[@]}\")"
    eval "b_runs=(\"\${tls_${t}[@]}\")"
    a=$(mean "${a_runs[@]}")
    b=$(mean "${b_runs[@]}")
    awk -v t="$t" -v a="$a" -v b="$b" \
        'BEGIN { printf "%s: plain %.0f, TLS %.0f req/s: ratio %.3f\n", toupper(t), a, b, b / a }'
done
