#!/usr/bin/env bash
# Benchmark: our sstream-mirror against the reference Python tool, the raw
# curl + sha256 limit and the fetch floor (curl writing every file, nothing
# else), on a generated MAAS-like stream (unsigned,
# --path streams/v1/index.json --no-verify) served by a private nginx on
# 127.0.0.1; and a generated stream of images.maas.io's size (19,000 items,
# 14,000 files, a 5 MB products file) for the metadata at scale. Prints a
# markdown table on stdout (progress on stderr). The WAN model is
# bench/wan.sh.
#
# Knobs (environment): BENCH_REPEAT (runs of each measurement, median
# reported; 1), BENCH_JOBS (our --jobs and the curl concurrency; 6),
# BENCH_PAYLOAD (nominal squashfs bytes; 128 MiB), BENCH_PORT (18631),
# BENCH_DROP_CACHES (1: drop the page cache before each measurement; 0),
# BENCH_NO_BUILD (1: use the existing release build as is; 0),
# BENCH_WAN_RATE (nginx limit_rate per connection of the "WAN-like" server,
# which serves the extra full-mirror measurement; 50m; 0 skips it),
# BENCH_SCALE (0 skips the 19,000-item stream; 1), BENCH_SCALE_REFERENCE (1:
# also run the reference on it, about 10 minutes; 0), BENCH_FLOOR_ONLY (1:
# only the full mirror against the fetch floor, reported by
# bench/floor-report.py; 0), BENCH_OURS_B (another build of sstream-mirror,
# e.g. main's, measured as "ours-b" in turn with ours in every repeat),
# BENCH_FLOOR_WAN (1: the floor-only measurements from the "WAN-like"
# server, BENCH_WAN_RATE per connection: a link slower than the disk; 0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REPEAT=${BENCH_REPEAT:-1}
JOBS=${BENCH_JOBS:-6}
PAYLOAD=${BENCH_PAYLOAD:-134217728}
PORT=${BENCH_PORT:-18631}
DROP=${BENCH_DROP_CACHES:-0}
WAN_RATE=${BENCH_WAN_RATE:-50m}
SCALE=${BENCH_SCALE:-1}
SCALE_REF=${BENCH_SCALE_REFERENCE:-0}
FLOOR_ONLY=${BENCH_FLOOR_ONLY:-0}
OURS_B=${BENCH_OURS_B:-}
B=$ROOT/target/bench
WWW=$B/www
URL=http://127.0.0.1:$PORT
SRC=$URL/ # the reference needs the trailing slash
RELEASES=trusty:14.04,xenial:16.04,jammy:22.04
DAY0=20250615,20250718
DAY1=20250718,20250801 # one new version per product, the oldest dropped
log() { echo "bench: $*" >&2; }

# --- Tools: nginx, GNU time, the reference, our release build. -----------
. bench/tools.sh
bench_tools eatmydata:eatmydata

# --- The source tree (reused when generated with the same parameters). ---
PARAMS="payload=$PAYLOAD releases=$RELEASES arches=amd64,arm64 day0=$DAY0 day1=$DAY1 gen=$(sha256sum crates/simplestreams/src/sample.rs | cut -c1-16)"
mkdir -p "$B"
if [ "$(cat "$B/params" 2>/dev/null)" != "$PARAMS" ]; then
  log "generating the source tree in $WWW"
  rm -rf "$WWW" "$B/meta-day0" "$B/meta-day1" "$B/params"
  gen() { "$GEN" --payload-bytes "$PAYLOAD" --releases "$RELEASES" --arches amd64,arm64 \
    --versions "$2" --list "$B/$1.files" "$WWW" >&2 && cp -r "$WWW/streams/v1" "$B/meta-$1"; }
  gen day1 "$DAY1"
  gen day0 "$DAY0"
  echo "$PARAMS" >"$B/params"
fi
use_day() { rm -rf "$WWW/streams/v1" && cp -r "$B/meta-$1" "$WWW/streams/v1"; }
use_day day0

