// Binary payloads in both directions: a single Buffer, Buffers nested in objects and arrays, several
// attachments in one packet, empty and large Buffers, in events and in acks, over each transport.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MODES, bytes, connected, harness, waitFor } from "./lib/harness.mjs";

const payloads = {
  "a single Buffer": () => [bytes(256)],
  "an empty Buffer": () => [Buffer.alloc(0)],
  "a 200 KiB Buffer": () => [bytes(200 * 1024, 3)],
  "a Buffer nested in objects and arrays": () => [
    { file: { name: "a.bin", data: bytes(10, 1), parts: [bytes(3, 2), { deep: [[bytes(5, 9)]] }] }, n: 1 },
  ],
  "several attachments across several arguments": () => [
    bytes(1, 1),
    "text between",
    [bytes(2, 2), bytes(3, 3)],
    { x: bytes(4, 4), y: null, z: [1, { w: bytes(5, 5) }] },
    bytes(6, 6),
  ],
  "binary mixed with every JSON type": () => [
    { s: "é ü 漢字 🚀", n: -1.5, b: false, nul: null, arr: [], obj: {}, buf: bytes(7, 200) },
  ],
};

function assertBuffersAreBuffers(value, where = "value") {
  if (value instanceof Uint8Array) {
    assert.ok(Buffer.isBuffer(value), `${where} is a Buffer`);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => assertBuffersAreBuffers(v, `${where}[${i}]`));
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) assertBuffersAreBuffers(v, `${where}.${k}`);
  }
}

for (const mode of ["websocket", "polling"]) {
  test(`${mode}: binary round trips through events and acks`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);

    for (const [name, make] of Object.entries(payloads)) {
      const args = make();
      const echoed = waitFor(socket, "echo", { label: name });
      socket.emit("echo", ...args);
      const got = await echoed;
      assert.deepEqual(got, args, `echo event: ${name}`);
      assertBuffersAreBuffers(got, `echo(${name})`);

      // Client -> server with ack carrying the same binary back (BINARY_EVENT then BINARY_ACK).
      const acked = await new Promise((resolve, reject) => {
        socket.timeout(10000).emit("echo-ack", ...args, (err, ...ackArgs) => (err ? reject(err) : resolve(ackArgs)));
      });
      assert.deepEqual(acked, args, `echo-ack: ${name}`);
      assertBuffersAreBuffers(acked, `ack(${name})`);
    }
  });

  test(`${mode}: server-sent binary event answered with a binary ack`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);

    const sent = { kind: "request", blobs: [bytes(16, 1), bytes(0)], meta: { blob: bytes(300, 2) } };
    const reply1 = bytes(33, 5);
    const reply2 = { nested: [bytes(2, 8)] };
    let received;
    socket.on("server-binary", (data, ack) => {
      received = data;
      ack(reply1, "and text", reply2);
    });
    const result = await socket.timeout(10000).emitWithAck("request-ack", {
      event: "server-binary",
      data: sent,
      timeoutMs: 5000,
    });
    assert.deepEqual(received, sent, "the client received the server's binary event intact");
    assertBuffersAreBuffers(received, "server-binary data");
    assert.deepEqual(result, { ok: true, response: [reply1, "and text", reply2] });
    assertBuffersAreBuffers(result.response, "ack response");
  });

  test(`${mode}: binary and text events interleaved keep their order`, { timeout: 30000 }, async (t) => {
    const h = harness(t);
    const srv = await h.interopServer();
    const socket = h.client(srv.url, MODES[mode]);
    await connected(socket);

    const n = 60;
    const got = [];
    socket.on("echo", (...args) => got.push(args));
    const all = waitFor(socket, "echo", { timeoutMs: 20000, filter: () => got.length === n });
    const expected = [];
    for (let i = 0; i < n; i++) {
      const args = i % 3 === 0 ? [i] : i % 3 === 1 ? [i, bytes(i, i)] : [i, { a: bytes(1, i), b: [bytes(2, i)] }, bytes(3, i)];
      expected.push(args);
      socket.emit("echo", ...args);
    }
    await all;
    assert.deepEqual(got, expected);
  });
}

test("binary broadcast reaches a websocket and a polling client alike", { timeout: 30000 }, async (t) => {
  const h = harness(t);
  const srv = await h.interopServer();
  const ws = h.client(srv.url, MODES.websocket);
  const poll = h.client(srv.url, MODES.polling);
  await Promise.all([connected(ws), connected(poll)]);
  const data = { img: bytes(4096, 11), thumbs: [bytes(10, 1), bytes(20, 2)] };
  const wsGot = waitFor(ws, "bin-cast");
  const pollGot = waitFor(poll, "bin-cast");
  assert.equal(await ws.timeout(5000).emitWithAck("broadcast", { event: "bin-cast", data }), true);
  assert.deepEqual(await wsGot, [data]);
  assert.deepEqual(await pollGot, [data]);
});
