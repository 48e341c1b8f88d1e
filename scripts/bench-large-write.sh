#!/usr/bin/env bash
# A large write against the leader lease (issue 15 item 5): a 3-node Tandem
# cluster with automatic failover and a 400 ms lease; one SET of SIZE bytes
# (default 300 MB) on the leader while another connection PINGs every
# 10 ms. Prints the SET's latency, the longest PING stall, the epoch and
# the leader before and after (an epoch change is a failover), and whether
# every node holds the value (its length) afterwards.
#
# Usage: bash scripts/bench-large-write.sh [OUT_DIR]
#   env: SIZE=300000000 LEASE_MS=400 EXTRA="" (more `tandem server` flags)
#        TANDEM=path/to/tandem (default target/release/tandem)
#        PERF=1: record the leader with `perf record -g` during the write
#        (OUT_DIR/leader.perf.data; read it with `perf report -i`)
# Uses 127.0.0.1 ports 19300-19322 only; every process it started is killed
# (by PID) at exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_init large-write "${1:-}"
T=${TANDEM:-target/release/tandem}
SIZE=${SIZE:-300000000}
LEASE_MS=${LEASE_MS:-400}
PORTS=(19300 19310 19320) # +1 admin, +2 peer
need_commands redis-cli:redis-tools
MEMBERS="1=127.0.0.1:$((PORTS[0] + 2)),2=127.0.0.1:$((PORTS[1] + 2)),3=127.0.0.1:$((PORTS[2] + 2))"
for i in 0 1 2; do
  p=${PORTS[$i]}
  # shellcheck disable=SC2086
  $T server --node-id $((i + 1)) --data-dir "$WORK/n$i" --client-addr 127.0.0.1:$p \
    --admin-addr 127.0.0.1:$((p + 1)) --peer-addr 127.0.0.1:$((p + 2)) --members "$MEMBERS" \
    --cluster-secret large-write-bench --lease-ms "$LEASE_MS" --failover-timeout-ms "$LEASE_MS" \
    ${EXTRA:-} >"$OUT/node$((i + 1)).log" 2>&1 &
  PIDS+=($!)
done
for p in "${PORTS[@]}"; do wait_port "$p"; done
leader() {
  for p in "${PORTS[@]}"; do
    if redis-cli -p "$p" ROLE 2>/dev/null | head -1 | grep -q master; then echo "$p"; return 0; fi
  done
  return 1
}
for _ in $(seq 1 200); do L=$(leader) && break; sleep 0.05; done
epoch() { curl -s "http://127.0.0.1:$(($1 + 1))/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("epoch"))'; }
sleep 1
E0=$(epoch "$L")
if [ -n "${PERF:-}" ]; then
  for i in 0 1 2; do [ "${PORTS[$i]}" = "$L" ] && LPID=${PIDS[$i]}; done
  perf record -q -F 999 -g -p "$LPID" -o "$OUT/leader.perf.data" >/dev/null 2>&1 &
  PERF_PID=$!
fi
head -c "$SIZE" /dev/zero | tr '\0' 'v' >"$WORK/value"
python3 - "$L" "$SIZE" "$WORK/value" "$OUT/result.txt" <<'PY'
import socket, sys, threading, time
port, size, path, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
stop = False
worst = [0.0]
def pinger():
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    while not stop:
        t = time.monotonic()
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        line = f.readline()
        worst[0] = max(worst[0], time.monotonic() - t)
        time.sleep(0.01)
th = threading.Thread(target=pinger); th.start()
time.sleep(0.5)
s = socket.create_connection(("127.0.0.1", port))
value = open(path, "rb").read()
t = time.monotonic()
s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % size)
s.sendall(value)
s.sendall(b"\r\n")
reply = s.makefile("rb").readline().strip().decode()
took = time.monotonic() - t
time.sleep(2)
stop = True; th.join()
line = f"SET {size} bytes: reply {reply} after {took*1000:.0f} ms; longest PING stall {worst[0]*1000:.0f} ms"
print(line); open(out, "a").write(line + "\n")
PY
if [ -n "${PERF_PID:-}" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
E1=$(epoch "$L")
L1=$(leader || echo none)
echo "epoch before $E0 after $E1; leader port before $L after $L1" | tee -a "$OUT/result.txt"
for p in "${PORTS[@]}"; do
  n=$(redis-cli -p "$p" STRLEN big 2>&1 || true)
  echo "node on port $p: STRLEN big = $n" | tee -a "$OUT/result.txt"
done
echo "results in $OUT"
