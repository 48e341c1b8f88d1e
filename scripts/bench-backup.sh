#!/usr/bin/env bash
# Base backup and restore throughput, side by side on this machine in one run:
#   Tandem: `tandem backup base` (MB/s), `tandem restore` replaying the archived
#           log over an empty base (entries/s) and loading a full base (MB/s);
#   PostgreSQL 15: pg_basebackup (MB/s) and archive recovery of the same rows
#           with recovery_target_time (WAL records/s, rows/s).
# Same data set for both: KEYS keys/rows "key:<i>" with VALUE_BYTES-byte values,
# written as KEYS single-key writes (Tandem: SET via redis-cli --pipe;
# PostgreSQL: one INSERT .. SELECT generate_series into a table with a primary key).
#
# Usage: bash scripts/bench-backup.sh      env: KEYS=10000000 VALUE_BYTES=100
# Uses kernel-chosen ports for Tandem and 127.0.0.1:$PGPORT (default 25532) for
# PostgreSQL; stops every process it started (by PID) and removes its work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-10000000}
VB=${VALUE_BYTES:-100}
PGPORT=${PGPORT:-25532}
PGBIN=/usr/lib/postgresql/15/bin
BIN=$PWD/target/release/tandem
[ -x "$BIN" ] || cargo build --release -p tandem
WORK=$(mktemp -d /var/tmp/tandem-bench-backup.XXXXXX)
chmod 755 "$WORK"
TPID=""
as_pg() { runuser -u postgres -- "$@"; }
stop_pg() {
  local d=$1 pid
  [ -f "$d/postmaster.pid" ] || return 0
  pid=$(head -1 "$d/postmaster.pid"); [ -n "$pid" ] || return 0
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}
cleanup() {
  [ -n "$TPID" ] && kill -9 "$TPID" 2>/dev/null || true
  stop_pg "$WORK/pg/primary"; stop_pg "$WORK/pg/restored"
  if [ -n "${KEEP:-}" ]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }
ms_to_rfc3339() { date -u -d "@$(echo "$1/1000" | bc -l)" +%Y-%m-%dT%H:%M:%S.%3NZ; }
RES="$WORK/results.md"
echo "# bench-backup.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) KEYS=$KEYS VALUE_BYTES=$VB nproc=$(nproc) loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ Tandem
T=$WORK/tandem; mkdir -p "$T"
"$BIN" server --data-dir "$T/data" --client-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --peer-addr 127.0.0.1:0 \
  --fsync everysec --snapshot-entries 0 --backup-repo "$T/repo" --print-ready >"$T/ready" 2>"$T/server.log" &
TPID=$!
for _ in $(seq 1 200); do [ -s "$T/ready" ] && break; sleep 0.05; done
C=$(python3 -c "import json,sys;print(json.load(open('$T/ready'))['client_addr'])")
A=$(python3 -c "import json,sys;print(json.load(open('$T/ready'))['admin_addr'])")
"$BIN" backup base --repo "$T/repo" --from "$A" 2>/dev/null
t0=$(now)
awk -v n="$KEYS" -v vb="$VB" 'BEGIN{v=sprintf("%0" vb "d",0); for(i=0;i<n;i++){k="key:" i;
  printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, vb, v}}' \
  | redis-cli -h "${C%:*}" -p "${C#*:}" --pipe >"$T/load.out"
t1=$(now)
echo "tandem: loaded $KEYS keys in $(secs "$t0" "$t1") s: $(tail -1 "$T/load.out")"
for _ in $(seq 1 3000); do
  st=$(curl -s "$A/status"); [ "$(echo "$st" | python3 -c "import json,sys;d=json.load(sys.stdin);print(d['archive']['archived_lsn']==d['last_lsn'])")" = True ] && break; sleep 0.1
