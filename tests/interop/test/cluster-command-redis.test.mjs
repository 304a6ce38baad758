// `ioscale cluster` refuses to serve without Redis: it waits up to --redis-wait seconds for Redis to
// answer, then exits non-zero with a message naming the URL and the option (no worker started, no
// port served); a Redis that comes up during the wait lets it start.
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { freePort, openClient } from "./lib/lb-util.mjs";
import { exitWithin } from "./lib/ops-util.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";
import { clusterPort, redisOnPort, spawnCluster, workerStarts } from "./lib/cluster-command.mjs";

test("an unreachable Redis: a clear message and a non-zero exit within --redis-wait, nothing served", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const port = await freePort(); // nothing listens there
  const url = `redis://127.0.0.1:${port}`;
  const since = Date.now();
  const cluster = spawnCluster(h, ["--host", "127.0.0.1", "--port", "0", "--redis-url", url, "--redis-wait", "2"]);
  const { code, signal, ms } = await exitWithin(cluster, 6000, since);
  t.diagnostic(`exited with ${code} after ${ms} ms`);
  assert.equal(signal, null);
  assert.notEqual(code, 0, cluster.output());
  assert.ok(ms >= 1900 && ms < 3500, `it waited the 2 s of --redis-wait, no more (${ms} ms)`);
  assert.match(cluster.stderr(), new RegExp(`Redis at ${url} did not answer within 2 s \\(--redis-wait\\)`), cluster.stderr());
  assert.match(cluster.stderr(), /not starting/);
  assert.deepEqual(workerStarts(cluster.output()), [], "no worker was started");
  assert.ok(!clusterPort(cluster.output()), "the balancer never served");
});

test("a Redis started during the wait: the cluster starts and serves", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const cluster = spawnCluster(h, ["--host", "127.0.0.1", "--port", "0", "--redis-url", url, "--redis-wait", "20", "--workers", "2"]);
  await cluster.waitFor((out) => /Redis does not answer: waiting up to 20 s/.test(out), { label: "the waiting line" });
  assert.deepEqual(workerStarts(cluster.output()), [], "no worker starts before Redis answers");
  await redisOnPort(h, port);
  const started = Date.now();
  const publicPort = await cluster.waitFor(clusterPort, { label: "the cluster's listening line", timeoutMs: 15000 });
  t.diagnostic(`listening ${Date.now() - started} ms after Redis answered`);
  assert.match(cluster.output(), /Redis is up/);
  const client = await openClient(h, `http://127.0.0.1:${publicPort}`, "websocket");
  assert.match(client.serverId(), /^worker-[01]$/);
});

test("--redis-mode sharded: the cluster checks the Redis Cluster, then serves across workers", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedisCluster({ h, replicasPerMaster: 0 });
  const cluster = spawnCluster(h, ["--host", "127.0.0.1", "--port", "0", "--redis-mode", "sharded", "--redis-url", redis.seed, "--workers", "2"]);
  const port = await cluster.waitFor(clusterPort, { label: "the cluster's listening line", timeoutMs: 20000 });
  assert.match(cluster.output(), /Redis is up/);
  const url = `http://127.0.0.1:${port}`;
  const a = await openClient(h, url, "websocket", {}, "a");
  const b = await openClient(h, url, "websocket", {}, "b");
  assert.notEqual(a.serverId(), b.serverId(), "least-conn puts the two clients on both workers");
  const got = new Promise((resolve) => b.socket.on("message", (m) => m.message === "across" && resolve(m)));
  await redis.waitForShardNumSub("socket.io#/#", 2);
  a.socket.emit("message", { message: "across" });
  assert.equal((await got).serverId, a.serverId(), "a message crosses the workers through the Redis Cluster");
});
