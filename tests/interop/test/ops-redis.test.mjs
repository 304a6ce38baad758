// Readiness follows Redis: `ioscale serve --redis-url` answers /ready 503 "redis unavailable" while
// redis-server is stopped and 200 again once it is back on the same port; ioscale_redis_up follows,
// ioscale_redis_reconnects_total counts the reconnection, and broadcasts that could not be published
// meanwhile are counted as dropped (local delivery goes on). The logs say each change of state once,
// with the address and a readable error, and a clean shutdown logs no warning.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next } from "./lib/harness.mjs";
import { deltas, get, scrape, serve, waitUntil } from "./lib/ops-util.mjs";
import { startRedis, waitForSubscribers } from "./lib/redis.mjs";

test("/ready and redis metrics follow a Redis outage: 503 'redis unavailable', redis_up 0, then 200, redis_up 1, reconnects +1", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const node = await serve(h, ["--server-id", "ops-redis", "--redis-url", redis.url, "--stats-interval", "0", "--ping-interval", "600000", "--ping-timeout", "600000"]);
  const admin = await redis.client();
  await waitForSubscribers(admin, 1);
  await admin.disconnect();

  const ready0 = await get(`${node.url}/ready`);
  assert.equal(ready0.status, 200);
  assert.deepEqual(ready0.json, { ready: true });
  const m0 = await scrape(node.url);
  assert.equal(m0.value("ioscale_redis_up"), 1);
  assert.equal(m0.value("ioscale_redis_reconnects_total"), 0);

  const client = h.client(node.url, MODES.websocket);
  await connected(client);

  // Outage.
  await redis.stop();
  const down = await waitUntil(
    async () => {
      const res = await get(`${node.url}/ready`);
      return res.status !== 200 && res;
    },
    { timeoutMs: 10000, label: "/ready not 200 after redis-server stopped" },
  );
  assert.equal(down.status, 503);
  assert.match(down.headers["content-type"], /^application\/json/);
  assert.deepEqual(down.json, { ready: false, reason: "redis unavailable" });
  const m1 = await scrape(node.url);
  assert.equal(m1.value("ioscale_redis_up"), 0);
  // /health is liveness: still 200.
  assert.equal((await get(`${node.url}/health`)).status, 200);

  // A broadcast meanwhile reaches the local client; its cluster publication is dropped and counted.
  const echo = next(client, "message");
  client.emit("message", { message: "during the outage" });
  assert.equal((await echo).message, "during the outage");
  const m2 = await scrape(node.url);
  const outage = deltas(m1, m2);
  t.diagnostic(`broadcast during the outage: ${JSON.stringify(outage)}`);
  assert.equal(outage['ioscale_dropped_packets_total{reason="redis_unavailable"}'], 1);
  assert.equal(outage['ioscale_broadcasts_total{scope="cluster"}'], 1);

  // Back on the same port.
  await redis.start();
  const up = await waitUntil(
    async () => {
      const res = await get(`${node.url}/ready`);
      return res.status === 200 && res;
    },
    { timeoutMs: 20000, label: "/ready 200 after redis-server restarted" },
  );
  assert.deepEqual(up.json, { ready: true });
  const m3 = await scrape(node.url);
  assert.equal(m3.value("ioscale_redis_up"), 1);
  t.diagnostic(`ioscale_redis_reconnects_total: ${m0.value("ioscale_redis_reconnects_total")} → ${m3.value("ioscale_redis_reconnects_total")}`);
  assert.equal(m3.value("ioscale_redis_reconnects_total"), m0.value("ioscale_redis_reconnects_total") + 1);
  assert.ok(node.running(), "the node survived the outage");
  assert.ok(client.connected, "the local client stayed connected");
});

test("Redis outage and clean shutdown in the logs: one line per change of state, with Redis's address and a readable error; nothing alarming on SIGTERM", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const node = await serve(h, ["--server-id", "ops-redis-logs", "--redis-url", redis.url, "--stats-interval", "0"]);
  const admin = await redis.client();
  await waitForSubscribers(admin, 1);
  await admin.disconnect();
  const address = `redis=redis://127.0.0.1:${redis.port}`;
  await node.waitForLine((l) => l.includes("Redis is up"), { label: "Redis is up at start" });
  const from = node.lines().length;

  await redis.stop();
  const down = await node.waitForLine((l) => l.includes("Redis is down"), { from, label: "Redis is down" });
  // The outage lasts long enough for the client to retry several times (every 100-500 ms).
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await redis.start();
  const up = await node.waitForLine((l) => l.includes("Redis is up"), { from: down.index, timeoutMs: 20000, label: "Redis is up again" });
  const outage = node.lines().slice(from, up.index + 1);
  t.diagnostic(outage.join("\n"));
  assert.match(down.line, /WARN/);
  assert.ok(down.line.includes(address), `address in ${down.line}`);
  assert.match(down.line, /error="?[^"]*(Connection refused|Connection closed|Connection reset)/i, "a readable error");
  assert.ok(up.line.includes(address), `address in ${up.line}`);
  assert.deepEqual(
    outage.filter((l) => /WARN|ERROR/.test(l)),
    [down.line],
    "the outage's only warning is the change of state",
  );
  assert.ok(!outage.some((l) => /Error \{|Os \{|Some\(/.test(l)), "no Debug text");

  // A deliberate stop: no warning.
  const stopFrom = node.lines().length;
  node.signal("SIGTERM");
  const exit = await node.exited;
  assert.equal(exit.code, 0);
  const stopping = node.lines().slice(stopFrom);
  t.diagnostic(stopping.join("\n"));
  assert.deepEqual(stopping.filter((l) => /WARN|ERROR/.test(l)), [], "no warning on a clean shutdown");
});
