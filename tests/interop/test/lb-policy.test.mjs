// The node-choice policies of `ioscale lb` for new sessions, in front of three `ioscale serve` nodes
// on Redis (sid stickiness): round-robin cycles through the nodes in order, random reaches every
// node, least-connection fills the emptiest node. The balancer only counts the sessions it routes
// itself (polling handshakes it forwarded, WebSocket tunnels it holds), so the least-connection
// test empties one node through the balancer (closing WebSocket sessions) instead of loading nodes
// directly. Clients connect one after the other here, so every choice sees the previous sessions.
import assert from "node:assert/strict";
import { test } from "node:test";
import { closeSocket, harness } from "./lib/harness.mjs";
import { broadcastExactlyOnce, openClient, spread, startLb, startNodes, waitUntil } from "./lib/lb-util.mjs";
import { startRedis } from "./lib/redis.mjs";

const MODES = ["polling", "websocket", "upgrade"];

test("ioscale lb node-choice policies", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const nodes = await startNodes(h, redis, admin, 3);
  const backends = nodes.map((n) => n.address);
  const ids = nodes.map((n) => n.serverId); // in --backend order

  await t.test("round-robin: consecutive sessions go to the nodes in --backend order, evenly", async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, backends, ["--policy", "round-robin"]);
    const clients = [];
    for (let i = 0; i < 12; i++) clients.push(await openClient(hc, lb.url, MODES[i % 3], {}, `${MODES[i % 3]} #${i}`));
    const order = clients.map((c) => c.serverId());
    st.diagnostic(`order: ${order.join(" ")}`);
    const start = ids.indexOf(order[0]);
    assert.deepEqual(order, order.map((_, i) => ids[(start + i) % 3]), "each session goes to the node after the previous one's");
    assert.deepEqual(spread(clients), Object.fromEntries(ids.map((id) => [id, 4])));
    await broadcastExactlyOnce(clients[0], clients);
  });

  await t.test("random: 60 sessions reach every node (each gets at least 5), not in a fixed cycle", async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, backends, ["--policy", "random"]);
    const clients = [];
    for (let i = 0; i < 60; i++) clients.push(await openClient(hc, lb.url, i % 4 === 0 ? "polling" : "websocket", {}, `#${i}`));
    const counts = spread(clients);
    const order = clients.map((c) => c.serverId());
    st.diagnostic(`sessions per node: ${JSON.stringify(counts)}`);
    // Binomial(60, 1/3): P(some node < 5) is about 3e-6.
    for (const id of ids) assert.ok((counts[id] ?? 0) >= 5, `${id} got ${counts[id] ?? 0}/60 sessions: ${JSON.stringify(counts)}`);
    const cyclic = order.every((id, i) => i < 3 || id === order[i - 3]);
    assert.ok(!cyclic, `random choices must not follow a fixed cycle: ${order.join(" ")}`);
  });

  await t.test("least-conn: a node emptied through the balancer gets the next sessions until it catches up", async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, backends, ["--policy", "least-conn"]);
    const first = [];
    for (let i = 0; i < 9; i++) first.push(await openClient(hc, lb.url, "websocket", {}, `ws #${i}`));
    assert.deepEqual(spread(first), Object.fromEntries(ids.map((id) => [id, 3])), "9 sessions: 3 per node");

    // Close the three WebSocket sessions of one node: the balancer sees their tunnels end.
    const emptied = nodes[1];
    const leaving = first.filter((c) => c.serverId() === emptied.serverId);
    for (const c of leaving) closeSocket(c.socket);
    await waitUntil(async () => (await lb.backend(emptied.address)).sessions === 0, {
      timeoutMs: 5000,
      label: `ioscale_lb_backend_sessions{backend="${emptied.address}"} == 0 after its clients left`,
    });

    // The next three sessions (one per transport mode) all go to the emptied node.
    const refill = [];
    for (const mode of MODES) refill.push(await openClient(hc, lb.url, mode, {}, `refill ${mode}`));
    assert.deepEqual(
      refill.map((c) => c.serverId()),
      [emptied.serverId, emptied.serverId, emptied.serverId],
      "least-connection picks the node with the fewest sessions",
    );
    // Now all nodes hold 3: the next three spread one per node.
    const more = [];
    for (const mode of MODES) more.push(await openClient(hc, lb.url, mode, {}, `more ${mode}`));
    assert.deepEqual(spread(more), Object.fromEntries(ids.map((id) => [id, 1])), "with equal counts, one session per node");

    const m = await lb.metrics();
    for (const n of nodes) assert.equal(m.value("ioscale_lb_backend_sessions", { backend: n.address }), 4, `balancer sessions of ${n.serverId}`);
    const stay = [...first.filter((c) => !leaving.includes(c)), ...refill, ...more];
    await broadcastExactlyOnce(refill[0], stay);
  });

  // A burst of new sessions while the nodes are slow to answer (here: paused with SIGSTOP until the
  // balancer has forwarded every handshake), e.g. the reconnection storm after a node failure:
  // least-connection must count the sessions it has already sent to a node, not only the ones whose
  // handshake has completed, or the whole burst goes where the counts were lowest before it.
  await t.test("least-conn: a burst of 30 handshakes in flight at once is spread over all nodes", async (st) => {
    const hc = harness(st);
    const lb = await startLb(hc, backends, ["--policy", "least-conn", "--health-interval", "0"]);
    const seed = await openClient(hc, lb.url, "websocket", {}, "seed"); // one node now holds 1 session
    const requestsBefore = await totalRequests(lb, nodes);
    const paused = [];
    st.after(() => paused.forEach((n) => n.running() && process.kill(n.pid, "SIGCONT")));
    for (const n of nodes) {
      process.kill(n.pid, "SIGSTOP");
      paused.push(n);
    }
    let burst;
    try {
      burst = Array.from({ length: 30 }, (_, i) => openClient(hc, lb.url, "websocket", {}, `burst #${i}`));
      burst.forEach((p) => p.catch(() => {}));
      await waitUntil(async () => (await totalRequests(lb, nodes)) - requestsBefore >= 30, {
        timeoutMs: 5000,
        intervalMs: 20,
        label: "the balancer forwarded all 30 handshakes",
      });
    } finally {
      for (const n of paused) process.kill(n.pid, "SIGCONT");
      paused.length = 0;
    }
    const clients = await Promise.all(burst);
    const counts = spread(clients);
    st.diagnostic(`seed on ${seed.serverId()}; burst sessions per node: ${JSON.stringify(counts)}`);
    for (const id of ids) {
      assert.ok((counts[id] ?? 0) >= 5, `${id} got ${counts[id] ?? 0}/30 of the burst (seed on ${seed.serverId()}): ${JSON.stringify(counts)}`);
      assert.ok((counts[id] ?? 0) + (id === seed.serverId() ? 1 : 0) <= 31 / 2, `${id} holds more than 50% of the sessions: ${JSON.stringify(counts)}`);
    }
    await broadcastExactlyOnce(seed, [seed, ...clients]);
  });
});

/** Sum of ioscale_lb_requests_total over the nodes. */
async function totalRequests(lb, nodes) {
  const m = await lb.metrics();
  return nodes.reduce((sum, n) => sum + m.value("ioscale_lb_requests_total", { backend: n.address }), 0);
}
