// Redis goes away during traffic and comes back on the same port: two `ioscale serve` nodes keep
// serving their own clients during the outage, say so in their logs, and cross-node delivery resumes
// once Redis is back, without either process exiting.
//
// INTEROP_CLUSTER_PEER=node runs it against the Node reference peer (--app mode).
import assert from "node:assert/strict";
import { test } from "node:test";
import { connected, harness, next } from "./lib/harness.mjs";
import { PEER, startApp } from "./lib/node-cluster-server.mjs";
import { sniff, startRedis, waitForSubscribers } from "./lib/redis.mjs";

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with the index of the first match of `pattern` in the node's output at or after `from`. */
function waitForLog(node, pattern, { from = 0, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const rest = node.output().slice(from);
      const m = rest.search(pattern);
      if (m >= 0) {
        done();
        resolve(from + m);
      }
    };
    const done = () => {
      clearTimeout(timer);
      node.proc.stdout.off("data", onData);
      node.proc.stderr.off("data", onData);
    };
    const onData = () => setImmediate(check); // after the server helper appended the chunk
    const timer = setTimeout(() => {
      done();
      reject(new Error(`node ${node.name} did not log ${pattern} within ${timeoutMs} ms; output since:\n${node.output().slice(from).slice(-3000)}`));
    }, timeoutMs);
    node.proc.stdout.on("data", onData);
    node.proc.stderr.on("data", onData);
    check();
  });
}

const seqOf = (m) => Number(/^m-(\d+)$/.exec(m.message)?.[1] ?? NaN);

test("Redis restarted during traffic: local delivery goes on, cross-node delivery resumes, nodes survive and log the outage", { timeout: 40000 }, async (t) => {
  const h = harness(t);
  const redis = await startRedis({ h });
  const nodes = await Promise.all(["A", "B"].map(async (name) => Object.assign(await startApp(PEER, redis.url, h, name), { name })));
  const [A, B] = nodes;
  const admin = await redis.client();
  await waitForSubscribers(admin, 2);
  await admin.disconnect();
  const wire = await sniff(redis);

  const client = async (node, name) => {
    const socket = h.client(node.url, { transports: ["websocket"] });
    const info = next(socket, "server-info", { label: `server-info at ${name}` });
    info.catch(() => {}); // awaited after the connection; a failed connect is reported instead
    await connected(socket);
    assert.equal((await info).serverId, node.name);
    return socket;
  };
  const [sender, local, remote] = await Promise.all([client(A, "sender"), client(A, "local"), client(B, "remote")]);
  const atLocal = [];
  const atRemote = [];
  local.on("message", (m) => m.serverId === "A" && atLocal.push(seqOf(m)));
  remote.on("message", (m) => m.serverId === "A" && atRemote.push(seqOf(m)));

  try {
    // Traffic: the sender on A emits a message every 20 ms.
    let sent = 0;
    const timer = setInterval(() => sender.emit("message", { message: `m-${++sent}` }), 20);
    h.defer(() => clearInterval(timer));

    // Cross-node delivery works before the outage.
    await next(remote, "message", { filter: (m) => m.serverId === "A", label: "A's traffic at B before the outage" });

    // Outage.
    const logFrom = nodes.map((n) => n.output().length);
    await redis.stop();
    const stoppedAt = sent;
    const stopTime = Date.now();
    const downAt = await Promise.all(nodes.map((n, i) => waitForLog(n, /Redis is down/, { from: logFrom[i], timeoutMs: 8000 })));
    // The sender's own node still delivers locally: 25 more messages (≥ 0.5 s of traffic) arrive.
    await next(local, "message", { filter: (m) => seqOf(m) >= stoppedAt + 25, timeoutMs: 5000, label: "local delivery during the outage" });
    const outageLeft = 1000 - (Date.now() - stopTime);
    if (outageLeft > 0) await delay(outageLeft); // the outage lasts about a second
    assert.ok(!redis.running());

    // Redis is back on the same port.
    const restartedAt = sent;
    await redis.start();
    await Promise.all(nodes.map((n, i) => waitForLog(n, /Redis is up/, { from: downAt[i], timeoutMs: 10000 })));
    // A message sent after the restart reaches the other node's client.
    await next(remote, "message", { filter: (m) => seqOf(m) > restartedAt, timeoutMs: 8000, label: "A → B after the restart" });
    // And the other way round.
    const back = next(sender, "message", { filter: (m) => m.serverId === "B" && m.message === "from-B", timeoutMs: 8000, label: "B → A after the restart" });
    remote.emit("message", { message: "from-B" });
    await back;
    clearInterval(timer);

    // Local delivery lost nothing and kept the order, outage included.
    const upTo = atLocal.filter((n) => n <= restartedAt);
    assert.deepEqual(upTo, Array.from({ length: restartedAt }, (_, i) => i + 1), "every message of A reached A's other client, in order");
    assert.ok(restartedAt - stoppedAt >= 25, `traffic went on during the outage (${restartedAt - stoppedAt} messages)`);
    // Before the outage B received A's messages in order; nothing arrives twice.
    assert.equal(new Set(atRemote).size, atRemote.length, "no message reached B twice");
    for (const n of nodes) {
      assert.equal(n.proc.exitCode, null, `node ${n.name} is still running`);
      assert.equal(n.proc.signalCode, null, `node ${n.name} was not killed`);
    }
  } catch (error) {
    t.diagnostic(`Redis traffic (last messages):\n${wire.dump(40)}`);
    for (const n of nodes) t.diagnostic(`node ${n.name} (${n.kind}) output:\n${n.output().slice(-4000)}`);
    throw error;
  }
});
