#!/usr/bin/env bash
# Failover RTO benchmark, side by side on this machine in one run:
#   Redis 7 primary + 2 replicas + 3 Sentinels (appendonly yes, appendfsync
#   everysec; load: SET + WAIT 1 <WAIT_MS>, the nearest equivalent of any 1),
#   Tandem 3-node cluster (--ack "any 1", default fsync, nodes elect their leader).
# Each trial starts a fresh cluster (fresh data dirs), runs 4 writers on the
# leader for WARMUP_MS, kill -9s the leader and measures with
# `tandem bench-failover` the time until a survivor accepts a write (RTO), then
# reads every acknowledged write back from the new leader (lost writes).
#
# Usage: bash scripts/bench-failover.sh [OUT_DIR]
#   env: TRIALS=20 DOWN_AFTER_MS=500 FAILOVER_TIMEOUT_MS=2000 WAIT_MS=1000 WARMUP_MS=1000
#        RECOVERY_MS=10000 SYSTEMS="redis tandem" REDIS_WAIT=1 (0: plain SET, async) STATIC_LEADER=0 (1: start Tandem with --leader 1,
#        i.e. without automatic failover; every trial then fails by design)
# Uses 127.0.0.1 ports 19200-19245 only; every process it started is killed (by PID) at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
T=target/release/tandem
REDIS_PORTS=(19200 19201 19202)
SENTINEL_PORTS=(19210 19211 19212)
TANDEM_PORTS=(19220 19230 19240) # +1 admin, +2 peer
DOWN_AFTER_MS=${DOWN_AFTER_MS:-500}
FAILOVER_TIMEOUT_MS=${FAILOVER_TIMEOUT_MS:-2000}
WAIT_MS=${WAIT_MS:-1000}
READY_TRIES=400 # x 50 ms: how long a cluster may take to be ready

# ---------------------------------------------------------------- helpers
# (also used by the per-trial hooks: `bench-failover.sh --hook ACTION DIR`)

# Kills every process named in DIR/*.pid that is still one of ours (its
# command line names redis-server or tandem), then waits until it is gone.
stop_dir() {
  local dir=$1 f p
  for f in "$dir"/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    if [ -n "$p" ] && grep -qaE "redis-server|tandem" "/proc/$p/cmdline" 2>/dev/null; then
      # A forked child (Redis's AOF rewrite or RDB save) would outlive its
      # parent and keep writing into the directory: kill it first, by pid.
      for c in $(cat "/proc/$p/task/$p/children" 2>/dev/null); do kill -9 "$c" 2>/dev/null || true; done
      kill -9 "$p" 2>/dev/null || true
      for _ in $(seq 1 100); do # gone, or a zombie (its sockets are closed already)
        [ -d "/proc/$p" ] || break
        grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && break
        sleep 0.02
      done
    fi
    rm -f "$f"
  done
}
wait_port() { for _ in $(seq 1 $READY_TRIES); do redis-cli -p "$1" ping 2>/dev/null | grep -q PONG && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }

start_redis() { # DIR
  local dir=$1 i p
  stop_dir "$dir"; rm -rf "$dir"; mkdir -p "$dir"
  for i in 0 1 2; do
    p=${REDIS_PORTS[$i]}; mkdir -p "$dir/r$i"
    local extra=(); [ "$i" -gt 0 ] && extra=(--replicaof 127.0.0.1 "${REDIS_PORTS[0]}")
    redis-server --port "$p" --bind 127.0.0.1 --dir "$dir/r$i" --appendonly yes --appendfsync everysec --save "" --auto-aof-rewrite-percentage 0 \
      --repl-diskless-sync yes --repl-diskless-sync-delay 0 --daemonize no --logfile "$dir/r$i.log" "${extra[@]}" \
      </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/node$i.pid"
  done
  for p in "${REDIS_PORTS[@]}"; do wait_port "$p"; done
  for i in 0 1 2; do
    p=${SENTINEL_PORTS[$i]}
    cat >"$dir/sentinel$i.conf" <<EOF
port $p
bind 127.0.0.1
dir $dir
logfile $dir/sentinel$i.log
sentinel monitor m 127.0.0.1 ${REDIS_PORTS[0]} 2
sentinel down-after-milliseconds m $DOWN_AFTER_MS
sentinel failover-timeout m $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs m 2
EOF
    redis-server "$dir/sentinel$i.conf" --sentinel </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/sentinel$i.pid"
  done
  # Ready: both replicas online (past their first sync), and every Sentinel knows both replicas and
  # the two other Sentinels (else it cannot reach quorum or pick a replica).
  for _ in $(seq 1 $READY_TRIES); do
    local ok=1
    [ "$(redis-cli -p "${REDIS_PORTS[0]}" info replication | grep -c "state=online")" = 2 ] || ok=0
    for p in "${SENTINEL_PORTS[@]}"; do
      local m # (a Sentinel not listening yet is "not ready", not an error)
      m=$(redis-cli -p "$p" sentinel master m 2>/dev/null | tr '\n' ' ' || true)
      [[ "$m" == *"num-slaves 2 "* && "$m" == *"num-other-sentinels 2 "* ]] || ok=0
    done
    [ $ok = 1 ] && return 0
    sleep 0.05
  done
  echo "redis + sentinels not ready within $((READY_TRIES / 20)) s (see $dir/*.log)" >&2
  return 1
}

