// Redis Cluster failover under a live stream, with the sharded Redis adapter (dynamic subscriptions):
// three nodes on a real local Redis Cluster (3 masters + 3 replicas, lib/redis-cluster.mjs), clients
// on every node, numbered messages sent at a steady pace from the nodes in turn; the master owning the
// channel the stream travels on is SIGKILLed mid-stream and its replica takes over. Without any node
// being restarted, delivery must resume: every message sent once the failover is over (plus a margin
// for the nodes to notice) reaches every client exactly once, every node process is still alive, and
// the subscriptions are back on the new master. The messages lost during the failover window are
// reported (t.diagnostic), not asserted: Redis refuses or drops them while the shard has no master.
//  - a room broadcast (its channel `socket.io#/#<room>#`, on another shard than the main channel);
//  - io-wide broadcasts (the main channel `socket.io#/#`), then cluster requests (fetch);
//  - the main channel's slot moved to another master (CLUSTER SETSLOT: a resharding step);
//  - a manual failover (CLUSTER FAILOVER) of the room channel's master: the old master lives on
//    as a replica and still accepts SPUBLISH, so only a changed slot map tells the nodes.
//
// Not run with INTEROP_CLUSTER_PEER=node: Node's adapter on node-redis 4.7 does not recover from a
// failover (its sharded subscriber stays on the dead master; docs/wire/redis-sharded-adapter-8.3.md
// §2.5), so the reference fails these tests by design. INTEROP_FAILOVER_RUN_NODE=1 runs them anyway,
// to watch it fail.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { connected, harness, next } from "./lib/harness.mjs";
import { PEER, startPeer } from "./lib/node-cluster-server.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";

const MAIN = "socket.io#/#";
const roomChannel = (room) => `${MAIN}${room}#`;

/** Pace of the stream, and its bounds. */
const PACE_MS = 25;
const MAX_MESSAGES = 2000;
/** Time the nodes get, after Redis has finished the failover, to find the new master and resubscribe. */
const MARGIN_MS = 5000;
/** How long the stream goes on after the margin: every message of this window must arrive everywhere. */
const WINDOW_MS = 2000;

const skip =
  PEER === "node" && process.env.INTEROP_FAILOVER_RUN_NODE !== "1"
    ? "the Node reference peer does not recover from a Redis Cluster failover (node-redis 4.7: docs/wire/redis-sharded-adapter-8.3.md §2.5); set INTEROP_FAILOVER_RUN_NODE=1 to run it anyway"
    : false;

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const pending = (promise) => (promise.catch(() => {}), promise);
const alive = (node) => node.proc.exitCode === null && node.proc.signalCode === null;

async function eventually(check, { timeoutMs = 10000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await delay(intervalMs);
    }
  }
}

/** A room whose channel is not on the main channel's shard (so that killing it leaves the main channel alone). */
async function roomOffTheMainShard(redis) {
  const main = await redis.masterOf(MAIN);
  for (let i = 0; i < 100; i++) {
    const room = `busy-${i}`;
    if ((await redis.masterOf(roomChannel(room))).port !== main.port) return room;
  }
  throw new Error("no room name off the main channel's shard");
}

/**
 * The Redis Cluster, three PEER nodes in dynamic mode, `perNode` clients each; with `busyRoom` every
 * client in one room whose channel is off the main channel's shard (`room`).
 */
async function setup(t, { perNode = 2, busyRoom = false } = {}) {
  const h = harness(t);
  const redis = await startRedisCluster({ h });
  const room = busyRoom ? await roomOffTheMainShard(redis) : null;
  const args = ["--redis-mode", "sharded", "--redis-subscription-mode", "dynamic"];
  const nodes = await Promise.all([PEER, PEER, PEER].map((kind) => startPeer(kind, redis.seed, h, { args })));
  nodes.forEach((node, i) => (node.name = String.fromCharCode(65 + i)));
  await redis.waitForShardNumSub(MAIN, nodes.length);
  const clients = [];
  await Promise.all(
    nodes.flatMap((node) =>
      Array.from({ length: perNode }, async (_, j) => {
        const name = `${node.name}${j + 1}`;
        const socket = h.client(node.url, { transports: ["websocket"] });
        const welcome = pending(next(socket, "welcome", { label: `welcome at ${name}` }));
        await connected(socket);
        await welcome;
        const call = (event, ...a) => socket.timeout(8000).emitWithAck(event, ...a);
        if (room) assert.equal(await call("join", room), true);
        clients.push({ name, node, socket, id: socket.id, call });
      }),
    ),
  );
  clients.sort((a, b) => (a.name < b.name ? -1 : 1));
  if (room) await redis.waitForShardNumSub(roomChannel(room), nodes.length);
  return { h, redis, nodes, clients, room };
}