# The stream at scale: 19 releases x 5 arches x 25 versions, two kernel
# flavours each (19,014 items, 14,264 files, a 5 MB products file), tiny
# payloads: the metadata is what is measured.
SWWW=$B/scale-www
if [ "$SCALE" = 1 ]; then
  SRELEASES=precise:12.04,trusty:14.04,xenial:16.04,artful:17.10,bionic:18.04,cosmic:18.10,disco:19.04,eoan:19.10,focal:20.04,groovy:20.10,hirsute:21.04,impish:21.10,jammy:22.04,kinetic:22.10,lunar:23.04,mantic:23.10,noble:24.04,oracular:24.10,plucky:25.04
  SVERSIONS=$(python3 -c "import datetime as d; print(','.join((d.date(2024, 1, 1) + d.timedelta(days=7 * i)).strftime('%Y%m%d') for i in range(25)))")
  SPARAMS="releases=$SRELEASES versions=$SVERSIONS gen=$(sha256sum crates/simplestreams/src/sample.rs | cut -c1-16)"
  if [ "$(cat "$B/scale-params" 2>/dev/null)" != "$SPARAMS" ]; then
    log "generating the stream at scale in $SWWW"
    rm -rf "$SWWW" "$B/scale-params"
    "$GEN" --payload-bytes 4096 --releases "$SRELEASES" --arches amd64,arm64,armhf,ppc64el,s390x \
      --versions "$SVERSIONS" --list "$B/scale.files" "$SWWW" >&2
    echo "$SPARAMS" >"$B/scale-params"
  fi
fi

# --- nginx on 127.0.0.1:$PORT, stopped on exit. ---------------------------
mkdir -p "$B/nginx"
cat >"$B/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $B/nginx/nginx.pid;
error_log $B/nginx/error.log;
events { worker_connections 256; }
http {
  default_type application/octet-stream;
  log_format bench '\$status \$body_bytes_sent \$request_method \$request_uri';
  access_log $B/nginx/access.log bench;
  sendfile on;
  server { listen 127.0.0.1:$PORT; root $WWW; }
  server { listen 127.0.0.1:$((PORT + 1)); root $WWW; limit_rate $WAN_RATE; }
  server { listen 127.0.0.1:$((PORT + 2)); root $SWWW; }
}
EOF
: >"$B/nginx/access.log"
stop_nginx() { [ -f "$B/nginx/nginx.pid" ] && kill "$(cat "$B/nginx/nginx.pid")" 2>/dev/null || true; }
trap stop_nginx EXIT
"$NGINX" -p "$B/nginx" -c "$B/nginx/nginx.conf"
curl -sSf -o /dev/null "$URL/streams/v1/index.json"

# --- Measurement. ---------------------------------------------------------
# measure (bench/tools.sh) appends to results.tsv.
RESULTS=$B/results.tsv
DROPPED=no

