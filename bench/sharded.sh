#!/usr/bin/env bash
# Three nodes on a Redis Cluster (three masters) with the sharded adapter, side by side:
# ioscale x3 (--redis-mode sharded) vs Node's Socket.IO 4.8 x3 with createShardedAdapter,
# clients spread over the nodes, one sender's burst of io-wide broadcasts. Also prints how
# many SPUBLISHes each master took: io-wide traffic all lands on the main channel's shard.
# Usage: bench/sharded.sh [CLIENTS=3000] [MESSAGES=100] [INTERVAL_US=0] [MODE=dynamic]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-3000}
MESSAGES=${2:-100}
INTERVAL_US=${3:-0}
MODE=${4:-dynamic}
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin ioscale
(cd bench/node && [ -d node_modules ] || npm ci --silent --no-audit --no-fund)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

masters=() seeds=()
for i in 1 2 3; do
  port=$(free_port)
  # The cluster bus port would default to port + 10000, past 65535 for high free ports.
  redis-server --port "$port" --cluster-port "$(free_port)" --bind 127.0.0.1 --save '' --appendonly no --cluster-enabled yes \
    --cluster-config-file "$out/nodes-$port.conf" --dir "$out" >"$out/redis-$port.log" 2>&1 &
  masters+=("$port"); seeds+=("redis://127.0.0.1:$port")
done
for port in "${masters[@]}"; do
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${masters[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 100); do
  ok=0; for port in "${masters[@]}"; do redis-cli -p "$port" cluster info | grep -q cluster_state:ok && ok=$((ok + 1)); done
  [ "$ok" = 3 ] && break; sleep 0.1
done
seed_list=$(IFS=,; echo "${seeds[*]}")

spublish_counts() {
  for port in "${masters[@]}"; do
    calls=$(redis-cli -p "$port" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_spublish:calls=\([0-9]*\).*/\1/p')
    printf '%s:%s ' "$port" "${calls:-0}"
  done
}

run_cluster() { # name
  local name=$1 urls=() pids=()
  for port in "${masters[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done
  for i in 1 2 3; do
    local port; port=$(free_port)
    if [ "$name" = ioscale ]; then
      target/release/ioscale serve --port "$port" --server-id "$name-$i" --redis-url "$seed_list" \
        --redis-mode sharded --redis-subscription-mode "$MODE" --stats-interval 0 >"$out/$name-$i.log" 2>&1 &
    else
      node bench/node/server.mjs --port "$port" --server-id "$name-$i" --redis-url "$seed_list" \
        --redis-mode sharded --redis-subscription-mode "$MODE" >"$out/$name-$i.log" 2>&1 &
    fi
    pids+=($!); urls+=(--url "http://127.0.0.1:$port")
    for _ in $(seq 100); do grep -q "listening on" "$out/$name-$i.log" && break; sleep 0.1; done
  done
  echo "== $name x3 ($MODE): $CLIENTS clients, burst of $MESSAGES broadcasts" >&2
  local pid_args=(); for p in "${pids[@]}"; do pid_args+=(--pid "$p"); done
  target/release/ioscale bench "${urls[@]}" --clients "$CLIENTS" --senders 1 --messages "$MESSAGES" \
    --interval-us "$INTERVAL_US" --connect-rate 2000 --drain-timeout 90 "${pid_args[@]}" --json >"$out/$name.json" \
    || echo "   ioscale bench exited with $? (3: clients did not connect, 4: messages lost; see the verdict)" >&2
  echo "SPUBLISH calls per master (port:calls): $(spublish_counts)" >&2
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
}
run_cluster ioscale
run_cluster node
python3 bench/compare-clusters.py "$out/ioscale.json" "$out/node.json"
