#!/usr/bin/env bash
# Proxy overhead, side by side in one run: `tandem bench` straight to the
# leader vs through `tandem proxy` (GET and SET, 1 and 16 clients), and
# read throughput through the proxy with 0, 1 and 2 followers behind it.
#
# Usage: bash scripts/bench-proxy.sh [OUT_DIR]    env: SECS=5
# Uses 127.0.0.1 ports 19300-19399 only; every process is stopped at exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
bench_init proxy-bench "${1:-}"
need_commands redis-cli:redis-tools
cargo build --release -q -p tandem
T=target/release/tandem
S="$OUT/summary.md"
echo "# bench-proxy $(date -u +%FT%TZ) nproc=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" | tee "$S"
wait_port() { for _ in $(seq 1 600); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }

m="1=127.0.0.1:19302,2=127.0.0.1:19312,3=127.0.0.1:19322"
for i in 1 2 3; do
  p=$((19300 + 10 * (i - 1)))
  "$T" server --node-id $i --members "$m" --leader 1 --data-dir "$WORK/n$i" \
    --client-addr 127.0.0.1:$p --admin-addr 127.0.0.1:$((p + 1)) --peer-addr 127.0.0.1:$((p + 2)) 2>"$WORK/n$i.log" &
  PIDS+=($!)
done
for p in 19300 19310 19320; do wait_port $p; done
"$T" bench --addr 127.0.0.1:19300 --clients 16 --pipeline 16 --keyspace 100000 --value-size 100 --mix set --requests 1 --preload --quiet >/dev/null 2>&1
start_proxy() { # port nodes...
  local port=$1; shift
  "$T" proxy --listen 127.0.0.1:$port --nodes "$(IFS=,; echo "$*")" --balance round-robin 2>"$WORK/proxy-$port.log" &
  PIDS+=($!); wait_port $port; sleep 0.3
}
bench() { # port clients mix -> "ops/s | p50 | p99"
  "$T" bench --addr "127.0.0.1:$1" --clients "$2" --duration "$SECS" --keyspace 100000 --value-size 100 --mix "$3" --json --quiet |
    python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency_us"]; print("%.0f | %.0f | %.0f | %d" % (r["ops_per_sec"], l["p50"], l["p99"], r["errors"]))'
}
start_proxy 19390 127.0.0.1:19300 127.0.0.1:19310 127.0.0.1:19320
echo | tee -a "$S"
echo "## Overhead: direct to the leader vs through the proxy (reads spread over leader + 2 followers)" | tee -a "$S"
echo "| path | mix | clients | ops/s | p50 us | p99 us | errors |" | tee -a "$S"
echo "|---|---|---|---|---|---|---|" | tee -a "$S"
for mix in get set; do
  for c in 1 16; do
    echo "| direct | $mix | $c | $(bench 19300 $c $mix) |" | tee -a "$S"
    echo "| proxy | $mix | $c | $(bench 19390 $c $mix) |" | tee -a "$S"
  done
done
echo | tee -a "$S"
echo "## Reads through the proxy (GET, 32 clients, ${SECS}s)" | tee -a "$S"
echo "| followers behind the proxy | ops/s | p50 us | p99 us | errors |" | tee -a "$S"
echo "|---|---|---|---|---|" | tee -a "$S"
start_proxy 19391 127.0.0.1:19300
start_proxy 19392 127.0.0.1:19300 127.0.0.1:19310
echo "| 0 | $(bench 19391 32 get) |" | tee -a "$S"
echo "| 1 | $(bench 19392 32 get) |" | tee -a "$S"
echo "| 2 | $(bench 19390 32 get) |" | tee -a "$S"
echo; echo "results in $S"
