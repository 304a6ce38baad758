// A node behind `ioscale lb` is killed (SIGKILL) while clients send messages: its clients (with
// reconnection on) reconnect through the balancer to the remaining nodes and keep receiving
// broadcasts; while it is down no new session lands on it and no client sees an error; once it is
// restarted on the same port the balancer sends it new sessions again.
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { broadcastExactlyOnce, cancellable, openClient, spread, startLb, startNodes } from "./lib/lb-util.mjs";
import { startRedis, waitForSubscribers } from "./lib/redis.mjs";

const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 400, randomizationFactor: 0.2 };
const MODES = ["polling", "upgrade", "websocket"];

test("ioscale lb: a node killed during traffic, then restarted on the same port", { timeout: 45000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const nodes = await startNodes(h, redis, admin, 3);
  const lb = await startLb(h, nodes.map((n) => n.address), ["--health-interval", "200"]);

  const clients = [];
  for (let i = 0; i < 12; i++) clients.push(await openClient(h, lb.url, MODES[i % 3], RECONNECT, `${MODES[i % 3]} #${i}`));
  const before = spread(clients);
  t.diagnostic(`sessions per node before the kill: ${JSON.stringify(before)}`);
  const victim = nodes[1];
  const survivors = nodes.filter((n) => n !== victim).map((n) => n.serverId);
  const orphans = clients.filter((c) => c.serverId() === victim.serverId);
  const others = clients.filter((c) => !orphans.includes(c));
  assert.ok(orphans.length >= 3, `the victim has clients: ${JSON.stringify(before)}`);

  // Traffic: a message every 20 ms from a rotating connected client.
  let ticks = 0;
  const ticker = setInterval(() => {
    const live = clients.filter((c) => c.socket.connected);
    if (live.length) live[ticks % live.length].socket.emit("message", { message: `tick-${ticks++}` });
  }, 20);
  t.after(() => clearInterval(ticker));

  const moved = orphans.map((c) =>
    cancellable(c.socket, "server-info", { filter: (info) => survivors.includes(info.serverId), timeoutMs: 10000, label: `${c.label} back on a surviving node` }),
  );
  // Let traffic flow first: every client of the victim has received some ticks.
  await Promise.all(orphans.map((c) => cancellable(c.socket, "message", { filter: (m) => /^tick-[1-9]/.test(m.message), label: `ticks at ${c.label}` }).promise));
  const ticksAtKill = ticks;
  await victim.kill("SIGKILL");
  const settled = await Promise.allSettled(moved.map((m) => m.promise));
  const stranded = orphans.filter((_, i) => settled[i].status === "rejected");
  assert.deepEqual(stranded.map((c) => c.describe()), [], "every client of the killed node reconnects to a surviving node through the balancer");
  clearInterval(ticker);
  assert.ok(ticks > ticksAtKill, "traffic went on during the failover");
  for (const c of others) {
    assert.deepEqual(c.disconnects, [], `a client of a surviving node keeps its session: ${c.describe()}`);
    assert.equal(c.connects, 1, c.describe());
  }
  for (const c of orphans) assert.ok(c.socket.connected && survivors.includes(c.serverId()), c.describe());
  await broadcastExactlyOnce(orphans[0], clients, { tag: "after-failover" });
  await broadcastExactlyOnce(others[0], clients, { tag: "after-failover" });

  // The balancer marks the node down; new sessions (no reconnection: any error would show) avoid it.
  await lb.waitBackendUp(victim.address, false);
  const whileDown = [];
  for (let i = 0; i < 9; i++) whileDown.push(await openClient(h, lb.url, MODES[i % 3], {}, `while down ${MODES[i % 3]} #${i}`));
  assert.deepEqual(whileDown.filter((c) => !survivors.includes(c.serverId())).map((c) => c.describe()), [], "no new session lands on the dead node");
  const health = await lb.health();
  assert.equal(health.backendsUp, 2, JSON.stringify(health));

  // Restarted on the same port: back in the cluster and in the balancer, it gets the new sessions.
  await victim.start();
  await waitForSubscribers(admin, 3);
  await lb.waitBackendUp(victim.address, true);
  const m = await lb.metrics();
  const load = Object.fromEntries(nodes.map((n) => [n.serverId, m.value("ioscale_lb_backend_sessions", { backend: n.address })]));
  t.diagnostic(`balancer sessions per node after the restart: ${JSON.stringify(load)}`);
  const afterRestart = [];
  for (let i = 0; i < 6; i++) afterRestart.push(await openClient(h, lb.url, MODES[i % 3], {}, `after restart ${MODES[i % 3]} #${i}`));
  assert.deepEqual(
    afterRestart.map((c) => c.serverId()),
    afterRestart.map(() => victim.serverId),
    `least-connection sends the new sessions to the restarted (empty) node; balancer load was ${JSON.stringify(load)}`,
  );
  const everyone = [...clients, ...whileDown, ...afterRestart];
  await broadcastExactlyOnce(afterRestart[0], everyone, { tag: "after-restart" });
  await broadcastExactlyOnce(whileDown[0], everyone, { tag: "after-restart" });
});

test("ioscale lb without active health checks: a dead node is skipped for --fail-timeout after a failed attempt, then used again", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  const nodes = await startNodes(h, redis, admin, 3);
  const lb = await startLb(h, nodes.map((n) => n.address), ["--health-interval", "0", "--max-fails", "1", "--fail-timeout", "1"]);
  const victim = nodes[2];
  const survivors = nodes.filter((n) => n !== victim).map((n) => n.serverId);

  await victim.kill("SIGKILL");
  // Without reconnection: a new session that hit the dead node would show as an error; the
  // balancer must retry the handshake on another node instead.
  const whileDown = [];
  for (let i = 0; i < 9; i++) whileDown.push(await openClient(h, lb.url, MODES[i % 3], {}, `while down ${MODES[i % 3]} #${i}`));
  assert.deepEqual(whileDown.filter((c) => !survivors.includes(c.serverId())).map((c) => c.describe()), [], "no session on the dead node");
  assert.deepEqual(Object.keys(spread(whileDown)).sort(), survivors, "both surviving nodes get sessions");
  const m = await lb.metrics();
  assert.equal(m.value("ioscale_lb_backend_up", { backend: victim.address }), 0, "the failed node is skipped");
  assert.ok(/node unreachable: skipped/.test(lb.output()), `the balancer logs the skipped node:\n${lb.output().slice(-2000)}`);

  await victim.start();
  await waitForSubscribers(admin, 3);
  await lb.waitBackendUp(victim.address, true, 5000); // fail_timeout (1 s) elapsed
  const back = [];
  for (let i = 0; i < 3; i++) back.push(await openClient(h, lb.url, MODES[i], {}, `back ${MODES[i]}`));
  assert.deepEqual(back.map((c) => c.serverId()), back.map(() => victim.serverId), "the returned (least loaded) node gets the new sessions");
  await broadcastExactlyOnce(back[0], [...whileDown, ...back]);
});