start_tandem() { # DIR
  local dir=$1 i p
  stop_dir "$dir"; rm -rf "$dir"; mkdir -p "$dir"
  local m="1=127.0.0.1:$((TANDEM_PORTS[0] + 2)),2=127.0.0.1:$((TANDEM_PORTS[1] + 2)),3=127.0.0.1:$((TANDEM_PORTS[2] + 2))"
  local leader=(); [ "${STATIC_LEADER:-0}" = 1 ] && leader=(--leader 1)
  for i in 1 2 3; do
    p=${TANDEM_PORTS[$((i - 1))]}
    "$T" server --node-id $i --data-dir "$dir/n$i" --client-addr 127.0.0.1:$p --peer-addr 127.0.0.1:$((p + 2)) \
      --admin-addr 127.0.0.1:$((p + 1)) --members "$m" --ack "any 1" "${leader[@]}" </dev/null >/dev/null 2>"$dir/n$i.log" &
    echo $! >"$dir/node$((i - 1)).pid"
  done
  # Ready when every node answers PING; a node that exits (e.g. refuses its
  # flags) fails the hook at once with its last log line.
  for _ in $(seq 1 $READY_TRIES); do
    local up=0
    for i in 1 2 3; do
      if ! [ -d "/proc/$(cat "$dir/node$((i - 1)).pid")" ]; then
        echo "tandem node $i exited at start: $(tail -n 1 "$dir/n$i.log")" >&2
        return 1
      fi
      redis-cli -p "${TANDEM_PORTS[$((i - 1))]}" ping 2>/dev/null | grep -q PONG && up=$((up + 1))
    done
    [ $up = 3 ] && return 0
    sleep 0.05
  done
  echo "tandem nodes not answering PING within $((READY_TRIES / 20)) s (see $dir/n*.log)" >&2
  return 1
}

