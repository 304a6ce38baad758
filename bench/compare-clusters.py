#!/usr/bin/env python3
"""Side-by-side table of two `ioscale bench --json` results of three-node runs, with ratios.
Usage: bench/compare-clusters.py IOSCALE.json NODE.json"""
import json
import sys

a, b = (json.load(open(p)) for p in sys.argv[1:3])


def cpu(r):
    return sum(s["cpuSecondsBroadcast"] or 0 for s in r["servers"])


def rss(r):
    return sum(s["rssKibAfter"] or 0 for s in r["servers"])


rows = [
    ("per server", a["perServer"], b["perServer"]),
    ("deliveries expected", a["expected"], b["expected"]),
    ("lost", a["lost"], b["lost"]),
    ("reordered", a["reordered"], b["reordered"]),
    ("deliveries/s", a["deliveriesPerSecond"], b["deliveriesPerSecond"]),
    ("latency p50 (µs)", a["latencyMicros"]["p50"], b["latencyMicros"]["p50"]),
    ("latency p99 (µs)", a["latencyMicros"]["p99"], b["latencyMicros"]["p99"]),
    ("servers' CPU in the burst (s)", cpu(a), cpu(b)),
    ("servers' CPU per delivery (µs)", cpu(a) * 1e6 / max(a["received"], 1), cpu(b) * 1e6 / max(b["received"], 1)),
    ("servers' RSS after (KiB)", rss(a), rss(b)),
    ("bench CPU (s)", a["benchCpuSeconds"], b["benchCpuSeconds"]),
]
print(f"{'metric':32} {'ioscale x3':>22} {'node x3':>22} {'ratio':>8}")
for name, x, y in rows:
    numbers = isinstance(x, (int, float)) and isinstance(y, (int, float)) and y
    ratio = f"{x / y:8.3f}" if numbers else "       -"
    fx = f"{x:22.2f}" if isinstance(x, float) else f"{str(x):>22}"
    fy = f"{y:22.2f}" if isinstance(y, float) else f"{str(y):>22}"
    print(f"{name:32} {fx} {fy} {ratio}")
