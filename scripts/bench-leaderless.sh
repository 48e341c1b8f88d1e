#!/usr/bin/env bash
# Leaderless quorum benchmark: three `tandem server` processes, one
# leaderless keyspace over the bench's keys (prefix `key:`) with
# (N,W,R) = (3,1,1), (3,2,2), (3,3,1); SET then GET latency p50/p99 through
# node 1 as coordinator, first with a healthy network, then with node 3
# answering 100 ms late (POST /faults {"delay_ms":100} on node 3 delays
# everything it sends to its peers, so its acks and read replies).
#
# Usage: bash scripts/bench-leaderless.sh [OUT_DIR]   env: SECS=3 CLIENTS=4
# Uses 127.0.0.1 ports 19200-19222 only; every server is stopped at exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-3}
CLIENTS=${CLIENTS:-4}
bench_init leaderless-bench "${1:-}"
need_commands redis-cli:redis-tools
cargo build --release -q -p tandem
T=target/release/tandem
S="$OUT/summary.md"
bench_header bench-leaderless "secs=$SECS clients=$CLIENTS" | tee "$S"
stop_all() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
             for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done; PIDS=(); }
start_cluster() { # n w r
  rm -rf "$WORK/t"; mkdir -p "$WORK/t"
  printf '[[keyspace]]\nname = "bench"\nprefix = "key:"\nmode = "leaderless"\nn = %s\nw = %s\nr = %s\n' "$1" "$2" "$3" >"$WORK/t/tandem.toml"
  local m="1=127.0.0.1:19202,2=127.0.0.1:19212,3=127.0.0.1:19222"
  for i in 1 2 3; do
    local p=$((19200 + 10 * (i - 1)))
    "$T" server --config "$WORK/t/tandem.toml" --node-id $i --members "$m" --leader 1 --data-dir "$WORK/t/n$i" \
      --fault-injection --client-addr 127.0.0.1:$p --admin-addr 127.0.0.1:$((p + 1)) --peer-addr 127.0.0.1:$((p + 2)) \
      2>"$WORK/t/n$i.log" &
    PIDS+=($!)
  done
  for p in 19200 19210 19220; do wait_port $p; done
  # The engines are up once a quorum write goes through.
  for _ in $(seq 1 200); do
    [ "$(redis-cli -p 19200 set key:probe 1 2>/dev/null)" = "OK" ] && return 0
    sleep 0.1
  done
  echo "leaderless keyspace did not come up" >&2; cat "$WORK/t/n1.log" >&2; return 1
}
bench() { # mix -> "ops/s | p50 | p99 | errors"
  "$T" bench --addr 127.0.0.1:19200 --clients "$CLIENTS" --pipeline 1 --duration "$SECS" --keyspace 10000 \
    --value-size 100 --mix "$1" --json --quiet 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency_us"]; print("%.0f | %.0f | %.0f | %d" % (r["ops_per_sec"], l["p50"], l["p99"], r["errors"]))'
}

echo | tee -a "$S"
echo "## Quorum latency through node 1 ($CLIENTS clients, 100-byte values, ${SECS}s per row)" | tee -a "$S"
echo "| N,W,R | node 3 | op | ops/s | p50 us | p99 us | errors |" | tee -a "$S"
echo "|---|---|---|---|---|---|---|" | tee -a "$S"
for nwr in "3 1 1" "3 2 2" "3 3 1"; do
  set -- $nwr
  start_cluster "$1" "$2" "$3"
  for delay in 0 100; do
    curl -fsS -X POST -H 'content-type: application/json' -d "{\"delay_ms\":$delay}" http://127.0.0.1:19221/faults >/dev/null
    label=$([ "$delay" = 0 ] && echo healthy || echo "+${delay} ms")
    echo "| $1,$2,$3 | $label | SET | $(bench set) |" | tee -a "$S"
    echo "| $1,$2,$3 | $label | GET | $(bench get) |" | tee -a "$S"
  done
  stop_all
done
echo | tee -a "$S"
echo "results: $S"
