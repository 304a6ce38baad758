// The ioscale application (`ioscale serve`): server-info, message to all and to a room, join/leave
// with acks and their errors, with the real client on each transport.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ISO_8601, MODES, connected, harness, next, waitFor } from "./lib/harness.mjs";

function assertTimestamp(ts) {
  assert.equal(typeof ts, "string");
  assert.match(ts, ISO_8601);
  const ms = Date.parse(ts);
  assert.ok(!Number.isNaN(ms), `parsable timestamp ${ts}`);
  assert.ok(Math.abs(Date.now() - ms) < 60000, `timestamp ${ts} is current`);
}

function assertMessage(msg, { serverId, socketId, message }) {
  assert.deepEqual(Object.keys(msg).sort(), ["message", "serverId", "socketId", "timestamp"]);
  assert.equal(msg.serverId, serverId);
  assert.equal(msg.socketId, socketId);
  assert.equal(msg.message, message);
  assertTimestamp(msg.timestamp);
}

for (const [mode, opts] of Object.entries(MODES)) {
  test(`${mode}: server-info on connect, then a message to everyone`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.app();
    const socket = h.client(srv.url, opts);
    const upgraded = mode === "upgrade" ? waitFor(socket.io.engine, "upgrade", { timeoutMs: 10000 }) : null;
    const info = next(socket, "server-info");
    await connected(socket);
    const si = await info;
    assert.deepEqual(Object.keys(si).sort(), ["serverId", "timestamp"]);
    assert.equal(si.serverId, "node-a");
    assertTimestamp(si.timestamp);

    const other = h.client(srv.url, MODES.websocket);
    await connected(other);
    const mine = next(socket, "message");
    const theirs = next(other, "message");
    socket.emit("message", { message: `hello from ${mode}` });
    for (const m of [await mine, await theirs]) {
      assertMessage(m, { serverId: "node-a", socketId: socket.id, message: `hello from ${mode}` });
    }
    if (upgraded) {
      await upgraded;
      assert.equal(socket.io.engine.transport.name, "websocket");
      const again = next(other, "message");
      socket.emit("message", { message: "after upgrade" });
      assertMessage(await again, { serverId: "node-a", socketId: socket.id, message: "after upgrade" });
    }
  });

  test(`${mode}: join/leave acks and room messages`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.app();
    const member = h.client(srv.url, opts);
    const outsider = h.client(srv.url, MODES.websocket);
    const sender = h.client(srv.url, MODES.polling);
    await Promise.all([member, outsider, sender].map((s) => connected(s)));
    const logs = new Map([member, outsider, sender].map((s) => [s, []]));
    for (const [s, log] of logs) s.on("message", (m) => log.push(m.message));

    assert.deepEqual(await member.timeout(5000).emitWithAck("join", "lobby"), { ok: true, room: "lobby" });

    // Room message, then a message to everyone from the same sender as a marker.
    const markers = [...logs.keys()].map((s) => next(s, "message", { filter: (m) => m.message === "marker-1" }));
    const roomMsg = next(member, "message", { filter: (m) => m.message === "to lobby" });
    sender.emit("message", { message: "to lobby", room: "lobby" });
    sender.emit("message", { message: "marker-1" });
    assertMessage(await roomMsg, { serverId: "node-a", socketId: sender.id, message: "to lobby" });
    await Promise.all(markers);
    assert.deepEqual(logs.get(member), ["to lobby", "marker-1"]);
    assert.deepEqual(logs.get(outsider), ["marker-1"]);
    assert.deepEqual(logs.get(sender), ["marker-1"], "the sender is not in the room");

    // After leaving, the member no longer gets the room's messages.
    assert.deepEqual(await member.timeout(5000).emitWithAck("leave", "lobby"), { ok: true, room: "lobby" });
    const markers2 = [...logs.keys()].map((s) => next(s, "message", { filter: (m) => m.message === "marker-2" }));
    sender.emit("message", { message: "to lobby again", room: "lobby" });
    sender.emit("message", { message: "marker-2" });
    await Promise.all(markers2);
    assert.deepEqual(logs.get(member), ["to lobby", "marker-1", "marker-2"]);
  });
}

