#!/usr/bin/env bash
# How much one shard can relay: the main channel of a namespace (`socket.io#/#`) lives on one
# Redis master, which writes every message to every subscribed node. This measures that
# master alone: K subscriber connections (the nodes) on one sharded channel, redis-benchmark
# SPUBLISHing a 150-byte message (an io.emit's size) as fast as it can; Redis's own CPU per
# published message and per delivery come from INFO cpu.
# Usage: bench/shard-ceiling.sh [MESSAGES=500000] [SUBSCRIBERS="3 10 30"]
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-500000}
SUBSCRIBERS=${2:-"3 10 30"}
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$out/redis.log" 2>&1 &
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
payload=$(python3 -c 'print("x" * 150)')
cpu() { redis-cli -p "$port" info cpu | tr -d '\r' | awk -F: '/used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'; }
# A subscriber that reads and discards (a node that keeps up), counting bytes.
cat >"$out/sub.py" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
name = b"socket.io#/#"
s.sendall(b"*2\r\n$10\r\nSSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(name), name))
total = 0
while True:
    data = s.recv(1 << 20)
    if not data:
        break
    total += len(data)
PY
printf '%-12s %14s %18s %22s\n' subscribers "published/s" "deliveries/s" "Redis CPU µs/delivery"
for k in $SUBSCRIBERS; do
  subs=()
  for _ in $(seq "$k"); do python3 "$out/sub.py" "$port" & subs+=($!); done
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$port" pubsub shardnumsub 'socket.io#/#' | tail -1)" = "$k" ] && break; sleep 0.05
  done
  before=$(cpu)
  start=$(date +%s.%N)
  redis-benchmark -p "$port" -c 8 -P 32 -n "$MESSAGES" -q spublish 'socket.io#/#' "$payload" >/dev/null
  end=$(date +%s.%N)
  after=$(cpu)
  python3 - "$k" "$MESSAGES" "$start" "$end" "$before" "$after" <<'PY'
import sys
k, n = int(sys.argv[1]), int(sys.argv[2])
seconds = float(sys.argv[4]) - float(sys.argv[3])
cpu = float(sys.argv[6]) - float(sys.argv[5])
print(f"{k:<12} {n / seconds:14.0f} {n * k / seconds:18.0f} {cpu * 1e6 / (n * k):22.3f}")
PY
  kill "${subs[@]}"; wait "${subs[@]}" 2>/dev/null || true
done
