// Each client transport mode (WebSocket only, polling only, polling upgraded to WebSocket) does
// events, acks and binary against the interop server.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, bytes, connected, harness, next, waitFor } from "./lib/harness.mjs";

/** Events, acks and binary in both directions on one connected socket. */
async function exercise(socket, tag) {
  const echoed = waitFor(socket, "echo");
  socket.emit("echo", tag, 42, { nested: [1, "two", null, true] });
  assert.deepEqual(await echoed, [tag, 42, { nested: [1, "two", null, true] }]);

  assert.deepEqual(await socket.timeout(5000).emitWithAck("echo-ack", { tag }), { tag });

  const buf = bytes(1024, 7);
  const binEcho = waitFor(socket, "echo");
  socket.emit("echo", tag, buf);
  const [t2, got] = await binEcho;
  assert.equal(t2, tag);
  assert.ok(Buffer.isBuffer(got), "binary comes back as a Buffer");
  assert.deepEqual(got, buf);

  const acked = await socket.timeout(5000).emitWithAck("echo-ack", { tag, payload: buf });
  assert.deepEqual(acked, { tag, payload: buf });
}

for (const [mode, opts] of Object.entries(MODES)) {
  test(`${mode} client: welcome, events, acks and binary`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, { ...opts, auth: { user: `u-${mode}` } });
    const welcome = next(socket, "welcome");
    const upgraded = mode === "upgrade" ? waitFor(socket.io.engine, "upgrade", { timeoutMs: 10000 }) : null;
    const upgradeEvents = [];
    socket.io.engine.on("upgrade", (tr) => upgradeEvents.push(tr.name));

    await connected(socket);
    assert.deepEqual(await welcome, { id: socket.id, nsp: "/", auth: { user: `u-${mode}` } });
    assert.ok(socket.id && socket.id !== socket.io.engine.id, "Socket.IO id differs from the Engine.IO session id");

    // Right after connecting (an upgrading client is typically still mid-upgrade here).
    await exercise(socket, `${mode}-early`);

    if (mode === "upgrade") {
      await upgraded;
      assert.equal(socket.io.engine.transport.name, "websocket", "upgraded to websocket");
      assert.ok(socket.connected);
      await exercise(socket, `${mode}-after-upgrade`);
    } else {
      assert.equal(socket.io.engine.transport.name, opts.transports[0]);
      assert.deepEqual(upgradeEvents, [], "no upgrade for a single-transport client");
    }
    await exercise(socket, `${mode}-late`);
    assert.equal(socket.io.engine.transport.name, mode === "polling" ? "polling" : "websocket");
  });
}

test("handshake reports the default ping settings and offers the websocket upgrade", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const socket = h.client(srv.url, MODES.polling);
  const [hs] = await waitFor(socket.io.engine, "handshake", { timeoutMs: 10000 });
  await connected(socket);
  assert.equal(typeof hs.sid, "string");
  assert.equal(hs.sid, socket.io.engine.id);
  assert.equal(hs.pingInterval, 25000);
  assert.equal(hs.pingTimeout, 20000);
  assert.equal(hs.maxPayload, 1000000);
  assert.deepEqual(hs.upgrades, ["websocket"]);
});

test("the session survives traffic sent while a polling client upgrades", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const socket = h.client(srv.url, MODES.upgrade);
  const upgraded = waitFor(socket.io.engine, "upgrade", { timeoutMs: 10000 });
  const received = [];
  socket.on("echo", (i) => received.push(i));
  await connected(socket);
  // Keep echo traffic flowing in both directions until the upgrade completes, then a bit more.
  let sent = 0;
  let upgradeSeen = false;
  upgraded.then(() => (upgradeSeen = true), () => {});
  while (!upgradeSeen && sent < 5000) {
    socket.emit("echo", sent++);
    await new Promise((r) => setImmediate(r));
  }
  await upgraded;
  assert.equal(socket.io.engine.transport.name, "websocket");
  for (let i = 0; i < 50; i++) socket.emit("echo", sent++);
  await waitFor(socket, "echo", { timeoutMs: 15000, filter: (i) => i === sent - 1 });
  assert.deepEqual(received, Array.from({ length: sent }, (_, i) => i), "every echo, once, in order");
});
