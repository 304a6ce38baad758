// The balancer's own connections to its nodes must not look like slowloris clients. A node closes
// a connection that sends no request within its --header-read-timeout, and counts one that never
// carried a request as a refusal; the balancer's pool opens such spare connections when requests
// race (a connection started for a request that then got an idle one is kept for later). So the
// pool closes idle connections itself, after --pool-idle-timeout: the nodes count no
// `header_read_timeout` refusal and log no "limit reached" line after clients passed through.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { delay, openClient, spread, startLb, startNode, waitUntil } from "./lib/lb-util.mjs";
import { parseMetrics, request } from "./lib/ops-util.mjs";

const HEADER_READ_TIMEOUT = 3000;
// Under half the nodes' header timeout: the pool evicts at intervals of this length.
const POOL_IDLE_TIMEOUT = 500;

/** Established TCP connections (IPv4) whose remote end is one of `ports`: the balancer's side of its connections to the nodes. */
function connectionsTo(ports) {
  const hex = new Set(ports.map((p) => p.toString(16).toUpperCase().padStart(4, "0")));
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length > 3 && f[3] === "01" && hex.has(f[2].split(":")[1])).length;
}

test("ioscale lb: pooled connections to the nodes close before the nodes' header timeout (no false slowloris refusals)", { timeout: 40000 }, async (t) => {
  const h = harness(t);
  const args = ["--header-read-timeout", String(HEADER_READ_TIMEOUT)];
  const nodes = [await startNode(h, { serverId: "node-a", args }), await startNode(h, { serverId: "node-b", args })];
  const lb = await startLb(h, nodes.map((n) => n.address), ["--pool-idle-timeout", String(POOL_IDLE_TIMEOUT)]);

  // Polling clients whose polls hold a pooled connection each. When they all send at once, every
  // POST needs a connection the pool starts opening, and the broadcast it triggers frees the polls'
  // connections: a POST that gets one of those leaves its new connection in the pool, unused.
  const clients = await Promise.all(Array.from({ length: 24 }, (_, i) => openClient(h, lb.url, "polling", {}, `polling #${i}`)));
  clients.push(...(await Promise.all(["upgrade", "websocket"].map((mode) => openClient(h, lb.url, mode, {}, mode)))));
  t.diagnostic(`sessions per node: ${JSON.stringify(spread(clients))}`);
  for (let round = 0; round < 2; round++) {
    await Promise.all(
      clients.map(async (c) => {
        const text = `echo ${c.label} ${round}`;
        const echo = new Promise((resolve) => c.socket.on("message", (m) => m.message === text && resolve()));
        c.socket.emit("message", { message: text });
        await echo;
      }),
    );
    // Nothing to await: the claim is that nothing happens meanwhile. The polls wait for the ping
    // interval, so the pool's other connections stay idle past the nodes' header timeout.
    await delay(HEADER_READ_TIMEOUT + 500);
  }
  for (const c of clients) c.socket.close();
  // With the clients gone only idle pooled connections could remain; the pool closes them well
  // before a node would (old: they stayed until each node's header timeout closed them).
  const ports = nodes.map((n) => n.port);
  await waitUntil(() => connectionsTo(ports) === 0, {
    timeoutMs: HEADER_READ_TIMEOUT - 1000,
    intervalMs: 25,
    label: "no connection from the balancer to a node left open",
  });

  for (const node of nodes) {
    const res = await request(`${node.url}/metrics`);
    assert.equal(res.status, 200);
    const refusals = parseMetrics(res.body).value("ioscale_limit_rejections_total", { limit: "header_read_timeout" });
    assert.equal(refusals, 0, `${node.serverId} counted the balancer's connections as slowloris:\n${node.output().slice(-2000)}`);
    assert.doesNotMatch(node.output(), /header_read_timeout/, `${node.serverId} logged a header timeout`);
  }
  // The balancer worked with its nodes all along.
  const m = await lb.metrics();
  for (const node of nodes) assert.equal(m.value("ioscale_lb_backend_up", { backend: node.address }), 1);
  assert.doesNotMatch(lb.output(), /node request failed|node unreachable/);
});
