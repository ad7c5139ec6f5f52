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
#   capped: the daily update again with --limit-rate WAN_CAP (ours only);
#   long haul: after the others, the link shaped to WAN3_RATE and nginx
#          capping each connection at WAN3_CONN_RATE (200 Mbit/s, 3 MiB/s:
#          one connection gets an eighth of the link, as from a distant
#          CDN), the day-1 update of one boot product (`--max=1
#          release=noble subarch=ga-24.04`: a squashfs of WAN3_PAYLOAD,
#          an initrd, a kernel, a manifest), with curl's 16 parallel
#          ranges measuring the link in the same run.
# With WAN_BEFORE=PATH (another sstream-mirror, e.g. a release build of
# main), every scenario also runs it ("before"), side by side with ours.
# Prints a markdown report on stdout (progress on stderr): times, useful
# MB/s (the bytes the reference fetched, i.e. each file once, over the
# time), the share of the bottleneck's rate, and bytes on the link.
#
# Knobs (environment): WAN_RATE (bottleneck, tc units; 400mbit),
# WAN_CONN_RATE (nginx limit_rate per connection; 12m), WAN_PAYLOAD (nominal
# squashfs bytes; 128 MiB), WAN_CAP (--limit-rate of the capped scenario;
# 20M), WAN_JOBS (our --jobs; 6), WAN_PORT (18651, and the next port for
# the long haul), WAN3_RATE (200mbit), WAN3_CONN_RATE (3m), WAN3_PAYLOAD
# (144 MiB), WAN_BEFORE (none), BENCH_NO_BUILD (1: use the existing release
# build).
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
RATE3=${WAN3_RATE:-200mbit}
CONN3=${WAN3_CONN_RATE:-3m}
PAYLOAD3=${WAN3_PAYLOAD:-150994944}
BEFORE=${WAN_BEFORE:-}
B=$ROOT/target/bench-wan
WWW=$B/www
WWW3=$B/www3
SRC=http://127.0.0.1:$PORT/
SRC3=http://127.0.0.1:$((PORT + 1))/
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
# The long haul's stream: noble alone, its squashfs of PAYLOAD3.
PARAMS3="payload=$PAYLOAD3 releases=noble:24.04 day0=$DAY0 day1=$DAY1 gen=$(sha256sum crates/simplestreams/src/sample.rs | cut -c1-16)"
if [ "$(cat "$B/params3" 2>/dev/null)" != "$PARAMS3" ]; then
  log "generating the long haul's stream in $WWW3"
  rm -rf "$WWW3" "$B/meta3-day0" "$B/meta3-day1" "$B/params3"
  gen3() { "$GEN" --payload-bytes "$PAYLOAD3" --releases noble:24.04 --arches amd64 \
    --versions "$2" --bootloader-versions 20230222.0 "$WWW3" >&2 && cp -r "$WWW3/streams/v1" "$B/meta3-$1"; }
  gen3 day1 "$DAY1"
  gen3 day0 "$DAY0"
  echo "$PARAMS3" >"$B/params3"
fi
use_day3() { rm -rf "$WWW3/streams/v1" && cp -r "$B/meta3-$1" "$WWW3/streams/v1"; }

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
  server { listen 127.0.0.1:$((PORT + 1)); root $WWW3; limit_rate $CONN3; }
}
EOF
: >"$B/nginx/access.log"
in_ns "$NGINX" -p "$B/nginx" -c "$B/nginx/nginx.conf"
use_day day0
use_day3 day0
in_ns curl -sSf -o /dev/null "${SRC}streams/v1/index.json"
in_ns curl -sSf -o /dev/null "${SRC3}streams/v1/index.json"

# --- Measurement (as bench/run.sh: the clock stops after a final sync). ---
RESULTS=$B/results.tsv
: >"$RESULTS"
RUN_IN=(ip netns exec "$NS") # measure (bench/tools.sh) runs each tool in the namespace

COMMON=(--path streams/v1/index.json --no-verify)
DAILY=(--max=1) # options, then after the source and target: the filter
FILTER=('release=noble')
OUT=$B/out
rm -rf "$OUT" && mkdir -p "$OUT"

