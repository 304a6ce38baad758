// A node behind `ioscale lb` freezes (SIGSTOP: its kernel still accepts connections, nothing is
// answered). The balancer must not hold requests on it: when the node is marked down (health check,
// or a request that timed out) its sessions' waiting and new requests get "Session ID unknown" at
// once, handshakes are retried on another node, and without health checks `--response-timeout`
// bounds every wait. The clients' own heartbeat (ping interval + ping timeout) is set longer than
// every bound asserted here, so a client that moves in time was moved by the balancer.
import assert from "node:assert/strict";
import { test } from "node:test";
import { harness } from "./lib/harness.mjs";
import { broadcastExactlyOnce, cancellable, openClient, spread, startLb, startNode, startNodes, waitUntil } from "./lib/lb-util.mjs";
import { startRedis } from "./lib/redis.mjs";

const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 400, randomizationFactor: 0.2 };

/** Freezes a node (SIGSTOP); `thaw()` (also run at the end of the test) sends SIGCONT. */
function freeze(h, node) {
  const pid = node.pid;
  process.kill(pid, "SIGSTOP");
  let frozen = true;
  const thaw = () => {
    if (frozen) {
      frozen = false;
      try {
        process.kill(pid, "SIGCONT");
      } catch {}
    }
  };
  h.defer(thaw);
  return { at: Date.now(), thaw };
}

/** Resolves with the time (ms since `since`) at which the client got a server-info from one of `nodeIds`. */
function movedTo(c, nodeIds, since, timeoutMs) {
  const wait = cancellable(c.socket, "server-info", { filter: (info) => nodeIds.includes(info.serverId), timeoutMs, label: `${c.label} on another node` });
  return wait.promise.then(() => Date.now() - since);
}

