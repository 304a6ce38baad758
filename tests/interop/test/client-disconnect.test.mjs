// Disconnect reasons seen by the client.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next, waitFor } from "./lib/harness.mjs";

for (const [mode, opts] of Object.entries(MODES)) {
  test(`${mode}: server-side disconnect gives "io server disconnect"`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, opts);
    if (mode === "upgrade") {
      const upgraded = waitFor(socket.io.engine, "upgrade", { timeoutMs: 10000 });
      await connected(socket);
      await upgraded;
      assert.equal(socket.io.engine.transport.name, "websocket");
    } else {
      await connected(socket);
    }
    const reasons = [];
    socket.on("disconnect", (reason) => reasons.push(reason));
    const disconnected = next(socket, "disconnect", { timeoutMs: 10000 });
    socket.emit("disconnect-me");
    assert.equal(await disconnected, "io server disconnect");
    assert.equal(socket.connected, false);
    assert.equal(socket.id, undefined);
    assert.deepEqual(reasons, ["io server disconnect"]);
  });

  test(`${mode}: client-side disconnect gives "io client disconnect"`, { timeout: 20000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, opts);
    await connected(socket);
    const disconnected = next(socket, "disconnect");
    socket.disconnect();
    assert.equal(await disconnected, "io client disconnect");
    // The server keeps serving other clients.
    const other = h.client(srv.url, opts);
    await connected(other);
    assert.equal(await other.timeout(3000).emitWithAck("echo-ack", "ok"), "ok");
  });
}

test("server-side disconnect of one namespace on a multiplexed connection", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const manager = h.manager(srv.url, MODES.websocket);
  const dyn = manager.socket("/dyn-8");
  await connected(dyn);
  const disconnected = next(dyn, "disconnect");
  dyn.emit("disconnect-me");
  assert.equal(await disconnected, "io server disconnect");
  assert.equal(dyn.connected, false);
});

test("websocket client sees \"transport close\" when the server goes away", { timeout: 20000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const socket = h.client(srv.url, MODES.websocket);
  await connected(socket);
  const disconnected = next(socket, "disconnect", { timeoutMs: 10000 });
  await srv.stop();
  assert.equal(await disconnected, "transport close");
});
