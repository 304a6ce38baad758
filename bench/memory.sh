#!/usr/bin/env bash
# Idle memory per WebSocket connection: marginal RSS of one server process holding N idle
# clients, for ioscale, Node's Socket.IO and socketioxide, at each N given (default 5000
# 10000 19900), then the ratios ioscale/Node and ioscale/socketioxide.
# Usage: bench/memory.sh [N ...]; SERVERS="ioscale" bench/memory.sh 5000 19900 runs only those;
# HOLD=15 samples the RSS after the clients were idle 15 s (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=("${@:-5000 10000 19900}")
[ $# -gt 0 ] || COUNTS=(5000 10000 19900)
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
read -ra SERVER_LIST <<<"${SERVERS:-ioscale node socketioxide}"
wants() { [[ " ${SERVER_LIST[*]} " == *" $1 "* ]]; }
cargo build --release --quiet --bin ioscale
if wants socketioxide; then cargo build --release --quiet --manifest-path bench/socketioxide/Cargo.toml; fi
if wants node; then (cd bench/node && [ -d node_modules ] || npm ci --silent --no-audit --no-fund); fi
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

printf '%-13s %8s %10s %12s %14s %16s\n' server clients connected "rss before" "rss connected" "KiB/connection"
for n in "${COUNTS[@]}"; do
  for name in "${SERVER_LIST[@]}"; do
    port=$(free_port)
    case $name in
      ioscale) target/release/ioscale serve --port "$port" --stats-interval 0 >"$out/$name.log" 2>&1 & ;;
      node) node bench/node/server.mjs --port "$port" >"$out/$name.log" 2>&1 & ;;
      socketioxide) bench/socketioxide/target/release/socketioxide-reference --port "$port" >"$out/$name.log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 100); do grep -qs "listening on" "$out/$name.log" && break; sleep 0.1; done
    target/release/ioscale bench --url "http://127.0.0.1:$port" --clients "$n" --senders 1 \
      --messages 1 --connect-rate 4000 --connect-timeout 180 --hold "${HOLD:-2}" --pid "$pid" --json \
      >"$out/r.json" 2>/dev/null || true
    python3 - "$out/r.json" "$name" "$n" "$out/per.tsv" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    print(f"{sys.argv[2]:13} {sys.argv[3]:>8} {'failed':>10}")
    sys.exit(0)
s = r["servers"][0]
per = (s["rssKibConnected"] - s["rssKibBefore"]) / max(r["connected"], 1)
print(f"{sys.argv[2]:13} {sys.argv[3]:>8} {r['connected']:>10} {s['rssKibBefore']:>12} {s['rssKibConnected']:>14} {per:>16.2f}")
with open(sys.argv[4], "a") as f:
    f.write(f"{sys.argv[3]}\t{sys.argv[2]}\t{per}\n")
PY
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  done
done
[ -s "$out/per.tsv" ] && python3 - "$out/per.tsv" <<'PY'
import sys
per = {}
for line in open(sys.argv[1]):
    n, name, kib = line.split("\t")
    per.setdefault(n, {})[name] = float(kib)
print(f"\n{'clients':>8} {'ioscale/node':>13} {'ioscale/sx':>11}")
for n, v in per.items():
    r = lambda other: f"{v['ioscale'] / v[other]:.3f}" if v.get("ioscale") and v.get(other) else "-"
    print(f"{n:>8} {r('node'):>13} {r('socketioxide'):>11}")
PY