test("ioscale lb: a frozen node's polling clients get 'Session ID unknown' as soon as a health check fails, and a steady broadcast is counted", { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const admin = await redis.client();
  // Client heartbeat: 5 s + 5 s. A polling client that moves faster was moved by the balancer.
  const nodes = await startNodes(h, redis, admin, 3, { args: ["--ping-interval", "5000", "--ping-timeout", "5000"] });
  const lb = await startLb(h, nodes.map((n) => n.address), ["--health-interval", "200", "--response-timeout", "8000"]);

  const clients = [];
  for (let i = 0; i < 9; i++) clients.push(await openClient(h, lb.url, "polling", RECONNECT, `polling #${i}`));
  for (let i = 0; i < 3; i++) clients.push(await openClient(h, lb.url, "websocket", RECONNECT, `websocket #${i}`));
  const sender = await openClient(h, lb.url, "websocket", {}, "sender");
  t.diagnostic(`sessions per node: ${JSON.stringify(spread([...clients, sender]))}`);
  const victim = nodes.find((n) => n.serverId !== sender.serverId());
  const survivors = nodes.filter((n) => n !== victim).map((n) => n.serverId);
  const orphans = clients.filter((c) => c.serverId() === victim.serverId);
  const others = clients.filter((c) => !orphans.includes(c));
  const pollingOrphans = orphans.filter((c) => c.label.startsWith("polling"));
  const wsOrphans = orphans.filter((c) => c.label.startsWith("websocket"));
  assert.ok(pollingOrphans.length >= 2 && wsOrphans.length >= 1, `the victim has polling and WebSocket clients: ${orphans.map((c) => c.label)}`);

  // A steady broadcast: seq-<n> every 20 ms from a client of a surviving node, relayed through Redis.
  const sentAt = [];
  const ticker = setInterval(() => {
    sentAt.push(Date.now());
    sender.socket.emit("message", { message: `seq-${sentAt.length - 1}` });
  }, 20);
  t.after(() => clearInterval(ticker));
  const seqs = (c) => c.messages.map((m) => /^seq-(\d+)$/.exec(m.message)?.[1]).filter((s) => s !== undefined).map(Number);
  await waitUntil(() => clients.every((c) => seqs(c).some((s) => s >= 5)), { timeoutMs: 5000, intervalMs: 20, label: "broadcast flowing to every client" });

  const moves = new Map(orphans.map((c) => [c, movedTo(c, survivors, Date.now(), 20000)]));
  const ice = freeze(h, victim);
  // New sessions before the health check notices (it needs its 1 s timeout): by least-connection
  // the victim gets one of the first two; that handshake is retried once the node is marked down.
  const newcomers = Promise.all(
    ["polling", "polling", "websocket"].map(async (mode, i) => {
      const c = await openClient(h, lb.url, mode, {}, `newcomer ${mode} #${i}`);
      return { c, took: Date.now() - ice.at };
    }),
  );
  const pollingTimes = await Promise.all(pollingOrphans.map((c) => moves.get(c)));
  const wsTimes = await Promise.all(wsOrphans.map((c) => moves.get(c)));
  t.diagnostic(`moved after the freeze (ms): polling ${JSON.stringify(pollingTimes)}, websocket ${JSON.stringify(wsTimes)}`);
  for (const [i, c] of pollingOrphans.entries()) {
    assert.ok(pollingTimes[i] < 4000, `${c.describe()} moved after ${pollingTimes[i]} ms: the balancer answers at once once the node is marked down (old: 42-60 s)`);
    assert.ok(!c.disconnects.includes("ping timeout"), `the balancer, not the heartbeat, ended ${c.describe()}`);
  }
  // WebSocket tunnels are left to the client's heartbeat (5 s + 5 s here).
  for (const c of wsOrphans) assert.deepEqual(c.disconnects, ["ping timeout"], c.describe());
  const arrived = await newcomers;
  t.diagnostic(`sessions opened right after the freeze connected after ${JSON.stringify(arrived.map((a) => a.took))} ms`);
  for (const { c, took } of arrived) {
    assert.ok(survivors.includes(c.serverId()) && c.errors.length === 0, c.describe());
    assert.ok(took < 4000, `${c.label} connected after ${took} ms`);
  }
  // The one routed to the frozen node waited for the health check's verdict (its 1 s timeout).
  assert.ok(arrived.some(({ took }) => took >= 1000), "a handshake was routed to the frozen node, then retried");

  // Every client is on a surviving node: the rest of the broadcast reaches all of them.
  await new Promise((resolve) => setTimeout(resolve, 300));
  clearInterval(ticker);
  const last = sentAt.length - 1;
  await waitUntil(() => [...clients, sender].every((c) => seqs(c).includes(last)), { timeoutMs: 5000, intervalMs: 20, label: `seq-${last} at every client` });

  const report = [];
  for (const c of [...clients, sender]) {
    const got = seqs(c);
    const counts = new Map();
    for (const s of got) counts.set(s, (counts.get(s) ?? 0) + 1);
    const duplicates = [...counts].filter(([, n]) => n > 1).map(([s]) => s);
    assert.deepEqual(duplicates, [], `no message twice at ${c.describe()}`);
    const missing = sentAt.map((_, s) => s).filter((s) => !counts.has(s));
    if (!orphans.includes(c)) {
      assert.deepEqual(missing, [], `a client of a surviving node gets every message: ${c.describe()}`);
      continue;
    }
    // Lost only what was sent while the client was stranded: from just before the freeze (in
    // flight to the frozen node) until it connected elsewhere.
    const movedAt = ice.at + (await moves.get(c));
    const outside = missing.filter((s) => sentAt[s] < ice.at - 500 || sentAt[s] > movedAt);
    assert.deepEqual(outside, [], `${c.describe()} lost only messages sent while it was stranded`);
    report.push(`${c.label}: lost ${missing.length} (seq ${missing[0]}..${missing.at(-1)})`);
  }
  t.diagnostic(`${sentAt.length} messages sent; survivors' ${others.length + 1} clients got all; the frozen node's clients: ${report.join(", ")}`);
  for (const c of others) assert.deepEqual(c.disconnects, [], `a client of a surviving node keeps its session: ${c.describe()}`);

  // Thawed, the node is healthy again and takes new sessions; the cluster delivers exactly once.
  ice.thaw();
  await lb.waitBackendUp(victim.address, true);
  const fresh = await openClient(h, lb.url, "polling", {}, "after thaw");
  assert.equal(fresh.serverId(), victim.serverId, "least-connection sends the new session to the thawed (empty) node");
  await broadcastExactlyOnce(fresh, [...clients, sender, fresh], { tag: "after-thaw" });
});

