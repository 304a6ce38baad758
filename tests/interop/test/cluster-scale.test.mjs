// The scaling scenario: 100 clients spread over three `ioscale serve` nodes on one Redis; one message
// reaches all 100 exactly once, and GET /stats on a node sees the whole cluster.
//
// INTEROP_CLUSTER_PEER=node runs it against the Node reference peer (--app mode).
import assert from "node:assert/strict";
import { test } from "node:test";
import { connected, harness, next } from "./lib/harness.mjs";
import { PEER, startApp } from "./lib/node-cluster-server.mjs";
import { sniff, startRedis, waitForSubscribers } from "./lib/redis.mjs";

const CLIENTS = 100;

test("100 clients over three nodes: one message reaches all 100 exactly once; GET /stats sees 3 servers and 100 connections", { timeout: 40000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const nodes = await Promise.all(["A", "B", "C"].map(async (name) => Object.assign(await startApp(PEER, redis.url, h, name), { name })));
  const admin = await redis.client();
  await waitForSubscribers(admin, 3);
  const wire = await sniff(redis);

  try {
    const clients = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, i) => {
        const node = nodes[i % 3];
        const socket = h.client(node.url, { transports: ["websocket"] });
        const info = next(socket, "server-info", { timeoutMs: 10000, label: `server-info at client ${i}` });
        info.catch(() => {}); // awaited after the connection; a failed connect is reported instead
        await connected(socket);
        assert.equal((await info).serverId, node.name);
        const got = [];
        socket.on("message", (m) => got.push(m));
        return { i, node, socket, got };
      }),
    );

    const sender = clients[7]; // on node B
    const markers = clients.map((c) => next(c.socket, "message", { filter: (m) => m.message === "marker", timeoutMs: 10000, label: `marker at client ${c.i}` }));
    sender.socket.emit("message", { message: "hello everyone" });
    sender.socket.emit("message", { message: "marker" }); // same sender, same node: arrives after it
    await Promise.all(markers);
    const counts = clients.map((c) => c.got.filter((m) => m.message === "hello everyone").length);
    const wrong = clients.filter((c, k) => counts[k] !== 1).map((c) => `client ${c.i} on ${c.node.name}: ${counts[c.i]}`);
    assert.deepEqual(wrong, [], "every client got the message exactly once");
    for (const c of clients) {
      const m = c.got.find((x) => x.message === "hello everyone");
      assert.equal(m.serverId, "B");
      assert.equal(m.socketId, sender.socket.id);
    }

    const res = await fetch(`${nodes[0].url}/stats`, { signal: AbortSignal.timeout(10000) });
    assert.equal(res.status, 200);
    const stats = await res.json();
    assert.equal(stats.serverId, "A");
    assert.equal(stats.serversOnline, 3, JSON.stringify(stats));
    assert.equal(stats.totalConnections, CLIENTS, JSON.stringify(stats));
    assert.equal(stats.complete, true, JSON.stringify(stats));
    assert.deepEqual(
      [...stats.servers].sort((p, q) => (p.serverId < q.serverId ? -1 : 1)),
      [
        { serverId: "A", connections: 34 },
        { serverId: "B", connections: 33 },
        { serverId: "C", connections: 33 },
      ],
    );
  } catch (error) {
    t.diagnostic(`Redis traffic (last messages):\n${wire.dump(30)}`);
    for (const n of nodes) t.diagnostic(`node ${n.name} (${n.kind}) output:\n${n.output().slice(-3000)}`);
    throw error;
  }
});
