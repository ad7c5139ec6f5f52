#!/usr/bin/env bash
# Benchmark: `sstream serve` against nginx serving the same large files on
# loopback, with 1 and with 16 concurrent clients (wrk). Prints a markdown
# table on stdout (progress on stderr): throughput of each server, the ratio
# ours/nginx, and the CPU time each server spent per GB sent (user + system,
# from /proc; steadier than throughput on a shared machine), medians of the
# runs.
#
# Knobs (environment): BENCH_REPEAT (runs of each measurement, alternating
# the servers; 3), BENCH_SECONDS (length of one measurement; 10),
# BENCH_FILES (number of files; 2), BENCH_FILE_MB (size of each; 256),
# BENCH_CLIENTS (client counts; "1 16"), BENCH_PORT (nginx; ours is +1;
# 18641), BENCH_SENDFILE (nginx `sendfile`; on, as in Debian's nginx.conf),
# BENCH_NO_BUILD (1: use the existing release build as is; 0), BENCH_SSTREAM
# (another `sstream` binary to measure, e.g. an older build; none).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REPEAT=${BENCH_REPEAT:-3}
SECONDS_EACH=${BENCH_SECONDS:-10}
NFILES=${BENCH_FILES:-2}
FILE_MB=${BENCH_FILE_MB:-256}
CLIENTS=${BENCH_CLIENTS:-1 16}
PORT=${BENCH_PORT:-18641}
OUR_PORT=$((PORT + 1))
SENDFILE=${BENCH_SENDFILE:-on}
B=$ROOT/target/bench-serve
WWW=$B/www
log() { echo "bench: $*" >&2; }

# --- Tools: nginx, wrk, our release build. --------------------------------
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi
NGINX=$(command -v nginx)
if [ -n "${BENCH_SSTREAM:-}" ]; then
  OURS=$BENCH_SSTREAM
else
  [ "${BENCH_NO_BUILD:-0}" = 1 ] || cargo build --release --bin sstream -p sstream >&2
  OURS=$ROOT/target/release/sstream
fi

# --- The files: random bytes (no holes, nothing compressible), reused. ----
mkdir -p "$WWW/images"
PARAMS="files=$NFILES mb=$FILE_MB"
if [ "$(cat "$B/params" 2>/dev/null)" != "$PARAMS" ] || [ ! -f "$WWW/images/file$NFILES.img" ]; then
  log "writing $NFILES files of $FILE_MB MiB in $WWW/images"
  rm -f "$WWW"/images/* "$B/params"
  for i in $(seq 1 "$NFILES"); do
    head -c "$((FILE_MB * 1024 * 1024))" /dev/urandom >"$WWW/images/file$i.img"
  done
  echo "$PARAMS" >"$B/params"
fi
# Into the page cache: the servers are measured, not the disk.
cat "$WWW"/images/*.img >/dev/null

# --- wrk: cycles through the files, prints bytes and time at the end. -----
cat >"$B/files.lua" <<EOF
local paths = {}
for i = 1, $NFILES do paths[i] = "/images/file" .. i .. ".img" end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT bytes=%d us=%d requests=%d errors=%d" ..
    " (connect %d, read %d, write %d, status %d, timeout %d)\n",
    summary.bytes, summary.duration, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout,
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

# --- The servers, stopped on exit. ----------------------------------------
mkdir -p "$B/nginx"
cat >"$B/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $B/nginx/nginx.pid;
error_log $B/nginx/error.log;
events { worker_connections 256; }
http {
  default_type application/octet-stream;
  access_log off;
  sendfile $SENDFILE;
  tcp_nopush on;
  server { listen 127.0.0.1:$PORT; root $WWW; }
}
EOF
OUR_PID=
stop() {
  [ -f "$B/nginx/nginx.pid" ] && kill "$(cat "$B/nginx/nginx.pid")" 2>/dev/null || true
  [ -n "$OUR_PID" ] && kill "$OUR_PID" 2>/dev/null || true
}
trap stop EXIT
"$NGINX" -p "$B/nginx" -c "$B/nginx/nginx.conf"
# Our access log goes to a file, as nginx's would (here: off, to /dev/null).
"$OURS" serve "$WWW" --listen "127.0.0.1:$OUR_PORT" >"$B/ours.out" 2>/dev/null &
OUR_PID=$!
for _ in $(seq 50); do
  curl -sf -o /dev/null "http://127.0.0.1:$OUR_PORT/images/file1.img" && break
  sleep 0.1
done
curl -sSf -o /dev/null "http://127.0.0.1:$PORT/images/file1.img"
curl -sSf -o /dev/null "http://127.0.0.1:$OUR_PORT/images/file1.img"

# cpu_ticks PID...: user + system clock ticks used so far by these processes.
cpu_ticks() {
  local t=0 pid
  for pid in "$@"; do
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised name).
    t=$((t + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
  done
  echo "$t"
}
server_pids() {
  if [ "$1" = nginx ]; then pgrep -P "$(cat "$B/nginx/nginx.pid")"; else echo "$OUR_PID"; fi
}
TICKS=$(getconf CLK_TCK)

# run SERVER PORT CLIENTS: one wrk measurement; prints "MB/s CPU-s/GB".
run() {
  local server=$1 threads=$(($3 < 2 ? 1 : 2)) out pids t0 t1
  pids=$(server_pids "$server")
  t0=$(cpu_ticks $pids)
  out=$(wrk -t"$threads" -c"$3" -d"${SECONDS_EACH}s" --timeout 300s -s "$B/files.lua" \
    "http://127.0.0.1:$2/" 2>&1 | grep '^RESULT') || { log "wrk failed against $server"; exit 1; }
  t1=$(cpu_ticks $pids)
  set -- $out
  local bytes=${2#bytes=} us=${3#us=} errors=${5#errors=}
  [ "$errors" = 0 ] || { log "$server: $out"; exit 1; }
  # bytes/us = MB/s
  awk -v b="$bytes" -v us="$us" -v t=$((t1 - t0)) -v hz="$TICKS" \
    'BEGIN { printf "%.0f %.3f\n", b / us, (t / hz) / (b / 1e9) }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "| clients | nginx MB/s | sstream serve MB/s | sstream / nginx | CPU s per GB, nginx / sstream | runs MB/s (nginx; sstream) |"
echo "|---|---|---|---|---|---|"
for c in $CLIENTS; do
  ng=() us=() ngc=() usc=()
  for r in $(seq 1 "$REPEAT"); do
    # Alternate which server goes first, so that drift hits both alike.
    if [ $((r % 2)) = 1 ]; then
      a=$(run nginx "$PORT" "$c"); b=$(run sstream "$OUR_PORT" "$c")
    else
      b=$(run sstream "$OUR_PORT" "$c"); a=$(run nginx "$PORT" "$c")
    fi
    ng+=("${a% *}") ngc+=("${a#* }") us+=("${b% *}") usc+=("${b#* }")
    log "clients=$c run $r: nginx ${a% *} MB/s (${a#* } CPU s/GB), sstream ${b% *} MB/s (${b#* } CPU s/GB)"
  done
  n=$(printf '%s\n' "${ng[@]}" | median)
  o=$(printf '%s\n' "${us[@]}" | median)
  nc=$(printf '%s\n' "${ngc[@]}" | median)
  oc=$(printf '%s\n' "${usc[@]}" | median)
  ratio=$(awk -v o="$o" -v n="$n" 'BEGIN { printf "%.2f", o / n }')
  echo "| $c | $n | $o | ${ratio}x | $nc / $oc | ${ng[*]}; ${us[*]} |"
done
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
