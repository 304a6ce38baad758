// Multi-node clusters on one real Redis, driven through real socket.io clients connected to every node:
//  - "three ioscale nodes": interop_server ×3;
//  - "mixed": the Node.js reference peer (socket.io 4.8 + @socket.io/redis-adapter 8.3, lib/node-cluster-
//    server.mjs) as node A plus two interop_servers (B, C).
// Every scenario runs each operation from every node in turn, so in the mixed cluster each one goes
// Node → ioscale and ioscale → Node (and ioscale → ioscale).
//
// INTEROP_CLUSTER_PEER=node puts the Node peer in place of every ioscale node, which checks the tests
// themselves against the reference implementation.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { bytes, collect, connected, harness, next } from "./lib/harness.mjs";
import { PEER, freeze, startPeer } from "./lib/node-cluster-server.mjs";
import { sniff, startRedis, waitForSubscribers } from "./lib/redis.mjs";

/** Requests timeout of interop_server (its default; the Node peer is given the same). */
const REQUESTS_TIMEOUT = 5000;

const TOPOLOGIES = {
  "three ioscale nodes": [PEER, PEER, PEER],
  "mixed (Node peer A + ioscale B, C)": ["node", PEER, PEER],
};

/** Named rooms of the standard clients (two per node). */
const MEMBERSHIP = { A1: ["red"], A2: ["blue"], B1: ["red", "blue"], B2: [], C1: ["blue"], C2: ["red"] };

const sortById = (list) => [...list].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
const sorted = (list) => [...list].sort();
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Marks a wait as handled up front, so that if an earlier step fails first it is not an unhandled rejection. */
const pending = (promise) => (promise.catch(() => {}), promise);

