#!/usr/bin/env bash
# Memory of one big value per type: a 1 M-element hash, set, sorted set and
# list loaded into a fresh Redis 7 and a fresh standalone Tandem node (one
# type per fresh process), and each process's resident set (VmRSS) after
# the load, minus its RSS when empty. Prints a markdown table with the
# Tandem/Redis ratio.
#
#   scripts/bench-memory.sh              # 1 000 000 elements
#   ELEMENTS=200000 scripts/bench-memory.sh
#
# Needs redis-server and redis-cli (Debian `redis-server`, `redis-tools`)
# and python3; builds tandem in release if missing.
set -euo pipefail

ELEMENTS=${ELEMENTS:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TANDEM_BIN=${TANDEM_BIN:-$ROOT/target/release/tandem}
OUT=${OUT:-$ROOT/target/bench-memory}
PORT=${PORT:-38379}
for tool in redis-server redis-cli python3; do
  command -v $tool >/dev/null || { echo "error: $tool not found" >&2; exit 2; }
done
[ -x "$TANDEM_BIN" ] || (cd "$ROOT" && cargo build --release -p tandem)
rm -rf "$OUT" && mkdir -p "$OUT"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

wait_ping() {
  for _ in $(seq 150); do
    [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "error: nothing answers on $PORT" >&2
  return 1
}

# The load as RESP commands of 1000 elements each, piped with redis-cli --pipe.
gen() { # type
  python3 - "$1" "$ELEMENTS" <<'PY'
import sys
kind, n = sys.argv[1], int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    out.write(b"".join(parts))
for start in range(0, n, 1000):
    idx = range(start, min(n, start + 1000))
    if kind == "hash":
        cmd("HSET", "big", *[x for i in idx for x in (f"field:{i}", f"value:{i}")])
    elif kind == "set":
        cmd("SADD", "big", *[f"member:{i}" for i in idx])
    elif kind == "zset":
        cmd("ZADD", "big", *[x for i in idx for x in (i, f"member:{i}")])
    else:
        cmd("RPUSH", "big", *[f"element:{i}" for i in idx])
PY
}

start_redis() {
  redis-server --port "$PORT" --save '' --appendonly no --dir "$OUT" --logfile "$OUT/redis.log" >/dev/null 2>&1 &
  echo $!
}
start_tandem() {
  rm -rf "$OUT/tandem"
  "$TANDEM_BIN" server --data-dir "$OUT/tandem" --client-addr "127.0.0.1:$PORT" \
    --admin-addr "127.0.0.1:$((PORT + 1))" --peer-addr "127.0.0.1:$((PORT + 2))" --fsync everysec \
    >"$OUT/tandem.log" 2>&1 &
  echo $!
}

echo "| type | elements | Redis RSS MiB | Tandem RSS MiB | Tandem/Redis |"
echo "|---|---:|---:|---:|---:|"
for kind in hash set zset list; do
  gen "$kind" >"$OUT/$kind.resp"
  declare -A grew=()
  for server in redis tandem; do
    pid=$(start_$server)
    wait_ping
    before=$(rss_kb "$pid")
    redis-cli -p "$PORT" --pipe <"$OUT/$kind.resp" >"$OUT/$server-$kind.pipe" 2>&1
    sleep 1
    after=$(rss_kb "$pid")
    grew[$server]=$((after - before))
    # Not our child (started in a subshell): wait until it is gone.
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  python3 -c "r, t = ${grew[redis]}/1024, ${grew[tandem]}/1024; print(f'| $kind | $ELEMENTS | {r:.1f} | {t:.1f} | {t / r:.2f}x |')"
  unset grew
done
