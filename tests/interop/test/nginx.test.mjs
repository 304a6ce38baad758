// Real nginx with the shipped deploy/nginx.conf (ip_hash upstream, WebSocket upgrade headers) in
// front of three `ioscale serve` nodes on one Redis. nginx's ip_hash uses the first three octets
// of an IPv4 address, so clients connect from different 127.X.0.1 loopback addresses to reach
// different nodes; polling, upgrading and WebSocket clients from one address share a node, and
// broadcasts cross the nodes through Redis.
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { agentFrom, broadcastExactlyOnce, openClient, spread, startNodes } from "./lib/lb-util.mjs";
import { startNginx } from "./lib/lb-nginx.mjs";
import { startRedis } from "./lib/redis.mjs";

const MODES = ["polling", "upgrade", "websocket"];
const ADDRESSES = 9;

test("nginx with deploy/nginx.conf in front of three nodes: polling, upgrade and WebSocket clients get broadcasts across nodes", { timeout: 40000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const nodes = await startNodes(h, redis, admin, 3);
  const nginx = await startNginx(h, nodes.map((n) => n.address));

  const clients = [];
  for (let a = 0; a < ADDRESSES; a++) {
    const localAddress = `127.${a + 1}.0.1`;
    for (const mode of MODES) {
      clients.push(Object.assign(await openClient(h, nginx.url, mode, { agent: agentFrom(h, localAddress) }, `${mode} from ${localAddress}`), { localAddress }));
    }
  }
  for (const c of clients) assert.equal(c.transport(), c.label.startsWith("polling") ? "polling" : "websocket", c.describe());

  // ip_hash: every client of one address is on the same node, whatever its transport.
  for (let a = 0; a < ADDRESSES; a++) {
    const group = clients.slice(a * MODES.length, (a + 1) * MODES.length);
    assert.equal(new Set(group.map((c) => c.serverId())).size, 1, `one node per client address: ${group.map((c) => c.describe()).join("; ")}`);
  }
  const counts = spread(clients);
  t.diagnostic(`sessions per node: ${JSON.stringify(counts)}`);
  assert.ok(Object.keys(counts).length >= 2, `the client addresses must reach at least two nodes for a cross-node test: ${JSON.stringify(counts)}`);

  // A broadcast from each transport reaches every client exactly once, on every node.
  await broadcastExactlyOnce(clients.find((c) => c.label.startsWith("polling")), clients, { tag: "nginx-polling" });
  await broadcastExactlyOnce(clients.find((c) => c.label.startsWith("upgrade") && c.serverId() !== clients[0].serverId()) ?? clients[1], clients, { tag: "nginx-upgrade" });
  await broadcastExactlyOnce(clients.at(-1), clients, { tag: "nginx-websocket" });
  for (const c of clients) {
    assert.equal(c.connects, 1, c.describe());
    assert.deepEqual(c.disconnects, [], `no session lost behind nginx: ${c.describe()}`);
  }

  // Stop nginx (its workers with it): it exits, the clients lose their connections.
  const workers = nginx.workers();
  assert.ok(workers.length >= 1, "nginx runs worker processes");
  const lost = clients.map((c) => new Promise((resolve) => (c.socket.connected ? c.socket.once("disconnect", resolve) : resolve())));
  const { code, signal } = await nginx.stop();
  assert.equal(signal, null, nginx.output());
  assert.equal(code, 0, nginx.output());
  for (const pid of workers) {
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    assert.ok(!alive, `nginx worker ${pid} stopped with its master`);
  }
  await Promise.race([Promise.all(lost), new Promise((_, reject) => setTimeout(() => reject(new Error("clients still connected 5 s after nginx stopped")), 5000).unref())]);
});
