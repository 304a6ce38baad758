// 200 clients on a mix of transports each receive one broadcast exactly once.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next, within } from "./lib/harness.mjs";

const CLIENTS = 200;
const MIX = ["websocket", "polling", "upgrade"];

test(`${CLIENTS} clients (websocket, polling, upgrading) each receive one broadcast exactly once`, { timeout: 120000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const mode = MIX[i % MIX.length];
    const socket = h.client(srv.url, MODES[mode]);
    const c = { i, mode, socket, blasts: [], welcome: next(socket, "welcome", { timeoutMs: 60000 }) };
    socket.on("blast", (data) => c.blasts.push(data));
    clients.push(c);
  }
  await within(60000, Promise.all(clients.map((c) => c.welcome)), `${CLIENTS} welcomes`);
  assert.equal(new Set(clients.map((c) => c.socket.id)).size, CLIENTS, "distinct socket ids");

  const sender = clients[0].socket;
  const payload = { n: 1, text: "to everyone", bin: Buffer.from("shared bytes") };
  const markers = clients.map((c) => next(c.socket, "marker", { timeoutMs: 60000, label: `client ${c.i} (${c.mode})` }));
  assert.equal(await sender.timeout(30000).emitWithAck("broadcast", { event: "blast", data: payload }), true);
  // A second broadcast from the same sender: each socket receives it after the first one, so when
  // it arrives any duplicate of the first would already have been seen.
  assert.equal(await sender.timeout(30000).emitWithAck("broadcast", { event: "marker", data: "end" }), true);
  await within(60000, Promise.all(markers), "markers");

  const counts = { websocket: 0, polling: 0, upgrade: 0 };
  for (const c of clients) {
    assert.equal(c.blasts.length, 1, `client ${c.i} (${c.mode}) got ${c.blasts.length} copies`);
    assert.deepEqual(c.blasts[0], payload);
    assert.ok(c.socket.connected);
    counts[c.mode]++;
  }
  assert.deepEqual(counts, { websocket: 67, polling: 67, upgrade: 66 });
});
