// Acknowledgements in both directions: client -> server (callback, emitWithAck, socket.timeout),
// server -> client with a timeout, and broadcasts that collect acks from several clients.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next, waitFor } from "./lib/harness.mjs";

for (const mode of ["websocket", "polling"]) {
  test(`${mode}: client -> server acks`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);

    // Plain callback, several arguments.
    const viaCallback = await new Promise((resolve) => socket.emit("echo-ack", "a", 1, [true], (...args) => resolve(args)));
    assert.deepEqual(viaCallback, ["a", 1, [true]]);

    // emitWithAck resolves with the first ack argument.
    assert.deepEqual(await socket.emitWithAck("echo-ack", { k: "v" }), { k: "v" });

    // An ack with no arguments.
    const empty = await new Promise((resolve) => socket.emit("echo-ack", (...args) => resolve(args)));
    assert.deepEqual(empty, []);

    // socket.timeout(ms).emitWithAck resolves when the server answers in time.
    assert.equal(await socket.timeout(2000).emitWithAck("echo-ack", "in time"), "in time");

    // socket.timeout(ms).emit with a callback gets (null, ...args).
    const timed = await new Promise((resolve) => socket.timeout(2000).emit("echo-ack", 7, 8, (...args) => resolve(args)));
    assert.deepEqual(timed, [null, 7, 8]);

    // Many acks in flight at once are each matched to their own request.
    const values = Array.from({ length: 200 }, (_, i) => `v${i}`);
    const answers = await Promise.all(values.map((v) => socket.timeout(10000).emitWithAck("echo-ack", v)));
    assert.deepEqual(answers, values);
  });

  test(`${mode}: socket.timeout(ms).emitWithAck rejects when the server never acks`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);
    // "echo" is handled but never acknowledged; an unknown event is not acknowledged either.
    await assert.rejects(socket.timeout(300).emitWithAck("echo", "no ack please"), /operation has timed out/);
    await assert.rejects(socket.timeout(300).emitWithAck("no-such-event", 1), /operation has timed out/);
    // The connection is unaffected.
    assert.ok(socket.connected);
    assert.equal(await socket.timeout(2000).emitWithAck("echo-ack", "still fine"), "still fine");
  });

  test(`${mode}: server -> client ack answered in time`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);
    let got;
    socket.on("please-ack", (data, ack) => {
      got = data;
      ack("pong", 42, { n: [1, 2] });
    });
    const res = await socket.timeout(10000).emitWithAck("request-ack", { event: "please-ack", data: { q: 1 }, timeoutMs: 3000 });
    assert.deepEqual(got, { q: 1 });
    assert.deepEqual(res, { ok: true, response: ["pong", 42, { n: [1, 2] }] });

    // An ack without arguments.
    socket.on("please-ack-empty", (_data, ack) => ack());
    const res2 = await socket.timeout(10000).emitWithAck("request-ack", { event: "please-ack-empty", data: null, timeoutMs: 3000 });
    assert.deepEqual(res2, { ok: true, response: [] });
  });

  test(`${mode}: server -> client ack times out when the client does not answer`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);

    // A listener that receives the event but never calls the ack.
    const seen = [];
    socket.on("silent", (data) => seen.push(data));
    const started = Date.now();
    const res = await socket.timeout(10000).emitWithAck("request-ack", { event: "silent", data: "x", timeoutMs: 300 });
    const elapsed = Date.now() - started;
    assert.deepEqual(res, { ok: false, error: "timeout" });
    assert.deepEqual(seen, ["x"], "the event itself was delivered");
    assert.ok(elapsed >= 250, `the server waited for its timeout (${elapsed} ms)`);

    // No listener at all.
    const res2 = await socket.timeout(10000).emitWithAck("request-ack", { event: "nobody-listens", data: 1, timeoutMs: 300 });
    assert.deepEqual(res2, { ok: false, error: "timeout" });
  });

  test(`${mode}: a late client ack after the server timeout is ignored`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);
    let lateAckSent;
    const lateAckDone = new Promise((r) => (lateAckSent = r));
    socket.on("slow", (_data, ack) => {
      // Simulates a slow client: it answers well after the server's 200 ms timeout.
      setTimeout(() => {
        ack("too late");
        lateAckSent();
      }, 700);
    });
    const res = await socket.timeout(10000).emitWithAck("request-ack", { event: "slow", data: 0, timeoutMs: 200 });
    assert.deepEqual(res, { ok: false, error: "timeout" });
    await lateAckDone;
    // The session keeps working and later acks are still matched correctly.
    assert.equal(await socket.timeout(3000).emitWithAck("echo-ack", "after late ack"), "after late ack");
    socket.on("quick", (_d, ack) => ack("on time"));
    assert.deepEqual(
      await socket.timeout(10000).emitWithAck("request-ack", { event: "quick", data: 0, timeoutMs: 3000 }),
      { ok: true, response: ["on time"] },
    );
    assert.ok(socket.connected);
  });
}

