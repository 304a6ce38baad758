// Rooms: join/leave/get-rooms, and broadcasts with to / except / several rooms (each socket at most
// once). "Did not receive" is checked without sleeping: after the broadcast under test the same
// sender broadcasts a marker to everyone, and each socket's log is read when its marker arrives
// (a server delivers one sender's broadcasts to each socket in order).
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next } from "./lib/harness.mjs";

const MODE_CYCLE = ["websocket", "polling", "upgrade"];

/** Connects named clients (cycling transports) and logs every "cast" event they get. */
async function setup(t, names) {
  const h = harness(t);
  const srv = await h.interopServer();
  const clients = {};
  names.forEach((name, i) => {
    const socket = h.client(srv.url, MODES[MODE_CYCLE[i % MODE_CYCLE.length]]);
    const log = [];
    socket.on("cast", (data) => log.push(data));
    clients[name] = { socket, log };
  });
  await Promise.all(Object.values(clients).map((c) => connected(c.socket)));
  return { h, srv, clients };
}

async function join(client, ...rooms) {
  for (const room of rooms) assert.equal(await client.socket.timeout(5000).emitWithAck("join", room), true);
}

/**
 * `sender` broadcasts `cast` with `spec`, then a marker to everyone; returns, per client, the
 * "cast" payloads it had received when its marker arrived.
 */
async function castAndCollect(clients, sender, spec, tag) {
  const markers = Object.values(clients).map((c) => next(c.socket, "marker", { timeoutMs: 10000, filter: (m) => m === tag }));
  assert.equal(await sender.socket.timeout(5000).emitWithAck("broadcast", { ...spec, event: "cast", data: tag }), true);
  assert.equal(await sender.socket.timeout(5000).emitWithAck("broadcast", { event: "marker", data: tag }), true);
  await Promise.all(markers);
  const seen = {};
  for (const [name, c] of Object.entries(clients)) {
    seen[name] = c.log.filter((d) => d === tag).length;
  }
  return seen;
}

test("join, leave and get-rooms", { timeout: 20000 }, async (t) => {
  const { clients } = await setup(t, ["a"]);
  const s = clients.a.socket;
  assert.deepEqual(await s.emitWithAck("get-rooms"), [s.id]);
  await join(clients.a, "zeta", "alpha", "mid");
  assert.deepEqual(await s.emitWithAck("get-rooms"), [s.id, "alpha", "mid", "zeta"].sort());
  await join(clients.a, "alpha"); // joining twice is harmless
  assert.deepEqual(await s.emitWithAck("get-rooms"), [s.id, "alpha", "mid", "zeta"].sort());
  assert.equal(await s.emitWithAck("leave", "mid"), true);
  assert.equal(await s.emitWithAck("leave", "never-joined"), true);
  assert.deepEqual(await s.emitWithAck("get-rooms"), [s.id, "alpha", "zeta"].sort());
});

test("broadcast to one room reaches its members only, sender included when a member", { timeout: 30000 }, async (t) => {
  const { clients } = await setup(t, ["sender", "m1", "m2", "out"]);
  await join(clients.m1, "r1");
  await join(clients.m2, "r1");
  let seen = await castAndCollect(clients, clients.sender, { to: ["r1"] }, "t1");
  assert.deepEqual(seen, { sender: 0, m1: 1, m2: 1, out: 0 });

  await join(clients.sender, "r1");
  seen = await castAndCollect(clients, clients.sender, { to: ["r1"] }, "t2");
  assert.deepEqual(seen, { sender: 1, m1: 1, m2: 1, out: 0 });

  // After leaving, m2 no longer gets the room's broadcasts.
  assert.equal(await clients.m2.socket.emitWithAck("leave", "r1"), true);
  seen = await castAndCollect(clients, clients.sender, { to: ["r1"] }, "t3");
  assert.deepEqual(seen, { sender: 1, m1: 1, m2: 0, out: 0 });
});

test("broadcast without rooms reaches every socket, the sender too", { timeout: 30000 }, async (t) => {
  const { clients } = await setup(t, ["sender", "b", "c", "d"]);
  await join(clients.b, "some-room");
  assert.deepEqual(await castAndCollect(clients, clients.sender, {}, "all-absent"), { sender: 1, b: 1, c: 1, d: 1 });
  assert.deepEqual(await castAndCollect(clients, clients.sender, { to: [] }, "all-empty"), { sender: 1, b: 1, c: 1, d: 1 });
});