/** Retries `check` (which throws while the condition does not hold) until it passes or `timeoutMs` ends. */
async function eventually(check, { timeoutMs = 3000, intervalMs = 25 } = {}) {
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
 * Redis, the nodes of `kinds` (named A, B, C…), `perNode` clients per node (named A1, A2, B1…, auth
 * {name}); with `rooms` the MEMBERSHIP rooms joined, with `data` socket.data set to {name, node}.
 * A sniffer records the Redis traffic, printed as a diagnostic when the test fails.
 */
async function setup(t, kinds, { perNode = 2, rooms = true, data = false } = {}) {
  const h = harness(t);
  const redis = await startRedis({ h });
  const nodes = await Promise.all(kinds.map((kind) => startPeer(kind, redis.url, h)));
  nodes.forEach((node, i) => (node.name = String.fromCharCode(65 + i)));
  const admin = await redis.client();
  await waitForSubscribers(admin, kinds.length);
  const wire = await sniff(redis);

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
  if (rooms) {
    await Promise.all(
      clients.map(async (c) => {
        if (data) assert.equal(await c.call("set-data", { name: c.name, node: c.node.name }), true);
        for (const room of MEMBERSHIP[c.name] ?? []) assert.equal(await c.call("join", room), true);
      }),
    );
  }
  return { h, redis, nodes, clients, by, wire, admin };
}

/** One test per topology running `fn(cluster, t)`; on failure prints the Redis traffic and the node logs. */
function scenario(name, fn, { timeout = 30000, perNode, rooms, data } = {}) {
  for (const [topology, kinds] of Object.entries(TOPOLOGIES)) {
    test(`${topology}: ${name}`, { timeout }, async (t) => {
      const cluster = await setup(t, kinds, { perNode, rooms, data });
      try {
        await fn(cluster, t);
      } catch (error) {
        t.diagnostic(`kinds: ${kinds.join(", ")}; Redis traffic (last messages):\n${cluster.wire.dump(80)}`);
        for (const node of cluster.nodes) t.diagnostic(`node ${node.name} (${node.kind}) output:\n${node.output().slice(-3000)}`);
        throw error;
      }
    });
  }
}

let seq = 0;

/**
 * `sender` broadcasts `data` (event op-N) with `options` ({to, except}), then a marker (mark-N) to
 * everyone. Once every connected client has the marker, exactly `expected` (client names) must have
 * got op-N, each exactly once and with `data` intact.
 */
async function expectDelivery({ clients }, sender, options, expected, data = { n: seq }) {
  const k = ++seq;
  const event = `op-${k}`;
  const mark = `mark-${k}`;
  const live = clients.filter((c) => c.socket.connected);
  const got = new Map(live.map((c) => [c.name, []]));
  for (const c of live) c.socket.on(event, (...args) => got.get(c.name).push(args));
  const marks = live.map((c) => pending(next(c.socket, mark, { label: `${mark} at ${c.name}` })));
  assert.equal(await sender.call("broadcast", { ...options, event, data }), true);
  assert.equal(await sender.call("broadcast", { event: mark, data: null }), true);
  await Promise.all(marks);
  const receivers = [...got].filter(([, list]) => list.length > 0).map(([name]) => name);
  const what = `broadcast from ${sender.name} (node ${sender.node.name}, ${sender.node.kind}) with ${JSON.stringify(options)}`;
  assert.deepEqual(sorted(receivers), sorted(expected), `receivers of ${what}`);
  for (const name of receivers) {
    assert.equal(got.get(name).length, 1, `${name} got the ${what} ${got.get(name).length} times`);
    assert.deepEqual(got.get(name)[0], [data], `payload at ${name} of ${what}`);
  }
  return got;
}

/** One sender per node (its first client). */
const senders = ({ nodes, by }) => nodes.map((n) => by[`${n.name}1`]);
const membersOf = (room) => Object.keys(MEMBERSHIP).filter((name) => MEMBERSHIP[name].includes(room));

describe("cluster over the Redis adapter", { concurrency: 4 }, () => {
  scenario("every broadcast reaches every client on every node exactly once", async (c) => {
    const news = new Map(c.clients.map((x) => [x.name, []]));
    for (const x of c.clients) x.socket.on("news", (d) => news.get(x.name).push(d.from));
    const markers = c.clients.map((x) => pending(collect(x.socket, "news-marker", c.nodes.length, { label: `markers at ${x.name}` })));
    // Each node's sender: a broadcast, then its marker (published after it, so it arrives after it).
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

  scenario("room broadcasts reach only the room's members on every node; except works across nodes", async (c) => {
    const { by } = c;
    for (const s of senders(c)) {
      await expectDelivery(c, s, { to: ["red"] }, membersOf("red"));
      await expectDelivery(c, s, { to: ["red", "blue"] }, ["A1", "A2", "B1", "C1", "C2"]);
      await expectDelivery(c, s, { to: ["red", "blue"], except: ["blue"] }, ["A1", "C2"]);
      await expectDelivery(c, s, { except: ["red"] }, ["A2", "B2", "C1"]);
      await expectDelivery(c, s, { to: ["blue"], except: [by.B1.id] }, ["A2", "C1"]);
      await expectDelivery(c, s, { except: [by.A2.id, by.B2.id, by.C2.id] }, ["A1", "B1", "C1"]);
      // A socket on each other node, by its id room.
      for (const target of c.clients.filter((x) => x.node !== s.node && x.name.endsWith("2"))) {
        await expectDelivery(c, s, { to: [target.id] }, [target.name]);
      }
      await expectDelivery(c, s, { to: ["nobody-here"] }, []);
    }
  });

  scenario("binary payloads cross nodes as binary (Buffer arrives as Buffer)", async (c) => {
    for (const s of senders(c)) {
      const blob = bytes(300, s.name.charCodeAt(0));
      const got = await expectDelivery(c, s, {}, c.clients.map((x) => x.name), { from: s.name, blob, nested: { small: Buffer.from([1, 2, 3]) } });
      for (const [name, [[data]]] of got) {
        assert.ok(Buffer.isBuffer(data.blob), `blob at ${name} from ${s.name} is a Buffer (got ${data.blob?.constructor?.name})`);
        assert.ok(Buffer.isBuffer(data.nested.small), `nested buffer at ${name} from ${s.name} is a Buffer`);
      }
      const raw = Buffer.from([0, 255, 7, 128]);
      await expectDelivery(c, s, { to: ["red"] }, membersOf("red"), raw);
    }
  });

  scenario("cluster-fetch from every node sees every socket with its rooms, data and auth", async (c) => {
    const entry = (x) => ({ id: x.id, rooms: sorted([x.id, ...MEMBERSHIP[x.name]]), data: { name: x.name, node: x.node.name }, auth: { name: x.name } });
    const normalize = (sockets) => sortById(sockets.map((s) => ({ id: s.id, rooms: sorted(s.rooms.map(String)), data: s.data, auth: s.auth })));
    const cases = [
      [{}, c.clients],
      [{ to: ["red"] }, c.clients.filter((x) => MEMBERSHIP[x.name].includes("red"))],
      [{ to: ["red"], except: ["blue"] }, [c.by.A1, c.by.C2]],
      [{ except: ["red", "blue"] }, [c.by.B2]],
      [{ to: [c.by.C1.id, c.by.B2.id] }, [c.by.B2, c.by.C1]],
    ];
    for (const s of senders(c)) {
      for (const [options, expected] of cases) {
        const reply = await s.call("cluster-fetch", options);
        assert.equal(reply?.ok, true, `cluster-fetch ${JSON.stringify(options)} from ${s.node.name}: ${JSON.stringify(reply)}`);
        assert.deepEqual(
          normalize(reply.sockets),
          sortById(expected.map(entry)),
          `cluster-fetch ${JSON.stringify(options)} from node ${s.node.name} (${s.node.kind})`,
        );
      }
    }
  }, { data: true });

  scenario("cluster-join and cluster-leave move sockets on other nodes into and out of rooms", async (c) => {
    const roomsOf = async (x) => sorted(await x.call("get-rooms"));
    const expectRooms = (expected, label) =>
      eventually(async () => {
        for (const x of c.clients) {
          assert.deepEqual(await roomsOf(x), sorted([x.id, ...expected(x)]), `${label}: rooms of ${x.name}`);
        }
      });
    for (const s of senders(c)) {
      const room = `joined-by-${s.node.name}`;
      const base = (x) => MEMBERSHIP[x.name];
      // Every blue member but B1 (by id), on every node, joins `room`.
      const joined = new Set(["A2", "C1"]);
      assert.ok(await s.call("cluster-join", { to: ["blue"], except: [c.by.B1.id], join: [room] }));
      await expectRooms((x) => (joined.has(x.name) ? [...base(x), room] : base(x)), `after cluster-join from ${s.name}`);
      // The membership is real on the member's node: a broadcast to the room from the sender reaches them.
      await expectDelivery(c, s, { to: [room] }, [...joined]);
      // Single sockets on the other nodes by id join a second room, then leave both.
      const targets = c.clients.filter((x) => x.node !== s.node);
      assert.ok(await s.call("cluster-join", { to: targets.map((x) => x.id), join: [`${room}-2`, `${room}-3`] }));
      const ids = new Set(targets.map((x) => x.name));
      await expectRooms(
        (x) => [...base(x), ...(joined.has(x.name) ? [room] : []), ...(ids.has(x.name) ? [`${room}-2`, `${room}-3`] : [])],
        `after cluster-join by id from ${s.name}`,
      );
      assert.ok(await s.call("cluster-leave", { except: [c.by.C1.id], leave: [room, `${room}-2`] }));
      await expectRooms(
        (x) =>
          x.name === "C1"
            ? [...base(x), room, ...(ids.has("C1") ? [`${room}-2`, `${room}-3`] : [])]
            : [...base(x), ...(ids.has(x.name) ? [`${room}-3`] : [])],
        `after cluster-leave from ${s.name}`,
      );
      assert.ok(await s.call("cluster-leave", { leave: [room, `${room}-2`, `${room}-3`] }));
      await expectRooms(base, `after the final cluster-leave from ${s.name}`);
      await expectDelivery(c, s, { to: [room] }, []);
    }
  });

  scenario("cluster-disconnect closes sockets on other nodes (close false and true)", async (c) => {
    const [a, b, cc] = senders(c);
    const plan = [
      [a, c.by.B2, false, "io server disconnect"],
      [b, c.by.C2, true, "io server disconnect"], // socket.io sends DISCONNECT before closing the connection
      [cc, c.by.A2, false, "io server disconnect"],
    ];
    for (const [sender, target, close, reason] of plan) {
      const gone = pending(next(target.socket, "disconnect", { label: `disconnect of ${target.name}` }));
      assert.ok(await sender.call("cluster-disconnect", { to: [target.id], close }));
      assert.equal(await gone, reason, `${target.name} disconnected by ${sender.name} with close=${close}`);
    }
    // By room, across nodes: every remaining blue member (B1, C1) but C1.
    const b1gone = pending(next(c.by.B1.socket, "disconnect", { label: "disconnect of B1" }));
    assert.ok(await a.call("cluster-disconnect", { to: ["blue"], except: [c.by.C1.id] }));
    assert.equal(await b1gone, "io server disconnect");
    const left = [c.by.A1, c.by.C1];
    for (const s of [a, cc]) {
      const reply = await s.call("cluster-fetch", {});
      assert.equal(reply?.ok, true, JSON.stringify(reply));
      assert.deepEqual(reply.sockets.map((x) => x.id), sortById(left).map((x) => x.id), `sockets left, fetched from ${s.name}`);
    }
    assert.equal(c.by.C1.socket.connected, true, "C1 was excepted");
  });

  scenario("cluster-rooms is the union of every node's rooms; cluster-count is 3", async (c) => {
    const all = sorted([...c.clients.map((x) => x.id), "red", "blue"]);
    for (const s of senders(c)) {
      const rooms = await s.call("cluster-rooms");
      assert.equal(rooms?.ok, true, JSON.stringify(rooms));
      assert.deepEqual(sorted(rooms.rooms.map(String)), all, `cluster-rooms from ${s.name} (${s.node.kind})`);
      assert.deepEqual(await s.call("cluster-count"), { ok: true, count: 3 }, `cluster-count from ${s.name} (${s.node.kind})`);
    }
  });

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
      // An anchor published by another node after it handled the event: the sender's node handled its
      // own request (if it wrongly did) before this reaches its clients.
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

  scenario("broadcast-with-ack collects the ack of every client on every node", async (c) => {
    for (const x of c.clients) x.socket.on("ask", (data, cb) => cb({ name: x.name, data }));
    const byName = (list) => [...list].sort((p, q) => (p.name < q.name ? -1 : 1));
    for (const s of senders(c)) {
      const data = `q-${s.name}`;
      const all = await s.call("broadcast-with-ack", { event: "ask", data, timeoutMs: 4000 });
      assert.equal(all?.err, null, `broadcast-with-ack from ${s.name} (${s.node.kind}): ${JSON.stringify(all)}`);
      assert.deepEqual(byName(all.responses), c.clients.map((x) => ({ name: x.name, data })), `acks collected by ${s.name}`);
      const red = await s.call("broadcast-with-ack", { event: "ask", data, to: ["red"], except: [c.by.C2.id], timeoutMs: 4000 });
      assert.equal(red?.err, null, JSON.stringify(red));
      assert.deepEqual(byName(red.responses), ["A1", "B1"].map((name) => ({ name, data })), `room acks collected by ${s.name}`);
      const none = await s.call("broadcast-with-ack", { event: "ask", data, to: ["nobody-here"], timeoutMs: 4000 });
      assert.deepEqual(none, { err: null, responses: [] }, `empty room from ${s.name}`);
    }
  });

  scenario(
    "a stopped node (SIGSTOP) makes cluster-fetch, cluster-sse with ack and broadcast-with-ack time out",
    async (c) => {
      const stopped = c.nodes[2];
      for (const x of c.clients) x.socket.on("ask", (data, cb) => cb({ name: x.name, data }));
      const thaw = await freeze(stopped, c.h);
      const askers = senders(c).filter((s) => s.node !== stopped);
      const timed = async (fn) => {
        const start = Date.now();
        const value = await fn();
        return { value, ms: Date.now() - start };
      };
      const results = await Promise.all(
        askers.map(async (s) => {
          const [fetch, sse, bwa] = await Promise.all([
            timed(() => s.call("cluster-fetch", {})),
            timed(() => s.call("cluster-sse", { event: "ping-node", args: [1], ack: true })),
            timed(() => s.call("broadcast-with-ack", { event: "ask", data: "t", timeoutMs: 1500 })),
          ]);
          return { s, fetch, sse, bwa };
        }),
      );
      for (const { s, fetch, sse, bwa } of results) {
        const who = `from ${s.name} (${s.node.kind})`;
        assert.equal(fetch.value?.ok, false, `cluster-fetch ${who} while C is stopped: ${JSON.stringify(fetch.value)}`);
        assert.match(String(fetch.value.error), /timeout/i, `cluster-fetch error ${who}`);
        assert.ok(fetch.ms >= REQUESTS_TIMEOUT - 300 && fetch.ms <= REQUESTS_TIMEOUT + 2500, `cluster-fetch ${who} failed after ${fetch.ms} ms`);
        assert.equal(sse.value?.ok, false, `cluster-sse ${who} while C is stopped: ${JSON.stringify(sse.value)}`);
        assert.match(String(sse.value.error), /timeout reached/, `cluster-sse error ${who}`);
        assert.ok(sse.ms >= REQUESTS_TIMEOUT - 300 && sse.ms <= REQUESTS_TIMEOUT + 2500, `cluster-sse ${who} failed after ${sse.ms} ms`);
        assert.equal(bwa.value?.err, "timeout", `broadcast-with-ack ${who}: ${JSON.stringify(bwa.value)}`);
        assert.ok(bwa.ms >= 1200 && bwa.ms <= 1500 + 2500, `broadcast-with-ack ${who} failed after ${bwa.ms} ms`);
        // Like socket.io, the acks that did arrive come with the timeout: those of the live nodes' clients.
        assert.deepEqual(
          sorted(bwa.value.responses.map((r) => r.name)),
          c.clients.filter((x) => x.node !== stopped).map((x) => x.name),
          `partial acks ${who}`,
        );
      }
      // Resumed, the node answers again.
      thaw();
      const reply = await askers[0].call("cluster-fetch", {});
      assert.equal(reply?.ok, true, `cluster-fetch after SIGCONT: ${JSON.stringify(reply)}`);
      assert.equal(reply.sockets.length, c.clients.length);
    },
    { timeout: 30000, perNode: 1, rooms: false },
  );
});
