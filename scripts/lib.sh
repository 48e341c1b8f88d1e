# Shared setup of the benchmark scripts (sourced, not run). Each script
# calls `bench_init NAME [OUT_DIR]` first: it moves to the repository root,
# makes OUT (results, kept) and WORK (scratch, removed at exit), and arms
# the exit trap that kills every pid the script appended to PIDS.

bench_init() { # name [out_dir]
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  OUT=${2:-$(mktemp -d "/var/tmp/tandem-$1.XXXXXX")}
  mkdir -p "$OUT"
  WORK=$(mktemp -d "/var/tmp/tandem-$1-work.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && { kill -9 "$p"; wait "$p"; } 2>/dev/null || true; done
  rm -rf "$WORK"
}

# Installs the Debian packages that provide the given commands, if missing:
# need_commands redis-server:redis-server redis-cli:redis-tools
need_commands() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# The header line of a summary: script, time, machine, Redis version, load.
bench_header() { # name [extra]
  echo "# $1 $(date -u +%FT%TZ) nproc=$(nproc) $(redis-server --version 2>/dev/null | cut -d' ' -f1-3) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)${2:+ $2}"
}

wait_port() { # port
  for _ in $(seq 1 600); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "server on port $1 did not come up" >&2
  return 1
}