/**
 * Streams numbered `tick` broadcasts ({to} from `options`) from the nodes in turn (client i % nodes),
 * one every PACE_MS. Once every client has the first 20, `kill` runs (SIGKILL of a master and the wait
 * for its failover); the stream then goes on for MARGIN_MS + WINDOW_MS. Asserts that every message sent
 * after the margin reaches every client, that no client gets a message twice, and that every node is
 * still alive; reports what the failover window cost.
 */
async function streamThroughFailover(t, c, options, kill) {
  const { clients, nodes } = c;
  const senders = nodes.map((n) => clients.find((x) => x.node === n));
  const got = new Map(clients.map((x) => [x.name, new Map()])); // name -> (n -> times)
  const waiters = new Set();
  for (const x of clients) {
    x.socket.on("tick", ({ n }) => {
      const seen = got.get(x.name);
      seen.set(n, (seen.get(n) ?? 0) + 1);
      for (const w of waiters) w();
    });
  }
  /** Resolves when `ready()` holds (checked on every tick), rejects after `timeoutMs` with `why()`. */
  const until = (ready, timeoutMs, why) =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (!ready()) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(why()));
      }, timeoutMs);
      waiters.add(check);
      check();
    });

  const sent = []; // { n, at, from }
  let stopAt = Infinity;
  const stream = (async () => {
    for (let n = 1; n <= MAX_MESSAGES && Date.now() < stopAt; n++) {
      const from = senders[n % senders.length];
      sent.push({ n, at: Date.now(), from: from.name });
      from.socket.emit("broadcast", { ...options, event: "tick", data: { n } }, () => {});
      await delay(PACE_MS);
    }
  })();

  const everyoneHas = (numbers) => () => clients.every((x) => numbers.every((n) => got.get(x.name).has(n)));
  const first = Array.from({ length: 20 }, (_, i) => i + 1);
  await until(everyoneHas(first), 10000, () => "the stream did not flow to every client before the failover");

  const killedAt = Date.now();
  const { killed, promoted } = await kill();
  const failedOverAt = Date.now();
  stopAt = failedOverAt + MARGIN_MS + WINDOW_MS;
  await stream;

  const must = sent.filter((m) => m.at >= failedOverAt + MARGIN_MS).map((m) => m.n);
  assert.ok(must.length >= WINDOW_MS / PACE_MS / 2, `only ${must.length} messages sent after the margin`);
  try {
    await until(everyoneHas(must), 10000, () => "");
  } catch {
    const missing = clients
      .map((x) => [x.name, must.filter((n) => !got.get(x.name).has(n))])
      .filter(([, list]) => list.length)
      .map(([name, list]) => `${name} (node ${clients.find((x) => x.name === name).node.name}): ${list.length} missing, first ${list.slice(0, 10).join(",")}`);
    assert.fail(
      `delivery did not resume: messages ${must[0]}..${must.at(-1)}, sent from ${MARGIN_MS} ms after the failover ` +
        `of ${killed} (now ${promoted}), did not all arrive:\n  ${missing.join("\n  ")}`,
    );
  }
  for (const x of clients) {
    const twice = [...got.get(x.name)].filter(([, times]) => times > 1).map(([n]) => n);
    assert.deepEqual(twice, [], `messages ${x.name} got more than once`);
  }
  for (const node of nodes) assert.ok(alive(node), `node ${node.name} (${node.kind}) is still running:\n${node.output().slice(-2000)}`);

  // What the failover cost: per client, the messages lost; when delivery was whole again.
  const lostBy = clients.map((x) => [x.name, sent.filter((m) => !got.get(x.name).has(m.n))]);
  const lost = new Set(lostBy.flatMap(([, list]) => list.map((m) => m.n)));
  const resumed = sent.filter((m) => lost.has(m.n)).at(-1);
  t.diagnostic(
    `${sent.length} messages at ${PACE_MS} ms; the channel's master ${killed} lost it at +0 ms, ${promoted} owned it from +${failedOverAt - killedAt} ms; ` +
      `lost per client: ${lostBy.map(([name, list]) => `${name} ${list.length}`).join(", ")}; ` +
      (resumed ? `last lost message sent at +${resumed.at - killedAt} ms (#${resumed.n})` : "nothing lost"),
  );
}

