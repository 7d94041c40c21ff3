#!/usr/bin/env bash
# Issue 8's benchmarks, in one run on this machine:
# 1. Repair of KEYS keys with 1 % divergence: two nodes (N = 2, W = 1,
#    hints off), node 2 stopped while 1 % of the keys are rewritten, then
#    `corekv repair` on node 2: time, keys pulled and bytes exchanged,
#    against the bytes of the divergent data.
# 2. Bootstrap streaming: a third node joins (unthrottled) and streams its
#    ranges; throughput as a fraction of `corekv tune io`'s sequential
#    write bandwidth of the same disk.
#
# Usage: bench/repair.sh [keys, default 1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
DIVERGENT=$((KEYS / 100))
work_parent=$PWD
. bench/lib.sh

node() { # id
    local i=$1
    cat >"$work/node$i.toml" <<TOML
node_id = $i
data_dir = "$work/n$i"
shards = 1
native_addr = "127.0.0.1:$((19000 + 10 * i))"
resp_addr = "127.0.0.1:$((19005 + 10 * i))"
peer_addr = "127.0.0.1:$((19100 + 10 * i))"
admin_addr = "off"
rack = "r$i"
seeds = ["127.0.0.1:19110"]
commitlog_sync = "periodic"
conflict = "lww"
replication_factor = 2
write_consistency = "one"
read_consistency = "one"
hints_max_per_shard = 0
stream_mib_per_s = 0
auto_bootstrap = $([ "$i" = 3 ] && echo true || echo false)
log = "warn"
TOML
    $bin serve --config "$work/node$i.toml" >>"$work/node$i.log" 2>&1 &
    pids+=($!)
    eval "pid$i=$!"
    for _ in $(seq 1 100); do $bin status --addr 127.0.0.1:$((19000 + 10 * i)) >/dev/null 2>&1 && break; sleep 0.1; done
}
up_normal() { # port -> count of members up and normal
    $bin status --json --addr 127.0.0.1:$1 | python3 -c "import json,sys; print(sum(m['up'] and m['status']=='normal' for m in json.load(sys.stdin)['members']))"
}
wait_normal() { # port count
    for _ in $(seq 1 600); do [ "$(up_normal $1)" = "$2" ] && return; sleep 0.2; done
    echo "timed out waiting for $2 normal nodes" >&2; exit 1
}

node 1; node 2
wait_normal 19010 2; wait_normal 19020 2
echo "== loading $KEYS keys (100-byte values) on 2 nodes, N = 2"
$bin bench --target native://127.0.0.1:19010 --keys "$KEYS" --value-size 100 --load --closed \
    --connections 8 --pipeline 32 --mix get=100 --duration 1s --quiet | grep loaded
# Both replicas must hold everything before the divergence starts.
sleep 2
kill "$pid2"; wait "$pid2" 2>/dev/null || true
echo "== node 2 down: rewriting $DIVERGENT keys on node 1 only"
$bin bench --target native://127.0.0.1:19010 --keys "$KEYS" --value-size 100 --closed \
    --connections 4 --pipeline 16 --mix put=100 --requests "$DIVERGENT" --duration 60s --seed 7 --quiet \
    | grep -E '^(update|all) '
node 2
wait_normal 19020 2
echo "== repair on node 2"
/usr/bin/time -f "repair wall %e s" $bin repair --addr 127.0.0.1:19020 2>&1 | grep -v '^repair:' | tr '\r' '\n' | tail -3
$bin status --json --addr 127.0.0.1:19020 | python3 -c "
import json,sys
t=json.load(sys.stdin)['totals']
pulled, pushed, b = t['repair_keys_pulled'], t['repair_keys_pushed'], t['repair_bytes']
# A divergent key's data: its key (~12 bytes) and its encoded sibling set
# (100-byte value + ~40 bytes of version metadata).
data = (pulled + pushed) * (12 + 140)
print(f'divergent keys moved: {pulled} pulled + {pushed} pushed; exchanged {b/1e6:.2f} MB; divergent data {data/1e6:.2f} MB; ratio {b/max(data,1):.2f}x')
"
echo "== second repair (replicas equal now)"
$bin repair --addr 127.0.0.1:19020 2>/dev/null | tail -1

echo "== node 3 joins: bootstrap streaming, unthrottled"
start=$(date +%s.%N)
node 3
wait_normal 19030 3
end=$(date +%s.%N)
$bin status --json --addr 127.0.0.1:19030 | python3 -c "
import json,sys
t=json.load(sys.stdin)['totals']
secs=$end-$start
print(f'joined in {secs:.1f} s: streamed {t[\"stream_keys\"]} keys, {t[\"stream_bytes\"]/1e6:.1f} MB -> {t[\"stream_bytes\"]/1e6/secs:.1f} MB/s (includes start-up and the ring delay)')
"
echo "== disk: corekv tune io (sequential write bandwidth)"
$bin tune io --dir "$work" --duration-s 10 2>/dev/null | grep -iE 'sequential (write|read)' || true