done
echo "tandem: archive caught up $(secs "$t1" "$(now)") s after the load ended"
t0=$(now)
"$BIN" backup base --repo "$T/repo" --from "$A" 2>"$T/base.err" | tee "$T/base.out"
t1=$(now)
TBASE_S=$(secs "$t0" "$t1")
TBASE_MIB=$(grep -o '[0-9.]* MiB in' "$T/base.out" | awk '{print $1}')
# Replay: everything from the empty base (target lsn KEYS-1 picks the empty base).
/usr/bin/time -f "%e s wall %U s user %S s sys %M KiB maxrss" -o "$T/replay.time" \
  "$BIN" restore --repo "$T/repo" --data-dir "$T/r1" --to-lsn $((KEYS - 1)) 2>"$T/replay.err" | tee "$T/replay.out"
# Full base: load the snapshot of all keys.
/usr/bin/time -f "%e s wall %U s user %S s sys %M KiB maxrss" -o "$T/load.time" \
  "$BIN" restore --repo "$T/repo" --data-dir "$T/r2" --latest 2>"$T/load.err" | tee "$T/loadbase.out"
LOG_MIB=$(du -sm "$T/repo/archive" | cut -f1)
kill -9 "$TPID"; TPID=""
echo "tandem: replay $(cat "$T/replay.time"); base load $(cat "$T/load.time")"
rm -rf "$T/data" "$T/r1" "$T/r2"

# ------------------------------------------------------------------ PostgreSQL 15
P=$WORK/pg; mkdir -p "$P/arch"; chown -R postgres: "$P"
as_pg "$PGBIN/initdb" -D "$P/primary" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$P/initdb.log"
cat >>"$P/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$P'
shared_buffers = 256MB
wal_level = replica
archive_mode = on
archive_command = 'cp %p $P/arch/%f'
max_wal_size = 16GB
checkpoint_timeout = 30min
synchronous_commit = off
logging_collector = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$P/primary" -l "$P/primary.log" -w -t 120 start >/dev/null
psqlp() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres -At -c "$2"; }
psqlp $PGPORT "CREATE TABLE kv (k text PRIMARY KEY, v text)"
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p $PGPORT -U postgres -D "$P/base0" -X stream -c fast
START_LSN=$(psqlp $PGPORT "SELECT pg_current_wal_lsn()")
t0=$(now)
psqlp $PGPORT "INSERT INTO kv SELECT 'key:' || g, repeat('0', $VB) FROM generate_series(0, $KEYS - 1) g"
t1=$(now)
echo "postgres: loaded $KEYS rows in $(secs "$t0" "$t1") s"
sleep 1.1
TARGET=$(psqlp $PGPORT "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') || '+00'")
sleep 1.1
psqlp $PGPORT "INSERT INTO kv VALUES ('after-target', 'x')"
END_LSN=$(psqlp $PGPORT "SELECT pg_current_wal_lsn()")
LAST_WAL=$(psqlp $PGPORT "SELECT pg_walfile_name(pg_current_wal_lsn())")
psqlp $PGPORT "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 1 3000); do [ -f "$P/arch/$LAST_WAL" ] && break; sleep 0.1; done
WAL_MIB=$(echo "$(psqlp $PGPORT "SELECT pg_wal_lsn_diff('$END_LSN', '$START_LSN')") / 1048576" | bc -l)
t0=$(now)
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p $PGPORT -U postgres -D "$P/base1" -X stream -c fast
t1=$(now)
PBASE_S=$(secs "$t0" "$t1")
PBASE_MIB=$(du -sm "$P/base1" | cut -f1)
stop_pg "$P/primary"
WAL_RECORDS=$(timeout 900 "$PGBIN/pg_waldump" -p "$P/arch" --start "$START_LSN" --end "$END_LSN" --stats 2>/dev/null \
  | awk '/^Total/ {print $2}')
