// /stats across a three-node cluster on one real Redis: every node reports all three servers and
// their connection counts (clients spread 3/2/1); after one node shuts down gracefully (leaving
// Redis), the others report two.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next } from "./lib/harness.mjs";
import { exitWithin, get, serve, waitUntil } from "./lib/ops-util.mjs";
import { startRedis, waitForSubscribers } from "./lib/redis.mjs";

const byId = (servers) => [...servers].sort((a, b) => a.serverId.localeCompare(b.serverId));

test("/stats: three nodes on one Redis, clients 3/2/1 → serversOnline 3, totalConnections 6, per-server counts, from every node", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const ids = ["ops-stats-a", "ops-stats-b", "ops-stats-c"];
  const nodes = await Promise.all(
    ids.map((id) => serve(h, ["--server-id", id, "--redis-url", redis.url, "--stats-interval", "0", "--redis-requests-timeout", "3000"])),
  );
  const admin = await redis.client();
  await waitForSubscribers(admin, 3);

  const spread = [3, 2, 1];
  const sockets = [];
  for (const [i, count] of spread.entries()) {
    for (let k = 0; k < count; k++) {
      const s = h.client(nodes[i].url, k % 2 ? MODES.polling : MODES.websocket);
      const info = next(s, "server-info");
      await connected(s);
      assert.equal((await info).serverId, ids[i]);
      sockets.push(s);
    }
  }

  const expected = ids.map((serverId, i) => ({ serverId, connections: spread[i] }));
  for (const [i, node] of nodes.entries()) {
    const res = await get(`${node.url}/stats`);
    assert.equal(res.status, 200);
    assert.deepEqual(Object.keys(res.json).sort(), ["complete", "serverId", "servers", "serversOnline", "totalConnections"]);
    assert.equal(res.json.serverId, ids[i]);
    assert.equal(res.json.serversOnline, 3, `serversOnline from ${ids[i]}: ${res.body}`);
    assert.equal(res.json.totalConnections, 6);
    assert.equal(res.json.complete, true);
    assert.deepEqual(res.json.servers[0], { serverId: ids[i], connections: spread[i] }, "the answering node comes first");
    assert.deepEqual(byId(res.json.servers), expected);
  }
  // The cluster request is counted on the node that asked.
  const metrics = (await get(`${nodes[0].url}/metrics`)).body;
  assert.match(metrics, /^ioscale_adapter_requests_total [1-9]\d*$/m);
  assert.match(metrics, /^ioscale_adapter_timeouts_total 0$/m);

  // Node c shuts down gracefully (SIGTERM): it leaves Redis, its client goes.
  const sigterm = Date.now();
  nodes[2].signal("SIGTERM");
  const exit = await exitWithin(nodes[2], 15000, sigterm);
  assert.equal(exit.code, 0);
  // Only a and b still subscribe: node c unsubscribed (or closed its connections) on the way out.
  await waitUntil(async () => Number((await admin.pubSubNumSub("socket.io-request#/#"))["socket.io-request#/#"]) === 2, {
    label: "2 subscribers after node c left",
  });
  for (const [i, node] of nodes.slice(0, 2).entries()) {
    const res = await get(`${node.url}/stats`);
    assert.equal(res.status, 200);
    assert.equal(res.json.serversOnline, 2, `serversOnline from ${ids[i]} after c left: ${res.body}`);
    assert.equal(res.json.totalConnections, 5);
    assert.equal(res.json.complete, true);
    assert.deepEqual(byId(res.json.servers), expected.slice(0, 2));
  }
});
