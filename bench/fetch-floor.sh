#!/usr/bin/env bash
# The floor of the job: every path of LIST fetched from URL by one curl with
# JOBS parallel connections, each written to OUT/<path> (no hashing, no
# fsync: the least a mirror can do).
# Usage: fetch-floor.sh URL OUT LIST JOBS
set -euo pipefail
url=$1 out=$2 list=$3 jobs=$4
config=$(mktemp)
trap 'rm -f "$config"' EXIT
while read -r p; do
  printf 'url = "%s/%s"\noutput = "%s/%s"\n' "$url" "$p" "$out" "$p"
done <"$list" >"$config"
curl -sSf --parallel --parallel-max "$jobs" --create-dirs -K "$config"
