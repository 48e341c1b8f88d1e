#!/usr/bin/env bash
# Runs `redis-benchmark -q -n N` with its DEFAULT test list (PING, SET, GET,
# INCR, LPUSH, RPUSH, LPOP, RPOP, SADD, HSET, SPOP, ZADD, ZPOPMIN, LRANGE_*,
# MSET) against a Redis 7 primary with two replicas and against the leader
# of a three-node Tandem cluster (`tandem up`, automatic failover, async
# acks), one after the other on this machine, and prints a markdown table
# of requests per second with the Tandem/Redis ratio. Exits non-zero if
# redis-benchmark fails against either (the issue's "exits 0" check).
#
#   scripts/bench-redis-benchmark.sh            # N=20000
#   N=100000 OUT=target/rb scripts/bench-redis-benchmark.sh
#
# Durability matches: Redis `appendonly yes, appendfsync everysec`, Tandem
# `--fsync everysec`. Needs redis-server and redis-benchmark (Debian
# `redis-server`, `redis-tools`); builds tandem in release if missing.
set -euo pipefail

N=${N:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TANDEM_BIN=${TANDEM_BIN:-$ROOT/target/release/tandem}
OUT=${OUT:-$ROOT/target/bench-redis-benchmark}
RPORT=${RPORT:-36379}
TPORT=${TPORT:-37379}

for tool in redis-server redis-benchmark redis-cli; do
  command -v $tool >/dev/null || { echo "error: $tool not found (apt-get install redis-server redis-tools)" >&2; exit 2; }
done
[ -x "$TANDEM_BIN" ] || (cd "$ROOT" && cargo build --release -p tandem)
rm -rf "$OUT" && mkdir -p "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_ping() {
  for _ in $(seq 150); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.2
  done
  echo "error: nothing answers PING on port $1" >&2
  return 1
}

# Redis: primary + 2 replicas.
for i in 0 1 2; do
  port=$((RPORT + i))
  mkdir -p "$OUT/redis-$i"
  extra=()
  [ $i -gt 0 ] && extra=(--replicaof 127.0.0.1 "$RPORT")
  redis-server --port "$port" --dir "$OUT/redis-$i" --save '' --appendonly yes --appendfsync everysec \
    --logfile "$OUT/redis-$i.log" "${extra[@]}" &
  pids+=($!)
done
for i in 0 1 2; do wait_ping $((RPORT + i)); done

# Tandem: three nodes, automatic failover; find the leader.
"$TANDEM_BIN" up --data-dir "$OUT/tandem" --base-port "$TPORT" -- --fsync everysec >"$OUT/tandem.log" 2>&1 &
pids+=($!)
for i in 0 1 2; do wait_ping $((TPORT + 10 * i)); done
leader=""
for _ in $(seq 100); do
  for i in 0 1 2; do
    p=$((TPORT + 10 * i))
    if [ "$(redis-cli -p "$p" role 2>/dev/null | head -1)" = master ]; then leader=$p; break 2; fi
  done
  sleep 0.2
done
[ -n "$leader" ] || { echo "error: no Tandem leader elected" >&2; exit 1; }

run() { # name port
  echo "redis-benchmark -q -n $N against $1 (port $2) ..." >&2
  if ! redis-benchmark -p "$2" -q -n "$N" --csv >"$OUT/$1.csv" 2>"$OUT/$1.err"; then
    echo "error: redis-benchmark failed against $1:" >&2
    cat "$OUT/$1.err" >&2
    return 1
  fi
}
run redis "$RPORT"
run tandem "$leader"

python3 - "$OUT/redis.csv" "$OUT/tandem.csv" "$N" <<'PY'
import csv, sys
def load(p):
    rows = list(csv.reader(open(p)))
    head = rows[0]
    return {r[0]: dict(zip(head, r)) for r in rows[1:]}
r, t, n = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
print(f"redis-benchmark -q -n {n}, default test list, 50 clients; Redis 7 primary + 2 replicas vs Tandem leader of 3 (async, everysec)\n")
print("| test | Redis rps | Redis p50 ms | Tandem rps | Tandem p50 ms | Tandem/Redis |")
print("|---|---:|---:|---:|---:|---:|")
for name, rr in r.items():
    tt = t.get(name)
    if tt is None:
        print(f"| {name} | {rr['rps']} | {rr.get('p50_latency_ms', '-')} | missing | - | - |")
        continue
    ratio = float(tt["rps"]) / float(rr["rps"])
    print(f"| {name} | {float(rr['rps']):.0f} | {rr.get('p50_latency_ms', '-')} | {float(tt['rps']):.0f} | {tt.get('p50_latency_ms', '-')} | {ratio:.2f}x |")
PY
