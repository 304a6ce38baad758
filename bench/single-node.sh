#!/usr/bin/env bash
# Side by side on one machine: ioscale vs Node's Socket.IO 4.8 (bench/node/server.mjs),
# same application, same load, same run. Prints each server's result and the ratios.
# Usage: bench/single-node.sh [CLIENTS=5000] [MESSAGES=200] [INTERVAL_US=0]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-5000}
MESSAGES=${2:-200}
INTERVAL_US=${3:-0}
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet --bin ioscale
(cd bench/node && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_one() { # name, command...
  local name=$1; shift
  local port; port=$(free_port)
  "$@" --port "$port" >"$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$out/$name.log" && break; sleep 0.1; done
  echo "== $name (pid $pid, port $port): $CLIENTS clients, burst of $MESSAGES broadcasts" >&2
  target/release/ioscale bench --url "http://127.0.0.1:$port" --clients "$CLIENTS" \
    --senders 1 --messages "$MESSAGES" --interval-us "$INTERVAL_US" --connect-rate 0 \
    --drain-timeout 60 --pid "$pid" --json >"$out/$name.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  cat "$out/$name.json"
}

run_one ioscale target/release/ioscale serve --stats-interval 0 >/dev/null
run_one node node bench/node/server.mjs >/dev/null
python3 - "$out/ioscale.json" "$out/node.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def server(r, key):
    s = r["servers"][0] if r["servers"] else {}
    return s.get(key)
rows = [
    ("connected", a["connected"], b["connected"], False),
    ("connect rate (/s)", a["connectRate"], b["connectRate"], True),
    ("connect p99 (µs)", a["connectMicros"]["p99"], b["connectMicros"]["p99"], False),
    ("server CPU per connection (µs)", server(a, "cpuSecondsConnecting") * 1e6 / max(a["connected"], 1), server(b, "cpuSecondsConnecting") * 1e6 / max(b["connected"], 1), False),
    ("RSS per connection (KiB)", server(a, "rssKibPerConnection"), server(b, "rssKibPerConnection"), False),
    ("deliveries expected", a["expected"], b["expected"], True),
    ("lost", a["lost"], b["lost"], False),
    ("reordered", a["reordered"], b["reordered"], False),
    ("deliveries/s", a["deliveriesPerSecond"], b["deliveriesPerSecond"], True),
    ("latency p50 (µs)", a["latencyMicros"]["p50"], b["latencyMicros"]["p50"], False),
    ("latency p99 (µs)", a["latencyMicros"]["p99"], b["latencyMicros"]["p99"], False),
    ("server CPU per delivery (µs)", a["serverCpuMicrosPerDelivery"], b["serverCpuMicrosPerDelivery"], False),
    ("RSS after burst (KiB)", server(a, "rssKibAfter"), server(b, "rssKibAfter"), False),
    ("bench CPU (s)", a["benchCpuSeconds"], b["benchCpuSeconds"], False),
]
print(f"{'metric':34} {'ioscale':>14} {'node':>14} {'ioscale/node':>13}")
for name, x, y, _ in rows:
    ratio = (x / y) if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y else float("nan")
    fmt = lambda v: f"{v:14.2f}" if isinstance(v, float) else f"{str(v):>14}"
    print(f"{name:34} {fmt(x)} {fmt(y)} {ratio:13.3f}")
PY
