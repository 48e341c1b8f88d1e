#!/usr/bin/env bash
# Replication benchmark, side by side on this machine in one run:
#   Tandem leader + 2 followers (fsync batch) under ack async / any 1 / all,
#   Redis 7 primary + 2 replicas (appendonly, appendfsync always) with SET,
#   SET+WAIT 1, SET+WAIT 2, and optionally PostgreSQL 15 with a streaming
#   standby (PG=1: runs ../shared/baselines/postgres.sh).
# Measures write throughput and latency with 1 and 16 clients, replication
# lag under saturating writes, and read throughput over 1 vs 3 nodes.
#
# Usage: bash scripts/bench-replication.sh [OUT_DIR]   env: SECS=5 PG=0
# Uses 127.0.0.1 ports 19000-19100 only; every server is stopped at exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-5}
bench_init repl-bench "${1:-}"
need_commands redis-server:redis-server redis-cli:redis-tools
cargo build --release -q -p tandem
T=target/release/tandem
S="$OUT/summary.md"
bench_header bench-replication | tee "$S"
stop_all() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
             for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done; PIDS=(); }
# start_tandem_cluster ACK [extra flags...]: ports 19000/19010/19020 (+1 admin, +2 peer)
start_tandem_cluster() {
  local ack=$1; shift
  rm -rf "$WORK/t"; mkdir -p "$WORK/t"
  local m="1=127.0.0.1:19002,2=127.0.0.1:19012,3=127.0.0.1:19022"
  for i in 1 2 3; do
    local p=$((19000 + 10 * (i - 1)))
    "$T" server --node-id $i --members "$m" --leader 1 --data-dir "$WORK/t/n$i" --ack "$ack" --ack-timeout-ms 10000 \
      --client-addr 127.0.0.1:$p --admin-addr 127.0.0.1:$((p + 1)) --peer-addr 127.0.0.1:$((p + 2)) "$@" 2>"$WORK/t/n$i.log" &
    PIDS+=($!)
  done
  for p in 19000 19010 19020; do wait_port $p; done
  sleep 0.5
}
start_redis_cluster() { # fsync
  rm -rf "$WORK/r"; mkdir -p "$WORK/r"
  for i in 0 1 2; do
    local p=$((19050 + i)); mkdir -p "$WORK/r/$i"
    local extra=(); [ $i -gt 0 ] && extra=(--replicaof 127.0.0.1 19050)
    redis-server --port $p --bind 127.0.0.1 --dir "$WORK/r/$i" --appendonly yes --appendfsync "$1" --save "" \
      --auto-aof-rewrite-percentage 0 --repl-diskless-sync-delay 0 --daemonize no --logfile "$WORK/r/$i.log" "${extra[@]}" &
    PIDS+=($!)
  done
  for p in 19050 19051 19052; do wait_port $p; done
  until redis-cli -p 19050 info replication | grep -q "connected_slaves:2"; do sleep 0.1; done
  sleep 0.5
}
bench() { # port clients mix -> "ops/s p50 p99 errors"
  "$T" bench --addr "127.0.0.1:$1" --clients "$2" --pipeline 1 --duration "$SECS" --keyspace 100000 --value-size 100 \
    --mix "$3" --json --quiet 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency_us"]; print("%.0f | %.0f | %.0f | %d" % (r["ops_per_sec"], l["p50"], l["p99"], r["errors"]))'
}

echo | tee -a "$S"
echo "## Writes (SET, 100-byte values, ${SECS}s each)" | tee -a "$S"
echo "| system | durability | clients | ops/s | p50 us | p99 us | errors |" | tee -a "$S"
echo "|---|---|---|---|---|---|---|" | tee -a "$S"
for ack in "async" "any 1" "all"; do
  start_tandem_cluster "$ack"
  for c in 1 16; do echo "| tandem batch | ack $ack (flush) | $c | $(bench 19000 $c set) |" | tee -a "$S"; done
  stop_all
done
# The same durability as Redis everysec: acknowledged once written to the OS.
start_tandem_cluster async --fsync everysec
for c in 1 16; do echo "| tandem everysec | ack async | $c | $(bench 19000 $c set) |" | tee -a "$S"; done
stop_all
for fs in always everysec; do
  start_redis_cluster $fs
  for c in 1 16; do
    echo "| redis $fs | SET | $c | $(bench 19050 $c set) |" | tee -a "$S"
    echo "| redis $fs | SET+WAIT 1 | $c | $(bench 19050 $c set+wait:1) |" | tee -a "$S"
    echo "| redis $fs | SET+WAIT 2 | $c | $(bench 19050 $c set+wait:2) |" | tee -a "$S"
  done
  stop_all
done

echo | tee -a "$S"
echo "## Replication lag under saturating writes (16 clients x pipeline 16 SET on the leader)" | tee -a "$S"
echo "| system | lag p50 us | lag p99 us | timeouts |" | tee -a "$S"
echo "|---|---|---|---|" | tee -a "$S"
lag() { # leader follower
  "$T" bench --addr "127.0.0.1:$1" --clients 16 --pipeline 16 --duration $((SECS + 3)) --mix set --quiet >/dev/null 2>&1 &
  local b=$!; sleep 1
  "$T" lag --leader "127.0.0.1:$1" --follower "127.0.0.1:$2" --trials 1000 --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["lag_us"]; print("%.0f | %.0f | %d" % (l["p50"], l["p99"], r["timeouts"]))'
  wait $b || true
}
start_tandem_cluster async; echo "| tandem async | $(lag 19000 19010) |" | tee -a "$S"; stop_all
start_redis_cluster everysec; echo "| redis everysec | $(lag 19050 19051) |" | tee -a "$S"; stop_all
start_redis_cluster always; echo "| redis always | $(lag 19050 19051) |" | tee -a "$S"; stop_all

echo | tee -a "$S"
echo "## Reads (GET, 100k keys preloaded, 48 clients in total, ${SECS}s)" | tee -a "$S"
echo "| nodes serving reads | total ops/s |" | tee -a "$S"
echo "|---|---|" | tee -a "$S"
start_tandem_cluster async
"$T" bench --addr 127.0.0.1:19000 --clients 16 --pipeline 16 --keyspace 100000 --value-size 100 --mix set --requests 1 --preload --quiet >/dev/null 2>&1
sleep 1
one=$("$T" bench --addr 127.0.0.1:19000 --clients 48 --duration "$SECS" --keyspace 100000 --mix get --json --quiet | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["ops_per_sec"])')
echo "| leader only | $one |" | tee -a "$S"
readers=()
for p in 19000 19010 19020; do
  "$T" bench --addr 127.0.0.1:$p --clients 16 --duration "$SECS" --keyspace 100000 --mix get --json --quiet >"$WORK/read-$p.json" &
  readers+=($!)
done
for r in "${readers[@]}"; do wait "$r"; done
total=$(cat "$WORK"/read-*.json | python3 -c 'import json,sys; print("%.0f" % sum(json.loads(l)["ops_per_sec"] for l in sys.stdin if l.strip()))')
echo "| leader + 2 followers | $total |" | tee -a "$S"
stop_all

if [ "${PG:-0}" = 1 ] && [ -f ../shared/baselines/postgres.sh ]; then
  echo | tee -a "$S"; echo "## PostgreSQL 15 primary + streaming standby (pgbench -N)" | tee -a "$S"
  bash ../shared/baselines/postgres.sh 2>&1 | tee "$OUT/postgres.txt" | tail -15 | tee -a "$S"
fi
echo; echo "results in $S"