test("several rooms: union of members, each socket exactly once", { timeout: 30000 }, async (t) => {
  const { clients } = await setup(t, ["sender", "onlyR1", "onlyR2", "both", "allThree", "none"]);
  await join(clients.onlyR1, "r1");
  await join(clients.onlyR2, "r2");
  await join(clients.both, "r1", "r2");
  await join(clients.allThree, "r1", "r2", "r3");
  const seen = await castAndCollect(clients, clients.sender, { to: ["r1", "r2", "r3"] }, "union");
  assert.deepEqual(seen, { sender: 0, onlyR1: 1, onlyR2: 1, both: 1, allThree: 1, none: 0 });
  // A room listed twice still delivers once.
  const seen2 = await castAndCollect(clients, clients.sender, { to: ["r2", "r2"] }, "dup-room");
  assert.deepEqual(seen2, { sender: 0, onlyR1: 0, onlyR2: 1, both: 1, allThree: 1, none: 0 });
});

test("except excludes every socket in the excepted rooms", { timeout: 30000 }, async (t) => {
  const { clients } = await setup(t, ["sender", "a", "b", "c", "d"]);
  await join(clients.a, "r1");
  await join(clients.b, "r1", "muted");
  await join(clients.c, "r2");
  await join(clients.d, "muted");
  await join(clients.sender, "r1");

  // to r1 except muted
  assert.deepEqual(await castAndCollect(clients, clients.sender, { to: ["r1"], except: ["muted"] }, "e1"), {
    sender: 1, a: 1, b: 0, c: 0, d: 0,
  });
  // everyone except muted
  assert.deepEqual(await castAndCollect(clients, clients.sender, { except: ["muted"] }, "e2"), {
    sender: 1, a: 1, b: 0, c: 1, d: 0,
  });
  // to r1 + r2 except r2
  assert.deepEqual(await castAndCollect(clients, clients.sender, { to: ["r1", "r2"], except: ["r2"] }, "e3"), {
    sender: 1, a: 1, b: 1, c: 0, d: 0,
  });
  // several except rooms
  assert.deepEqual(await castAndCollect(clients, clients.sender, { to: [], except: ["r1", "r2"] }, "e4"), {
    sender: 0, a: 0, b: 0, c: 0, d: 1,
  });
  // excepting the sender's own id room
  assert.deepEqual(await castAndCollect(clients, clients.sender, { except: [clients.sender.socket.id] }, "e5"), {
    sender: 0, a: 1, b: 1, c: 1, d: 1,
  });
});

test("every socket is in a room named by its own id", { timeout: 30000 }, async (t) => {
  const { clients } = await setup(t, ["sender", "target", "other"]);
  const seen = await castAndCollect(clients, clients.sender, { to: [clients.target.socket.id] }, "direct");
  assert.deepEqual(seen, { sender: 0, target: 1, other: 0 });
  const seen2 = await castAndCollect(
    clients,
    clients.sender,
    { to: [clients.target.socket.id, clients.other.socket.id, clients.sender.socket.id], except: [clients.other.socket.id] },
    "ids",
  );
  assert.deepEqual(seen2, { sender: 1, target: 1, other: 0 });
});

for (const how of ["server", "client"]) {
  test(`a socket disconnected by the ${how} is removed from its rooms`, { timeout: 30000 }, async (t) => {
    const { h, srv, clients } = await setup(t, ["sender", "stays"]);
    // "goes" shares its Engine.IO connection with a /dyn-1 socket, so that an ack on /dyn-1 proves
    // the server has handled everything "goes" sent before it.
    const manager = h.manager(srv.url, MODES.websocket);
    const goes = manager.socket("/");
    const sync = manager.socket("/dyn-1");
    const goesLog = [];
    goes.on("cast", (d) => goesLog.push(d));
    await Promise.all([connected(goes), connected(sync)]);
    await join(clients.stays, "club");
    await join({ socket: goes }, "club");
    assert.deepEqual(await castAndCollect({ ...clients, goes: { socket: goes, log: goesLog } }, clients.sender, { to: ["club"] }, "before"), {
      sender: 0, stays: 1, goes: 1,
    });

    const gone = next(goes, "disconnect");
    if (how === "server") {
      goes.emit("disconnect-me");
      assert.equal(await gone, "io server disconnect");
    } else {
      goes.disconnect();
      assert.equal(await gone, "io client disconnect");
      assert.equal(await sync.timeout(5000).emitWithAck("echo-ack", "sync"), "sync");
    }
    const seen = await castAndCollect(clients, clients.sender, { to: ["club"] }, "after");
    assert.deepEqual(seen, { sender: 0, stays: 1 });
    assert.deepEqual(goesLog, ["before"]);
    // A broadcast-with-ack to the room now expects exactly one answer and completes without timeout.
    clients.stays.socket.on("club-ack", (_d, ack) => ack("here"));
    const res = await clients.sender.socket.timeout(10000).emitWithAck("broadcast-with-ack", {
      room: "club",
      event: "club-ack",
      data: null,
      timeoutMs: 3000,
    });
    assert.deepEqual(res, { err: null, responses: ["here"] });
  });
}