test("ioscale lb without health checks: --response-timeout ends the requests a frozen node holds, its polling clients move", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  // Polls are answered within the ping interval (1 s); the client heartbeat is 1 s + 10 s.
  const args = ["--ping-interval", "1000", "--ping-timeout", "10000"];
  const nodes = [await startNode(h, { serverId: "node-a", args }), await startNode(h, { serverId: "node-b", args })];
  const lb = await startLb(h, nodes.map((n) => n.address), ["--health-interval", "0", "--response-timeout", "2500", "--policy", "round-robin"]);
  const clients = [];
  for (let i = 0; i < 4; i++) clients.push(await openClient(h, lb.url, "polling", RECONNECT, `polling #${i}`));
  const [victim, survivor] = nodes;
  const orphans = clients.filter((c) => c.serverId() === victim.serverId);
  const others = clients.filter((c) => !orphans.includes(c));
  assert.equal(orphans.length, 2, JSON.stringify(spread(clients)));

  const moves = orphans.map((c) => movedTo(c, [survivor.serverId], Date.now(), 15000));
  freeze(h, victim);
  const times = await Promise.all(moves);
  t.diagnostic(`polling clients of the frozen node moved after ${JSON.stringify(times)} ms`);
  for (const [i, c] of orphans.entries()) {
    assert.ok(times[i] < 6000, `${c.describe()} moved after ${times[i]} ms (response timeout 2.5 s; old: never before the heartbeat)`);
    assert.ok(!c.disconnects.includes("ping timeout"), c.describe());
  }
  for (const c of others) assert.deepEqual(c.disconnects, [], c.describe());
  assert.equal((await lb.backend(victim.address)).up, 0, "the node that did not answer is skipped");
  assert.match(lb.output(), /node did not answer in time/);
});

test("ioscale lb: a handshake routed to a frozen node is retried on a healthy one", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  // Polls are answered within the ping interval, well within the response timeout (a poll held
  // longer would count against the healthy node).
  const args = ["--ping-interval", "1000"];
  const nodes = [await startNode(h, { serverId: "node-a", args }), await startNode(h, { serverId: "node-b", args })];
  // No health checks: only the handshake's own timeout finds the frozen node; --fail-timeout 1 puts
  // it back in rotation (still frozen) for the next round.
  const timeout = 2000;
  const lb = await startLb(h, nodes.map((n) => n.address), ["--health-interval", "0", "--response-timeout", String(timeout), "--fail-timeout", "1", "--policy", "round-robin"]);
  const [victim, survivor] = nodes;
  freeze(h, victim);
  const opened = [];
  for (const mode of ["polling", "websocket", "polling"]) {
    await lb.waitBackendUp(victim.address, true, 5000);
    const before = (await lb.backend(victim.address)).requests;
    // Round-robin over two available nodes: one of two handshakes in a row is routed to the frozen one.
    for (let i = 0; i < 2; i++) {
      const started = Date.now();
      const c = await openClient(h, lb.url, mode, {}, `${mode} #${opened.length}`);
      const took = Date.now() - started;
      assert.equal(c.serverId(), survivor.serverId, c.describe());
      assert.deepEqual(c.errors, [], c.describe());
      assert.ok(took < timeout + 2000, `${c.label} connected after ${took} ms`);
      opened.push(c);
    }
    const routed = (await lb.backend(victim.address)).requests - before;
    assert.ok(routed >= 1, `a ${mode} handshake was routed to the frozen node (${routed})`);
  }
  // Only the frozen node was ever skipped.
  const skipped = [...lb.output().matchAll(/node did not answer in time backend=(\S+)/g)].map((m) => m[1]);
  assert.ok(skipped.length >= 3, lb.output());
  assert.deepEqual([...new Set(skipped)], [victim.address], lb.output());
  for (const c of opened) assert.deepEqual(c.disconnects, [], c.describe());
});

test("ioscale lb warns when the nodes' ping interval leaves long-polls no time within --response-timeout", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const node = await startNode(h, { serverId: "node-a", args: ["--ping-interval", "25000"] });
  const lb = await startLb(h, [node.address], ["--response-timeout", "20000"]);
  await openClient(h, lb.url, "polling", {}, "polling");
  await openClient(h, lb.url, "polling", {}, "polling again");
  await waitUntil(() => /ping interval leaves idle long-polls no time/.test(lb.output()), { timeoutMs: 5000, label: "the warning" });
  assert.equal(lb.output().match(/ping interval leaves idle long-polls no time/g).length, 1, "warned once");
  assert.match(lb.output(), /ping_interval=25000 response_timeout=20000/);
});