cp -a "$P/base0" "$P/restored"
cat >>"$P/restored/postgresql.conf" <<EOF
restore_command = 'cp $P/arch/%f %p'
recovery_target_time = '$TARGET'
recovery_target_action = 'promote'
archive_mode = off
EOF
touch "$P/restored/recovery.signal"; chown -R postgres: "$P/restored"
t0=$(now)
as_pg "$PGBIN/pg_ctl" -D "$P/restored" -l "$P/restored.log" -w -t 1800 start >/dev/null
for _ in $(seq 1 18000); do [ "$(psqlp $PGPORT "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break; sleep 0.1; done
t1=$(now)
PREPLAY_S=$(secs "$t0" "$t1")
PROWS=$(psqlp $PGPORT "SELECT count(*) FROM kv")
stop_pg "$P/restored"

# ------------------------------------------------------------------ table
TR=$(grep -o '[0-9]* entries replayed ([0-9.]* MiB in [0-9]* ms, [0-9]* entries/s' "$T/replay.out")
TR_CPU=$(grep -o 'load + replay used [0-9.]* s CPU' "$T/replay.out" | awk '{print $5}')
TR_N=$(echo "$TR" | awk '{print $1}'); TR_MS=$(echo "$TR" | grep -o 'in [0-9]* ms' | awk '{print $2}')
TR_MIB=$(echo "$TR" | grep -o '([0-9.]* MiB' | tr -d '(' | awk '{print $1}')
TR_TOTAL=$(awk '{print $1}' "$T/replay.time")
TL=$(grep -o '[0-9.]* MiB loaded in [0-9]* ms' "$T/loadbase.out"); TL_MIB=$(echo "$TL" | awk '{print $1}'); TL_MS=$(echo "$TL" | awk '{print $5}')
TL_TOTAL=$(awk '{print $1}' "$T/load.time")
{
echo
echo "| system | step | data | time (s) | throughput |"
echo "|---|---|---|---|---|"
printf "| Tandem | base backup (\`tandem backup base\`, over HTTP) | %s MiB | %.2f | %.1f MB/s |\n" "$TBASE_MIB" "$TBASE_S" "$(echo "$TBASE_MIB*1.048576/$TBASE_S" | bc -l)"
printf "| PostgreSQL 15 | base backup (\`pg_basebackup -X stream -c fast\`) | %s MiB | %.2f | %.1f MB/s |\n" "$PBASE_MIB" "$PBASE_S" "$(echo "$PBASE_MIB*1.048576/$PBASE_S" | bc -l)"
printf "| Tandem | log replay only (\`restore --to-lsn\`, %s entries, %s MiB of archived log) | %s entries | %.2f | %.0f entries/s, %.1f MB/s |\n" "$TR_N" "$TR_MIB" "$TR_N" "$(echo "$TR_MS/1000" | bc -l)" "$(echo "$TR_N*1000/$TR_MS" | bc -l)" "$(echo "$TR_MIB*1.048576*1000/$TR_MS" | bc -l)"
printf "| Tandem | log replay, per CPU second (load + replay used %s s CPU on a shared 2-core machine) | %s entries | %s CPU | %.0f entries per CPU-s |\n" "$TR_CPU" "$TR_N" "$TR_CPU" "$(echo "$TR_N/$TR_CPU" | bc -l)"
printf "| Tandem | whole restore from the empty base (replay + write data dir) | %s keys | %.2f | %.0f keys/s |\n" "$TR_N" "$TR_TOTAL" "$(echo "$TR_N/$TR_TOTAL" | bc -l)"
printf "| Tandem | whole restore from the full base (snapshot load + write data dir) | %s MiB snapshot | %.2f (load %s ms) | %.1f MB/s |\n" "$TL_MIB" "$TL_TOTAL" "$TL_MS" "$(echo "$TL_MIB*1.048576/$TL_TOTAL" | bc -l)"
printf "| PostgreSQL 15 | archive recovery to recovery_target_time (start to promoted), %.0f MiB WAL, %s WAL records | %s rows | %.2f | %.0f WAL records/s, %.0f rows/s, %.1f MB/s of WAL |\n" "$WAL_MIB" "${WAL_RECORDS:-?}" "$PROWS" "$PREPLAY_S" "$(echo "${WAL_RECORDS:-0}/$PREPLAY_S" | bc -l)" "$(echo "$PROWS/$PREPLAY_S" | bc -l)" "$(echo "$WAL_MIB*1.048576/$PREPLAY_S" | bc -l)"
echo
echo "Tandem archived log: $LOG_MIB MiB; replay process: $(cat "$T/replay.time"); full-base restore process: $(cat "$T/load.time")."
echo "PostgreSQL rows after recovery: $PROWS (expected $KEYS: the row written after the target time is not replayed)."
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RES"
