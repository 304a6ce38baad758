#!/usr/bin/env bash
# Overload on one node: offered load far past what one node can deliver, the same for every
# server. CLIENTS clients connect, then SENDERS of them each send a burst of MESSAGES
# broadcasts at once (SENDERS x MESSAGES x CLIENTS deliveries offered in a few ms).
# Servers: ioscale (default settings), ioscale with a small per-client queue bound
# (--max-buffered-bytes QUEUE_BYTES, so slow consumers are cut and their loss can be
# accounted for), Node's Socket.IO 4.8 and socketioxide (default settings).
#
# For each server: survived (process alive SETTLE s after the clients left), how long it
# took to exit on SIGTERM, peak RSS (/proc/PID/status sampled every 200 ms, and the
# kernel's VmHWM), deliveries expected/received/lost, clients disconnected; for ioscale its
# /metrics counters, for socketioxide the packets it could not queue (it prints them on
# SIGTERM), and the accounting of every delivery (see docs/benchmarks.md, "Overload").
#
# Every phase is bounded: the wait for a quiet machine (60 s), connect (CONNECT_TIMEOUT),
# drain (DRAIN s after the burst), the whole load generator (killed after CONNECT_TIMEOUT +
# DRAIN + 90 s), the settle wait (SETTLE s), the exit after SIGTERM (60 s, then SIGKILL),
# the RSS sampler (at most 5 samples a second for 15 minutes).
# Usage: bench/overload.sh [CLIENTS=2000] [SENDERS=10] [MESSAGES=1000] [DRAIN=60] [QUEUE_BYTES=131072]
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-2000}
SENDERS=${2:-10}
MESSAGES=${3:-1000}
DRAIN=${4:-60}
QUEUE_BYTES=${5:-131072}
CONNECT_TIMEOUT=60
SETTLE=5
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

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

# RSS (KiB) of a process every 200 ms while it lives, at most 4500 samples (15 min).
sample_rss() { # pid file
  local i=0 rss
  while [ "$i" -lt 4500 ] && kill -0 "$1" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) || break
    [ -n "$rss" ] && echo "$EPOCHREALTIME $rss" >>"$2"
    sleep 0.2
    i=$((i + 1))
  done
}

metrics() { # port file: ioscale's /metrics (bounded by curl's own timeout)
  curl -s --max-time 10 "http://127.0.0.1:$1/metrics" >"$2" 2>/dev/null || true
}

run_one() { # name, command...
  local name=$1; shift
  local port; port=$(free_port)
  "$@" --port "$port" >"$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -qs "listening on" "$out/$name.log" && break; sleep 0.1; done
  wait_quiet
  sample_rss "$pid" "$out/$name.rss" &
  local sampler=$!
  local busy_before; busy_before=$(busy_ticks)
  echo "== $name (pid $pid, port $port): $CLIENTS clients, $SENDERS senders x $MESSAGES messages in a burst" >&2
  echo "$EPOCHREALTIME" >"$out/$name.t0"
  timeout -k 5 $((CONNECT_TIMEOUT + DRAIN + 90)) target/release/ioscale bench \
    --url "http://127.0.0.1:$port" --clients "$CLIENTS" --senders "$SENDERS" \
    --messages "$MESSAGES" --interval-us 0 --connect-rate 2000 \
    --connect-timeout "$CONNECT_TIMEOUT" --drain-timeout "$DRAIN" --pid "$pid" --json \
    >"$out/$name.json" 2>"$out/$name.bench.err" || echo "   load generator exited with $?" >&2
  echo $(($(busy_ticks) - busy_before)) >"$out/$name.busy"
  echo "$EPOCHREALTIME" >"$out/$name.t1"
  sleep "$SETTLE"
  local alive=no hwm=""
  if kill -0 "$pid" 2>/dev/null; then
    alive=yes
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ $name == ioscale* ]] && metrics "$port" "$out/$name.metrics"
    # SIGTERM, then up to 60 s for the process to exit (a busy event loop runs its handler
    # late), then SIGKILL.
    kill "$pid" 2>/dev/null || true
    echo "$EPOCHREALTIME" >"$out/$name.tkill"
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null && echo "   $name did not exit within 60 s of SIGTERM: killed" >&2
    echo "$EPOCHREALTIME" >"$out/$name.texit"
  fi
  local status=0
  wait "$pid" 2>/dev/null || status=$?
  wait "$sampler" 2>/dev/null || true
  printf '{"alive": "%s", "exitStatus": %d, "vmHwmKib": "%s"}\n' "$alive" "$status" "$hwm" >"$out/$name.proc"
  [ "$alive" = yes ] || { echo "   $name died (status $status); last log lines:" >&2; tail -5 "$out/$name.log" >&2; }
}

