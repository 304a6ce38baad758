// @socket.io/redis-emitter 5 (on a node-redis v4 client) publishing into a cluster of two ioscale
// nodes (interop_server ×2) on a real Redis: broadcasts to all / a room / rooms with except, binary,
// flags, another namespace, serverSideEmit, and socketsJoin/socketsLeave/disconnectSockets.
// Every targeted emit is followed by a marker emitted to everyone; once every client has the marker,
// the clients that got the event must be exactly the expected ones, each exactly once.
//
// INTEROP_CLUSTER_PEER=node runs the same tests against the Node reference peer.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Emitter } from "@socket.io/redis-emitter";
import { bytes, connected, harness, next } from "./lib/harness.mjs";
import { PEER, startPeer } from "./lib/node-cluster-server.mjs";
import { sniff, startRedis, waitForSubscribers } from "./lib/redis.mjs";

const MEMBERSHIP = { A1: ["room1"], A2: ["room2", "room3"], B1: ["room1", "room2"], B2: ["room3"] };
const sorted = (list) => [...list].sort();
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function setup(t) {
  const h = harness(t);
  const redis = await startRedis({ h });
  const nodes = await Promise.all(["A", "B"].map(async (name) => Object.assign(await startPeer(PEER, redis.url, h), { name })));
  const admin = await redis.client();
  await waitForSubscribers(admin, nodes.length);
  const wire = await sniff(redis);
  const clients = await Promise.all(
    Object.keys(MEMBERSHIP).map(async (name) => {
      const node = nodes[name[0] === "A" ? 0 : 1];
      const socket = h.client(node.url, { transports: ["websocket"], auth: { name } });
      const welcome = next(socket, "welcome", { label: `welcome at ${name}` });
      welcome.catch(() => {}); // awaited after the connection; a failed connect is reported instead
      await connected(socket);
      await welcome;
      const call = async (event, ...args) => {
        try {
          return await socket.timeout(8000).emitWithAck(event, ...args);
        } catch (error) {
          throw new Error(`${name} on node ${node.name}: no ack for "${event}" (${error.message})`);
        }
      };
      for (const room of MEMBERSHIP[name]) assert.equal(await call("join", room), true);
      return { name, node, socket, id: socket.id, call };
    }),
  );
  const emitter = new Emitter(await redis.client());
  return { h, redis, nodes, clients, by: Object.fromEntries(clients.map((c) => [c.name, c])), emitter, wire };
}

function emitterTest(name, fn) {
  test(name, { timeout: 20000 }, async (t) => {
    const c = await setup(t);
    try {
      await fn(c);
    } catch (error) {
      t.diagnostic(`Redis traffic (last messages):\n${c.wire.dump(60)}`);
      for (const node of c.nodes) t.diagnostic(`node ${node.name} (${node.kind}) output:\n${node.output().slice(-3000)}`);
      throw error;
    }
  });
}

let seq = 0;

/**
 * `emit(event)` publishes event op-N through the emitter; then the emitter publishes mark-N to
 * everyone. Returns the arguments each client got, after checking the receivers are `expected`.
 */
async function expectEmit({ clients, emitter }, emit, expected, label) {
  const k = ++seq;
  const event = `op-${k}`;
  const mark = `mark-${k}`;
  const live = clients.filter((x) => x.socket.connected);
  const got = new Map(live.map((x) => [x.name, []]));
  for (const x of live) x.socket.on(event, (...args) => got.get(x.name).push(args));
  const marks = live.map((x) => next(x.socket, mark, { label: `${mark} at ${x.name} (${label})` }));
  emit(event);
  emitter.emit(mark);
  await Promise.all(marks);
  const receivers = [...got].filter(([, list]) => list.length).map(([name]) => name);
  assert.deepEqual(sorted(receivers), sorted(expected), `receivers of ${label}`);
  for (const name of receivers) assert.equal(got.get(name).length, 1, `${name} got ${label} ${got.get(name).length} times`);
  return got;
}

