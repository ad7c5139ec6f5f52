"""Reports bench/run.sh's fetch-floor measurements (BENCH_FLOOR_ONLY=1):
ours (and ours-b, another build) against the floor, as medians of the
repeats, on two clocks:

- the tools' own clocks: the floor's curl stops with its writes still in
  the page cache, ours once every item is durable (fsynced);
- on disk: each tool's time plus the `sync` after it (the floor's data
  written too).

"disk" is the disk's own floor (bench/disk-floor.sh): the same bytes
written by `dd` in as many streams as the tools' connections, each made
durable (`conv=fdatasync`), which no durable mirror can beat on this disk;
the last column is each tool against it, on disk.

Columns of results.tsv as in bench/report.py.
"""

import statistics
import sys
from collections import defaultdict

TOOL, SYNC, RSS, BYTES, REQS, CPU = range(6)
rows = defaultdict(list)
scale = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        s, tool, *vals = line.rstrip("\n").split("\t")
        if s == "full":
            rows[tool].append([float(v) for v in vals])
        elif s == "scale-full":
            scale[tool].append([float(v) for v in vals])


def med(tool, f):
    return statistics.median(f(r) for r in rows[tool])


own = lambda r: r[TOOL]
disk = lambda r: r[TOOL] + r[SYNC]
floor_own, floor_disk = med("floor", own), med("floor", disk)
print(f"Settings: {sys.argv[2]}.\n")
disk_floor = med("disk", disk) if "disk" in rows else None
print("| tool | runs | own clock s | + sync s | on disk s | CPU s | "
      "x floor (own clocks) | x floor (on disk) | x disk floor |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for tool in ["floor", "disk", "ours", "ours-b", "ours-nofsync"]:
    if tool not in rows:
        continue
    t, d = med(tool, own), med(tool, disk)
    print(f"| {tool} | {len(rows[tool])} | {t:.2f} | {med(tool, lambda r: r[SYNC]):.2f} | "
          f"{d:.2f} | {med(tool, lambda r: r[CPU]):.2f} | {floor_own / t:.2f}x | "
          f"{floor_disk / d:.2f}x | "
          f"{f'{disk_floor / d:.2f}x' if disk_floor else '-'} |")
if scale:
    print("\nThe stream at scale (14,264 small files), unfiltered first mirror:\n")
    print("| build | runs | own clock s (median) | all runs |")
    print("| --- | --- | --- | --- |")
    for tool, runs in scale.items():
        times = [r[TOOL] for r in runs]
        print(f"| {tool} | {len(runs)} | {statistics.median(times):.2f} | "
              f"{', '.join(f'{t:.2f}' for t in times)} |")