run_one ioscale target/release/ioscale serve --stats-interval 0
run_one ioscale-small-queue target/release/ioscale serve --stats-interval 0 --max-buffered-bytes "$QUEUE_BYTES"
run_one node node bench/node/server.mjs
run_one socketioxide bench/socketioxide/target/release/socketioxide-reference

python3 - "$out" "$SENDERS" "$MESSAGES" "$QUEUE_BYTES" <<'PY'
import json, os, re, sys
out, senders, messages, queue_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names = ["ioscale", "ioscale-small-queue", "node", "socketioxide"]

def load(path, default=None):
    try:
        return json.load(open(path))
    except Exception:
        return default

def metric(text, name, label=None):
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r'^(\w+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)', line)
        if not m or m.group(1) != name:
            continue
        if label is None or (m.group(2) or "") == label:
            return int(float(m.group(3)))
    return None

res = {}
for n in names:
    r = load(f"{out}/{n}.json", {}) or {}
    p = load(f"{out}/{n}.proc", {}) or {}
    # (time since the load generator started, RSS KiB) samples
    t0 = float(open(f"{out}/{n}.t0").read()) if os.path.exists(f"{out}/{n}.t0") else 0.0
    rss = []
    if os.path.exists(f"{out}/{n}.rss"):
        for line in open(f"{out}/{n}.rss"):
            t, kib = line.split()
            rss.append((float(t) - t0, int(kib)))
    p["t1"] = float(open(f"{out}/{n}.t1").read()) - t0 if os.path.exists(f"{out}/{n}.t1") else None
    if os.path.exists(f"{out}/{n}.tkill") and os.path.exists(f"{out}/{n}.texit"):
        p["exitDelay"] = float(open(f"{out}/{n}.texit").read()) - float(open(f"{out}/{n}.tkill").read())
    if r:
        # CPU the rest of the machine used meanwhile (all busy time minus the server's and
        # the load generator's): a noise indicator on a shared machine.
        sv = r["servers"][0] if r.get("servers") else {}
        own = (sv.get("cpuSecondsConnecting") or 0) + (sv.get("cpuSecondsBroadcast") or 0) + r["benchCpuSeconds"]
        try:
            r["otherCpu"] = max(int(open(f"{out}/{n}.busy").read()) / 100 - own, 0.0)
        except Exception:
            r["otherCpu"] = None
    res[n] = (r, p, rss)