# Every payload of the stream at scale is in the mirror with its size.
check_scale() {
  python3 - "$SWWW" "$1" "$B/scale.files" <<'PY' || exit 1
import os, sys
src, dst, listing = sys.argv[1:4]
bad = [p for p in open(listing).read().split()
       if not os.path.isfile(os.path.join(dst, p))
       or os.path.getsize(os.path.join(dst, p)) != os.path.getsize(os.path.join(src, p))]
for p in bad[:5]:
    print(f"bench: {dst}/{p}: missing or wrong size", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

# The bytes of the day's payloads.
day_bytes() { (cd "$WWW" && xargs stat -c %s <"$B/$1.files") | awk '{s += $1} END {printf "%.0f", s}'; }

# Every payload of the day's list is in the mirror with the source's size.
check_mirror() {
  local day=$1 dir=$2 p
  while read -r p; do
    [ "$(stat -c %s "$dir/$p" 2>/dev/null)" = "$(stat -c %s "$WWW/$p")" ] ||
      { log "$dir/$p: missing or wrong size"; exit 1; }
  done <"$B/$day.files"
}

: >"$RESULTS"
COMMON=(--path streams/v1/index.json --no-verify)
FILTER=('arch=amd64' 'release~(trusty|xenial)')
# The full mirror against the fetch floor only: ours (and ours-b) in turn
# with the floor, each checked.
floor_round() {
  local URL=$URL SRC=$SRC
  if [ "${BENCH_FLOOR_WAN:-0}" = 1 ]; then
    URL=http://127.0.0.1:$((PORT + 1)) SRC=http://127.0.0.1:$((PORT + 1))/
  fi
  rm -rf "$B/out" && mkdir -p "$B/out"
  measure full ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$B/out/ours"
  check_mirror day0 "$B/out/ours" && rm -rf "$B/out/ours"
  measure full floor bash bench/fetch-floor.sh "$URL" "$B/out/floor" "$B/day0.files" "$JOBS"
  check_mirror day0 "$B/out/floor" && rm -rf "$B/out/floor"
  # The disk's floor: the same bytes written by JOBS streams at once and
  # made durable (what no durable mirror can beat on this disk).
  measure full disk bash bench/disk-floor.sh "$B/out/disk" "$(day_bytes day0)" "$JOBS"
  rm -rf "$B/out/disk"
  if [ -n "$OURS_B" ]; then
    measure full ours-b "$OURS_B" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$B/out/ours-b"
    check_mirror day0 "$B/out/ours-b" && rm -rf "$B/out/ours-b"
  fi
  measure full ours-nofsync eatmydata "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$B/out/nofsync"
  check_mirror day0 "$B/out/nofsync" && rm -rf "$B/out"
  if [ "$SCALE" = 1 ]; then # 14,264 small files: a flush each
    local build SURL=http://127.0.0.1:$((PORT + 2))/
    for build in ours${OURS_B:+ ours-b}; do
      local bin=$OURS
      [ "$build" = ours-b ] && bin=$OURS_B
      measure scale-full "$build" "$bin" "${COMMON[@]}" --jobs "$JOBS" "$SURL" "$B/out/scale"
      check_scale "$B/out/scale" && rm -rf "$B/out/scale"
    done
  fi
}
if [ "$FLOOR_ONLY" = 1 ]; then
  for i in $(seq "$REPEAT"); do
    log "run $i of $REPEAT (the fetch floor only)"
    floor_round
  done
  stop_nginx
  python3 bench/floor-report.py "$RESULTS" "jobs=$JOBS, repeat=$REPEAT, page cache dropped before each run: $DROPPED, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi
for i in $(seq "$REPEAT"); do
  log "run $i of $REPEAT"
  use_day day0
  rm -rf "$B/out" && mkdir -p "$B/out/raw"
  measure full ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$B/out/ours"
  measure full reference "$REF" "${COMMON[@]}" "$SRC" "$B/out/ref"
  measure full raw bash bench/raw-fetch.sh "$URL" "$B/out/raw" "$B/day0.files" "$JOBS"
  check_mirror day0 "$B/out/raw" && rm -rf "$B/out/raw"
  measure full floor bash bench/fetch-floor.sh "$URL" "$B/out/floor" "$B/day0.files" "$JOBS"
  check_mirror day0 "$B/out/floor" && rm -rf "$B/out/floor"
  # A diagnostic, not a way to run: ours with fsync made a no-op
  # (eatmydata), to tell the cost of durability from the engine's.
  measure full ours-nofsync eatmydata "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$B/out/nofsync"
  check_mirror day0 "$B/out/nofsync" && rm -rf "$B/out/nofsync"
  check_mirror day0 "$B/out/ours"
  check_mirror day0 "$B/out/ref"
  measure noop ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$B/out/ours"
  measure noop reference "$REF" "${COMMON[@]}" "$SRC" "$B/out/ref"
  measure filtered ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" --max=1 "$SRC" "$B/out/ours-f" "${FILTER[@]}"
  measure filtered reference "$REF" "${COMMON[@]}" --max=1 "$SRC" "$B/out/ref-f" "${FILTER[@]}"
  if [ "$WAN_RATE" != 0 ]; then
    WAN=http://127.0.0.1:$((PORT + 1))/
    measure wan ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$WAN" "$B/out/ours-wan"
    measure wan reference "$REF" "${COMMON[@]}" "$WAN" "$B/out/ref-wan"
    rm -rf "$B/out/ours-wan" "$B/out/ref-wan"
  fi
  use_day day1
  measure incremental ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SRC" "$B/out/ours"
  measure incremental reference "$REF" "${COMMON[@]}" "$SRC" "$B/out/ref"
  check_mirror day1 "$B/out/ours"
  check_mirror day1 "$B/out/ref"
  use_day day0
  rm -rf "$B/out"
  if [ "$SCALE" = 1 ]; then
    SURL=http://127.0.0.1:$((PORT + 2))/
    mkdir -p "$B/out"
    measure scale-dry ours "$OURS" "${COMMON[@]}" --dry-run "$SURL" "$B/out/ours-scale"
    measure scale-full ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SURL" "$B/out/ours-scale"
    check_scale "$B/out/ours-scale"
    measure scale-noop ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" "$SURL" "$B/out/ours-scale"
    measure scale-max1 ours "$OURS" "${COMMON[@]}" --jobs "$JOBS" --max=1 "$SURL" "$B/out/ours-scale-max1"
    if [ "$SCALE_REF" = 1 ]; then
      measure scale-full reference "$REF" "${COMMON[@]}" "$SURL" "$B/out/ref-scale"
      measure scale-noop reference "$REF" "${COMMON[@]}" "$SURL" "$B/out/ref-scale"
      python3 bench/same-mirror.py "$B/out/ref-scale" "$B/out/ours-scale" ||
        { log "the mirrors of the stream at scale differ"; exit 1; }
    fi
    rm -rf "$B/out"
  fi
done
stop_nginx
rm -rf "$B/out"

python3 bench/report.py "$RESULTS" "jobs=$JOBS, repeat=$REPEAT, page cache dropped before each run: $DROPPED, load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
