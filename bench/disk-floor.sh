#!/usr/bin/env bash
# The disk's floor of a durable mirror: BYTES written under OUT by JOBS
# streams at once (dd, 8 MiB blocks), each made durable (fdatasync) before
# it ends. No mirror that makes its items durable can beat it on this disk.
# Usage: disk-floor.sh OUT BYTES JOBS
set -euo pipefail
out=$1 bytes=$2 jobs=$3
mkdir -p "$out"
share=$(((bytes + jobs - 1) / jobs))
for i in $(seq "$jobs"); do
  dd if=/dev/zero of="$out/$i" bs=8M count="$share" iflag=count_bytes conv=fdatasync status=none &
done
wait