test("broadcast with ack collects one response per client in the room", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const modes = ["websocket", "polling", "upgrade"];
  const members = modes.map((m) => h.client(srv.url, MODES[m]));
  const sender = h.client(srv.url, MODES.websocket);
  await Promise.all([...members, sender].map((s) => connected(s)));
  members.forEach((s, i) => s.on("collect", (data, ack) => ack({ from: modes[i], data })));
  const senderGot = [];
  sender.on("collect", (d) => senderGot.push(d));
  for (const s of members) assert.equal(await s.emitWithAck("join", "ack-room"), true);

  const res = await sender.timeout(10000).emitWithAck("broadcast-with-ack", {
    room: "ack-room",
    event: "collect",
    data: 5,
    timeoutMs: 3000,
  });
  assert.equal(res.err, null);
  assert.deepEqual(
    [...res.responses].sort((a, b) => a.from.localeCompare(b.from)),
    modes.map((from) => ({ from, data: 5 })).sort((a, b) => a.from.localeCompare(b.from)),
  );
  // Had the sender been targeted, its copy would have arrived before its own ack response.
  assert.deepEqual(senderGot, [], "the sender is not in the room");
});

test("broadcast with ack to everyone includes the sender", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const sockets = [0, 1, 2].map(() => h.client(srv.url, MODES.websocket));
  await Promise.all(sockets.map((s) => connected(s)));
  sockets.forEach((s, i) => s.on("roll-call", (_d, ack) => ack(i)));
  const res = await sockets[0].timeout(10000).emitWithAck("broadcast-with-ack", { event: "roll-call", data: null, timeoutMs: 3000 });
  assert.equal(res.err, null);
  assert.deepEqual([...res.responses].sort(), [0, 1, 2]);
});

test("broadcast with ack reports a timeout and the responses that did arrive", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const answering = [h.client(srv.url, MODES.websocket), h.client(srv.url, MODES.polling)];
  const silent = h.client(srv.url, MODES.websocket);
  const sender = h.client(srv.url, MODES.websocket);
  await Promise.all([...answering, silent, sender].map((s) => connected(s)));
  answering.forEach((s, i) => s.on("vote", (_d, ack) => ack(`yes-${i}`)));
  const silentGot = next(silent, "vote");
  for (const s of [...answering, silent]) assert.equal(await s.emitWithAck("join", "voters"), true);

  const res = await sender.timeout(10000).emitWithAck("broadcast-with-ack", {
    room: "voters",
    event: "vote",
    data: "q",
    timeoutMs: 500,
  });
  assert.equal(await silentGot, "q", "the silent client received the event");
  assert.equal(res.err, "timeout");
  assert.deepEqual([...res.responses].sort(), ["yes-0", "yes-1"]);
});

test("broadcast with ack to an empty room completes at once with no responses", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const sender = h.client(srv.url, MODES.websocket);
  await connected(sender);
  const started = Date.now();
  const res = await sender.timeout(10000).emitWithAck("broadcast-with-ack", {
    room: "nobody-here",
    event: "x",
    data: 1,
    timeoutMs: 5000,
  });
  assert.deepEqual(res, { err: null, responses: [] });
  assert.ok(Date.now() - started < 4000, "did not wait for the timeout");
});

test("acks on an upgraded connection", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const socket = h.client(srv.url, MODES.upgrade);
  const upgraded = waitFor(socket.io.engine, "upgrade", { timeoutMs: 10000 });
  await connected(socket);
  await upgraded;
  assert.equal(socket.io.engine.transport.name, "websocket");
  assert.equal(await socket.timeout(2000).emitWithAck("echo-ack", "up"), "up");
  socket.on("up-ack", (d, ack) => ack(d * 2));
  assert.deepEqual(
    await socket.timeout(10000).emitWithAck("request-ack", { event: "up-ack", data: 21, timeoutMs: 3000 }),
    { ok: true, response: [42] },
  );
  await assert.rejects(socket.timeout(300).emitWithAck("no-such-event"), /operation has timed out/);
});