def row(label, get):
    cells = []
    for n in names:
        try:
            v = get(*res[n])
        except Exception:
            v = None
        cells.append("-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)))
    print(f"{label:38} " + " ".join(f"{c:>20}" for c in cells))

print(f"\noverload: {senders} senders x {messages} messages in a burst to every client; "
      f"ioscale-small-queue = --max-buffered-bytes {queue_bytes}")
print(f"{'':38} " + " ".join(f"{n:>20}" for n in names))
row("survived (alive after the run)", lambda r, p, s: p.get("alive"))
row("exit after SIGTERM took (s)", lambda r, p, s: p.get("exitDelay"))
row("peak RSS, sampled every 200 ms (MiB)", lambda r, p, s: max(k for _, k in s) / 1024 if s else None)
row("  reached at (s after the start)", lambda r, p, s: max(s, key=lambda x: x[1])[0] if s else None)
row("load generator done at (s)", lambda r, p, s: p.get("t1"))
row("VmHWM at the end (MiB)", lambda r, p, s: int(p["vmHwmKib"]) / 1024 if p.get("vmHwmKib") else None)
row("RSS when the drain ended (MiB)", lambda r, p, s: r["servers"][0]["rssKibAfter"] / 1024)
row("RSS at the end, clients gone (MiB)", lambda r, p, s: s[-1][1] / 1024 if s else None)
row("clients connected", lambda r, p, s: r["connected"])
row("connect failures", lambda r, p, s: r["connectFailed"])
row("messages sent by the senders", lambda r, p, s: r["sent"])
row("deliveries expected", lambda r, p, s: r["expected"])
row("deliveries received", lambda r, p, s: r["received"])
row("lost (not received by drain end)", lambda r, p, s: r["lost"])
row("reordered", lambda r, p, s: r["reordered"])
row("duplicates", lambda r, p, s: r["duplicates"])
row("clients disconnected by the server", lambda r, p, s: r["disconnected"])
row("burst + drain time (s)", lambda r, p, s: r["broadcastSeconds"])
row("deliveries/s", lambda r, p, s: r["deliveriesPerSecond"])
row("latency p50 (ms)", lambda r, p, s: r["latencyMicros"]["p50"] / 1000)
row("latency p99 (ms)", lambda r, p, s: r["latencyMicros"]["p99"] / 1000)
row("server CPU in burst + drain (s)", lambda r, p, s: r["servers"][0]["cpuSecondsBroadcast"])
row("load generator CPU (s)", lambda r, p, s: r["benchCpuSeconds"])
row("other processes' CPU meanwhile (s)", lambda r, p, s: r["otherCpu"])

per_client = senders * messages
for n in ("ioscale", "ioscale-small-queue"):
    r, p, _ = res[n]
    path = f"{out}/{n}.metrics"
    if not r or not os.path.exists(path):
        print(f"\n{n}: no metrics (server or load generator failed)")
        continue
    text = open(path).read()
    connected, received, expected = r["connected"], r["received"], r["expected"]
    sent_pk = metric(text, "ioscale_packets_sent_total")
    recv_pk = metric(text, "ioscale_packets_received_total")
    broadcasts = metric(text, "ioscale_broadcasts_total", 'scope="local"')
    slow = metric(text, "ioscale_dropped_packets_total", 'reason="slow_consumer"')
    volatile = metric(text, "ioscale_dropped_packets_total", 'reason="volatile"')
    terr = metric(text, "ioscale_disconnects_total", 'reason="transport error"')
    ptimeout = metric(text, "ioscale_disconnects_total", 'reason="ping timeout"')
    tclose = metric(text, "ioscale_disconnects_total", 'reason="transport close"')
    # Packets the clients sent that the server read: one CONNECT each, the messages it
    # relayed, and one pong per ping answered.
    pongs = recv_pk - connected - broadcasts
    # Packets the server wrote besides the messages: open, CONNECT answer and server-info per
    # client, and its pings (each answered ping is one pong; unanswered ones are not known).
    written = sent_pk - 3 * connected - pongs
    cut = (terr or 0) + (ptimeout or 0)
    print(f"\n{n}: /metrics after the run")
    print(f"  ioscale_broadcasts_total{{scope=local}}                 {broadcasts}  (messages relayed; sent by the senders: {r['sent']})")
    print(f"  ioscale_packets_sent_total                             {sent_pk}")
    print(f"  ioscale_packets_received_total                         {recv_pk}  (pongs among them: {pongs})")
    print(f"  ioscale_dropped_packets_total{{reason=slow_consumer}}    {slow}  (packets that overflowed a queue; each cuts its client)")
    print(f"  ioscale_dropped_packets_total{{reason=volatile}}         {volatile}")
    print(f"  ioscale_disconnects_total{{reason=transport error}}      {terr}  (slow consumers cut, with any real transport error)")
    print(f"  ioscale_disconnects_total{{reason=ping timeout}}         {ptimeout}")
    print(f"  ioscale_disconnects_total{{reason=transport close}}      {tclose}  (the clients closing at the end)")
    unread = (r["sent"] - broadcasts) * connected
    offered = broadcasts * connected
    not_written = offered - written
    in_transit = written - received
    print(f"  accounting of the {expected} deliveries expected ({r['sent']} messages sent x {connected} clients):")
    print(f"    received by the clients                              {received}")
    print(f"    messages the server never read (their sender was cut): {r['sent'] - broadcasts} x {connected} = {unread}")
    print(f"    relayed but not written (recipient cut before)       {not_written}  ({broadcasts} relayed x {connected} - {written} written)")
    print(f"    written but not received (in flight when cut)        {in_transit}  (message packets written = packets sent - 3 per client - {pongs} pings)")
    # The four terms add up to the expected count by construction; what the counters show is
    # where the missing deliveries went: each loss term must be explained by clients cut.
    checks = [
        in_transit >= 0,                              # the server wrote at least what arrived
        not_written <= cut * broadcasts,              # only cut clients missed relayed messages
        unread == 0 or cut > 0,                       # unread messages: their sender was cut
        r["lost"] == 0 or cut > 0,                    # no cut client, no loss
    ]
    print(f"    clients cut {cut} (the load generator saw {r['disconnected']} disconnected) -> "
          + ("every delivery accounted for: delivered, or lost to a client cut as a slow consumer"
             if all(checks) else f"NOT fully accounted for (checks {checks})"))

r, p, _ = res["socketioxide"]
log = open(f"{out}/socketioxide.log").read() if os.path.exists(f"{out}/socketioxide.log") else ""
m = re.search(r"channel_full=(\d+) closed=(\d+) other=(\d+)", log)
if r and m:
    full, closed, other = map(int, m.groups())
    print(f"\nsocketioxide: packets a broadcast could not queue (printed on SIGTERM)")
    print(f"  channel full (128-packet queue, packet not sent)        {full}")
    print(f"  socket closed                                          {closed}")
    print(f"  accounting: received {r['received']} + not queued {full + closed}"
          f" = {r['received'] + full + closed} of {r['expected']} expected"
          f" (difference {r['expected'] - r['received'] - full - closed}: undelivered when the drain ended)")
elif r:
    print("\nsocketioxide: no drop counts in its log (it did not exit on SIGTERM)")
PY
