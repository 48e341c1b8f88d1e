#!/usr/bin/env bash
# Runs Redis 7.0.15's own Tcl test units against a real Redis 7 and against
# Tandem, in external-server mode with the same flags, and prints a table:
# per unit, the tests Redis passes and how many of those Tandem passes.
#
#   scripts/redis-tcl-suite.sh REDIS_SRC [UNIT...]
#
# REDIS_SRC is a checkout of github.com/redis/redis at tag 7.0.15 (only its
# tests/ directory is used; it is copied, never modified). Needs tclsh
# (Debian `tcl`), redis-server and redis-cli 7 (Debian `redis-server`,
# `redis-tools`) and a release build of tandem (built here if missing).
# Environment: TANDEM_BIN (default target/release/tandem), OUT (default
# target/redis-tcl-suite), TANDEM_CLUSTER=1 to run against the leader of a
# three-node `tandem up` cluster instead of a standalone node.
#
# Flags passed to the suite (the issue's run profile plus --durable, so an
# unexpected error fails one test instead of ending its unit):
#   --singledb --durable --tags "-slow -needs:repl -needs:debug -needs:save
#   -needs:config-maxmemory"
set -euo pipefail

REDIS_SRC=${1:?usage: scripts/redis-tcl-suite.sh REDIS_SRC [UNIT...]}
shift
UNITS=("$@")
if [ ${#UNITS[@]} -eq 0 ]; then
  UNITS=(unit/type/hash unit/type/list unit/type/list-3 unit/type/zset unit/multi unit/pubsub unit/bitops)
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TANDEM_BIN=${TANDEM_BIN:-$ROOT/target/release/tandem}
OUT=${OUT:-$ROOT/target/redis-tcl-suite}
REDIS_PORT=${REDIS_PORT:-26379}
TANDEM_PORT=${TANDEM_PORT:-27379}
TAGS="-slow -needs:repl -needs:debug -needs:save -needs:config-maxmemory"

for tool in tclsh redis-server redis-cli; do
  command -v $tool >/dev/null || { echo "error: $tool not found (apt-get install tcl redis-server redis-tools)" >&2; exit 2; }
done
[ -f "$REDIS_SRC/tests/test_helper.tcl" ] || { echo "error: $REDIS_SRC/tests/test_helper.tcl not found" >&2; exit 2; }
[ -x "$TANDEM_BIN" ] || (cd "$ROOT" && cargo build --release -p tandem)

rm -rf "$OUT" && mkdir -p "$OUT/suite/src" "$OUT/logs"
cp -r "$REDIS_SRC/tests" "$OUT/suite/tests"
ln -s "$(command -v redis-cli)" "$OUT/suite/src/redis-cli"
ln -s "$(command -v redis-server)" "$OUT/suite/src/redis-server"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --save '' --appendonly no --dir "$OUT" --logfile "$OUT/logs/redis.log" &
pids+=($!)
if [ "${TANDEM_CLUSTER:-0}" = 1 ]; then
  "$TANDEM_BIN" up --static-leader --data-dir "$OUT/tandem" --base-port "$TANDEM_PORT" >"$OUT/logs/tandem.log" 2>&1 &
  pids+=($!)
else
  "$TANDEM_BIN" server --data-dir "$OUT/tandem" --client-addr "127.0.0.1:$TANDEM_PORT" \
    --admin-addr "127.0.0.1:$((TANDEM_PORT + 1))" --peer-addr "127.0.0.1:$((TANDEM_PORT + 2))" \
    --fsync everysec >"$OUT/logs/tandem.log" 2>&1 &
  pids+=($!)
fi
for port in "$REDIS_PORT" "$TANDEM_PORT"; do
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
    sleep 0.2
  done
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] || { echo "error: nothing answers on port $port" >&2; exit 1; }
done
# In cluster mode the test needs the leader; `tandem up` starts node 1 on
# the base port, and --static-leader keeps it the leader.
[ "$(redis-cli -p "$TANDEM_PORT" role | head -1)" = master ] || echo "warning: port $TANDEM_PORT is not a leader" >&2

run_unit() { # server-name port unit
  local log="$OUT/logs/$1-${3//\//_}.log"
  (cd "$OUT/suite" && timeout 1200 tclsh tests/test_helper.tcl --host 127.0.0.1 --port "$2" --singledb --durable \
    --tags "$TAGS" --single "$3" >"$log" 2>&1) || true
  sed -i 's/\x1b\[[0-9;]*m//g' "$log"
}

for unit in "${UNITS[@]}"; do
  echo "--- $unit" >&2
  run_unit redis "$REDIS_PORT" "$unit"
  redis-cli -p "$TANDEM_PORT" flushall >/dev/null
  run_unit tandem "$TANDEM_PORT" "$unit"
done

python3 - "$OUT/logs" "${UNITS[@]}" <<'PY'
import re, sys, pathlib
logs, units = pathlib.Path(sys.argv[1]), sys.argv[2:]
def results(path):
    ok, bad = set(), set()
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"^\[(ok|err|exception)\]: (.*?)(?: \(\d+ ms\))?$", line)
        if m:
            name = re.sub(r" in tests/.*$", "", m.group(2)).strip()
            (ok if m.group(1) == "ok" else bad).add(name)
    return ok, bad - ok
print("| unit | Redis 7.0.15 passes | Tandem passes of those | ratio | Tandem failures |")
print("|---|---:|---:|---:|---|")
tr = tt = 0
for unit in units:
    key = unit.replace("/", "_")
    r_ok, _ = results(logs / f"redis-{key}.log")
    t_ok, t_bad = results(logs / f"tandem-{key}.log")
    passed = len(r_ok & t_ok)
    tr += len(r_ok); tt += passed
    ratio = f"{100 * passed / len(r_ok):.0f} %" if r_ok else "-"
    print(f"| {unit} | {len(r_ok)} | {passed} | {ratio} | {len(r_ok - t_ok)} |")
print(f"| **all** | {tr} | {tt} | {100 * tt / max(tr, 1):.1f} % | {tr - tt} |")
for unit in units:
    key = unit.replace("/", "_")
    r_ok, _ = results(logs / f"redis-{key}.log")
    t_ok, _ = results(logs / f"tandem-{key}.log")
    missing = sorted(r_ok - t_ok)
    if missing:
        print(f"\n{unit}: not passed on Tandem ({len(missing)}):")
        for name in missing:
            print(f"  - {name}")
PY