/** Kills the master owning `channel` and waits for its replica to take over. */
async function killMasterOf(redis, channel) {
  const master = await redis.masterOf(channel);
  await redis.kill(master.port);
  const promoted = await redis.waitForFailover(master.port);
  return { killed: master.port, promoted: promoted.port };
}

/** Moves the main channel's slot to another master (a resharding step); no process dies. */
async function moveMainSlot(redis) {
  const slot = await redis.slotOf(MAIN);
  const owner = await redis.masterOf(MAIN);
  const target = (await redis.masters()).find((m) => m.port !== owner.port);
  const { from, to } = await redis.moveSlot(slot, target.port);
  return { killed: from, promoted: to };
}

function failureReport(t, c, error) {
  t.diagnostic(`cluster: ${c.redis.nodes.map((n) => `${n.port} ${n.role}${n.alive ? "" : " (dead)"}`).join(", ")}`);
  for (const node of c.nodes) t.diagnostic(`node ${node.name} (${node.kind}) output:\n${node.output().slice(-3000)}`);
  throw error;
}

describe("sharded adapter through a Redis Cluster failover", { concurrency: 2 }, () => {
  test("room broadcasts resume after the master of the room's channel is SIGKILLed", { skip, timeout: 60000 }, async (t) => {
    const c = await setup(t, { busyRoom: true });
    const { room } = c;
    try {
      assert.notEqual((await c.redis.masterOf(roomChannel(room))).port, (await c.redis.masterOf(MAIN)).port, "the room is on another shard");
      await streamThroughFailover(t, c, { to: [room] }, () => killMasterOf(c.redis, roomChannel(room)));
      // The subscriptions are on the new master: the room's channel by every node, the main channel too.
      await eventually(async () => assert.equal(await c.redis.shardNumSub(roomChannel(room)), 3, `subscribers of ${roomChannel(room)}`));
      await eventually(async () => assert.equal(await c.redis.shardNumSub(MAIN), 3, `subscribers of ${MAIN}`));
    } catch (error) {
      failureReport(t, c, error);
    }
  });

  test("io-wide broadcasts resume after the main channel's slot moves to another master", { skip, timeout: 60000 }, async (t) => {
    const c = await setup(t);
    try {
      await streamThroughFailover(t, c, {}, () => moveMainSlot(c.redis));
      await eventually(async () => assert.equal(await c.redis.shardNumSub(MAIN), 3, `subscribers of ${MAIN}`));
      assert.deepEqual(await c.clients[0].call("cluster-count"), { ok: true, count: 3 });
    } catch (error) {
      failureReport(t, c, error);
    }
  });

  test("room broadcasts resume after a manual failover (CLUSTER FAILOVER) of the room's master", { skip, timeout: 60000 }, async (t) => {
    const c = await setup(t, { busyRoom: true });
    const { room } = c;
    try {
      const failover = async () => {
        const master = await c.redis.masterOf(roomChannel(room));
        const promoted = await c.redis.manualFailover(master.port);
        return { killed: master.port, promoted: promoted.port };
      };
      await streamThroughFailover(t, c, { to: [room] }, failover);
      await eventually(async () => assert.equal(await c.redis.shardNumSub(roomChannel(room)), 3, `subscribers of ${roomChannel(room)}`));
    } catch (error) {
      failureReport(t, c, error);
    }
  });

  test("io-wide broadcasts and cluster requests resume after the master of the main channel is SIGKILLed", { skip, timeout: 60000 }, async (t) => {
    const c = await setup(t);
    try {
      await streamThroughFailover(t, c, {}, () => killMasterOf(c.redis, MAIN));
      await eventually(async () => assert.equal(await c.redis.shardNumSub(MAIN), 3, `subscribers of ${MAIN}`));
      // Requests and their responses work again from every node: fetch sees every socket, count is 3.
      for (const s of c.nodes.map((n) => c.clients.find((x) => x.node === n))) {
        await eventually(async () => {
          const reply = await s.call("cluster-fetch", {});
          assert.equal(reply?.ok, true, `cluster-fetch from ${s.name} after the failover: ${JSON.stringify(reply)}`);
          assert.deepEqual(reply.sockets.map((x) => x.id).sort(), c.clients.map((x) => x.id).sort(), `sockets fetched from ${s.name}`);
          assert.deepEqual(await s.call("cluster-count"), { ok: true, count: 3 }, `cluster-count from ${s.name}`);
        });
      }
    } catch (error) {
      failureReport(t, c, error);
    }
  });
});
