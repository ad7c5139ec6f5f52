"""Turns bench/wan.sh's results.tsv into a markdown report on stdout.

Usage: wan-report.py RESULTS TC_RATE NGINX_RATE CAP TC_RATE3 NGINX_RATE3 SETTINGS

The long haul (scenarios link3, daily3) has its own bottleneck (TC_RATE3)
and per-connection rate (NGINX_RATE3). Rows of the tool "before" (another
build, WAN_BEFORE) are shown beside ours.

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


results, tc, conn, cap, tc3, conn3, settings = sys.argv[1:8]
bottleneck, per_connection, cap = tc_rate(tc), binary_rate(conn), binary_rate(cap)
bottleneck3, per_connection3 = tc_rate(tc3), binary_rate(conn3)
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


def link_line(scenario, neck, per_conn, n):
    """The bottleneck, one connection's cap, and what curl got through."""
    print(f"Bottleneck {mb(neck):.1f} MB/s; one connection is capped at "
          f"{mb(per_conn):.1f} MB/s ({per_conn / neck:.2f}x the bottleneck).")
    if (scenario, "curl") in rows:
        r = rows[scenario, "curl"]
        print(f"Goodput through the bottleneck (curl, {n} parallel ranges of one file, "
              f"to /dev/null): {mb(r[BYTES] / secs(scenario, 'curl')):.1f} MB/s "
              f"({r[BYTES] / secs(scenario, 'curl') / neck:.2f}x).\n")


before = any(tool == "before" for _, tool in rows)
checks = []


def table(scenarios, neck):
    """One row per scenario: ours (and before) against the reference."""
    extra = " before s | before / bottleneck |" if before else ""
    print("| scenario | useful MB | ours s | ours MB/s | ours / bottleneck |" + extra +
          " reference s | reference MB/s | reference / bottleneck | reference / ours (time) | "
          "link MB ours / ref | requests ours / ref | peak RSS ours / ref |")
    print("|---" * (12 + (2 if before else 0)) + "|")
    for s, title, target in scenarios:
        if (s, "ours") not in rows or (s, "reference") not in rows:
            continue
        o, r = rows[s, "ours"], rows[s, "reference"]
        useful = r[BYTES]
        to, tr = secs(s, "ours"), secs(s, "reference")
        cells = ""
        if before:
            tb = secs(s, "before")
            cells = (" - | - |" if tb is None else
                     f" {tb:.2f} | {useful / tb / neck:.2f}x |")
        print(f"| {title} | {mb(useful):.0f} | {to:.2f} | {mb(useful / to):.1f} | "
              f"**{useful / to / neck:.2f}x** |{cells} {tr:.2f} | {mb(useful / tr):.1f} | "
              f"{useful / tr / neck:.2f}x | {tr / to:.1f}x | {mb(o[BYTES]):.0f} / {mb(r[BYTES]):.0f} | "
              f"{o[REQS]:.0f} / {r[REQS]:.0f} | {o[RSS] / 1024:.0f} / {r[RSS] / 1024:.0f} MiB |")
        if target:
            share = useful / to / neck
            checks.append((target, f"{share:.2f}x", share >= 0.85))
    print()


link_line("link", bottleneck, per_connection, 8)
table([("daily", "daily update (`--max=1 release=noble`: one new version)",
        "daily update: >= 0.85x the bottleneck's rate"),
       ("full", "first full sync (unfiltered)", None)], bottleneck)

if ("capped", "ours") in rows and ("daily", "reference") in rows:
    useful = rows["daily", "reference"][BYTES]
    for tool in ["ours", "before"]:
        if ("capped", tool) not in rows:
            continue
        t = secs("capped", tool)
        got = useful / t
        print(f"`--limit-rate` {sys.argv[4]} ({mb(cap):.2f} MB/s) on the daily update, {tool}: "
              f"{t:.2f} s, {mb(got):.2f} MB/s = {got / cap:.3f}x the cap "
              f"({mb(rows['capped', tool][BYTES]):.0f} MB on the link, "
              f"{rows['capped', tool][REQS]:.0f} requests).\n")
        if tool == "ours":
            checks.append(("`--limit-rate`: within 10% of the cap", f"{got / cap:.3f}x",
                           abs(got / cap - 1) <= 0.10))

if ("daily3", "ours") in rows:
    print(f"The long haul ({tc3}, `limit_rate {conn3}` per connection), default options:\n")
    link_line("link3", bottleneck3, per_connection3, 16)
    table([("daily3", "day-1 update of one boot product (`--max=1 release=noble "
            "subarch=ga-24.04`: squashfs, initrd, kernel, manifest)",
            "long haul: >= 0.85x the bottleneck's rate")], bottleneck3)

print("| target | measured | met |")
print("|---|---|---|")
for name, value, ok in checks:
    print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
