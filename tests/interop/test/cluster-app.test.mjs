// The application (`ioscale serve`) in a cluster at the level of its own features:
//  - with the Node reference peer (lib/node-cluster-server.mjs --app, same events and getStats) as a
//    member, under a custom key prefix: messages both ways, room messages, GET /stats on either side;
//  - GET /stats while a node is frozen (SIGSTOP): answers after --redis-requests-timeout with the
//    nodes that did answer, and complete again once the node resumes.
//
// INTEROP_CLUSTER_PEER=node puts the Node peer in place of every ioscale node.
import assert from "node:assert/strict";
import { test } from "node:test";
import { connected, harness, next } from "./lib/harness.mjs";
import { PEER, freeze, startApp } from "./lib/node-cluster-server.mjs";
import { sniff, startRedis, waitForSubscribers } from "./lib/redis.mjs";

async function appClient(h, node, name) {
  const socket = h.client(node.url, { transports: ["websocket"] });
  const info = next(socket, "server-info", { label: `server-info at ${name}` });
  info.catch(() => {}); // awaited after the connection; a failed connect is reported instead
  await connected(socket);
  assert.equal((await info).serverId, node.name);
  const got = [];
  socket.on("message", (m) => got.push(m));
  return { name, node, socket, got };
}

async function stats(node) {
  const started = Date.now();
  const res = await fetch(`${node.url}/stats`, { signal: AbortSignal.timeout(15000) });
  assert.equal(res.status, 200);
  const body = await res.json();
  body.servers = [...body.servers].sort((p, q) => (p.serverId < q.serverId ? -1 : 1));
  return { body, ms: Date.now() - started };
}

function withDiagnostics(t, nodes, wire, fn) {
  return fn().catch((error) => {
    t.diagnostic(`Redis traffic (last messages):\n${wire.dump(40)}`);
    for (const n of nodes) t.diagnostic(`node ${n.name} (${n.kind}) output:\n${n.output().slice(-3000)}`);
    throw error;
  });
}

test("mixed app cluster (Node peer + two ioscale serve, key prefix myapp): messages and room messages both ways, GET /stats on every node", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const prefix = ["--redis-key-prefix", "myapp"];
  const nodes = await Promise.all([
    startApp("node", redis.url, h, "N", { args: prefix }),
    startApp(PEER, redis.url, h, "R1", { args: prefix }),
    startApp(PEER, redis.url, h, "R2", { args: [...prefix, "--redis-specific-response-channel"] }),
  ]);
  ["N", "R1", "R2"].forEach((name, i) => (nodes[i].name = name));
  await waitForSubscribers(await redis.client(), 3, { prefix: "myapp" });
  const wire = await sniff(redis);

  await withDiagnostics(t, nodes, wire, async () => {
    const clients = await Promise.all(nodes.flatMap((n) => [1, 2].map((k) => appClient(h, n, `${n.name}-${k}`))));
    const [n1, n2, r1a, r1b, r2a, r2b] = clients;
    let k = 0;
    // Every sender's message reaches all six clients exactly once (its marker arrives after it).
    for (const sender of [n1, r1a, r2b]) {
      const text = `hello-${++k}`;
      const marks = clients.map((c) => next(c.socket, "message", { filter: (m) => m.message === `marker-${k}`, label: `marker-${k} at ${c.name}` }));
      sender.socket.emit("message", { message: text });
      sender.socket.emit("message", { message: `marker-${k}` });
      await Promise.all(marks);
      for (const c of clients) {
        const hits = c.got.filter((m) => m.message === text);
        assert.equal(hits.length, 1, `${text} from ${sender.name} at ${c.name}`);
        assert.equal(hits[0].serverId, sender.node.name);
        assert.equal(hits[0].socketId, sender.socket.id);
      }
    }
    // Room messages across nodes: members n2, r1b, r2a.
    for (const c of [n2, r1b, r2a]) assert.deepEqual(await c.socket.timeout(5000).emitWithAck("join", "lobby"), { ok: true, room: "lobby" });
    for (const sender of [n1, r1a, r2b]) {
      const text = `room-${++k}`;
      const marks = clients.map((c) => next(c.socket, "message", { filter: (m) => m.message === `marker-${k}`, label: `marker-${k} at ${c.name}` }));
      sender.socket.emit("message", { message: text, room: "lobby" });
      sender.socket.emit("message", { message: `marker-${k}` });
      await Promise.all(marks);
      const receivers = clients.filter((c) => c.got.some((m) => m.message === text)).map((c) => c.name);
      assert.deepEqual(receivers, [n2.name, r1b.name, r2a.name], `receivers of ${text} from ${sender.name}`);
      for (const c of [n2, r1b, r2a]) assert.equal(c.got.filter((m) => m.message === text).length, 1);
    }
    // GET /stats on each node (serverSideEmitWithAck "getStats", answered by every other node).
    const expected = [
      { serverId: "N", connections: 2 },
      { serverId: "R1", connections: 2 },
      { serverId: "R2", connections: 2 },
    ];
    for (const node of nodes) {
      const { body } = await stats(node);
      assert.deepEqual(
        body,
        { serverId: node.name, totalConnections: 6, serversOnline: 3, complete: true, servers: expected },
        `GET /stats on ${node.name} (${node.kind})`,
      );
    }
    // The key prefix is used for every channel.
    const foreign = wire.log.filter((m) => !m.channel.startsWith("myapp")).map((m) => m.channel);
    assert.deepEqual([...new Set(foreign)], [], "channels outside the myapp prefix");
  });
});

test("GET /stats while a node is frozen (SIGSTOP) answers after the requests timeout with the live nodes; complete again after SIGCONT", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const timeoutArgs = ["--redis-requests-timeout", "1000"];
  const nodes = await Promise.all(["A", "B", "C"].map(async (name) => Object.assign(await startApp(PEER, redis.url, h, name, { args: timeoutArgs }), { name })));
  await waitForSubscribers(await redis.client(), 3);
  const wire = await sniff(redis);

  await withDiagnostics(t, nodes, wire, async () => {
    await Promise.all(nodes.map((n) => appClient(h, n, n.name)));
    const [A, , C] = nodes;
    const thaw = await freeze(C, h);
    const frozen = await stats(A);
    assert.ok(frozen.ms >= 900 && frozen.ms < 3500, `GET /stats took ${frozen.ms} ms with a requests timeout of 1000 ms`);
    assert.deepEqual(frozen.body, {
      serverId: "A",
      totalConnections: 2,
      serversOnline: 2,
      complete: false,
      servers: [
        { serverId: "A", connections: 1 },
        { serverId: "B", connections: 1 },
      ],
    });
    thaw();
    const back = await stats(A);
    assert.equal(back.body.complete, true, JSON.stringify(back.body));
    assert.equal(back.body.serversOnline, 3);
    assert.equal(back.body.totalConnections, 3);
  });
});
