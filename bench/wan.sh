#!/usr/bin/env bash
# The WAN model: our sstream-mirror against the reference over a shaped
# link. In a network namespace this script creates, the loopback is the
# bottleneck (tc htb at WAN_RATE; netem is not available in this kernel, so
# no added latency) and nginx serves a generated MAAS-like stream with a
# per-connection limit_rate (what a CDN or a long round trip gives one TCP
# connection). Scenarios, each measured for ours and the reference in the
# same run:
#   daily: the daily incremental update of a MAAS site (`--max=1
#          release=noble`): one new version, one big squashfs and a few
#          smaller files (initrds, kernels, manifest), the old one removed;
#   full:  a first full sync of the stream (two releases);
#   capped: the daily update again with --limit-rate WAN_CAP (ours only).
# Prints a markdown report on stdout (progress on stderr): times, useful
# MB/s (the bytes the reference fetched, i.e. each file once, over the
# time), the share of the bottleneck's rate, and bytes on the link.
#
# Knobs (environment): WAN_RATE (bottleneck, tc units; 400mbit),
# WAN_CONN_RATE (nginx limit_rate per connection; 12m), WAN_PAYLOAD (nominal
# squashfs bytes; 128 MiB), WAN_CAP (--limit-rate of the capped scenario;
# 20M), WAN_JOBS (our --jobs; 6), WAN_PORT (18651), BENCH_NO_BUILD (1: use
# the existing release build).
#
# Needs root (ip netns, tc), nginx, GNU time and curl (installed with apt
# when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RATE=${WAN_RATE:-400mbit}
CONN_RATE=${WAN_CONN_RATE:-12m}
PAYLOAD=${WAN_PAYLOAD:-134217728}
CAP=${WAN_CAP:-20M}
JOBS=${WAN_JOBS:-6}
PORT=${WAN_PORT:-18651}
B=$ROOT/target/bench-wan
WWW=$B/www
SRC=http://127.0.0.1:$PORT/
RELEASES=jammy:22.04,noble:24.04
DAY0=20250718
DAY1=20250718,20250801
NS=sstream-wan-$$
log() { echo "wan: $*" >&2; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

[ "$(id -u)" -eq 0 ] || { log "needs root (ip netns, tc)"; exit 1; }
. bench/tools.sh
bench_tools iproute2:tc

# --- The stream: day 0 and day 1 (one new version of every product). -----
PARAMS="payload=$PAYLOAD releases=$RELEASES day0=$DAY0 day1=$DAY1 gen=$(sha256sum crates/simplestreams/src/sample.rs | cut -c1-16)"
mkdir -p "$B"
if [ "$(cat "$B/params" 2>/dev/null)" != "$PARAMS" ]; then
  log "generating the stream in $WWW"
  rm -rf "$WWW" "$B/meta-day0" "$B/meta-day1" "$B/params"
  gen() { "$GEN" --payload-bytes "$PAYLOAD" --releases "$RELEASES" --arches amd64 \
    --versions "$2" --bootloader-versions 20230222.0 "$WWW" >&2 && cp -r "$WWW/streams/v1" "$B/meta-$1"; }
  gen day1 "$DAY1"
  gen day0 "$DAY0"
  echo "$PARAMS" >"$B/params"
fi
use_day() { rm -rf "$WWW/streams/v1" && cp -r "$B/meta-$1" "$WWW/streams/v1"; }

# --- The namespace, its shaped loopback and nginx, removed on exit. -------
cleanup() {
  [ -f "$B/nginx/nginx.pid" ] && kill "$(cat "$B/nginx/nginx.pid")" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo mtu 1500 up
tc -n "$NS" qdisc add dev lo root handle 1: htb default 1
tc -n "$NS" class add dev lo parent 1: classid 1:1 htb rate "$RATE" ceil "$RATE" \
  burst 256k cburst 256k quantum 1514
in_ns() { ip netns exec "$NS" "$@"; }
mkdir -p "$B/nginx"
cat >"$B/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $B/nginx/nginx.pid;
error_log $B/nginx/error.log;
events { worker_connections 256; }
http {
  default_type application/octet-stream;
  log_format bench '\$status \$body_bytes_sent \$request_method \$request_uri';
  access_log $B/nginx/access.log bench;
  sendfile on;
  server { listen 127.0.0.1:$PORT; root $WWW; limit_rate $CONN_RATE; }
}
EOF
: >"$B/nginx/access.log"
in_ns "$NGINX" -p "$B/nginx" -c "$B/nginx/nginx.conf"
use_day day0
in_ns curl -sSf -o /dev/null "${SRC}streams/v1/index.json"

# --- Measurement (as bench/run.sh: the clock stops after a final sync). ---
RESULTS=$B/results.tsv
: >"$RESULTS"
RUN_IN=(ip netns exec "$NS") # measure (bench/tools.sh) runs each tool in the namespace

COMMON=(--path streams/v1/index.json --no-verify)
DAILY=(--max=1) # options, then after the source and target: the filter
FILTER=('release=noble')
OUT=$B/out
rm -rf "$OUT" && mkdir -p "$OUT"

# The link's goodput as the bottleneck lets through: 8 parallel ranges of
# the largest file with curl, to /dev/null (the link, not a tool, measured).
BIG=$(cd "$WWW" && ls noble/amd64/*/squashfs | head -1)
SIZE=$(stat -c %s "$WWW/$BIG")
measure link curl sh -c 'size=$1 url=$2 chunk=$(( ($1 + 7) / 8 ))
  for i in 0 1 2 3 4 5 6 7; do
    first=$((i * chunk)) last=$(( (i + 1) * chunk - 1 ))
    [ $last -lt $size ] || last=$((size - 1))
    curl -sSf -r "$first-$last" -o /dev/null "$url" &
  done
  wait' _ "$SIZE" "$SRC$BIG"

# First full sync (day 0, unfiltered).
measure full ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$OUT/ours-full"
measure full reference "$REF" "${COMMON[@]}" "$SRC" "$OUT/ref-full"
rm -rf "$OUT/ours-full" "$OUT/ref-full"

# The daily update: a day-0 mirror (made from the files, unmeasured), then
# day 1 over the link. Mirror files are never changed in place, so each run
# starts from a hard-linked copy of the day-0 mirror.
"$OURS" "${COMMON[@]}" "${DAILY[@]}" "$WWW" "$OUT/day0" "${FILTER[@]}" >&2
use_day day1
for tool in ours reference capped; do
  cp -al "$OUT/day0" "$OUT/$tool-daily"
  for d in .data streams; do # what a tool may rewrite in place
    rm -rf "${OUT:?}/$tool-daily/$d" && cp -a "$OUT/day0/$d" "$OUT/$tool-daily/$d"
  done
done
measure daily ours "$OURS" "${COMMON[@]}" "${DAILY[@]}" --jobs "$JOBS" "$SRC" "$OUT/ours-daily" "${FILTER[@]}"
measure daily reference "$REF" "${COMMON[@]}" "${DAILY[@]}" "$SRC" "$OUT/reference-daily" "${FILTER[@]}"
measure capped ours "$OURS" "${COMMON[@]}" "${DAILY[@]}" --jobs "$JOBS" --limit-rate "$CAP" "$SRC" "$OUT/capped-daily" "${FILTER[@]}"
for tool in ours capped; do
  python3 bench/same-mirror.py "$OUT/reference-daily" "$OUT/$tool-daily" ||
    { log "$tool: the daily mirror differs from the reference's"; exit 1; }
done
use_day day0
rm -rf "$OUT"

python3 bench/wan-report.py "$RESULTS" "$RATE" "$CONN_RATE" "$CAP" \
  "bottleneck $RATE (tc htb on the namespace's loopback, MTU 1500), nginx limit_rate $CONN_RATE per connection, ours --jobs $JOBS, squashfs ~$((PAYLOAD >> 20)) MiB, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
