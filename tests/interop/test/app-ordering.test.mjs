// A sender pushes 300 messages through `ioscale serve` as fast as it can; 20 receivers on a mix
// of transports each get all 300, once, in order.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, connected, harness, next, within } from "./lib/harness.mjs";

const MESSAGES = 300;
const RECEIVERS = 20;
const MIX = ["websocket", "polling", "upgrade"];

for (const senderMode of ["websocket", "polling"]) {
  test(`${RECEIVERS} receivers get all ${MESSAGES} messages of a ${senderMode} sender in order`, { timeout: 120000 }, async (t) => {
    const h = harness(t);
    const srv = await h.app();
    const receivers = [];
    for (let i = 0; i < RECEIVERS; i++) {
      const mode = MIX[i % MIX.length];
      const socket = h.client(srv.url, MODES[mode]);
      const r = { i, mode, socket, got: [], info: next(socket, "server-info", { timeoutMs: 30000 }) };
      receivers.push(r);
    }
    const sender = h.client(srv.url, MODES[senderMode]);
    const senderGot = [];
    await within(30000, Promise.all([...receivers.map((r) => r.info), connected(sender)]), "connections");

    const everyone = [...receivers, { i: "sender", mode: senderMode, socket: sender, got: senderGot }];
    const done = everyone.map((r) => {
      r.socket.on("message", (m) => {
        if (m.socketId === sender.id) r.got.push(m.message);
      });
      return next(r.socket, "message", {
        timeoutMs: 90000,
        filter: (m) => m.socketId === sender.id && m.message === `m-${MESSAGES - 1}`,
        label: `receiver ${r.i} (${r.mode})`,
      });
    });
    for (let i = 0; i < MESSAGES; i++) sender.emit("message", { message: `m-${i}` });
    await within(90000, Promise.all(done), "all receivers");

    const expected = Array.from({ length: MESSAGES }, (_, i) => `m-${i}`);
    for (const r of everyone) {
      assert.equal(r.got.length, MESSAGES, `receiver ${r.i} (${r.mode}) got ${r.got.length} messages`);
      assert.deepEqual(r.got, expected, `receiver ${r.i} (${r.mode}) order`);
    }
  });
}
