"""Turns bench/run.sh's results.tsv into a markdown report on stdout.

Columns of results.tsv: scenario, tool, tool seconds, final sync seconds,
peak RSS KiB, bytes served by nginx, HTTP requests, CPU seconds (user +
system). With BENCH_REPEAT > 1 there are several lines per (scenario, tool):
the median of each column is reported.

Times are "on disk": the tool's wall time plus the `sync` after it (our
engine fsyncs each file itself, the reference leaves that to the kernel).
The no-op target compares the tools' own times (nothing is written).
"""

import statistics
import sys
from collections import defaultdict

SCENARIOS = [
    ("full", "full mirror (unfiltered, first sync)"),
    ("filtered", "filtered first sync (amd64, trusty|xenial, --max=1)"),
    ("noop", "no-op sync (nothing changed)"),
    ("incremental", "incremental sync (one new version per product)"),
    ("wan", "full mirror from a WAN-like server (per-connection rate limit)"),
]
TOOL, SYNC, RSS, BYTES, REQS, CPU = range(6)

rows = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        s, tool, *vals = line.rstrip("\n").split("\t")
        rows[s, tool].append([float(v) for v in vals])


def med(s, tool, col):
    vals = [r[col] for r in rows.get((s, tool), [])]
    return statistics.median(vals) if vals else None


def total(s, tool):
    """Tool time plus sync time (median over runs of the sum)."""
    vals = [r[TOOL] + r[SYNC] for r in rows.get((s, tool), [])]
    return statistics.median(vals) if vals else None


def secs(s, tool):
    t, sync = total(s, tool), med(s, tool, SYNC)
    return "-" if t is None else f"{t:.2f} ({sync:.2f})"


def num(v, fmt):
    return "-" if v is None else format(v, fmt)


print(f"Settings: {sys.argv[2]}.\n")
print("Times in seconds until the mirror is on disk, with the final `sync` part in "
      "parentheses; MB/s = bytes served by nginx / time.\n")
print("| scenario | served | ours s (sync) | reference s (sync) | reference/ours | ours MB/s | "
      "CPU s ours / ref | requests ours / ref | peak RSS ours / ref |")
print("|---|---|---|---|---|---|---|---|---|")
for s, title in SCENARIOS:
    if (s, "ours") not in rows:
        continue
    o, r = total(s, "ours"), total(s, "reference")
    nbytes = med(s, "ours", BYTES)
    print(f"| {title} | {nbytes / 1e6:.0f} MB | {secs(s, 'ours')} | {secs(s, 'reference')} | "
          f"{r / o:.1f}x | {nbytes / o / 1e6:.0f} | "
          f"{num(med(s, 'ours', CPU), '.2f')} / {num(med(s, 'reference', CPU), '.2f')} | "
          f"{med(s, 'ours', REQS):.0f} / {med(s, 'reference', REQS):.0f} | "
          f"{med(s, 'ours', RSS) / 1024:.0f} / {med(s, 'reference', RSS) / 1024:.0f} MiB |")

raw, ours_full, ref_full = total("full", "raw"), total("full", "ours"), total("full", "reference")
raw_bytes = med("full", "raw", BYTES)
print(f"\nRaw limit (`curl | tee file | openssl dgst -sha256`, same files, same concurrency): "
      f"{secs('full', 'raw')} s, {raw_bytes / raw / 1e6:.0f} MB/s, "
      f"CPU {med('full', 'raw', CPU):.2f} s.")
floor = total("full", "floor")
if floor is not None:
    print(f"Fetch floor (one `curl --parallel --parallel-max N` writing every file, no hashing, "
          f"no fsync): {secs('full', 'floor')} s, {med('full', 'floor', BYTES) / floor / 1e6:.0f} MB/s, "
          f"CPU {med('full', 'floor', CPU):.2f} s; ours is {floor / ours_full:.2f}x its throughput.")
    floor_own = med("full", "floor", TOOL)
    nofsync = med("full", "ours-nofsync", TOOL)
    print(f"On the tools' own clocks (curl's writes still in the page cache, ours on disk): "
          f"ours is {floor_own / med('full', 'ours', TOOL):.2f}x the floor"
          + ("" if nofsync is None else
             f"; ours with fsync made a no-op (eatmydata, a diagnostic): {nofsync:.2f} s, "
             f"{floor_own / nofsync:.2f}x the floor, CPU {med('full', 'ours-nofsync', CPU):.2f} s")
          + ".")
print()

SCALE = [
    ("scale-dry", "dry run (plan only)"),
    ("scale-full", "unfiltered first mirror"),
    ("scale-noop", "no-op (nothing changed)"),
    ("scale-max1", "`--max=1` first mirror"),
]
if any((s, "ours") in rows for s, _ in SCALE):
    print("Stream at scale (19,014 items, 14,264 files, 5 MB products file):\n")
    print("| scenario | ours s (sync) | peak RSS ours | CPU s ours | reference s | peak RSS reference |")
    print("|---|---|---|---|---|---|")
    for s, title in SCALE:
        if (s, "ours") not in rows:
            continue
        ref = (f"{secs(s, 'reference')} | {med(s, 'reference', RSS) / 1024:.0f} MiB"
               if (s, "reference") in rows else "- | -")
        print(f"| {title} | {secs(s, 'ours')} | {med(s, 'ours', RSS) / 1024:.0f} MiB | "
              f"{med(s, 'ours', CPU):.2f} | {ref} |")
    print()

peak = max(r[RSS] for (s, tool), rs in rows.items()
           if tool == "ours" and not s.startswith("scale") for r in rs)
noop = med("noop", "reference", TOOL) / med("noop", "ours", TOOL)
checks = [
    ("full mirror: >= 4x the reference's throughput", f"{ref_full / ours_full:.2f}x",
     ref_full / ours_full >= 4),
    ("full mirror: >= 0.75x the raw limit's throughput", f"{raw / ours_full:.2f}x",
     raw / ours_full >= 0.75),
    ("no-op sync: >= 20x faster than the reference (tool time)", f"{noop:.1f}x", noop >= 20),
    ("our peak RSS <= 64 MiB (all scenarios but the stream at scale)", f"{peak / 1024:.0f} MiB",
     peak <= 64 * 1024),
]
if floor is not None:
    checks.append(("full mirror: >= 0.85x the fetch floor's throughput",
                   f"{floor / ours_full:.2f}x", floor / ours_full >= 0.85))
if ("scale-full", "ours") in rows:
    scale_rss = med("scale-full", "ours", RSS)
    checks.append(("stream at scale, unfiltered: peak RSS < 96 MiB",
                   f"{scale_rss / 1024:.0f} MiB", scale_rss < 96 * 1024))
if ("wan", "ours") in rows:
    wan = total("wan", "reference") / total("wan", "ours")
    checks.insert(1, ("(extra) full mirror from the WAN-like server: >= 4x the reference",
                      f"{wan:.2f}x", wan >= 4))
print("| target | measured | met |")
print("|---|---|---|")
for name, value, ok in checks:
    print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
