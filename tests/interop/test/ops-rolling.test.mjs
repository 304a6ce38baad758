// Rolling a node behind `ioscale lb`: SIGTERM on one node is a graceful shutdown. The node exits
// 0 in time; its clients see "transport close" (never "io server disconnect"), reconnect on their
// own through the balancer to another node, and nothing they send after reconnecting is lost.
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { broadcastExactlyOnce, cancellable, openClient, spread, startLb, startNodes } from "./lib/lb-util.mjs";
import { startRedis } from "./lib/redis.mjs";

const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 400, randomizationFactor: 0.2 };
const MODES = ["polling", "upgrade", "websocket"];

test("rolling restart: SIGTERM on a node behind ioscale lb moves its clients without loss", { timeout: 45000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const nodes = await startNodes(h, redis, admin, 2, { args: ["--shutdown-timeout", "5"] });
  const lb = await startLb(h, nodes.map((n) => n.address), ["--health-interval", "200"]);

  const clients = [];
  for (let i = 0; i < 12; i++) clients.push(await openClient(h, lb.url, MODES[i % 3], RECONNECT, `${MODES[i % 3]} #${i}`));
  const before = spread(clients);
  const [victim, survivor] = nodes;
  const movers = clients.filter((c) => c.serverId() === victim.serverId);
  assert.ok(movers.length >= 3, `the rolled node has clients: ${JSON.stringify(before)}`);

  const moved = movers.map((c) =>
    cancellable(c.socket, "server-info", { filter: (info) => info.serverId === survivor.serverId, timeoutMs: 15000, label: `${c.label} back on ${survivor.serverId}` }),
  );
  const started = Date.now();
  const exit = await victim.kill("SIGTERM");
  const settled = await Promise.allSettled(moved.map((m) => m.promise));
  assert.ok(Date.now() - started < 10000, "the rolled node exits well within its shutdown timeout");
  const stranded = movers.filter((_, i) => settled[i].status === "rejected");
  assert.deepEqual(stranded.map((c) => c.describe()), [], "every client of the rolled node reconnects to the other node");
  for (const c of movers) {
    assert.ok(!c.disconnects.includes("io server disconnect"), `no 'io server disconnect' (it stops reconnection): ${c.describe()}`);
    assert.ok(c.disconnects.length >= 1 && c.disconnects.every((r) => r === "transport close"), `disconnect reason is transport close: ${c.describe()}`);
  }
  assert.deepEqual(exit, { code: 0, signal: null }, "graceful shutdown exits 0");

  // Everything sent after reconnecting reaches everyone, exactly once, from both kinds of clients.
  for (const sender of [movers[0], movers.at(-1), clients.find((c) => !movers.includes(c))]) {
    await broadcastExactlyOnce(sender, clients, { tag: "after-roll" });
  }
});
