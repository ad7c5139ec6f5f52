"""Turns bench/wan.sh's results.tsv into a markdown report on stdout.

Usage: wan-report.py RESULTS TC_RATE NGINX_RATE CAP SETTINGS

Columns of results.tsv: scenario, tool, tool seconds, final sync seconds,
peak RSS KiB, bytes served by nginx, HTTP requests, CPU seconds.

Useful bytes of a scenario are what the reference fetched (every file once,
whole); ours may put a little more on the link (the bytes in flight when a
range is cut short to hand its second half to another connection). Rates
are useful bytes over the time until the mirror is on disk.
"""

import re
import sys

TOOL, SYNC, RSS, BYTES, REQS, CPU = range(6)


def tc_rate(text):
    """Bytes per second of a tc rate (`400mbit`, `50mbps`)."""
    m = re.fullmatch(r"([0-9.]+)([kmg]?)(bit|bps)", text.strip().lower())
    if not m:
        sys.exit(f"wan-report: cannot read the tc rate {text!r}")
    n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
    return n / 8 if m.group(3) == "bit" else n


def binary_rate(text):
    """Bytes per second of an nginx (`12m`) or sstream (`20M`) rate."""
    m = re.fullmatch(r"([0-9.]+)\s*([kmg]?)", text.strip().lower())
    if not m:
        sys.exit(f"wan-report: cannot read the rate {text!r}")
    return float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


results, tc, conn, cap, settings = sys.argv[1:6]
bottleneck, per_connection, cap = tc_rate(tc), binary_rate(conn), binary_rate(cap)
rows = {}
with open(results) as f:
    for line in f:
        s, tool, *vals = line.rstrip("\n").split("\t")
        rows[s, tool] = [float(v) for v in vals]


def secs(s, tool):
    r = rows.get((s, tool))
    return None if r is None else r[TOOL] + r[SYNC]


def mb(n):
    return n / 1e6


print(f"Settings: {settings}.\n")
print(f"Bottleneck {mb(bottleneck):.1f} MB/s; one connection is capped at "
      f"{mb(per_connection):.1f} MB/s ({per_connection / bottleneck:.2f}x the bottleneck).")
if ("link", "curl") in rows:
    r = rows["link", "curl"]
    print(f"Goodput through the bottleneck (curl, 8 parallel ranges of one file, to /dev/null): "
          f"{mb(r[BYTES] / secs('link', 'curl')):.1f} MB/s.\n")

print("| scenario | useful MB | ours s | ours MB/s | ours / bottleneck | reference s | "
      "reference MB/s | reference / bottleneck | reference / ours (time) | link MB ours / ref | "
      "requests ours / ref | peak RSS ours / ref |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
checks = []
for s, title in [("daily", "daily update (`--max=1 release=noble`: one new version)"),
                 ("full", "first full sync (unfiltered)")]:
    if (s, "ours") not in rows or (s, "reference") not in rows:
        continue
    o, r = rows[s, "ours"], rows[s, "reference"]
    useful = r[BYTES]
    to, tr = secs(s, "ours"), secs(s, "reference")
    print(f"| {title} | {mb(useful):.0f} | {to:.2f} | {mb(useful / to):.1f} | "
          f"{useful / to / bottleneck:.2f}x | {tr:.2f} | {mb(useful / tr):.1f} | "
          f"{useful / tr / bottleneck:.2f}x | {tr / to:.1f}x | {mb(o[BYTES]):.0f} / {mb(r[BYTES]):.0f} | "
          f"{o[REQS]:.0f} / {r[REQS]:.0f} | {o[RSS] / 1024:.0f} / {r[RSS] / 1024:.0f} MiB |")
    if s == "daily":
        share = useful / to / bottleneck
        checks.append(("daily update: >= 0.85x the bottleneck's rate", f"{share:.2f}x", share >= 0.85))

if ("capped", "ours") in rows and ("daily", "reference") in rows:
    useful = rows["daily", "reference"][BYTES]
    t = secs("capped", "ours")
    got = useful / t
    print(f"\n`--limit-rate` {sys.argv[4]} ({mb(cap):.2f} MB/s) on the daily update: {t:.2f} s, "
          f"{mb(got):.2f} MB/s = {got / cap:.3f}x the cap "
          f"({mb(rows['capped', 'ours'][BYTES]):.0f} MB on the link, "
          f"{rows['capped', 'ours'][REQS]:.0f} requests).\n")
    checks.append(("`--limit-rate`: within 10% of the cap", f"{got / cap:.3f}x", abs(got / cap - 1) <= 0.10))

print("| target | measured | met |")
print("|---|---|---|")
for name, value, ok in checks:
    print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