if [ "${1:-}" = "--hook" ]; then
  case "$2" in
    redis-start) start_redis "$3" ;;
    tandem-start) start_tandem "$3" ;;
    stop) # keep the servers' logs of the trial for the safety check below
      if [ -n "${LOGS_DIR:-}" ]; then
        mkdir -p "$LOGS_DIR/${TANDEM_FAILOVER_TRIAL:-0}" && cp "$3"/*.log "$LOGS_DIR/${TANDEM_FAILOVER_TRIAL:-0}/" 2>/dev/null || true
      fi
      stop_dir "$3" ;;
    *) echo "unknown hook action $2" >&2; exit 2 ;;
  esac
  exit 0
fi

# ---------------------------------------------------------------- the run
TRIALS=${TRIALS:-20}
WARMUP_MS=${WARMUP_MS:-1000}
RECOVERY_MS=${RECOVERY_MS:-10000}
SYSTEMS=${SYSTEMS:-redis tandem}
OUT=${1:-$(mktemp -d /var/tmp/tandem-failover-bench.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /var/tmp/tandem-failover-work.XXXXXX)
cleanup() {
  stop_dir "$WORK/redis" 2>/dev/null || true
  stop_dir "$WORK/tandem" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
need_commands redis-server:redis-server redis-cli:redis-tools
cargo build --release -q -p tandem
S="$OUT/summary.md"
bench_header bench-failover "trials=$TRIALS" | tee "$S"
SELF="bash $(pwd)/scripts/bench-failover.sh --hook"
# failover LABEL NODES ... -> OUT/LABEL.json; trial lines in OUT/LABEL.txt
failover() {
  local label=$1 dir=$2 start=$3; shift 3
  local rc=0
  LOGS_DIR="$OUT/logs-$label" "$T" bench-failover --label "$label" --trials "$TRIALS" --writers 4 --warmup-ms "$WARMUP_MS" \
    --recovery-timeout-ms "$RECOVERY_MS" --leader-timeout-ms "$RECOVERY_MS" --probe-interval-ms 5 --io-timeout-ms 200 \
    --pid-files "$dir/node0.pid,$dir/node1.pid,$dir/node2.pid" \
    --before-trial "$SELF $start $dir" --after-trial "$SELF stop $dir" --json "$@" \
    >"$OUT/$label.json" 2> >(tee "$OUT/$label.txt" >&2) || rc=$?
  # 0: every trial recovered; 2: some trial had no new leader (reported, not fatal).
  [ $rc = 0 ] || [ $rc = 2 ] || { echo "bench-failover for $label failed (exit $rc)" >&2; exit 1; }
}
for sys in $SYSTEMS; do
  case $sys in
    redis)
      wait_flags=(--wait-replicas 1 --wait-timeout-ms "$WAIT_MS") load="SET + WAIT 1 $WAIT_MS"
      [ "${REDIS_WAIT:-1}" = 0 ] && wait_flags=() load="SET only (async replication)"
      echo "## redis: down-after-milliseconds $DOWN_AFTER_MS, failover-timeout $FAILOVER_TIMEOUT_MS, load $load" | tee -a "$S"
      failover redis "$WORK/redis" redis-start \
        --nodes "127.0.0.1:${REDIS_PORTS[0]},127.0.0.1:${REDIS_PORTS[1]},127.0.0.1:${REDIS_PORTS[2]}" "${wait_flags[@]}" ;;
    tandem)
      echo "## tandem: --ack \"any 1\"$([ "${STATIC_LEADER:-0}" = 1 ] && echo ' --leader 1 (static: no failover)')" | tee -a "$S"
      failover tandem "$WORK/tandem" tandem-start \
        --nodes "127.0.0.1:${TANDEM_PORTS[0]},127.0.0.1:${TANDEM_PORTS[1]},127.0.0.1:${TANDEM_PORTS[2]}" ;;
    *) echo "unknown system $sys (redis, tandem)" >&2; exit 2 ;;
  esac
done

echo | tee -a "$S"
echo "## Failover RTO (kill -9 of the leader until the first write accepted by a survivor), $TRIALS trials each" | tee -a "$S"
echo "| system | trials | failed (not run) | RTO median ms | RTO p99 ms | RTO max ms | acked writes | lost acked writes (trials) |" | tee -a "$S"
echo "|---|---|---|---|---|---|---|---|" | tee -a "$S"
for sys in $SYSTEMS; do
  python3 - "$OUT/$sys.json" "$RECOVERY_MS" <<'EOF' | tee -a "$S"
import json, sys
r = json.load(open(sys.argv[1]))
def f(v):
    return ">%s" % sys.argv[2] if v is None else "%.0f" % v
t = r["rto_ms"]
# Lost writes are checked on the new leader: without one, nothing was checked.
lost = "%d (%d)" % (r["lost_writes"], r["trials_with_loss"]) if r["recovered"] else "not checked (no new leader)"
print("| %s | %d | %d (%d) | %s | %s | %s | %d | %s |" % (r["label"], r["trials"], r["failed"], r["errors"], f(t["median"]),
      f(t["p99"]), f(t["max"]), r["acked_writes"], lost))
EOF
done
python3 -c 'import json,sys; print(json.dumps({s: json.load(open(sys.argv[1] + "/" + s + ".json")) for s in sys.argv[2:]}))' \
  "$OUT" $SYSTEMS >"$OUT/failover.json"
if [[ " $SYSTEMS " == *" redis "* ]]; then
  # Safety of down-after-milliseconds: a Sentinel that marks a live instance
  # down (+sdown on anything but the killed primary, port ${REDIS_PORTS[0]} in
  # every trial) or a trial with other than exactly one promotion chosen.
  echo | tee -a "$S"
  python3 - "$OUT/logs-redis" "${REDIS_PORTS[0]}" <<'EOF' | tee -a "$S"
import glob, os, re, sys
logs, killed = sys.argv[1], "127.0.0.1:%s" % sys.argv[2]
spurious, switches = [], {}
for trial in sorted(glob.glob(os.path.join(logs, "*"))):
    seen = set()
    for log in glob.glob(os.path.join(trial, "sentinel*.log")):
        for line in open(log, errors="replace"):
            m = re.search(r"\+sdown (master \S+|slave \S+|sentinel \S+) (\S+) (\d+)", line)
            if m and "%s:%s" % (m.group(2), m.group(3)) != killed:
                spurious.append(line.strip())
            m = re.search(r"\+selected-slave .*", line)
            if m:
                seen.add(m.group(0))
    switches[os.path.basename(trial)] = len(seen)
bad = sorted((t for t, n in switches.items() if n != 1), key=int)
print("Sentinel safety: %d +sdown events on live instances in %d trials; trials without exactly one +selected-slave: %s"
      % (len(spurious), len(switches), bad or "none"))
for line in spurious[:5]:
    print("    " + line)
EOF
fi
echo; echo "results in $S and $OUT/failover.json (per-trial lines in $OUT/<system>.txt)"
