// One client sends 500 echo events as fast as it can and gets all of them back, once, in order.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, bytes, connected, harness, waitFor } from "./lib/harness.mjs";

const N = 500;

for (const [mode, opts] of Object.entries(MODES)) {
  test(`${mode}: ${N} echo events come back in order`, { timeout: 60000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, opts);
    const upgraded = mode === "upgrade" ? waitFor(socket.io.engine, "upgrade", { timeoutMs: 10000 }) : null;
    await connected(socket);
    const got = [];
    socket.on("echo", (i, text) => got.push([i, text]));
    const last = waitFor(socket, "echo", { timeoutMs: 45000, filter: () => got.length === N, label: `${N} echoes` });
    // For the upgrading client the burst starts on polling and continues across the upgrade.
    for (let i = 0; i < N; i++) socket.emit("echo", i, `message ${i}`);
    await last;
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => [i, `message ${i}`]));
    if (upgraded) {
      await upgraded;
      assert.equal(socket.io.engine.transport.name, "websocket");
    }
  });
}

test(`websocket: ${N} echo events with binary attachments interleaved come back in order`, { timeout: 60000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const socket = h.client(srv.url, MODES.websocket);
  await connected(socket);
  const got = [];
  socket.on("echo", (i, extra) => got.push([i, extra]));
  const last = waitFor(socket, "echo", { timeoutMs: 45000, filter: () => got.length === N });
  const expected = [];
  for (let i = 0; i < N; i++) {
    const extra = i % 5 === 0 ? bytes(8, i) : { i };
    expected.push([i, extra]);
    socket.emit("echo", i, extra);
  }
  await last;
  assert.deepEqual(got, expected);
});
