// The sharded Redis adapter (Node's `createShardedAdapter` of @socket.io/redis-adapter 8.3: SPUBLISH /
// SSUBSCRIBE on a Redis Cluster) across nodes, on a real local Redis Cluster (3 masters + 3 replicas,
// lib/redis-cluster.mjs), in each subscription mode (static, dynamic, dynamic-private) and two
// topologies, driven through real socket.io clients connected to every node:
//  - "three ioscale nodes": interop_server ×3 (`--redis-mode sharded --redis-subscription-mode MODE`);
//  - "mixed": the Node.js reference peer (lib/node-cluster-server.mjs, same flags) as node A plus two
//    interop_servers (B, C).
// Every operation is issued from every node in turn, so in the mixed cluster each one goes Node →
// ioscale and ioscale → Node (and ioscale → ioscale). Besides what the clients get, the tests check
// what is subscribed on Redis: the main channel by every node once, one response channel per node, and
// in the dynamic modes a room's channel by exactly the nodes that have the room (socket-id rooms too in
// dynamic-private, never in dynamic; no room channel at all in static).
//
// One Redis Cluster per (mode, topology) suite; its tests run one after the other, each with fresh
// nodes and clients (a test waits until the previous one's subscriptions are gone). Suites run in
// parallel.
//
// INTEROP_CLUSTER_PEER=node puts the Node peer in place of every ioscale node, which checks the tests
// themselves against the reference implementation.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { bytes, collect, connected, harness, next } from "./lib/harness.mjs";
import { PEER, startPeer } from "./lib/node-cluster-server.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";

const MODES = ["static", "dynamic", "dynamic-private"];

const TOPOLOGIES = {
  "three ioscale nodes": [PEER, PEER, PEER],
  "mixed (Node peer A + ioscale B, C)": ["node", PEER, PEER],
};

/** The main channel of `/` (default channelPrefix): every node subscribes it exactly once. */
const MAIN = "socket.io#/#";
/** The channel of a room (or socket id) of `/` in the dynamic modes. */
const roomChannel = (room) => `${MAIN}${room}#`;

/** Named rooms of the standard clients (two per node): red and blue on every node, green on A and C, solo on B. */
const MEMBERSHIP = { A1: ["red", "green"], A2: ["blue"], B1: ["red", "blue"], B2: ["solo"], C1: ["blue"], C2: ["red", "green"] };
const ROOMS = ["red", "blue", "green", "solo"];

const sortById = (list) => [...list].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
const sorted = (list) => [...list].sort();
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Marks a wait as handled up front, so that if an earlier step fails first it is not an unhandled rejection. */
const pending = (promise) => (promise.catch(() => {}), promise);

