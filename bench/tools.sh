# Sourced by the bench scripts (after `cd` to the repository's root and
# `ROOT=$PWD`): installs what a bench needs and builds what it measures.
# `bench_tools [DEBIAN-PACKAGE:COMMAND]...` installs nginx, GNU time, curl
# and the extra packages whose command is missing (apt; sudo unless root),
# the reference (scripts/reference-venv.sh) and our release build with the
# stream generator (unless BENCH_NO_BUILD=1), then sets NGINX, REF, OURS and
# GEN. `measure` (below) times one tool.
bench_tools() {
  local need=() spec
  command -v nginx >/dev/null || need+=(nginx)
  [ -x /usr/bin/time ] || need+=(time)
  command -v curl >/dev/null || need+=(curl)
  for spec in "$@"; do
    command -v "${spec#*:}" >/dev/null || need+=("${spec%%:*}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=sudo
    [ "$(id -u)" -eq 0 ] && sudo=
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}"; } >&2
  fi
  NGINX=$(command -v nginx)
  bash scripts/reference-venv.sh >&2
  REF=$ROOT/target/reference-venv/bin/sstream-mirror
  [ "${BENCH_NO_BUILD:-0}" = 1 ] ||
    cargo build --release --bin sstream-mirror --example gen-stream -p sstream -p simplestreams >&2
  OURS=$ROOT/target/release/sstream-mirror
  GEN=$ROOT/target/release/examples/gen-stream
}

# measure SCENARIO TOOL CMD...: runs CMD (after the prefix RUN_IN, e.g. `ip
# netns exec NS`, when set) under /usr/bin/time -v, then `sync` (our engine
# fsyncs every file, the reference does not: the clock stops when the
# mirror is on disk for both; the sync part is recorded separately). With
# DROP=1 the page cache is dropped first (DROPPED=yes when it was).
# Appends to RESULTS: scenario, tool, tool seconds, sync seconds, peak RSS
# KiB, bytes served (nginx's access log in B/nginx), requests, CPU seconds.
measure() {
  local scenario=$1 tool=$2; shift 2
  sync
  if [ "${DROP:-0}" = 1 ] && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then DROPPED=yes; fi
  local before t0 t1 t2 tv=$B/time.txt
  before=$(wc -l <"$B/nginx/access.log")
  t0=$(date +%s.%N)
  if ! /usr/bin/time -v -o "$tv" ${RUN_IN[@]+"${RUN_IN[@]}"} "$@" >"$B/last.log" 2>&1; then
    log "$scenario/$tool failed:"; tail -5 "$B/last.log" >&2; exit 1
  fi
  t1=$(date +%s.%N)
  sync
  t2=$(date +%s.%N)
  local new=$B/new.log
  tail -n +"$((before + 1))" "$B/nginx/access.log" >"$new"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" \
    "$(awk "BEGIN {print $t1 - $t0}")" "$(awk "BEGIN {print $t2 - $t1}")" \
    "$(awk -F': ' '/Maximum resident/ {print $2}' "$tv")" \
    "$(awk '{s += $2} END {printf "%.0f", s}' "$new")" "$(wc -l <"$new")" \
    "$(awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {print u + s}' "$tv")" >>"$RESULTS"
  log "$(tail -1 "$RESULTS")"
}
