#!/usr/bin/env bash
# Three nodes on one Redis, side by side: ioscale x3 vs Node's Socket.IO 4.8 x3 with
# @socket.io/redis-adapter, clients spread over the three nodes, one sender's burst.
# Usage: [IOSCALE_SERVER=path] bench/three-nodes.sh [CLIENTS=3000] [MESSAGES=100] [INTERVAL_US=0]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-3000}
MESSAGES=${2:-100}
INTERVAL_US=${3:-0}
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# IOSCALE_SERVER: another ioscale binary to measure (an A/B against an older build); the load
# generator is always target/release/ioscale.
SERVER=${IOSCALE_SERVER:-target/release/ioscale}
cargo build --release --quiet --bin ioscale
(cd bench/node && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --bind 127.0.0.1 >"$out/redis.log" 2>&1 &
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis="redis://127.0.0.1:$redis_port"

run_cluster() { # name
  local name=$1 urls=() pids=()
  for i in 1 2 3; do
    local port; port=$(free_port)
    if [ "$name" = ioscale ]; then
      "$SERVER" serve --port "$port" --server-id "$name-$i" --redis-url "$redis" --stats-interval 0 >"$out/$name-$i.log" 2>&1 &
    else
      node bench/node/server.mjs --port "$port" --server-id "$name-$i" --redis-url "$redis" >"$out/$name-$i.log" 2>&1 &
    fi
    pids+=($!); urls+=(--url "http://127.0.0.1:$port")
    for _ in $(seq 100); do grep -q "listening on" "$out/$name-$i.log" && break; sleep 0.1; done
  done
  echo "== $name x3: $CLIENTS clients, burst of $MESSAGES broadcasts" >&2
  local pid_args=(); for p in "${pids[@]}"; do pid_args+=(--pid "$p"); done
  target/release/ioscale bench "${urls[@]}" --clients "$CLIENTS" --senders 1 --messages "$MESSAGES" \
    --interval-us "$INTERVAL_US" --connect-rate 2000 --drain-timeout 90 "${pid_args[@]}" --json >"$out/$name.json" \
    || echo "   ioscale bench exited with $? (3: clients did not connect, 4: messages lost; see the verdict)" >&2
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
}
run_cluster ioscale
run_cluster node
python3 bench/compare-clusters.py "$out/ioscale.json" "$out/node.json"
