#!/usr/bin/env bash
# Single-node benchmark, side by side on this machine in one run:
#   Redis 7 (appendonly yes; appendfsync everysec and always) vs
#   Tandem (--fsync batch and everysec),
# with redis-benchmark and `tandem bench`: SET and GET, 50 clients,
# pipeline 1 and 16; then resident memory after loading 1 M keys (16-byte
# keys, 64-byte values) and restart time for that data set.
#
# Usage: bash scripts/bench-node.sh [OUT_DIR]     env: N=200000 KEYS=1000000
# Installs redis-server / redis-tools if missing. Uses 127.0.0.1 ports
# 18000-18011 only; every server is stopped at exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
N=${N:-200000}
KEYS=${KEYS:-1000000}
bench_init bench "${1:-}"
need_commands redis-server:redis-server redis-benchmark:redis-tools
cargo build --release -q -p tandem
TANDEM=target/release/tandem

bench_header bench-node | tee "$OUT/summary.md"
start_redis() { # name port fsync
  mkdir -p "$WORK/$1"
  redis-server --port "$2" --bind 127.0.0.1 --dir "$WORK/$1" --appendonly yes --appendfsync "$3" \
    --save "" --auto-aof-rewrite-percentage 0 --daemonize no --logfile "$WORK/$1.log" &
  PIDS+=($!); LAST_PID=$!; wait_port "$2"
}
start_tandem() { # name port fsync
  mkdir -p "$WORK/$1"
  "$TANDEM" server --data-dir "$WORK/$1" --client-addr "127.0.0.1:$2" --admin-addr "127.0.0.1:$(( $2 + 1000 ))" \
    --fsync "$3" 2>"$WORK/$1.log" &
  PIDS+=($!); LAST_PID=$!; wait_port "$2"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
rb() { # port test pipeline -> "rps p50 p99"
  redis-benchmark -p "$1" -t "$2" -n "$N" -c 50 -P "$3" -r 100000 -d 3 --csv 2>/dev/null |
    awk -F, 'NR==2 { gsub(/"/,""); print $2, $5, $7 }'
}
tb() { # port mix pipeline -> "rps p50 p99"
  "$TANDEM" bench --addr "127.0.0.1:$1" --clients 50 --pipeline "$3" --requests "$N" --keyspace 100000 \
    --value-size 3 --mix "$2" --json --quiet 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.3f %.3f" % (r["ops_per_sec"], r["latency_us"]["p50"]/1000, r["latency_us"]["p99"]/1000))'
}

echo | tee -a "$OUT/summary.md"
echo "## Throughput (50 clients, $N requests, 3-byte values, 100k random keys)" | tee -a "$OUT/summary.md"
echo "| server | durability | tool | test | P | ops/s | p50 ms | p99 ms |" | tee -a "$OUT/summary.md"
echo "|---|---|---|---|---|---|---|---|" | tee -a "$OUT/summary.md"
port=18000
for target in "redis everysec" "redis always" "tandem everysec" "tandem batch"; do
  set -- $target
  if [ "$1" = redis ]; then start_redis "$1-$2" $port "$2"; else start_tandem "$1-$2" $port "$2"; fi
  pid=$LAST_PID
  for test in set get; do
    for P in 1 16; do
      r=$(rb $port $test $P); echo "| $1 | $2 | redis-benchmark | ${test^^} | $P | ${r// / | } |" | tee -a "$OUT/summary.md"
      r=$(tb $port $test $P); echo "| $1 | $2 | tandem bench | ${test^^} | $P | ${r// / | } |" | tee -a "$OUT/summary.md"
    done
  done
  stop $pid
  port=$((port + 1))
done

echo | tee -a "$OUT/summary.md"
echo "## Memory and restart with $KEYS keys (16-byte keys, 64-byte values)" | tee -a "$OUT/summary.md"
echo "| server | RSS after load MiB | restart ms |" | tee -a "$OUT/summary.md"
echo "|---|---|---|" | tee -a "$OUT/summary.md"
load() { "$TANDEM" bench --addr "127.0.0.1:$1" --clients 50 --pipeline 64 --keyspace "$KEYS" --value-size 64 \
  --mix set --requests 1 --preload --quiet >/dev/null 2>&1; }
rss_mib() { awk '/VmRSS/ { printf "%.1f", $2/1024 }' "/proc/$1/status"; }
ms_now() { date +%s%3N; }

start_redis redis-mem 18010 everysec; pid=$LAST_PID; load 18010
redis-cli -p 18010 dbsize >/dev/null; sleep 1
rss=$(rss_mib $pid); stop $pid
t0=$(ms_now); start_redis redis-mem 18010 everysec; pid=$LAST_PID
until [ "$(redis-cli -p 18010 info persistence | awk -F: '/^loading:/ {print $2}' | tr -d '\r')" = 0 ]; do sleep 0.02; done
t1=$(ms_now); echo "| redis (AOF replay) | $rss | $((t1 - t0)) |" | tee -a "$OUT/summary.md"; stop $pid

start_tandem tandem-mem 18011 batch; pid=$LAST_PID; load 18011; sleep 1
rss=$(rss_mib $pid); kill -9 $pid; wait $pid 2>/dev/null || true
t0=$(ms_now); start_tandem tandem-mem 18011 batch; pid=$LAST_PID; t1=$(ms_now)
echo "| tandem (log replay after kill -9) | $rss | $((t1 - t0)) |" | tee -a "$OUT/summary.md"
stop $pid   # graceful: writes a snapshot
t0=$(ms_now); start_tandem tandem-mem 18011 batch; pid=$LAST_PID; t1=$(ms_now)
echo "| tandem (snapshot load after SIGTERM) | $(rss_mib $pid) | $((t1 - t0)) |" | tee -a "$OUT/summary.md"
stop $pid
echo; echo "results in $OUT/summary.md"
