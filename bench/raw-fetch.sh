#!/usr/bin/env bash
# The raw limit: fetch every path of LIST from URL with curl, JOBS at a time,
# writing each to OUT/<path> and hashing it with openssl (SHA-NI capable).
# Usage: raw-fetch.sh URL OUT LIST JOBS
set -euo pipefail
url=$1 out=$2 list=$3 jobs=$4
xargs -P "$jobs" -I{} sh -c 'set -e; mkdir -p "$(dirname "$2/$3")"
  curl -sSf "$1/$3" | tee "$2/$3" | openssl dgst -sha256 >/dev/null' _ "$url" "$out" {} <"$list"
