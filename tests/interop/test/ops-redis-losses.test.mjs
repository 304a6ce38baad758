// Cluster messages a node loses are counted in ioscale_cluster_messages_lost_total{reason}, and each
// count is checked against what its clients really missed:
// - lagged: a burst from @socket.io/redis-emitter overflows the node's subscriber queue
//   (--redis-subscriber-queue-bytes, small here);
// - invalid: garbage published on the cluster channels (logged the first time, then at powers of two);
// - subscriber_cut: Redis closes the subscriber connection at its output-buffer limit
//   (CONFIG SET client-output-buffer-limit pubsub, a message over it); after 3 cuts in 60 s one node,
//   and only one, says /ready 503 "redis subscriber cut repeatedly".
import assert from "node:assert/strict";
import { test } from "node:test";
import { Emitter } from "@socket.io/redis-emitter";
import { MODES, connected, harness, next } from "./lib/harness.mjs";
import { get, scrape, serve, waitUntil } from "./lib/ops-util.mjs";
import { startRedis, waitForSubscribers } from "./lib/redis.mjs";

const LOST = "ioscale_cluster_messages_lost_total";
const lost = (metrics, reason) => metrics.value(LOST, { reason });

async function node(h, redis, id, extra = []) {
  return serve(h, ["--server-id", id, "--redis-url", redis.url, "--stats-interval", "0", ...extra]);
}

async function client(h, node) {
  const socket = h.client(node.url, MODES.websocket);
  await connected(socket);
  return socket;
}

test("a burst over the subscriber queue: every message a client misses is counted as lagged, the rest arrive once and in order", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const A = await node(h, redis, "burst", ["--redis-subscriber-queue-bytes", "16384"]);
  const admin = await redis.client();
  await waitForSubscribers(admin, 1);
  const socket = await client(h, A);
  const got = [];
  socket.on("burst", (n) => got.push(n));
  const before = await scrape(A.url);
  assert.equal(lost(before, "lagged"), 0);

  // 20,000 broadcasts written to Redis in one go (node-redis pipelines what is sent in one tick).
  const N = 20000;
  const emitter = new Emitter(await redis.client());
  for (let n = 0; n < N; n++) emitter.emit("burst", n, "x".repeat(100));

  // Every message is either delivered or counted lost.
  const after = await waitUntil(
    async () => {
      const m = await scrape(A.url);
      return got.length + lost(m, "lagged") === N && m;
    },
    { timeoutMs: 30000, label: "delivered + lagged = published" },
  );
  // Nothing else comes after: a marker closes the burst.
  const marker = next(socket, "marker", { timeoutMs: 10000 });
  emitter.emit("marker", 1);
  await marker;
  const lagged = lost(after, "lagged");
  t.diagnostic(`burst of ${N}: ${got.length} delivered, ${lagged} counted lagged`);
  assert.ok(lagged > 0, "the 16 KiB queue overflowed");
  assert.equal(got.length, N - lagged, "what the client missed is exactly what was counted");
  assert.ok(got.every((n, i) => i === 0 || n > got[i - 1]), "in order, each at most once");
  const final = await scrape(A.url);
  assert.equal(lost(final, "lagged"), lagged);
  assert.equal(lost(final, "invalid"), 0);
  assert.equal(lost(final, "subscriber_cut"), 0);
  // Losses are logged sparingly: the first, then at each power of two.
  const lines = A.lines().filter((l) => l.includes("Redis subscriber fell behind"));
  t.diagnostic(`${lines.length} log lines for ${lagged} lost messages`);
  assert.ok(lines.length >= 1 && lines.length <= Math.log2(lagged) + 2, `${lines.length} lines`);
});

test("garbage on the cluster channels is dropped and counted as invalid; the log says so at 1, 2, 4, ...", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const A = await node(h, redis, "garbage");
  const admin = await redis.client();
  await waitForSubscribers(admin, 1);
  const socket = await client(h, A);

  const garbage = [
    ["socket.io#/#", "not msgpack"],
    ["socket.io#/#", Buffer.from([0x93, 0xc1])],
    ["socket.io#/#room#", Buffer.from([0x92, 0x01])],
    ["socket.io-request#/#", "{not json"],
    ["socket.io-request#/#", Buffer.from([0xff])],
  ];
  for (const [channel, payload] of garbage) await admin.publish(channel, payload);
  // A valid broadcast after the garbage still arrives.
  const emitter = new Emitter(await redis.client());
  const marker = next(socket, "marker", { timeoutMs: 10000 });
  emitter.emit("marker", "after the garbage");
  assert.equal(await marker, "after the garbage");

  const m = await scrape(A.url);
  assert.equal(lost(m, "invalid"), garbage.length - 1, "every garbage message for a namespace or a room here (not the room nobody is in)");
  const lines = A.lines().filter((l) => l.includes("dropping invalid messages from Redis"));
  t.diagnostic(lines.join("\n"));
  assert.deepEqual(
    lines.map((l) => Number(/total=(\d+)/.exec(l)?.[1])),
    [1, 2, 4],
    "one line at totals 1, 2 and 4",
  );
  assert.ok(A.running());
});

test("Redis cutting the subscriber at its output-buffer limit: each cut counted, and one node of two leaves the rotation after 3 cuts", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const nodes = [await node(h, redis, "cut-a"), await node(h, redis, "cut-b")];
  const admin = await redis.client();
  await waitForSubscribers(admin, 2);
  const sockets = await Promise.all(nodes.map((n) => client(h, n)));
  const big = sockets.map(() => 0);
  sockets.forEach((s, i) => s.on("big", () => big[i]++));
  await admin.configSet("client-output-buffer-limit", "pubsub 65536 32768 60");
  const emitter = new Emitter(await redis.client());

  for (let cut = 1; cut <= 3; cut++) {
    // One message over the hard limit: Redis closes each node's subscriber connection.
    emitter.emit("big", "x".repeat(200_000));
    for (const n of nodes) {
      await waitUntil(async () => lost(await scrape(n.url), "subscriber_cut") === cut, {
        timeoutMs: 10000,
        label: `cut ${cut} counted on ${n.port}`,
      });
    }
    await waitForSubscribers(admin, 2);
  }
  assert.deepEqual(big, [0, 0], "no big message arrived");
  const ready = await Promise.all(nodes.map((n) => get(`${n.url}/ready`)));
  t.diagnostic(JSON.stringify(ready.map((r) => r.json)));
  const out = ready.filter((r) => r.status === 503);
  assert.equal(out.length, 1, "exactly one node is out of rotation");
  assert.deepEqual(out[0].json, { ready: false, reason: "redis subscriber cut repeatedly" });
  for (const n of nodes) {
    const m = await scrape(n.url);
    assert.equal(lost(m, "subscriber_cut"), 3, "each cut counted once, as the message it lost");
    assert.equal(m.value("ioscale_redis_up"), 1, "a cut is not an outage");
    assert.equal(n.lines().filter((l) => /Redis is (down|up)/.test(l)).length, 1, "no down/up lines for cuts (only the first 'up')");
  }
  // Small messages still flow to both nodes.
  const small = sockets.map((s) => next(s, "small", { timeoutMs: 10000 }));
  emitter.emit("small", "after the cuts");
  assert.deepEqual(await Promise.all(small), ["after the cuts", "after the cuts"]);
});