describe("@socket.io/redis-emitter into the cluster", { concurrency: 3 }, () => {
  emitterTest("emit to all reaches every client on both nodes once, binary intact, flags accepted", async (c) => {
    const blob = bytes(200, 3);
    const args = [1, "two", blob, { nested: Buffer.from([9, 8]), list: [null, true, 2.5] }];
    const got = await expectEmit(c, (ev) => c.emitter.emit(ev, ...args), ["A1", "A2", "B1", "B2"], "emitter.emit");
    for (const [name, [received]] of got) {
      // every client is a receiver here (checked by expectEmit)
      assert.deepEqual(received, args, `payload at ${name}`);
      assert.ok(Buffer.isBuffer(received[2]) && Buffer.isBuffer(received[3].nested), `binary at ${name} arrives as Buffer`);
    }
    await expectEmit(c, (ev) => c.emitter.volatile.compress(false).emit(ev, "v"), ["A1", "A2", "B1", "B2"], "emitter.volatile.compress(false).emit");
    await expectEmit(c, (ev) => c.emitter.emit(ev), ["A1", "A2", "B1", "B2"], "emitter.emit without arguments");
  });

  emitterTest("emit to a room, to rooms with except, and except only reach exactly the selected clients", async (c) => {
    const got = await expectEmit(c, (ev) => c.emitter.to("room1").emit(ev, "r1"), ["A1", "B1"], "to(room1)");
    for (const name of ["A1", "B1"]) assert.deepEqual(got.get(name), [["r1"]], `payload at ${name}`);
    await expectEmit(c, (ev) => c.emitter.to("room3").emit(ev, Buffer.from([1])), ["A2", "B2"], "to(room3) with binary");
    await expectEmit(c, (ev) => c.emitter.to(["room1", "room3"]).emit(ev), ["A1", "A2", "B1", "B2"], "to([room1, room3])");
    await expectEmit(c, (ev) => c.emitter.to(["room1", "room3"]).except("room2").emit(ev), ["A1", "B2"], "to([room1, room3]).except(room2)");
    await expectEmit(c, (ev) => c.emitter.except("room1").emit(ev), ["A2", "B2"], "except(room1)");
    await expectEmit(c, (ev) => c.emitter.to("room2").except(c.by.B1.id).emit(ev), ["A2"], "to(room2).except(<B1 id>)");
    await expectEmit(c, (ev) => c.emitter.to(c.by.B2.id).emit(ev), ["B2"], "to(<B2 id>)");
    await expectEmit(c, (ev) => c.emitter.to("empty-room").emit(ev), [], "to(empty-room)");
  });

  emitterTest("emit to another namespace reaches only that namespace's clients", async (c) => {
    const admins = await Promise.all(
      c.nodes.map(async (node) => {
        const socket = c.h.client(node.url, { nsp: "/admin", transports: ["websocket"], auth: { token: "secret" } });
        await connected(socket);
        return { name: `admin@${node.name}`, socket };
      }),
    );
    const inAdmin = admins.map((a) => next(a.socket, "adm", { label: `adm at ${a.name}` }));
    const onMain = [];
    for (const x of c.clients) x.socket.on("adm", () => onMain.push(x.name));
    c.emitter.of("/admin").emit("adm", "for admins");
    assert.deepEqual(await Promise.all(inAdmin), ["for admins", "for admins"]);
    // A marker on "/" published after it: the "/" clients would have had "adm" before it.
    await expectEmit(c, (ev) => c.emitter.emit(ev), ["A1", "A2", "B1", "B2"], "marker on /");
    assert.deepEqual(onMain, [], "the / clients did not get the /admin event");
  });

  emitterTest("serverSideEmit reaches the server-side listeners of every node", async (c) => {
    const received = c.clients.map((x) => next(x.socket, "sse-received", { label: `sse-received at ${x.name}` }));
    const extra = [];
    for (const x of c.clients) x.socket.on("sse-received", (m) => extra.push([x.name, m]));
    c.emitter.serverSideEmit("sse", "from-emitter", 7, { k: [1, 2] });
    for (const m of await Promise.all(received)) assert.deepEqual(m, { event: "sse", args: ["from-emitter", 7, { k: [1, 2] }] });
    // One relay per node: every client once (a marker published after it closes the window).
    await expectEmit(c, (ev) => c.emitter.emit(ev), ["A1", "A2", "B1", "B2"], "marker");
    assert.equal(extra.length, c.clients.length, `sse-received per client: ${JSON.stringify(extra)}`);
    assert.throws(() => c.emitter.serverSideEmit("sse", () => {}), /Acknowledgements are not supported/);
  });

  emitterTest("socketsJoin, socketsLeave and disconnectSockets from the emitter apply on both nodes", async (c) => {
    const roomsOf = async (x) => sorted(await x.call("get-rooms"));
    const expectRooms = async (expected, label) => {
      const deadline = Date.now() + 3000;
      for (;;) {
        try {
          for (const x of c.clients.filter((y) => y.socket.connected)) {
            assert.deepEqual(await roomsOf(x), sorted([x.id, ...expected(x)]), `${label}: rooms of ${x.name}`);
          }
          return;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await delay(25);
        }
      }
    };
    c.emitter.in("room2").socketsJoin(["er", "er2"]);
    await expectRooms((x) => [...MEMBERSHIP[x.name], ...(MEMBERSHIP[x.name].includes("room2") ? ["er", "er2"] : [])], "after in(room2).socketsJoin([er, er2])");
    // The rooms are real on each node: an emit to "er" reaches exactly the joined sockets.
    await expectEmit(c, (ev) => c.emitter.to("er").emit(ev), ["A2", "B1"], "to(er) after socketsJoin");
    c.emitter.except("room1").socketsLeave("er");
    await expectRooms(
      (x) => [...MEMBERSHIP[x.name], ...(MEMBERSHIP[x.name].includes("room2") ? (x.name === "B1" ? ["er", "er2"] : ["er2"]) : [])],
      "after except(room1).socketsLeave(er)",
    );
    const gone = ["A1", "B1"].map((name) => next(c.by[name].socket, "disconnect", { label: `disconnect of ${name}` }));
    c.emitter.in("room1").disconnectSockets();
    assert.deepEqual(await Promise.all(gone), ["io server disconnect", "io server disconnect"]);
    await expectEmit(c, (ev) => c.emitter.emit(ev), ["A2", "B2"], "emit after disconnectSockets");
    assert.equal(c.by.A2.socket.connected && c.by.B2.socket.connected, true);
  });
});
