// A stalled Redis (DEBUG SLEEP; redis-server started with --enable-debug-command local) is noticed
// through a PING with a deadline: /ready says 503 "redis stalled", ioscale_redis_up 0 and
// ioscale_redis_ping_seconds shows the wait, and every message published during the stall reaches
// the other node once Redis resumes, without being counted lost or dropped.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next } from "./lib/harness.mjs";
import { get, scrape, serve, waitUntil } from "./lib/ops-util.mjs";
import { startRedis, waitForSubscribers } from "./lib/redis.mjs";

const STALL_S = 6;

test(`Redis stalled ${STALL_S} s: /ready 503 'redis stalled' and redis_up 0 meanwhile, ping_seconds shows it, every message delivered and none counted lost`, { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h, args: ["--enable-debug-command", "local"] });
  const nodes = [];
  for (const id of ["stall-a", "stall-b"]) {
    nodes.push(await serve(h, ["--server-id", id, "--redis-url", redis.url, "--stats-interval", "0"]));
  }
  const [A, B] = nodes;
  const admin = await redis.client();
  await waitForSubscribers(admin, 2);
  const sender = h.client(A.url, MODES.websocket);
  const receiver = h.client(B.url, MODES.websocket);
  await Promise.all([connected(sender), connected(receiver)]);
  const got = [];
  receiver.on("message", (m) => m.serverId === "stall-a" && got.push(Number(m.message)));
  assert.equal((await get(`${A.url}/ready`)).status, 200);

  // Traffic from A every 50 ms, before, during and after the stall.
  let sent = 0;
  const timer = setInterval(() => sender.emit("message", { message: String(++sent) }), 50);
  h.defer(() => clearInterval(timer));
  await next(receiver, "message", { filter: (m) => m.serverId === "stall-a", label: "traffic before the stall" });

  const sleeper = await redis.client();
  const stall = sleeper.sendCommand(["DEBUG", "SLEEP", String(STALL_S)]);
  const stalled = await Promise.all(
    nodes.map((n) =>
      waitUntil(
        async () => {
          const res = await get(`${n.url}/ready`);
          return res.status === 503 && res;
        },
        { timeoutMs: 5000, intervalMs: 100, label: `/ready 503 on ${n.port} during the stall` },
      ),
    ),
  );
  for (const res of stalled) assert.deepEqual(res.json, { ready: false, reason: "redis stalled" });
  const during = await scrape(A.url);
  assert.equal(during.value("ioscale_redis_up"), 0, "redis_up 0 while stalled");
  assert.ok(during.value("ioscale_redis_ping_seconds") >= 2, `ping waits: ${during.value("ioscale_redis_ping_seconds")}`);
  const sentDuringStall = sent;

  assert.equal(await stall, "OK");
  for (const n of nodes) {
    await waitUntil(async () => (await get(`${n.url}/ready`)).status === 200, { timeoutMs: 5000, label: `/ready 200 on ${n.port} after the stall` });
  }
  await next(receiver, "message", { filter: (m) => m.serverId === "stall-a" && Number(m.message) > sentDuringStall + 5, timeoutMs: 10000, label: "traffic after the stall" });
  clearInterval(timer);
  const last = sent;
  await waitUntil(() => got.length >= last, { timeoutMs: 10000, label: `all ${last} messages at B (got ${got.length})` });

  assert.deepEqual(got, Array.from({ length: last }, (_, i) => i + 1), "every message of A reached B once, in order");
  assert.ok(sentDuringStall > 20, `traffic went on during the stall (${sentDuringStall})`);
  assert.equal((await scrape(A.url)).value("ioscale_redis_up"), 1);
  for (const n of nodes) {
    const m = await scrape(n.url);
    for (const reason of ["lagged", "invalid", "subscriber_cut", "publish_unknown"]) {
      assert.equal(m.value("ioscale_cluster_messages_lost_total", { reason }), 0, `${reason} on ${n.port}`);
    }
    assert.equal(m.value("ioscale_dropped_packets_total", { reason: "redis_unavailable" }), 0);
    const lines = n.lines();
    assert.equal(lines.filter((l) => l.includes("Redis stalled")).length, 1, "one line when the stall starts");
    const answered = lines.filter((l) => l.includes("Redis answers again"));
    assert.equal(answered.length, 1, "one when it ends");
    const waited = Number(/stalled_ms=(\d+)/.exec(answered[0])?.[1]);
    t.diagnostic(answered[0]);
    assert.ok(waited >= 2000 && waited <= STALL_S * 1000 + 1000, `the stalled PING waited ${waited} ms`);
  }
});