/** Retries `check` (which throws while the condition does not hold) until it passes or `timeoutMs` ends. */
async function eventually(check, { timeoutMs = 5000, intervalMs = 25 } = {}) {
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

/**
 * The clients (names) a broadcast with `{to, except}` selects, from `model` (name → Set of named rooms;
 * every client is also in its own id room).
 */
function selected(c, model, { to = [], except = [] } = {}) {
  const inAny = (x, rooms) => rooms.some((r) => r === x.id || model.get(x.name)?.has(r));
  return c.clients
    .filter((x) => x.socket.connected && model.has(x.name))
    .filter((x) => (to.length === 0 || inAny(x, to)) && !inAny(x, except))
    .map((x) => x.name);
}

/** How many nodes have at least one (connected) member of `room` in `model`. */
function nodesWith(c, model, room) {
  return new Set(c.clients.filter((x) => model.get(x.name)?.has(room)).map((x) => x.node.name)).size;
}

/**
 * Waits until Redis shows the subscriptions the mode calls for, and fails with what it shows otherwise:
 * for each of `rooms`, SHARDNUMSUB of its channel = the number of nodes having it (0 in static), and
 * for each connected client, SHARDNUMSUB of its socket-id channel = 1 in dynamic-private (0 otherwise).
 */
async function expectRoomChannels(c, model, rooms, label) {
  const expected = {};
  for (const room of rooms) expected[roomChannel(room)] = c.mode === "static" ? 0 : nodesWith(c, model, room);
  for (const x of c.clients) expected[roomChannel(x.id)] = c.mode === "dynamic-private" && model.has(x.name) ? 1 : 0;
  let actual = {};
  try {
    await eventually(async () => {
      actual = {};
      for (const channel of Object.keys(expected)) actual[channel] = await c.redis.shardNumSub(channel);
      assert.deepEqual(actual, expected);
    });
  } catch {
    assert.deepEqual(actual, expected, `${label}: SHARDNUMSUB of the room channels (${c.mode})`);
  }
}

/**
 * Fresh nodes of `kinds` (named A, B, C…) on the suite's Redis Cluster in `mode`, `perNode` clients
 * per node (A1, A2, B1…, auth {name}); with `rooms` the MEMBERSHIP rooms joined, with `data`
 * socket.data set to {name, node}. Ready when every node has subscribed the main channel exactly once
 * and its response channel, and (rooms) the room channels of the mode are in place.
 */
async function setup(t, redis, mode, kinds, { perNode = 2, rooms = true, data = false } = {}) {
  const h = harness(t);
  // The suite's previous test is gone from Redis (its nodes were killed, which drops their connections).
  await eventually(async () => assert.deepEqual(await redis.shardChannels("socket.io*"), [], "channels left by the previous test"));
  // Registered first, so it runs last: the next test starts on a cluster with no subscription left.
  h.defer(() => eventually(async () => assert.deepEqual(await redis.shardChannels("socket.io*"), [])));
  const args = ["--redis-mode", "sharded", "--redis-subscription-mode", mode];
  const nodes = await Promise.all(kinds.map((kind) => startPeer(kind, redis.seed, h, { args })));
  nodes.forEach((node, i) => (node.name = String.fromCharCode(65 + i)));
  await redis.waitForShardNumSub(MAIN, nodes.length);
  // One response channel per node (`socket.io#/#<uid>#`, one subscriber each): nothing else is
  // subscribed under `socket.io#/#` before the clients come.
  let responseChannels = [];
  await eventually(async () => {
    responseChannels = (await redis.shardChannels(`${MAIN}?*`)).filter((ch) => ch !== MAIN);
    assert.equal(responseChannels.length, nodes.length, `response channels of / on Redis: ${JSON.stringify(responseChannels)}`);
    for (const ch of responseChannels) assert.equal(await redis.shardNumSub(ch), 1, `subscribers of ${ch}`);
  });
  const wire = await redis.sniff([MAIN, ...responseChannels, ...ROOMS.map(roomChannel)]);
  h.defer(() => wire.close());

  const clients = [];
  await Promise.all(
    nodes.flatMap((node) =>
      Array.from({ length: perNode }, async (_, j) => {
        const name = `${node.name}${j + 1}`;
        const socket = h.client(node.url, { transports: ["websocket"], auth: { name } });
        const welcome = pending(next(socket, "welcome", { label: `welcome at ${name}` }));
        await connected(socket);
        const w = await welcome;
        assert.equal(w.id, socket.id);
        const client = {
          name,
          node,
          socket,
          id: socket.id,
          call: async (event, ...args) => {
            try {
              return await socket.timeout(8000).emitWithAck(event, ...args);
            } catch (error) {
              throw new Error(`${name} on node ${node.name} (${node.kind}): no ack for "${event}" ${JSON.stringify(args)} (${error.message})`);
            }
          },
        };
        clients.push(client);
      }),
    ),
  );
  clients.sort((a, b) => (a.name < b.name ? -1 : 1));
  const by = Object.fromEntries(clients.map((c) => [c.name, c]));
  const c = { h, redis, mode, nodes, clients, by, wire, responseChannels };
  // What the clients' rooms are: the MEMBERSHIP rooms once joined, none before.
  c.model = new Map(clients.map((x) => [x.name, new Set(rooms ? MEMBERSHIP[x.name] ?? [] : [])]));
  await Promise.all(
    clients.map(async (x) => {
      if (data) assert.equal(await x.call("set-data", { name: x.name, node: x.node.name }), true);
      for (const room of c.model.get(x.name)) assert.equal(await x.call("join", room), true);
    }),
  );
  // Room (and socket-id) channels are subscribed by the nodes after the join is acknowledged: a
  // broadcast to a room must wait for them, or the nodes that did not subscribe yet miss it.
  await expectRoomChannels(c, c.model, ROOMS, "after the clients joined their rooms");
  wire.add(clients.map((x) => roomChannel(x.id))).catch(() => {});
  return c;
}

const SCENARIOS = [];

/** A test run in every (mode, topology) suite: `fn(cluster, t)`. */
function scenario(name, fn, { timeout = 30000, perNode, rooms, data, modes = MODES } = {}) {
  SCENARIOS.push({ name, fn, timeout, perNode, rooms, data, modes });
}

let seq = 0;

/**
 * `sender` broadcasts `data` (event op-N) with `options` ({to, except, fromSocket}). Every client it
 * selects must get op-N; then a marker (mark-N) goes to everyone, and once every connected client has
 * the marker, exactly `expected` (client names) must have got op-N, each exactly once with `data` intact.
 * (A single-room broadcast travels on the room's channel in the dynamic modes, the marker on the main
 * channel: two shards, so no order between them; hence the wait for op-N first.)
 */
async function expectDelivery({ clients }, sender, options, expected, data = { n: seq }) {
  const k = ++seq;
  const event = `op-${k}`;
  const mark = `mark-${k}`;
  const live = clients.filter((x) => x.socket.connected);
  const got = new Map(live.map((x) => [x.name, []]));
  for (const x of live) x.socket.on(event, (...args) => got.get(x.name).push(args));
  const what = `broadcast from ${sender.name} (node ${sender.node.name}, ${sender.node.kind}) with ${JSON.stringify(options)}`;
  const arrivals = live
    .filter((x) => expected.includes(x.name))
    .map((x) => pending(next(x.socket, event, { label: `${event} at ${x.name}: ${what}` })));
  const marks = live.map((x) => pending(next(x.socket, mark, { label: `${mark} at ${x.name}` })));
  assert.equal(await sender.call("broadcast", { ...options, event, data }), true);
  await Promise.all(arrivals);
  assert.equal(await sender.call("broadcast", { event: mark, data: null }), true);
  await Promise.all(marks);
  const receivers = [...got].filter(([, list]) => list.length > 0).map(([name]) => name);
  assert.deepEqual(sorted(receivers), sorted(expected), `receivers of ${what}`);
  for (const name of receivers) {
    assert.equal(got.get(name).length, 1, `${name} got the ${what} ${got.get(name).length} times`);
    assert.deepEqual(got.get(name)[0], [data], `payload at ${name} of ${what}`);
  }
  for (const x of live) x.socket.removeAllListeners(event);
  return got;
}

/** One sender per node (its first client). */
const senders = ({ nodes, by }) => nodes.map((n) => by[`${n.name}1`]);

scenario("io-wide broadcasts from every node reach every client exactly once; cluster-count is 3 everywhere", async (c) => {
  for (const s of senders(c)) {
    assert.deepEqual(await s.call("cluster-count"), { ok: true, count: 3 }, `cluster-count from ${s.name} (${s.node.kind})`);
  }
  const news = new Map(c.clients.map((x) => [x.name, []]));
  for (const x of c.clients) x.socket.on("news", (d) => news.get(x.name).push(d.from));
  const markers = c.clients.map((x) => pending(collect(x.socket, "news-marker", c.nodes.length, { label: `markers at ${x.name}` })));
  // Each node's sender: a broadcast, then its marker (both on the main channel, in publish order).
  await Promise.all(
    senders(c).map(async (s) => {
      assert.equal(await s.call("broadcast", { event: "news", data: { from: s.node.name } }), true);
      assert.equal(await s.call("broadcast", { event: "news-marker", data: s.node.name }), true);
    }),
  );
  await Promise.all(markers);
  for (const x of c.clients) {
    assert.deepEqual(sorted(news.get(x.name)), ["A", "B", "C"], `broadcasts received by ${x.name} (node ${x.node.name})`);
  }
});

scenario("single-room, multi-room, except and socket-id broadcasts reach exactly the selected clients", async (c) => {
  const { by, model } = c;
  const cases = (s) => [
    { to: ["red"] },
    { to: ["green"] },
    { to: ["solo"] },
    { to: ["red", "blue"] },
    { to: ["red", "blue"], except: ["blue"] },
    { to: ["red"], except: ["green"] },
    { except: ["red"] },
    { to: ["blue"], except: [by.B1.id] },
    { except: [by.A2.id, by.B2.id, by.C2.id] },
    // A socket on each other node, by its id room; two at once.
    ...c.clients.filter((x) => x.node !== s.node && x.name.endsWith("2")).map((x) => ({ to: [x.id] })),
    { to: c.clients.filter((x) => x.node !== s.node && x.name.endsWith("1")).map((x) => x.id) },
    { to: ["nobody-here"] },
  ];
  for (const s of senders(c)) {
    for (const options of cases(s)) await expectDelivery(c, s, options, selected(c, model, options));
  }
});

scenario("socket.broadcast from every node reaches everyone selected but the sender", async (c) => {
  for (const s of senders(c)) {
    for (const options of [{}, { to: ["red"] }, { to: ["blue"] }, { except: ["green"] }]) {
      const expected = selected(c, c.model, options).filter((name) => name !== s.name);
      await expectDelivery(c, s, { ...options, fromSocket: true }, expected);
    }
  }
});

scenario("binary payloads cross nodes as binary (Buffer arrives as Buffer), io-wide and to a room", async (c) => {
  for (const s of senders(c)) {
    const blob = bytes(300, s.name.charCodeAt(0));
    const got = await expectDelivery(c, s, {}, c.clients.map((x) => x.name), { from: s.name, blob, nested: { small: Buffer.from([1, 2, 3]) } });
    for (const [name, [[data]]] of [...got].filter(([, list]) => list.length)) {
      assert.ok(Buffer.isBuffer(data.blob), `blob at ${name} from ${s.name} is a Buffer (got ${data.blob?.constructor?.name})`);
      assert.ok(Buffer.isBuffer(data.nested.small), `nested buffer at ${name} from ${s.name} is a Buffer`);
    }
    const raw = Buffer.from([0, 255, 7, 128]);
    const red = await expectDelivery(c, s, { to: ["red"] }, selected(c, c.model, { to: ["red"] }), raw);
    for (const [name, [[data]]] of [...red].filter(([, list]) => list.length)) {
      assert.ok(Buffer.isBuffer(data), `room binary at ${name} from ${s.name} is a Buffer`);
    }
  }
});

scenario("broadcast-with-ack collects the ack of every selected client on every node", async (c) => {
  for (const x of c.clients) x.socket.on("ask", (data, cb) => cb({ name: x.name, data }));
  const byName = (list) => [...list].sort((p, q) => (p.name < q.name ? -1 : 1));
  for (const s of senders(c)) {
    const data = `q-${s.name}`;
    const all = await s.call("broadcast-with-ack", { event: "ask", data, timeoutMs: 4000 });
    assert.equal(all?.err, null, `broadcast-with-ack from ${s.name} (${s.node.kind}): ${JSON.stringify(all)}`);
    assert.deepEqual(byName(all.responses), c.clients.map((x) => ({ name: x.name, data })), `acks collected by ${s.name}`);
    // One room: still on the main channel (every node must answer with its client count).
    const red = await s.call("broadcast-with-ack", { event: "ask", data, to: ["red"], except: [c.by.C2.id], timeoutMs: 4000 });
    assert.equal(red?.err, null, JSON.stringify(red));
    assert.deepEqual(byName(red.responses), ["A1", "B1"].map((name) => ({ name, data })), `room acks collected by ${s.name}`);
    const solo = await s.call("broadcast-with-ack", { event: "ask", data, to: ["solo"], timeoutMs: 4000 });
    assert.deepEqual(solo, { err: null, responses: [{ name: "B2", data }] }, `acks of solo (on B only) collected by ${s.name}`);
    const none = await s.call("broadcast-with-ack", { event: "ask", data, to: ["nobody-here"], timeoutMs: 4000 });
    assert.deepEqual(none, { err: null, responses: [] }, `empty room from ${s.name}`);
  }
});

scenario(
  "cluster-fetch from every node sees every selected socket with its rooms, data and auth",
  async (c) => {
    const entry = (x) => ({ id: x.id, rooms: sorted([x.id, ...MEMBERSHIP[x.name]]), data: { name: x.name, node: x.node.name }, auth: { name: x.name } });
    const normalize = (sockets) => sortById(sockets.map((s) => ({ id: s.id, rooms: sorted(s.rooms.map(String)), data: s.data, auth: s.auth })));
    const cases = [
      {},
      { to: ["red"] },
      { to: ["solo"] },
      { to: ["red"], except: ["blue"] },
      { except: ["red", "blue"] },
      { to: [c.by.C1.id, c.by.B2.id] },
      { to: ["nobody-here"] },
    ];
    for (const s of senders(c)) {
      for (const options of cases) {
        const reply = await s.call("cluster-fetch", options);
        assert.equal(reply?.ok, true, `cluster-fetch ${JSON.stringify(options)} from ${s.node.name}: ${JSON.stringify(reply)}`);
        const expected = selected(c, c.model, options).map((name) => entry(c.by[name]));
        assert.deepEqual(normalize(reply.sockets), sortById(expected), `cluster-fetch ${JSON.stringify(options)} from node ${s.node.name} (${s.node.kind})`);
      }
    }
  },
  { data: true },
);

scenario("cluster-sse reaches the other nodes only; with ack it collects one response per other node", async (c) => {
  for (const s of senders(c)) {
    const others = c.clients.filter((x) => x.node !== s.node);
    const own = c.clients.filter((x) => x.node === s.node);
    const seen = new Map(own.map((x) => [x.name, []]));
    const onOwn = own.map((x) => {
      const fn = (m) => seen.get(x.name).push(m);
      x.socket.on("sse-received", fn);
      return () => x.socket.off("sse-received", fn);
    });
    const args = [`hello from ${s.node.name}`, 42, { nested: [true, null] }];
    const relayed = others.map((x) => pending(next(x.socket, "sse-received", { label: `sse-received at ${x.name}` })));
    assert.equal(await s.call("cluster-sse", { event: "sse", args, ack: false }), true);
    for (const m of await Promise.all(relayed)) assert.deepEqual(m, { event: "sse", args });
    // An anchor on the main channel, published by another node after it handled the event: the
    // sender's node handled its own request (if it wrongly did) before this reaches its clients.
    const anchor = others[0];
    const anchors = own.map((x) => pending(next(x.socket, "anchor", { label: `anchor at ${x.name}` })));
    assert.equal(await anchor.call("broadcast", { event: "anchor", data: null }), true);
    await Promise.all(anchors);
    for (const [name, list] of seen) assert.deepEqual(list, [], `${name} is on the sending node: serverSideEmit skips it`);
    onOwn.forEach((off) => off());

    // With acks.
    const relayed2 = others.map((x) => pending(next(x.socket, "sse-received", { label: `sse-received (ack) at ${x.name}` })));
    const reply = await s.call("cluster-sse", { event: "sse", args: ["with-ack"], ack: true });
    assert.deepEqual(reply, { ok: true, responses: ["ack-sse", "ack-sse"] }, `cluster-sse with ack from ${s.name} (${s.node.kind})`);
    for (const m of await Promise.all(relayed2)) assert.deepEqual(m, { event: "sse", args: ["with-ack"] });
    const pong = await s.call("cluster-sse", { event: "ping-node", args: ["p", 2, { k: "v" }], ack: true });
    assert.deepEqual(
      pong,
      { ok: true, responses: [["pong", "p", 2, { k: "v" }], ["pong", "p", 2, { k: "v" }]] },
      `ping-node with ack from ${s.name} (${s.node.kind})`,
    );
  }
});

scenario("cluster-join and cluster-leave move sockets on other nodes into and out of rooms (and their channels)", async (c) => {
  const model = new Map([...c.model].map(([name, rooms]) => [name, new Set(rooms)]));
  const roomsOf = async (x) => sorted(await x.call("get-rooms"));
  /** Every client's rooms are the model's (polled: remote joins apply asynchronously), then the room channels. */
  const verify = async (label, rooms) => {
    await eventually(async () => {
      for (const x of c.clients) assert.deepEqual(await roomsOf(x), sorted([x.id, ...model.get(x.name)]), `${label}: rooms of ${x.name}`);
    });
    await expectRoomChannels(c, model, rooms, label);
  };
  for (const s of senders(c)) {
    const room = `joined-by-${s.node.name}`;
    const rooms = [room, `${room}-2`, `${room}-3`];
    // Every blue member but B1 (by id), on every node, joins `room`.
    const opts = { to: ["blue"], except: [c.by.B1.id] };
    for (const name of selected(c, model, opts)) model.get(name).add(room);
    assert.ok(await s.call("cluster-join", { ...opts, join: [room] }));
    await verify(`after cluster-join from ${s.name}`, rooms);
    // The membership is real on the member's node: a broadcast to the room from the sender reaches them.
    await expectDelivery(c, s, { to: [room] }, selected(c, model, { to: [room] }));
    // Single sockets on the other nodes by id join two more rooms.
    const targets = c.clients.filter((x) => x.node !== s.node);
    for (const x of targets) model.get(x.name).add(`${room}-2`).add(`${room}-3`);
    assert.ok(await s.call("cluster-join", { to: targets.map((x) => x.id), join: [`${room}-2`, `${room}-3`] }));
    await verify(`after cluster-join by id from ${s.name}`, rooms);
    await expectDelivery(c, s, { to: [`${room}-3`] }, targets.map((x) => x.name));
    // Everybody but C1 leaves two of them.
    for (const x of c.clients.filter((x) => x !== c.by.C1)) {
      model.get(x.name).delete(room);
      model.get(x.name).delete(`${room}-2`);
    }
    assert.ok(await s.call("cluster-leave", { except: [c.by.C1.id], leave: [room, `${room}-2`] }));
    await verify(`after cluster-leave from ${s.name}`, rooms);
    await expectDelivery(c, s, { to: [room] }, selected(c, model, { to: [room] }));
    // Everybody leaves all three.
    for (const x of c.clients) rooms.forEach((r) => model.get(x.name).delete(r));
    assert.ok(await s.call("cluster-leave", { leave: rooms }));
    await verify(`after the final cluster-leave from ${s.name}`, rooms);
    await expectDelivery(c, s, { to: [room] }, []);
  }
});

scenario("cluster-disconnect closes sockets on other nodes (close false and true), their channels go", async (c) => {
  const [a, b, cc] = senders(c);
  const model = new Map([...c.model].map(([name, rooms]) => [name, new Set(rooms)]));
  const plan = [
    [a, c.by.B2, false],
    [b, c.by.C2, true], // socket.io sends DISCONNECT before closing the connection
    [cc, c.by.A2, false],
  ];
  for (const [sender, target, close] of plan) {
    const gone = pending(next(target.socket, "disconnect", { label: `disconnect of ${target.name}` }));
    assert.ok(await sender.call("cluster-disconnect", { to: [target.id], close }));
    assert.equal(await gone, "io server disconnect", `${target.name} disconnected by ${sender.name} with close=${close}`);
    model.delete(target.name);
  }
  // B2 was the only member of solo: B has no solo left (and no socket-id channel of B2 in dynamic-private).
  await expectRoomChannels(c, model, ROOMS, "after the disconnection of B2, C2, A2");
  // By room, across nodes: every remaining blue member (B1, C1) but C1.
  const b1gone = pending(next(c.by.B1.socket, "disconnect", { label: "disconnect of B1" }));
  assert.ok(await a.call("cluster-disconnect", { to: ["blue"], except: [c.by.C1.id] }));
  assert.equal(await b1gone, "io server disconnect");
  model.delete("B1");
  const left = [c.by.A1, c.by.C1];
  for (const s of [a, cc]) {
    const reply = await s.call("cluster-fetch", {});
    assert.equal(reply?.ok, true, JSON.stringify(reply));
    assert.deepEqual(reply.sockets.map((x) => x.id), sortById(left).map((x) => x.id), `sockets left, fetched from ${s.name}`);
  }
  assert.equal(c.by.C1.socket.connected, true, "C1 was excepted");
  await expectRoomChannels(c, model, ROOMS, "after the disconnection of B1");
});

scenario("room channels on Redis follow the local rooms of each node, as the mode says", async (c) => {
  const model = new Map([...c.model].map(([name, rooms]) => [name, new Set(rooms)]));
  /** Exactly the channels under `socket.io#/#` the mode calls for: main, the response channels, the rooms. */
  const expectChannelSet = async (label) => {
    const expected = [MAIN, ...c.responseChannels];
    if (c.mode !== "static") {
      const rooms = new Set([...model.values()].flatMap((set) => [...set]));
      expected.push(...[...rooms].map(roomChannel));
      if (c.mode === "dynamic-private") expected.push(...c.clients.filter((x) => model.has(x.name)).map((x) => roomChannel(x.id)));
    }
    let actual = [];
    try {
      await eventually(async () => {
        actual = await c.redis.shardChannels(`${MAIN}*`);
        assert.deepEqual(actual, sorted(expected));
      });
    } catch {
      assert.deepEqual(actual, sorted(expected), `${label}: channels subscribed under ${MAIN} (${c.mode})`);
    }
    assert.equal(await c.redis.shardNumSub(MAIN), 3, `${label}: subscribers of the main channel`);
  };
  await expectChannelSet("after setup");
  await expectRoomChannels(c, model, ROOMS, "after setup");

  // B1 leaves red: B has no red left; red stays on A and C.
  assert.equal(await c.by.B1.call("leave", "red"), true);
  model.get("B1").delete("red");
  await expectRoomChannels(c, model, ROOMS, "after B1 left red");
  // The last member of solo leaves it; A2 then makes it A's.
  assert.equal(await c.by.B2.call("leave", "solo"), true);
  model.get("B2").delete("solo");
  await expectRoomChannels(c, model, ROOMS, "after B2 left solo");
  assert.equal(await c.by.A2.call("join", "solo"), true);
  model.get("A2").add("solo");
  await expectRoomChannels(c, model, ROOMS, "after A2 joined solo");
  await expectDelivery(c, c.by.C1, { to: ["solo"] }, ["A2"]);
  // A2 goes away: its rooms (and socket-id channel in dynamic-private) with it.
  const gone = pending(next(c.by.A2.socket, "disconnect", { label: "disconnect of A2" }));
  c.by.A2.socket.emit("disconnect-me");
  await gone;
  model.delete("A2");
  await expectRoomChannels(c, model, ROOMS, "after A2 disconnected");
  await expectChannelSet("at the end");
});

describe("cluster over the sharded Redis adapter (Redis Cluster)", { concurrency: 3 }, () => {
  for (const mode of MODES) {
    for (const [topology, kinds] of Object.entries(TOPOLOGIES)) {
      describe(`${mode} subscriptions, ${topology}`, { concurrency: 1 }, () => {
        const cleanups = [];
        let redis = null;
        before(async () => {
          redis = await startRedisCluster({ h: { defer: (fn) => cleanups.push(fn) } });
        });
        after(async () => {
          while (cleanups.length) {
            try {
              await cleanups.pop()();
            } catch {}
          }
        });
        for (const s of SCENARIOS.filter((x) => x.modes.includes(mode))) {
          test(s.name, { timeout: s.timeout }, async (t) => {
            assert.ok(redis, "the suite's Redis Cluster did not start");
            const c = await setup(t, redis, mode, kinds, s);
            try {
              await s.fn(c, t);
            } catch (error) {
              t.diagnostic(`mode ${mode}, kinds: ${kinds.join(", ")}; Redis traffic seen on replicas (last messages):\n${c.wire.dump(80)}`);
              const channels = {};
              for (const ch of await redis.shardChannels("socket.io*").catch(() => [])) channels[ch] = await redis.shardNumSub(ch).catch((e) => e.message);
              t.diagnostic(`subscribed sharded channels (SHARDNUMSUB): ${JSON.stringify(channels)}`);
              for (const node of c.nodes) t.diagnostic(`node ${node.name} (${node.kind}) output:\n${node.output().slice(-3000)}`);
              throw error;
            }
          });
        }
      });
    }
  }
});
