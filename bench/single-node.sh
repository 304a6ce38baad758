#!/usr/bin/env bash
# Side by side on one machine: ioscale vs Node's Socket.IO 4.8 (bench/node/server.mjs) vs
# socketioxide (bench/socketioxide), same application, same load, same run. Prints each
# server's result and the ratios ioscale/Node and ioscale/socketioxide.
# Usage: [IOSCALE_SERVER=path] bench/single-node.sh [CLIENTS=5000] [MESSAGES=200] [INTERVAL_US=0]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-5000}
MESSAGES=${2:-200}
INTERVAL_US=${3:-0}
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# IOSCALE_SERVER: another ioscale binary to measure (an A/B against an older build); the load
# generator is always target/release/ioscale.
SERVER=${IOSCALE_SERVER:-target/release/ioscale}

cargo build --release --quiet --bin ioscale
cargo build --release --quiet --manifest-path bench/socketioxide/Cargo.toml
(cd bench/node && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The machine may be shared: CPU ticks (1/100 s) busy on all cores, from /proc/stat.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
wait_quiet() { # up to 60 s for a machine less than 10% busy (over 2 s), then go anyway
  local a b cores; cores=$(nproc)
  for _ in $(seq 30); do
    a=$(busy_ticks); sleep 2; b=$(busy_ticks)
    [ $((b - a)) -lt $((20 * cores)) ] && return 0
  done
  echo "   the machine stayed busy for 60 s; measuring anyway" >&2
}

run_one() { # name, command...
  local name=$1; shift
  local port; port=$(free_port)
  "$@" --port "$port" >"$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -qs "listening on" "$out/$name.log" && break; sleep 0.1; done
  wait_quiet
  echo "== $name (pid $pid, port $port): $CLIENTS clients, burst of $MESSAGES broadcasts" >&2
  local busy_before; busy_before=$(busy_ticks)
  target/release/ioscale bench --url "http://127.0.0.1:$port" --clients "$CLIENTS" \
    --senders 1 --messages "$MESSAGES" --interval-us "$INTERVAL_US" --connect-rate 0 \
    --drain-timeout 60 --pid "$pid" --json >"$out/$name.json" \
    || echo "   ioscale bench exited with $? (3: clients did not connect, 4: messages lost; see the verdict)" >&2
  echo $(($(busy_ticks) - busy_before)) >"$out/$name.busy"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  cat "$out/$name.json"
}

run_one ioscale "$SERVER" serve --stats-interval 0 >/dev/null
run_one node node bench/node/server.mjs >/dev/null
run_one socketioxide bench/socketioxide/target/release/socketioxide-reference >/dev/null
# socketioxide prints on SIGTERM the packets it could not queue (its per-connection queue
# holds 128 packets by default; a packet for a full queue is not sent).
grep "dropped packets" "$out/socketioxide.log" >&2 || true
python3 - "$out/ioscale.json" "$out/node.json" "$out/socketioxide.json" <<'PY'
import json, sys
a, b, c = (json.load(open(p)) for p in sys.argv[1:4])
for r, p in zip((a, b, c), sys.argv[1:4]):
    # CPU the rest of the machine used during the run: all busy time minus the server's
    # and the load generator's (a noise indicator on a shared machine).
    s = r["servers"][0] if r["servers"] else {}
    own = (s.get("cpuSecondsConnecting") or 0) + (s.get("cpuSecondsBroadcast") or 0) + r["benchCpuSeconds"]
    r["otherCpu"] = max(int(open(p[:-5] + ".busy").read()) / 100 - own, 0.0)
def server(r, key):
    s = r["servers"][0] if r["servers"] else {}
    return s.get(key)
def per_conn_cpu(r):
    cpu = server(r, "cpuSecondsConnecting")
    return None if cpu is None else cpu * 1e6 / max(r["connected"], 1)
rows = [
    ("connected", lambda r: r["connected"]),
    ("connect rate (/s)", lambda r: r["connectRate"]),
    ("connect p99 (µs)", lambda r: r["connectMicros"]["p99"]),
    ("server CPU per connection (µs)", per_conn_cpu),
    ("RSS per connection (KiB)", lambda r: server(r, "rssKibPerConnection")),
    ("deliveries expected", lambda r: r["expected"]),
    ("received", lambda r: r["received"]),
    ("lost", lambda r: r["lost"]),
    ("reordered", lambda r: r["reordered"]),
    ("duplicates", lambda r: r["duplicates"]),
    ("clients disconnected", lambda r: r["disconnected"]),
    ("deliveries/s", lambda r: r["deliveriesPerSecond"]),
    # A server that loses deliveries makes the load generator wait the whole drain timeout;
    # in a burst every message leaves at once, so received / max latency is its real rate.
    ("deliveries/s to the last delivery", lambda r: r["received"] / max(r["latencyMicros"]["max"] / 1e6, 1e-9)),
    ("latency p50 (µs)", lambda r: r["latencyMicros"]["p50"]),
    ("latency p99 (µs)", lambda r: r["latencyMicros"]["p99"]),
    ("server CPU per delivery (µs)", lambda r: r["serverCpuMicrosPerDelivery"]),
    ("RSS after burst (KiB)", lambda r: server(r, "rssKibAfter")),
    ("bench CPU (s)", lambda r: r["benchCpuSeconds"]),
    ("other processes' CPU meanwhile (s)", lambda r: r["otherCpu"]),
]
def fmt(v):
    return f"{v:14.2f}" if isinstance(v, float) else f"{str(v):>14}"
def ratio(x, y):
    ok = isinstance(x, (int, float)) and isinstance(y, (int, float)) and y
    return f"{x / y:13.3f}" if ok else f"{'-':>13}"
print(f"{'metric':32} {'ioscale':>14} {'node':>14} {'socketioxide':>14} {'ioscale/node':>13} {'ioscale/sx':>13}")
for name, get in rows:
    x, y, z = get(a), get(b), get(c)
    if name.startswith("other processes"):  # a noise indicator, no ratio
        print(f"{name:32} {fmt(x)} {fmt(y)} {fmt(z)}")
        continue
    print(f"{name:32} {fmt(x)} {fmt(y)} {fmt(z)} {ratio(x, y)} {ratio(x, z)}")
PY
