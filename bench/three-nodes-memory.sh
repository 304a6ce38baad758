#!/usr/bin/env bash
# Idle connections over three nodes on one Redis: each node gets its own load generator
# (one process holds at most ~19,900 sockets here), all three connecting at once; prints
# each node's connections and marginal RSS per connection, for ioscale x3 then Node x3.
# Usage: bench/three-nodes-memory.sh [PER_NODE=19900] [SERVERS="ioscale node"]
set -euo pipefail
cd "$(dirname "$0")/.."
PER_NODE=${1:-19900}
read -ra SERVER_LIST <<<"${2:-ioscale node}"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin ioscale
(cd bench/node && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --bind 127.0.0.1 >"$out/redis.log" 2>&1 &
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis="redis://127.0.0.1:$redis_port"

printf '%-9s %5s %10s %12s %14s %16s\n' server node connected "rss before" "rss connected" "KiB/connection"
for name in "${SERVER_LIST[@]}"; do
  pids=() ports=() benches=()
  for i in 1 2 3; do
    port=$(free_port)
    if [ "$name" = ioscale ]; then
      target/release/ioscale serve --port "$port" --server-id "$name-$i" --redis-url "$redis" --stats-interval 0 >"$out/$name-$i.log" 2>&1 &
    else
      node bench/node/server.mjs --port "$port" --server-id "$name-$i" --redis-url "$redis" >"$out/$name-$i.log" 2>&1 &
    fi
    pids+=($!); ports+=("$port")
    for _ in $(seq 100); do grep -qs "listening on" "$out/$name-$i.log" && break; sleep 0.1; done
  done
  # The generators bind to 127.0.0.1..4 in turn: ~60k sockets need more than one address's
  # ~28k ephemeral ports.
  for i in 0 1 2; do
    target/release/ioscale bench --url "http://127.0.0.1:${ports[$i]}" --clients "$PER_NODE" --senders 1 \
      --messages 1 --connect-rate 2000 --connect-timeout 300 --hold 5 --local-addresses 4 \
      --pid "${pids[$i]}" --json >"$out/$name-$i.json" 2>"$out/$name-$i.bench.log" &
    benches+=($!)
  done
  wait "${benches[@]}" || true
  for i in 0 1 2; do
    python3 - "$out/$name-$i.json" "$name" "$((i + 1))" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(f"{sys.argv[2]:9} {sys.argv[3]:>5} {'failed':>10}")
    sys.exit(0)
s = r["servers"][0]
per = (s["rssKibConnected"] - s["rssKibBefore"]) / max(r["connected"], 1)
print(f"{sys.argv[2]:9} {sys.argv[3]:>5} {r['connected']:>10} {s['rssKibBefore']:>12} {s['rssKibConnected']:>14} {per:>16.2f}")
PY
  done
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
done