# The link's goodput as the bottleneck lets through: N parallel ranges of
# the largest file with curl, to /dev/null (the link, not a tool, measured).
# link_rate SCENARIO WWW SRC N
link_rate() {
  local big size
  big=$(cd "$2" && ls noble/amd64/*/squashfs | head -1)
  size=$(stat -c %s "$2/$big")
  measure "$1" curl sh -c 'size=$1 url=$2 n=$3 chunk=$(( ($1 + $3 - 1) / $3 )) i=0
    while [ $i -lt $n ]; do
      first=$((i * chunk)) last=$(( (i + 1) * chunk - 1 ))
      [ $last -lt $size ] || last=$((size - 1))
      curl -sSf -r "$first-$last" -o /dev/null "$url" &
      i=$((i + 1))
    done
    wait' _ "$size" "$3$big" "$4"
}
link_rate link "$WWW" "$SRC" 8

# daily_copies OUT TOOL...: a hard-linked copy of the day-0 mirror in OUT
# for each TOOL (mirror files are never changed in place), but for what a
# tool may rewrite in place.
daily_copies() {
  local out=$1 tool d; shift
  for tool in "$@"; do
    cp -al "$out/day0" "$out/$tool-daily"
    for d in .data streams; do
      rm -rf "${out:?}/$tool-daily/$d" && cp -a "$out/day0/$d" "$out/$tool-daily/$d"
    done
  done
}

# First full sync (day 0, unfiltered).
measure full ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$OUT/ours-full"
[ -z "$BEFORE" ] || measure full before "$BEFORE" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$OUT/before-full"
measure full reference "$REF" "${COMMON[@]}" "$SRC" "$OUT/ref-full"
rm -rf "$OUT/ours-full" "$OUT/before-full" "$OUT/ref-full"

# The daily update: a day-0 mirror (made from the files, unmeasured), then
# day 1 over the link. Mirror files are never changed in place, so each run
# starts from a hard-linked copy of the day-0 mirror.
"$OURS" "${COMMON[@]}" "${DAILY[@]}" "$WWW" "$OUT/day0" "${FILTER[@]}" >&2
use_day day1
TOOLS=(ours capped ${BEFORE:+before before-capped})
daily_copies "$OUT" reference "${TOOLS[@]}"
measure daily ours "$OURS" "${COMMON[@]}" "${DAILY[@]}" --jobs "$JOBS" "$SRC" "$OUT/ours-daily" "${FILTER[@]}"
[ -z "$BEFORE" ] || measure daily before "$BEFORE" "${COMMON[@]}" "${DAILY[@]}" --jobs "$JOBS" "$SRC" "$OUT/before-daily" "${FILTER[@]}"
measure daily reference "$REF" "${COMMON[@]}" "${DAILY[@]}" "$SRC" "$OUT/reference-daily" "${FILTER[@]}"
measure capped ours "$OURS" "${COMMON[@]}" "${DAILY[@]}" --jobs "$JOBS" --limit-rate "$CAP" "$SRC" "$OUT/capped-daily" "${FILTER[@]}"
[ -z "$BEFORE" ] || measure capped before "$BEFORE" "${COMMON[@]}" "${DAILY[@]}" --jobs "$JOBS" --limit-rate "$CAP" "$SRC" "$OUT/before-capped-daily" "${FILTER[@]}"
for tool in "${TOOLS[@]}"; do
  python3 bench/same-mirror.py "$OUT/reference-daily" "$OUT/$tool-daily" ||
    { log "$tool: the daily mirror differs from the reference's"; exit 1; }
done
use_day day0
rm -rf "$OUT"

# --- The long haul: the link shaped to RATE3, CONN3 per connection. ------
tc -n "$NS" class change dev lo parent 1: classid 1:1 htb rate "$RATE3" ceil "$RATE3" \
  burst 256k cburst 256k quantum 1514
link_rate link3 "$WWW3" "$SRC3" 16
FILTER3=('release=noble' 'subarch=ga-24.04')
mkdir -p "$OUT"
"$OURS" "${COMMON[@]}" "${DAILY[@]}" "$WWW3" "$OUT/day0" "${FILTER3[@]}" >&2
use_day3 day1
TOOLS=(ours ${BEFORE:+before})
daily_copies "$OUT" reference "${TOOLS[@]}"
# Default options: no --jobs.
measure daily3 ours "$OURS" "${COMMON[@]}" "${DAILY[@]}" "$SRC3" "$OUT/ours-daily" "${FILTER3[@]}"
[ -z "$BEFORE" ] || measure daily3 before "$BEFORE" "${COMMON[@]}" "${DAILY[@]}" "$SRC3" "$OUT/before-daily" "${FILTER3[@]}"
measure daily3 reference "$REF" "${COMMON[@]}" "${DAILY[@]}" "$SRC3" "$OUT/reference-daily" "${FILTER3[@]}"
for tool in "${TOOLS[@]}"; do
  python3 bench/same-mirror.py "$OUT/reference-daily" "$OUT/$tool-daily" ||
    { log "$tool: the long haul's mirror differs from the reference's"; exit 1; }
done
use_day3 day0
rm -rf "$OUT"

python3 bench/wan-report.py "$RESULTS" "$RATE" "$CONN_RATE" "$CAP" "$RATE3" "$CONN3" \
  "bottleneck $RATE (tc htb on the namespace's loopback, MTU 1500), nginx limit_rate $CONN_RATE per connection, ours --jobs $JOBS, squashfs ~$((PAYLOAD >> 20)) MiB; the long haul $RATE3, limit_rate $CONN3, squashfs ~$((PAYLOAD3 >> 20)) MiB, ours with default options${BEFORE:+; before: $BEFORE}; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