test("a sender in the room gets its own room message; several members each get it once", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app();
  const sockets = [MODES.websocket, MODES.polling, MODES.upgrade, MODES.websocket].map((o) => h.client(srv.url, o));
  await Promise.all(sockets.map((s) => connected(s)));
  const [sender, m1, m2, out] = sockets;
  for (const s of [sender, m1, m2]) {
    assert.deepEqual(await s.timeout(5000).emitWithAck("join", "team"), { ok: true, room: "team" });
  }
  // Joining twice is fine and still delivers once.
  assert.deepEqual(await m1.timeout(5000).emitWithAck("join", "team"), { ok: true, room: "team" });
  const logs = sockets.map((s) => {
    const log = [];
    s.on("message", (m) => log.push(m.message));
    return log;
  });
  const markers = sockets.map((s) => next(s, "message", { filter: (m) => m.message === "marker" }));
  sender.emit("message", { message: "team only", room: "team" });
  sender.emit("message", { message: "marker" });
  await Promise.all(markers);
  assert.deepEqual(logs, [["team only", "marker"], ["team only", "marker"], ["team only", "marker"], ["marker"]]);
  assert.ok(out.connected);
});

test("join without an ack still joins", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app();
  const member = h.client(srv.url, MODES.websocket);
  const sender = h.client(srv.url, MODES.websocket);
  await Promise.all([connected(member), connected(sender)]);
  member.emit("join", "quiet");
  // Anything acked after the join on the same connection was handled after it.
  assert.deepEqual(await member.timeout(5000).emitWithAck("join", "other"), { ok: true, room: "other" });
  const got = next(member, "message", { filter: (m) => m.message === "psst" });
  sender.emit("message", { message: "psst", room: "quiet" });
  assertMessage(await got, { serverId: "node-a", socketId: sender.id, message: "psst" });
});

test("join and leave reject a non-string or empty room name", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app();
  const socket = h.client(srv.url, MODES.websocket);
  await connected(socket);
  for (const action of ["join", "leave"]) {
    for (const bad of ["", 123, null, { room: "x" }, ["a"], true]) {
      const res = await socket.timeout(5000).emitWithAck(action, bad);
      assert.equal(res.ok, false, `${action}(${JSON.stringify(bad)})`);
      assert.equal(typeof res.error, "string", `${action}(${JSON.stringify(bad)}) has an error string`);
      assert.ok(res.error.length > 0);
      assert.deepEqual(Object.keys(res).sort(), ["error", "ok"]);
    }
  }
  // A rejected join does not put the socket in any room, and the socket still works.
  assert.ok(socket.connected);
  assert.deepEqual(await socket.timeout(5000).emitWithAck("join", "fine"), { ok: true, room: "fine" });
  assert.deepEqual(await socket.timeout(5000).emitWithAck("leave", "fine"), { ok: true, room: "fine" });
  assert.deepEqual(await socket.timeout(5000).emitWithAck("leave", "never-joined"), { ok: true, room: "never-joined" });
});

test("room names are taken literally (unicode, spaces, a socket id)", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.app();
  const a = h.client(srv.url, MODES.websocket);
  const b = h.client(srv.url, MODES.polling);
  await Promise.all([connected(a), connected(b)]);
  const bGot = [];
  b.on("message", (m) => bGot.push(m.message));
  const aLog = [];
  a.on("message", (m) => aLog.push(m.message));
  for (const room of ["salle de réunion", "部屋", "with/slash"]) {
    assert.deepEqual(await a.timeout(5000).emitWithAck("join", room), { ok: true, room });
    const got = next(a, "message", { filter: (m) => m.message === `in ${room}` });
    b.emit("message", { message: `in ${room}`, room });
    assert.equal((await got).socketId, b.id);
  }
  // A near-miss name is a different room: "部屋 " (trailing space) has no members.
  b.emit("message", { message: "near miss", room: "部屋 " });
  // Every socket is in the room named by its id, so a message can target one socket.
  const direct = next(a, "message", { filter: (m) => m.message === "direct" });
  b.emit("message", { message: "direct", room: a.id });
  assert.equal((await direct).socketId, b.id);
  // b (in none of these rooms) then gets a message to everyone, and nothing before it.
  const marker = next(b, "message", { filter: (m) => m.message === "marker" });
  const aMarker = next(a, "message", { filter: (m) => m.message === "marker" });
  b.emit("message", { message: "marker" });
  await Promise.all([marker, aMarker]);
  assert.deepEqual(bGot, ["marker"]);
  assert.deepEqual(
    aLog,
    ["in salle de réunion", "in 部屋", "in with/slash", "direct", "marker"],
    "a got its rooms' messages and not the near-miss room's",
  );
});
