#!/usr/bin/env bash
# Where the heap of idle WebSocket connections goes: runs examples/heap_census.rs (the connect
# path of `ioscale serve` under a counting allocator), connects N idle clients with
# `ioscale bench`, and prints the live heap blocks per connection by size class, the heap
# bytes and the RSS per connection.
# Usage: bench/heap-census.sh [N]   (default 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --workspace --bin ioscale --bin heap_census
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/heap_census --port "$port" 2>"$out/census.log" &
pid=$!
for _ in $(seq 100); do grep -qs "listening on" "$out/census.log" && break; sleep 0.1; done
sleep 0.5
kill -USR1 "$pid"   # baseline
hold=$((n / 2000 + 8))
target/release/ioscale bench --url "http://127.0.0.1:$port" --clients "$n" --senders 1 \
  --messages 1 --connect-rate 4000 --connect-timeout 180 --hold "$hold" --pid "$pid" \
  >"$out/bench.log" 2>&1 &
bench=$!
# Signal once every client is connected and idle (the bench holds them for $hold s).
for _ in $(seq 600); do grep -qs "holding idle" "$out/bench.log" && break; sleep 0.2; done
sleep 3
kill -USR1 "$pid"
sleep 0.5
wait "$bench" || true
sed -n '/^connections/,$p' "$out/census.log" | sed -n '1,40p'
